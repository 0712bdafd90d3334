//! `IndexedLayer`: a layer index, mapped, served as a [`Layer`] over a [`DataSource`].

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use super::format::{
    decode_xattrs, EntryRec, Header, InodeRec, ENTRY_LEN, FLAG_OPAQUE, FLAG_WHITEOUT, INODE_LEN,
    NO_INODE,
};
use super::source::{DataSource, LocalData, SourceFile};
use super::{IndexError, DATA_FILE, INDEX_FILE};
use crate::attr::{Attr, FileKind, Timestamp};
use crate::errno::{Errno, Result};
use crate::layer::{Layer, LayerDirEntry, LayerFile, LayerPath, Lookup, StatVfs};

/// A layer served from an index (`DIR/index`) over the bytes of its tar, `S`: the local
/// `DIR/data` by default, any [`DataSource`] otherwise.
pub struct IndexedLayer<S: DataSource = LocalData> {
    index_path: PathBuf,
    index: Mmap,
    header: Header,
    data: Arc<S>,
}

impl<S: DataSource> std::fmt::Debug for IndexedLayer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexedLayer")
            .field("index", &self.index_path)
            .field("entries", &self.header.entries)
            .field("data", &self.data)
            .finish()
    }
}

/// A record that points outside its section: the index is damaged.
fn corrupt() -> Errno {
    log::error!("damaged layer index: a record points outside its section");
    Errno::EIO
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IndexError {
    let path = path.to_path_buf();
    move |source| IndexError::Io { path, source }
}

impl IndexedLayer<LocalData> {
    /// Opens the layer in `dir` (as [`super::build_index`] wrote it) and checks that the
    /// index's header fits the file and that `data` is as long as the index says.
    pub fn open(dir: &Path) -> std::result::Result<IndexedLayer<LocalData>, IndexError> {
        let data_path = dir.join(DATA_FILE);
        let data = File::open(&data_path)
            .and_then(LocalData::new)
            .map_err(io_err(&data_path))?;
        IndexedLayer::with_source(&dir.join(INDEX_FILE), data)
    }
}

impl<S: DataSource> IndexedLayer<S> {
    /// Serves the index at `index_path` over `data`, which must be as long as the tar the
    /// index was built from.
    pub fn with_source(
        index_path: &Path,
        data: S,
    ) -> std::result::Result<IndexedLayer<S>, IndexError> {
        let f = File::open(index_path).map_err(io_err(index_path))?;
        let index = map(&f).map_err(io_err(index_path))?;
        let header = Header::decode(&index).map_err(|p| IndexError::BadIndex {
            path: index_path.to_path_buf(),
            reason: format!("{p:?}"),
        })?;
        if data.len() != header.data_len {
            return Err(IndexError::BadIndex {
                path: index_path.to_path_buf(),
                reason: format!(
                    "its data holds {} bytes, the index was built over {}",
                    data.len(),
                    header.data_len
                ),
            });
        }
        Ok(IndexedLayer {
            index_path: index_path.to_path_buf(),
            index,
            header,
            data: Arc::new(data),
        })
    }

    fn entry(&self, i: u32) -> Result<EntryRec> {
        if u64::from(i) >= self.header.entries {
            return Err(corrupt());
        }
        let at = self.header.entries_off as usize + i as usize * ENTRY_LEN;
        Ok(EntryRec::decode(&self.index[at..at + ENTRY_LEN]))
    }

    fn inode(&self, e: &EntryRec) -> Result<InodeRec> {
        if u64::from(e.inode) >= self.header.inodes {
            return Err(corrupt());
        }
        let at = self.header.inodes_off as usize + e.inode as usize * INODE_LEN;
        Ok(InodeRec::decode(&self.index[at..at + INODE_LEN]))
    }

    fn name(&self, e: &EntryRec) -> Result<&[u8]> {
        let start = e.name_off as u64;
        let end = start + u64::from(e.name_len);
        if end > self.header.names_len {
            return Err(corrupt());
        }
        let base = self.header.names_off as usize;
        Ok(&self.index[base + start as usize..base + end as usize])
    }

    fn extra(&self, off: u64, len: u64) -> Result<&[u8]> {
        let end = off.checked_add(len).ok_or_else(corrupt)?;
        if end > self.header.extra_len {
            return Err(corrupt());
        }
        let base = self.header.extra_off as usize;
        Ok(&self.index[base + off as usize..base + end as usize])
    }

    /// The entries that are `dir`'s children.
    fn children(&self, dir: &EntryRec) -> Result<std::ops::Range<u32>> {
        let end = u64::from(dir.first_child) + u64::from(dir.child_count);
        if end > self.header.entries {
            return Err(corrupt());
        }
        Ok(dir.first_child..end as u32)
    }

    /// The child `name` of directory entry `dir`: a binary search of its sorted run.
    fn child(&self, dir: &EntryRec, name: &[u8]) -> Result<Option<(u32, EntryRec)>> {
        let run = self.children(dir)?;
        let (mut lo, mut hi) = (run.start, run.end);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let e = self.entry(mid)?;
            match self.name(&e)?.cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(Some((mid, e))),
            }
        }
        Ok(None)
    }

    fn is_dir(&self, e: &EntryRec) -> Result<bool> {
        Ok(e.flags & FLAG_WHITEOUT == 0 && self.inode(e)?.mode & libc::S_IFMT == libc::S_IFDIR)
    }

    /// The entry at `path`; `None` when a component is missing, whited out, or below a
    /// non-directory.
    fn resolve(&self, path: &LayerPath) -> Result<Option<EntryRec>> {
        let mut e = self.entry(0)?;
        for name in path.components() {
            if !self.is_dir(&e)? {
                return Ok(None);
            }
            match self.child(&e, name.as_bytes())? {
                Some((_, c)) => e = c,
                None => return Ok(None),
            }
        }
        if e.flags & FLAG_WHITEOUT != 0 {
            return Ok(None);
        }
        Ok(Some(e))
    }

    fn resolve_file(&self, path: &LayerPath) -> Result<InodeRec> {
        let e = self.resolve(path)?.ok_or(Errno::ENOENT)?;
        self.inode(&e)
    }

    fn attr(&self, e: &EntryRec, i: &InodeRec) -> Result<Attr> {
        let kind = FileKind::from_mode(i.mode).ok_or_else(corrupt)?;
        let time = Timestamp {
            sec: i.mtime,
            nsec: i.mtime_nsec,
        };
        let rdev = match kind {
            FileKind::CharDevice | FileKind::BlockDevice => i.data,
            _ => 0,
        };
        let size = match kind {
            FileKind::Regular | FileKind::Symlink => i.size,
            FileKind::Directory => 4096,
            _ => 0,
        };
        Ok(Attr {
            // Inode numbers start at 1: 0 means "no inode" to readdir.
            ino: u64::from(e.inode) + 1,
            kind,
            perm: i.mode & 0o7777,
            nlink: u64::from(i.nlink.max(1)),
            uid: i.uid,
            gid: i.gid,
            rdev,
            size,
            blocks: match kind {
                FileKind::Regular => i.size.div_ceil(512),
                _ => 0,
            },
            blksize: 4096,
            atime: time,
            mtime: time,
            ctime: time,
        })
    }

    fn xattrs(&self, i: &InodeRec) -> Result<Vec<(&[u8], &[u8])>> {
        if i.xattrs_len == 0 {
            return Ok(Vec::new());
        }
        decode_xattrs(self.extra(i.xattrs_off, u64::from(i.xattrs_len))?).ok_or_else(corrupt)
    }
}

/// Maps the index read-only.
// SAFETY (of the one unsafe call): the index is written once, under a temporary name, and
// renamed into place; nothing writes it afterwards, so the mapped bytes do not change under
// the reader (the hazard memmap2 marks unsafe). Every read is bounds-checked anyway.
#[allow(unsafe_code)]
fn map(f: &File) -> std::io::Result<Mmap> {
    unsafe { Mmap::map(f) }
}

impl<S: DataSource> Layer for IndexedLayer<S> {
    fn lookup(&self, dir: &LayerPath, name: &OsStr) -> Result<Lookup> {
        let Some(d) = self.resolve(dir)? else {
            return Ok(Lookup::Missing);
        };
        if !self.is_dir(&d)? {
            return Ok(Lookup::Missing);
        }
        match self.child(&d, name.as_bytes())? {
            None => Ok(Lookup::Missing),
            Some((_, e)) if e.flags & FLAG_WHITEOUT != 0 => Ok(Lookup::Whiteout),
            Some((_, e)) => {
                let i = self.inode(&e)?;
                let attr = self.attr(&e, &i)?;
                Ok(Lookup::Found {
                    opaque: attr.kind == FileKind::Directory && e.flags & FLAG_OPAQUE != 0,
                    attr,
                })
            }
        }
    }

    fn stat(&self, path: &LayerPath) -> Result<Attr> {
        let e = self.resolve(path)?.ok_or(Errno::ENOENT)?;
        self.attr(&e, &self.inode(&e)?)
    }

    fn read_dir(&self, dir: &LayerPath) -> Result<Vec<LayerDirEntry>> {
        let d = self.resolve(dir)?.ok_or(Errno::ENOENT)?;
        if !self.is_dir(&d)? {
            return Err(Errno::ENOTDIR);
        }
        let run = self.children(&d)?;
        let mut out = Vec::with_capacity(run.len());
        for i in run {
            let e = self.entry(i)?;
            let name = OsStr::from_bytes(self.name(&e)?).to_os_string();
            if e.flags & FLAG_WHITEOUT != 0 || e.inode == NO_INODE {
                out.push(LayerDirEntry::Whiteout(name));
                continue;
            }
            let inode = self.inode(&e)?;
            out.push(LayerDirEntry::Entry {
                name,
                ino: u64::from(e.inode) + 1,
                kind: FileKind::from_mode(inode.mode).ok_or_else(corrupt)?,
            });
        }
        Ok(out)
    }

    fn open(&self, path: &LayerPath) -> Result<Box<dyn LayerFile>> {
        let i = self.resolve_file(path)?;
        match i.mode & libc::S_IFMT {
            libc::S_IFREG => {}
            libc::S_IFDIR => return Err(Errno::EISDIR),
            _ => return Err(Errno::EINVAL),
        }
        let end = i.data.checked_add(i.size).ok_or_else(corrupt)?;
        if end > self.header.data_len {
            return Err(corrupt());
        }
        Ok(Box::new(SourceFile {
            source: self.data.clone(),
            offset: i.data,
            len: i.size,
        }))
    }

    fn read_link(&self, path: &LayerPath) -> Result<Vec<u8>> {
        let i = self.resolve_file(path)?;
        if i.mode & libc::S_IFMT != libc::S_IFLNK {
            return Err(Errno::EINVAL);
        }
        Ok(self.extra(i.data, i.size)?.to_vec())
    }

    fn list_xattrs(&self, path: &LayerPath) -> Result<Vec<OsString>> {
        let i = self.resolve_file(path)?;
        Ok(self
            .xattrs(&i)?
            .into_iter()
            .map(|(k, _)| OsStr::from_bytes(k).to_os_string())
            .collect())
    }

    fn get_xattr(&self, path: &LayerPath, key: &OsStr) -> Result<Option<Vec<u8>>> {
        let i = self.resolve_file(path)?;
        Ok(self
            .xattrs(&i)?
            .into_iter()
            .find(|(k, _)| *k == key.as_bytes())
            .map(|(_, v)| v.to_vec()))
    }

    fn statfs(&self) -> Result<StatVfs> {
        self.data.statfs()
    }
}
