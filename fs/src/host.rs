//! Access to host directories, one name at a time.
//!
//! Every call takes a directory descriptor and a single name (never a path with `/`), opens
//! with `O_NOFOLLOW`, and so cannot be led out of a layer by a symlink, a `..` or a rename
//! racing with it; it also keeps paths of any depth working, since no call sees more than
//! one component. Extended attributes, which have no `*at()` calls, are reached through
//! `/proc/self/fd/DIRFD/NAME` with the `l*xattr` calls: the directory part is the magic
//! link of a descriptor we hold, the last component is not followed.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use rustix::fs::{AtFlags, Mode, OFlags};

use crate::attr::{Attr, FileKind};
use crate::errno::{Errno, Result};

/// Longest name of a directory entry (Linux `NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// Refuses names no host call may see: empty, `.`, `..`, with `/` or NUL, or too long.
pub fn check_name(name: &OsStr) -> Result<()> {
    let bytes = name.as_bytes();
    if bytes.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    if bytes.is_empty()
        || bytes == b"."
        || bytes == b".."
        || bytes.contains(&b'/')
        || bytes.contains(&0)
    {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// Opens a directory entry as an `O_PATH` handle to walk through; fails with `ENOTDIR` on
/// anything but a directory (a symlink included).
pub fn open_dir_path(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens an entry for I/O. `O_NOFOLLOW` always: a symlink is never opened through.
pub fn open_at(dir: BorrowedFd<'_>, name: &OsStr, flags: OFlags, mode: u32) -> Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )?)
}

/// `lstat` of an entry; `None` when it does not exist.
pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Option<Attr>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(Attr::from_stat(&st).ok_or(Errno::EIO)?)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `fstat` of a descriptor (an `O_PATH` one included).
pub fn stat_fd(fd: BorrowedFd<'_>) -> Result<Attr> {
    Attr::from_stat(&rustix::fs::fstat(fd)?).ok_or(Errno::EIO)
}

/// The `/proc/self/fd` path of an entry below a directory descriptor, for xattr calls.
/// With no name, the path is the descriptor's magic link, which the xattr calls must follow
/// (it leads to the inode itself, never further).
fn proc_path(dir: BorrowedFd<'_>, name: Option<&OsStr>) -> PathBuf {
    use std::os::fd::AsRawFd;
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    if let Some(name) = name {
        p.push(name);
    }
    p
}

/// Reads an extended attribute of an entry (`name` `None`: of the directory itself);
/// `None` when it is not set or the filesystem has no xattrs.
pub fn get_xattr(
    dir: BorrowedFd<'_>,
    name: Option<&OsStr>,
    key: &OsStr,
) -> Result<Option<Vec<u8>>> {
    let path = proc_path(dir, name);
    let mut buf = Vec::with_capacity(256);
    loop {
        let got = if name.is_some() {
            rustix::fs::lgetxattr(&path, key, rustix::buffer::spare_capacity(&mut buf))
        } else {
            rustix::fs::getxattr(&path, key, rustix::buffer::spare_capacity(&mut buf))
        };
        match got {
            Ok(_) => return Ok(Some(buf)),
            Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) => return Ok(None),
            Err(rustix::io::Errno::RANGE) => {
                let size: usize = if name.is_some() {
                    rustix::fs::lgetxattr(&path, key, &mut [0u8; 0][..])?
                } else {
                    rustix::fs::getxattr(&path, key, &mut [0u8; 0][..])?
                };
                buf = Vec::with_capacity(size.max(buf.capacity() * 2));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Lists the extended attribute names of an entry.
pub fn list_xattrs(dir: BorrowedFd<'_>, name: Option<&OsStr>) -> Result<Vec<OsString>> {
    let path = proc_path(dir, name);
    let mut buf = Vec::with_capacity(1024);
    loop {
        let got = if name.is_some() {
            rustix::fs::llistxattr(&path, rustix::buffer::spare_capacity(&mut buf))
        } else {
            rustix::fs::listxattr(&path, rustix::buffer::spare_capacity(&mut buf))
        };
        match got {
            Ok(_) => break,
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(rustix::io::Errno::RANGE) => {
                let size: usize = if name.is_some() {
                    rustix::fs::llistxattr(&path, &mut [0u8; 0][..])?
                } else {
                    rustix::fs::listxattr(&path, &mut [0u8; 0][..])?
                };
                buf = Vec::with_capacity(size.max(buf.capacity() * 2));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(buf
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| OsString::from_vec(n.to_vec()))
        .collect())
}

/// Sets an extended attribute of an entry.
pub fn set_xattr(
    dir: BorrowedFd<'_>,
    name: Option<&OsStr>,
    key: &OsStr,
    value: &[u8],
    flags: i32,
) -> Result<()> {
    let flags = rustix::fs::XattrFlags::from_bits_retain(flags as u32);
    let path = proc_path(dir, name);
    if name.is_some() {
        Ok(rustix::fs::lsetxattr(path, key, value, flags)?)
    } else {
        Ok(rustix::fs::setxattr(path, key, value, flags)?)
    }
}

/// Removes an extended attribute of an entry.
pub fn remove_xattr(dir: BorrowedFd<'_>, name: Option<&OsStr>, key: &OsStr) -> Result<()> {
    let path = proc_path(dir, name);
    if name.is_some() {
        Ok(rustix::fs::lremovexattr(path, key)?)
    } else {
        Ok(rustix::fs::removexattr(path, key)?)
    }
}

/// One raw entry of a host directory.
#[derive(Clone, Debug)]
pub struct HostDirEntry {
    pub name: OsString,
    pub ino: u64,
    /// `None` when the filesystem does not report types in `getdents`.
    pub kind: Option<FileKind>,
}

/// Lists a host directory, without `.` and `..`.
pub fn read_dir(dir: BorrowedFd<'_>) -> Result<Vec<HostDirEntry>> {
    let fd = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut entries = Vec::new();
    let mut it = rustix::fs::Dir::new(fd)?;
    while let Some(entry) = it.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        use rustix::fs::FileType as T;
        let kind = match entry.file_type() {
            T::RegularFile => Some(FileKind::Regular),
            T::Directory => Some(FileKind::Directory),
            T::Symlink => Some(FileKind::Symlink),
            T::CharacterDevice => Some(FileKind::CharDevice),
            T::BlockDevice => Some(FileKind::BlockDevice),
            T::Fifo => Some(FileKind::Fifo),
            T::Socket => Some(FileKind::Socket),
            _ => None,
        };
        entries.push(HostDirEntry {
            name: OsString::from_vec(name.to_vec()),
            ino: entry.ino(),
            kind,
        });
    }
    Ok(entries)
}

/// Reads a symlink's target, as bytes.
pub fn read_link(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Vec<u8>> {
    Ok(rustix::fs::readlinkat(dir, name, Vec::new())?.into_bytes())
}

/// A descriptor that can be shared between the fd caches and the calls using it.
pub type SharedFd = std::sync::Arc<OwnedFd>;

/// Borrows a shared descriptor.
pub fn borrow(fd: &SharedFd) -> BorrowedFd<'_> {
    fd.as_fd()
}
