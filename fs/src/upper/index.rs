//! The upper's hard-link index: `WORK/strata-index/<union ino>`, a link to every copied-up
//! file that had several lower names, so that its other names copy up to the same inode
//! (the kernel's `index`, kept apart from the kernel's own `WORK/index`).

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};

use super::{keeping_dir_times, parse, Upper, UpperRef, NLINK_XATTR};
use crate::errno::{Errno, Result};
use crate::host::{self, SharedFd};

/// Where our hard-link index lives in the work directory.
pub const INDEX_DIR: &str = "strata-index";

impl Upper {
    /// Whether a copied-up file with several lower names (union number `key`) is in the
    /// index.
    pub fn is_indexed(&self, key: u64) -> Result<bool> {
        Ok(host::stat_at(self.index.as_fd(), &index_name(key))?.is_some())
    }

    /// The index entry of union number `key`.
    pub fn index_ref(&self, key: u64) -> UpperRef {
        UpperRef {
            dir: self.index.clone(),
            name: Some(index_name(key)),
            shared: true,
        }
    }

    /// Another name of an indexed lower file copies up: a link to its index entry. The
    /// name moves from the lower count to the host one.
    pub fn link_from_index(&self, key: u64, dir: &SharedFd, name: &OsStr) -> Result<()> {
        let index = self.index_ref(key);
        keeping_dir_times(dir, || {
            rustix::fs::linkat(
                self.index.as_fd(),
                index.name.as_deref().expect("index name"),
                dir.as_fd(),
                name,
                AtFlags::empty(),
            )
            .map_err(Errno::from)
        })?;
        let key = self.xattr(NLINK_XATTR);
        let diff = index.get_xattr(&key)?.and_then(parse::<i64>);
        if let Some(diff) = diff {
            index.set_xattr(&key, (diff - 1).to_string().as_bytes(), 0)?;
        }
        Ok(())
    }
}

/// Moves the index entries an earlier strata kept in `WORK/index` to [`INDEX_DIR`]: ours
/// are named by a union inode number in hex (at most 16 digits), the kernel's by a file
/// handle (at least 42), which stay.
pub(super) fn move_old_index_entries(work: &OwnedFd, index: &OwnedFd) -> std::io::Result<()> {
    let old = match rustix::fs::openat(
        work,
        "index",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let entries =
        host::read_dir(old.as_fd()).map_err(|e| std::io::Error::from_raw_os_error(e.code()))?;
    for e in entries {
        let name = e.name.as_bytes();
        if name.is_empty() || name.len() > 16 || !name.iter().all(u8::is_ascii_hexdigit) {
            continue;
        }
        match rustix::fs::renameat_with(&old, &e.name, index, &e.name, RenameFlags::NOREPLACE) {
            Ok(()) | Err(rustix::io::Errno::EXIST) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

pub(super) fn index_name(key: u64) -> OsString {
    OsString::from(format!("{key:x}"))
}
