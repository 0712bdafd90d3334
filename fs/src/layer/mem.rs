//! `MemLayer`: a layer held in memory, built entry by entry, for tests of the union without
//! a host tree (exact owners, devices and xattrs whoever runs the test).

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use super::{Layer, LayerDirEntry, LayerFile, LayerPath, Lookup, StatVfs};
use crate::attr::{Attr, FileKind, Timestamp};
use crate::errno::{Errno, Result};

/// One file of a [`MemLayer`]; hard links share one.
#[derive(Clone, Debug)]
struct MemInode {
    kind: FileKind,
    perm: u32,
    uid: u32,
    gid: u32,
    rdev: u64,
    mtime: Timestamp,
    /// File contents, or a symlink's target.
    data: Arc<[u8]>,
    xattrs: BTreeMap<OsString, Vec<u8>>,
    nlink: u64,
}

#[derive(Clone, Debug)]
enum MemEntry {
    /// Index into the inode list.
    Inode(usize),
    Whiteout,
}

/// A read-only layer in memory. Build it with [`MemLayer::builder`].
#[derive(Debug)]
pub struct MemLayer {
    inodes: Vec<MemInode>,
    /// Directory path → its entries, sorted by name.
    dirs: HashMap<LayerPath, BTreeMap<OsString, MemEntry>>,
    opaque: std::collections::HashSet<LayerPath>,
}

/// Builds a [`MemLayer`]. Paths are relative, `/`-separated bytes; missing parents become
/// `0755` root-owned directories, a later entry replaces an earlier one at the same path.
/// Attribute setters (`mode`, `owner`, `xattr`, `mtime`) apply to the entry named.
#[derive(Debug)]
pub struct MemLayerBuilder {
    layer: MemLayer,
}

/// The time every entry gets unless told otherwise.
const DEFAULT_MTIME: Timestamp = Timestamp {
    sec: 1_600_000_000,
    nsec: 0,
};

impl MemLayer {
    /// An empty layer (a root directory) to add entries to.
    pub fn builder() -> MemLayerBuilder {
        let root = MemInode::new(FileKind::Directory, 0o755, Arc::from(&b""[..]));
        let mut dirs = HashMap::new();
        dirs.insert(LayerPath::root(), BTreeMap::new());
        MemLayerBuilder {
            layer: MemLayer {
                inodes: vec![root],
                dirs,
                opaque: Default::default(),
            },
        }
    }

    /// The inode at `path`; `None` when missing, whited out, or below a non-directory.
    fn resolve(&self, path: &LayerPath) -> Option<usize> {
        let (parent, name) = match path.split_last() {
            None => return Some(0),
            Some(p) => p,
        };
        match self.dirs.get(&parent)?.get(name)? {
            MemEntry::Inode(i) => Some(*i),
            MemEntry::Whiteout => None,
        }
    }

    fn inode(&self, path: &LayerPath) -> Result<&MemInode> {
        self.resolve(path)
            .map(|i| &self.inodes[i])
            .ok_or(Errno::ENOENT)
    }

    fn attr(&self, i: usize) -> Attr {
        let n = &self.inodes[i];
        let size = match n.kind {
            FileKind::Regular | FileKind::Symlink => n.data.len() as u64,
            FileKind::Directory => 4096,
            _ => 0,
        };
        Attr {
            ino: i as u64 + 1,
            kind: n.kind,
            perm: n.perm,
            nlink: n.nlink.max(1),
            uid: n.uid,
            gid: n.gid,
            rdev: n.rdev,
            size,
            blocks: size.div_ceil(512),
            blksize: 4096,
            atime: n.mtime,
            mtime: n.mtime,
            ctime: n.mtime,
        }
    }
}

impl MemInode {
    fn new(kind: FileKind, perm: u32, data: Arc<[u8]>) -> MemInode {
        MemInode {
            kind,
            perm,
            uid: 0,
            gid: 0,
            rdev: 0,
            mtime: DEFAULT_MTIME,
            data,
            xattrs: BTreeMap::new(),
            nlink: 1,
        }
    }
}

impl MemLayerBuilder {
    /// Makes every directory on the way to `path`'s parent; returns the parent and name.
    fn parent(&mut self, path: &[u8]) -> (LayerPath, OsString) {
        let path = LayerPath::from_bytes(path);
        let (parent, name) = path.split_last().expect("a MemLayer entry needs a name");
        let name = name.to_os_string();
        let mut at = LayerPath::root();
        for comp in parent.components() {
            let next = at.join(comp);
            if !self.layer.dirs.contains_key(&next) {
                self.put(&at, comp.to_os_string(), FileKind::Directory, 0o755, &[]);
            }
            at = next;
        }
        (parent, name)
    }

    /// Puts a new inode at `dir/name`.
    fn put(&mut self, dir: &LayerPath, name: OsString, kind: FileKind, perm: u32, data: &[u8]) {
        let i = self.layer.inodes.len();
        self.layer
            .inodes
            .push(MemInode::new(kind, perm, Arc::from(data)));
        let path = dir.join(&name);
        match kind {
            FileKind::Directory => {
                self.layer.dirs.entry(path).or_default();
            }
            _ => {
                self.layer.dirs.remove(&path);
            }
        }
        self.layer
            .dirs
            .get_mut(dir)
            .expect("parent made")
            .insert(name, MemEntry::Inode(i));
    }

    fn add(mut self, path: impl AsRef<[u8]>, kind: FileKind, perm: u32, data: &[u8]) -> Self {
        let (dir, name) = self.parent(path.as_ref());
        let existing = self.layer.resolve(&dir.join(&name));
        match existing {
            // A directory over a directory keeps its children, as a tar extracts.
            Some(i) if kind == FileKind::Directory && self.layer.inodes[i].kind == kind => {
                self.layer.inodes[i].perm = perm;
            }
            _ => self.put(&dir, name, kind, perm, data),
        }
        self
    }

    fn with_inode(mut self, path: impl AsRef<[u8]>, f: impl FnOnce(&mut MemInode)) -> Self {
        let path = LayerPath::from_bytes(path.as_ref());
        let i = self
            .layer
            .resolve(&path)
            .unwrap_or_else(|| panic!("MemLayer: no entry {path:?}"));
        f(&mut self.layer.inodes[i]);
        self
    }

    /// A regular file, `0644`.
    pub fn file(self, path: impl AsRef<[u8]>, content: impl AsRef<[u8]>) -> Self {
        self.add(path, FileKind::Regular, 0o644, content.as_ref())
    }

    /// A directory, `0755`.
    pub fn dir(self, path: impl AsRef<[u8]>) -> Self {
        self.add(path, FileKind::Directory, 0o755, &[])
    }

    /// A symbolic link to `target`.
    pub fn symlink(self, path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Self {
        self.add(path, FileKind::Symlink, 0o777, target.as_ref())
    }

    /// A hard link `path` to the existing non-directory `target`.
    pub fn hardlink(mut self, path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Self {
        let target = LayerPath::from_bytes(target.as_ref());
        let i = self
            .layer
            .resolve(&target)
            .unwrap_or_else(|| panic!("MemLayer: no hard-link target {target:?}"));
        assert!(self.layer.inodes[i].kind != FileKind::Directory);
        let (dir, name) = self.parent(path.as_ref());
        self.layer.inodes[i].nlink += 1;
        self.layer
            .dirs
            .get_mut(&dir)
            .expect("parent made")
            .insert(name, MemEntry::Inode(i));
        self
    }

    /// A whiteout: `path` is deleted in the layers below.
    pub fn whiteout(mut self, path: impl AsRef<[u8]>) -> Self {
        let (dir, name) = self.parent(path.as_ref());
        self.layer.dirs.remove(&dir.join(&name));
        self.layer
            .dirs
            .get_mut(&dir)
            .expect("parent made")
            .insert(name, MemEntry::Whiteout);
        self
    }

    /// An opaque directory (made if missing): it hides the layers below it.
    pub fn opaque(self, path: impl AsRef<[u8]>) -> Self {
        let mut b = self.dir(path.as_ref());
        b.layer.opaque.insert(LayerPath::from_bytes(path.as_ref()));
        b
    }

    /// A character or block device.
    pub fn device(self, path: impl AsRef<[u8]>, kind: FileKind, rdev: u64) -> Self {
        assert!(matches!(kind, FileKind::CharDevice | FileKind::BlockDevice));
        let path = path.as_ref().to_vec();
        self.add(&path, kind, 0o644, &[])
            .with_inode(&path, |n| n.rdev = rdev)
    }

    /// A named pipe.
    pub fn fifo(self, path: impl AsRef<[u8]>) -> Self {
        self.add(path, FileKind::Fifo, 0o644, &[])
    }

    /// Sets the permission bits of `path`.
    pub fn mode(self, path: impl AsRef<[u8]>, perm: u32) -> Self {
        self.with_inode(path, |n| n.perm = perm & 0o7777)
    }

    /// Sets the owner of `path`.
    pub fn owner(self, path: impl AsRef<[u8]>, uid: u32, gid: u32) -> Self {
        self.with_inode(path, |n| (n.uid, n.gid) = (uid, gid))
    }

    /// Sets the modification time of `path`.
    pub fn mtime(self, path: impl AsRef<[u8]>, sec: i64) -> Self {
        self.with_inode(path, |n| n.mtime = Timestamp { sec, nsec: 0 })
    }

    /// Sets extended attribute `key` of `path`.
    pub fn xattr(
        self,
        path: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Self {
        let key = OsStr::from_bytes(key.as_ref()).to_os_string();
        let value = value.as_ref().to_vec();
        self.with_inode(path, |n| {
            n.xattrs.insert(key, value);
        })
    }

    pub fn build(self) -> MemLayer {
        self.layer
    }
}

/// An open file of a [`MemLayer`].
#[derive(Debug)]
struct MemFile(Arc<[u8]>);

impl LayerFile for MemFile {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let start = (offset.min(self.len())) as usize;
        let n = buf.len().min(self.0.len() - start);
        buf[..n].copy_from_slice(&self.0[start..start + n]);
        Ok(n)
    }
}

impl Layer for MemLayer {
    fn lookup(&self, dir: &LayerPath, name: &OsStr) -> Result<Lookup> {
        let Some(entries) = self.dirs.get(dir) else {
            return Ok(Lookup::Missing);
        };
        Ok(match entries.get(name) {
            None => Lookup::Missing,
            Some(MemEntry::Whiteout) => Lookup::Whiteout,
            Some(MemEntry::Inode(i)) => {
                let attr = self.attr(*i);
                Lookup::Found {
                    opaque: attr.kind == FileKind::Directory
                        && self.opaque.contains(&dir.join(name)),
                    attr,
                }
            }
        })
    }

    fn stat(&self, path: &LayerPath) -> Result<Attr> {
        Ok(self.attr(self.resolve(path).ok_or(Errno::ENOENT)?))
    }

    fn read_dir(&self, dir: &LayerPath) -> Result<Vec<LayerDirEntry>> {
        let entries = match self.dirs.get(dir) {
            Some(e) => e,
            None if self.resolve(dir).is_some() => return Err(Errno::ENOTDIR),
            None => return Err(Errno::ENOENT),
        };
        Ok(entries
            .iter()
            .map(|(name, e)| match e {
                MemEntry::Whiteout => LayerDirEntry::Whiteout(name.clone()),
                MemEntry::Inode(i) => LayerDirEntry::Entry {
                    name: name.clone(),
                    ino: *i as u64 + 1,
                    kind: self.inodes[*i].kind,
                },
            })
            .collect())
    }

    fn open(&self, path: &LayerPath) -> Result<Box<dyn LayerFile>> {
        let n = self.inode(path)?;
        match n.kind {
            FileKind::Regular => Ok(Box::new(MemFile(n.data.clone()))),
            FileKind::Directory => Err(Errno::EISDIR),
            _ => Err(Errno::EINVAL),
        }
    }

    fn read_link(&self, path: &LayerPath) -> Result<Vec<u8>> {
        let n = self.inode(path)?;
        match n.kind {
            FileKind::Symlink => Ok(n.data.to_vec()),
            _ => Err(Errno::EINVAL),
        }
    }

    fn list_xattrs(&self, path: &LayerPath) -> Result<Vec<OsString>> {
        Ok(self.inode(path)?.xattrs.keys().cloned().collect())
    }

    fn get_xattr(&self, path: &LayerPath, key: &OsStr) -> Result<Option<Vec<u8>>> {
        Ok(self.inode(path)?.xattrs.get(key).cloned())
    }

    fn statfs(&self) -> Result<StatVfs> {
        let bytes: u64 = self.inodes.iter().map(|n| n.data.len() as u64).sum();
        Ok(StatVfs {
            f_bsize: 4096,
            f_frsize: 4096,
            f_blocks: bytes.div_ceil(4096),
            f_bfree: 0,
            f_bavail: 0,
            f_files: self.inodes.len() as u64,
            f_ffree: 0,
            f_favail: 0,
            f_fsid: 0,
            f_flag: rustix::fs::StatVfsMountFlags::RDONLY,
            f_namemax: crate::host::NAME_MAX as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> LayerPath {
        LayerPath::from_bytes(s.as_bytes())
    }

    #[test]
    fn builds_every_kind_of_entry() {
        let l = MemLayer::builder()
            .file("a/f", "hello")
            .mode("a/f", 0o4750)
            .owner("a/f", 1000, 100)
            .xattr("a/f", "user.k", "v")
            .hardlink("a/g", "a/f")
            .symlink("s", "a/f")
            .whiteout("gone")
            .opaque("o")
            .device("null", FileKind::CharDevice, 0x103)
            .fifo("p")
            .build();
        let f = l.stat(&p("a/f")).unwrap();
        assert_eq!(
            (f.kind, f.perm, f.uid, f.gid),
            (FileKind::Regular, 0o4750, 1000, 100)
        );
        assert_eq!((f.size, f.nlink), (5, 2));
        assert_eq!(l.stat(&p("a/g")).unwrap().ino, f.ino);
        assert_eq!(l.stat(&p("a")).unwrap().kind, FileKind::Directory);
        assert_eq!(l.read_link(&p("s")).unwrap(), b"a/f");
        assert_eq!(
            l.get_xattr(&p("a/f"), OsStr::new("user.k")).unwrap(),
            Some(b"v".to_vec())
        );
        assert!(matches!(
            l.lookup(&LayerPath::root(), OsStr::new("gone")).unwrap(),
            Lookup::Whiteout
        ));
        assert!(matches!(
            l.lookup(&LayerPath::root(), OsStr::new("o")).unwrap(),
            Lookup::Found { opaque: true, .. }
        ));
        assert_eq!(l.stat(&p("null")).unwrap().rdev, 0x103);
        assert_eq!(l.stat(&p("p")).unwrap().kind, FileKind::Fifo);
        let names: Vec<_> = l
            .read_dir(&LayerPath::root())
            .unwrap()
            .into_iter()
            .map(|e| match e {
                LayerDirEntry::Entry { name, .. } => name,
                LayerDirEntry::Whiteout(name) => OsString::from(format!("-{name:?}")),
            })
            .collect();
        assert_eq!(names.len(), 6);
        assert_eq!(l.read_dir(&p("a/f")).unwrap_err(), Errno::ENOTDIR);
    }

    #[test]
    fn files_read_and_copy_through_the_reader() {
        let l = MemLayer::builder().file("f", "0123456789").build();
        let f = l.open(&p("f")).unwrap();
        assert!(f.host_fd().is_none());
        let mut buf = [0u8; 4];
        assert_eq!(f.read_at(&mut buf, 8).unwrap(), 2);
        assert_eq!(&buf[..2], b"89");
        assert_eq!(f.read_at(&mut buf, 20).unwrap(), 0);
        let dir = tempfile::tempdir().unwrap();
        let dst = std::fs::File::create(dir.path().join("dst")).unwrap();
        f.copy_to(std::os::fd::AsFd::as_fd(&dst)).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("dst")).unwrap(),
            b"0123456789"
        );
        assert_eq!(l.open(&LayerPath::root()).unwrap_err(), Errno::EISDIR);
    }
}
