//! A union's whole merged view as one tar (`strata export`): every name the union shows,
//! depth first in name order (so the same view gives the same bytes), read through the
//! union's own calls as a FUSE client would read them — owners and modes as the view shows
//! them (rootless overrides applied), the union's bookkeeping xattrs left out, a
//! metadata-only copy-up's data from its lower. A hard link's later names are link entries to
//! its first (the union's inode numbers are the groups). The root itself has no entry, as in
//! docker's export. Sockets are left out, as in a layer.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tar::{Builder, EntryType};

use super::writer::{header, pax, Exact};
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
    let mut h = header(EntryType::Regular);
    h.set_mode(a.perm);
    h.set_uid(a.uid.into());
    h.set_gid(a.gid.into());
    h.set_mtime(a.mtime.sec.max(0) as u64);
    match a.kind {
        FileKind::Directory => {
            h.set_entry_type(EntryType::Directory);
            b.append_data(&mut h, path, std::io::empty())
                .map_err(werr)?;
            walk(union, ino, path, b, links)?;
        }
        FileKind::Regular => {
            h.set_size(a.size);
            let (fh, f) = union.open(ino, libc::O_RDONLY).map_err(merr)?;
            let file = f.file.try_clone().map_err(werr);
            union.release(fh);
            let (offset, left) = match f.range {
                Some(r) => (r.offset, a.size.min(r.len)),
                None => (0, a.size),
            };
            let data = Exact {
                file: file?,
                offset,
                left,
            };
            b.append_data(&mut h, path, data).map_err(werr)?;
        }
        FileKind::Symlink => {
            h.set_entry_type(EntryType::Symlink);
            let target = union.readlink(ino).map_err(merr)?;
            b.append_link(&mut h, path, Path::new(OsStr::from_bytes(&target)))
                .map_err(werr)?;
        }
        FileKind::CharDevice | FileKind::BlockDevice | FileKind::Fifo => {
            h.set_entry_type(match a.kind {
                FileKind::CharDevice => EntryType::Char,
                FileKind::BlockDevice => EntryType::Block,
                _ => EntryType::Fifo,
            });
            if a.kind != FileKind::Fifo {
                h.set_device_major(rustix::fs::major(a.rdev))
                    .map_err(werr)?;
                h.set_device_minor(rustix::fs::minor(a.rdev))
                    .map_err(werr)?;
            }
            b.append_data(&mut h, path, std::io::empty())
                .map_err(werr)?;
        }
        FileKind::Socket => {}
    }
    Ok(())
}
