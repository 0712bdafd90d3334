//! A union's whole merged view as one tar (`strata export`): every name the union shows,
//! depth first in name order (so the same view gives the same bytes), read through the
//! union's own calls as a FUSE client would read them — owners and modes as the view shows
//! them (rootless overrides applied), the union's bookkeeping xattrs left out, a
//! metadata-only copy-up's data from its lower. A hard link's later names are link entries to
//! its first (the union's inode numbers are the groups). The root itself has no entry, as in
//! docker's export. Sockets are left out, as in a layer.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tar::{Builder, EntryType};

use super::writer::{append_entry, header, pax};
use super::{ChangesError, Result};
use crate::attr::FileKind;
use crate::errno::Errno;
use crate::inode::{Ino, ROOT};
use crate::union::Union;

/// Writes the merged view of `union` to `out` as a tar, and returns `out`.
pub fn export_tar<W: Write>(union: &Union, out: W) -> Result<W> {
    let mut b = Builder::new(out);
    let mut links = HashMap::new();
    walk(union, ROOT, Path::new(""), &mut b, &mut links)?;
    b.into_inner().map_err(|source| ChangesError::Write {
        path: String::new(),
        source,
    })
}

fn lossy(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn walk<W: Write>(
    union: &Union,
    dir: Ino,
    path: &Path,
    b: &mut Builder<W>,
    links: &mut HashMap<u64, PathBuf>,
) -> Result<()> {
    let merr = |source: Errno| ChangesError::Merged {
        path: lossy(path),
        source,
    };
    let fh = union.opendir(dir).map_err(merr)?;
    let listing = union.readdir(fh, dir, 0);
    union.release(fh);
    let mut names: Vec<OsString> = listing
        .map_err(merr)?
        .iter()
        .map(|e| e.name.clone())
        .filter(|n| n != "." && n != "..")
        .collect();
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let child = path.join(&name);
        let entry = union
            .lookup(dir, &name)
            .map_err(|source| ChangesError::Merged {
                path: lossy(&child),
                source,
            })?;
        let ino = entry.attr.ino;
        let r = entry_to_tar(union, ino, &child, b, links);
        union.forget(ino, 1);
        r?;
    }
    Ok(())
}

fn entry_to_tar<W: Write>(
    union: &Union,
    ino: Ino,
    path: &Path,
    b: &mut Builder<W>,
    links: &mut HashMap<u64, PathBuf>,
) -> Result<()> {
    let merr = |source: Errno| ChangesError::Merged {
        path: lossy(path),
        source,
    };
    let werr = |source| ChangesError::Write {
        path: lossy(path),
        source,
    };
    let a = union.getattr(ino, None).map_err(merr)?;
    if a.kind != FileKind::Directory && a.kind != FileKind::Socket && a.nlink > 1 {
        if let Some(first) = links.get(&a.ino) {
            let mut h = header(EntryType::Link);
            return b.append_link(&mut h, path, first).map_err(werr);
        }
        links.insert(a.ino, path.to_path_buf());
    }
    if a.kind == FileKind::Socket {
        return Ok(());
    }
    let mut xattrs = Vec::new();
    for key in union.listxattr(ino).map_err(merr)? {
        match union.getxattr(ino, &key) {
            Ok(v) => xattrs.push((key, v)),
            Err(Errno::ENODATA) => {}
            Err(e) => return Err(merr(e)),
        }
    }
    xattrs.sort();
    if !xattrs.is_empty() {
        pax(b, &lossy(path), &xattrs)?;
    }
    let link = match a.kind {
        FileKind::Symlink => Some(union.readlink(ino).map_err(merr)?),
        _ => None,
    };
    append_entry(b, path, &a, link.as_deref(), || {
        let fh = union.open(ino, libc::O_RDONLY).map_err(merr)?.0;
        Ok(UnionFile {
            union,
            fh,
            offset: 0,
            left: a.size,
        })
    })?;
    if a.kind == FileKind::Directory {
        walk(union, ino, path, b, links)?;
    }
    Ok(())
}

/// Reads exactly `left` bytes of an open union file through the union's own read path (a
/// lower file's bytes need not be a host file): a short file is an error, never a corrupt
/// archive. Releases the handle when dropped.
struct UnionFile<'a> {
    union: &'a Union,
    fh: u64,
    offset: u64,
    left: u64,
}

impl Read for UnionFile<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.left).min(1 << 20) as u32;
        let mut chunk = Vec::new();
        self.union
            .read(self.fh, self.offset, want, &mut chunk)
            .map_err(|e| std::io::Error::from_raw_os_error(e.code()))?;
        if chunk.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file is shorter than its size",
            ));
        }
        buf[..chunk.len()].copy_from_slice(&chunk);
        self.offset += chunk.len() as u64;
        self.left -= chunk.len() as u64;
        Ok(chunk.len())
    }
}

impl Drop for UnionFile<'_> {
    fn drop(&mut self) {
        self.union.release(self.fh);
    }
}
