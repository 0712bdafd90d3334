//! `UpperRef`: one upper entry to read or change, and the host calls every typed
//! operation of the upper is made of.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};

use crate::attr::{Attr, FileKind};
use crate::errno::{Errno, Result};
use crate::host::{self, SharedFd};

/// An upper entry to read or change: a directory and a name, or (no name) a descriptor of
/// the file itself (the upper root, a held handle).
#[derive(Clone, Debug)]
pub struct UpperRef {
    pub dir: SharedFd,
    pub name: Option<OsString>,
    /// The hard-link index entry, or a held handle: its host link count may be 1 while the
    /// union count is kept in the link-count bookkeeping.
    pub shared: bool,
}

/// The host file type of a kind.
pub fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::Regular => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::CharDevice => FileType::CharacterDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::Fifo => FileType::Fifo,
        FileKind::Socket => FileType::Socket,
    }
}

/// The atime and mtime of `attr`, as utimensat takes them.
pub fn timestamps_of(attr: &Attr) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: attr.atime.sec,
            tv_nsec: attr.atime.nsec.into(),
        },
        last_modification: Timespec {
            tv_sec: attr.mtime.sec,
            tv_nsec: attr.mtime.nsec.into(),
        },
    }
}

/// Runs `change`, which adds a copied-up name to the upper directory `dir`, and puts the
/// directory's times back: a copy-up is no change of the directory (overlayfs's
/// `ovl_set_timestamps` on the parent after copy-up does the same).
pub fn keeping_dir_times<T>(dir: &SharedFd, change: impl FnOnce() -> Result<T>) -> Result<T> {
    let entry = UpperRef::of(dir.clone());
    let before = entry.stat()?;
    let out = change()?;
    entry.utimes(&timestamps_of(&before))?;
    Ok(out)
}

impl UpperRef {
    /// Entry `name` of directory `dir`.
    pub fn at(dir: SharedFd, name: OsString) -> UpperRef {
        UpperRef {
            dir,
            name: Some(name),
            shared: false,
        }
    }

    /// The file a descriptor holds (the upper root).
    pub fn of(fd: SharedFd) -> UpperRef {
        UpperRef {
            dir: fd,
            name: None,
            shared: false,
        }
    }

    /// A held handle on a file that may have lost its name.
    pub fn held(fd: SharedFd) -> UpperRef {
        UpperRef {
            dir: fd,
            name: None,
            shared: true,
        }
    }

    /// The `/proc/self/fd` path of the descriptor, for calls that have no `*at()` form on
    /// an `O_PATH` handle.
    pub fn proc_path(&self) -> String {
        format!("/proc/self/fd/{}", self.dir.as_raw_fd())
    }

    pub fn chmod(&self, perm: u32) -> Result<()> {
        let mode = Mode::from_raw_mode(perm);
        match &self.name {
            Some(n) => {
                rustix::fs::chmodat(self.dir.as_fd(), n.as_os_str(), mode, AtFlags::empty())?
            }
            None => rustix::fs::chmod(self.proc_path().as_str(), mode)?,
        }
        Ok(())
    }

    pub(super) fn chown(&self, uid: Option<u32>, gid: Option<u32>) -> rustix::io::Result<()> {
        let uid = uid.map(rustix::fs::Uid::from_raw);
        let gid = gid.map(rustix::fs::Gid::from_raw);
        match &self.name {
            Some(n) => rustix::fs::chownat(
                self.dir.as_fd(),
                n.as_os_str(),
                uid,
                gid,
                AtFlags::SYMLINK_NOFOLLOW,
            ),
            None => rustix::fs::chown(self.proc_path().as_str(), uid, gid),
        }
    }

    pub fn utimes(&self, times: &Timestamps) -> Result<()> {
        match &self.name {
            Some(n) => rustix::fs::utimensat(
                self.dir.as_fd(),
                n.as_os_str(),
                times,
                AtFlags::SYMLINK_NOFOLLOW,
            )?,
            None => rustix::fs::utimensat(
                rustix::fs::CWD,
                self.proc_path().as_str(),
                times,
                AtFlags::empty(),
            )?,
        }
        Ok(())
    }

    pub fn open(&self, flags: OFlags) -> Result<std::fs::File> {
        Ok(std::fs::File::from(match &self.name {
            Some(n) => host::open_at(self.dir.as_fd(), n, flags, 0)?,
            None => rustix::fs::open(
                self.proc_path().as_str(),
                flags | OFlags::CLOEXEC,
                Mode::empty(),
            )?,
        }))
    }

    /// The host attributes, link count as the host has it.
    pub fn stat(&self) -> Result<Attr> {
        match &self.name {
            Some(n) => host::stat_at(self.dir.as_fd(), n)?.ok_or(Errno::ENOENT),
            None => host::stat_fd(self.dir.as_fd()),
        }
    }

    pub fn read_link(&self) -> Result<Vec<u8>> {
        // A held symlink is an O_PATH|O_NOFOLLOW handle: readlinkat with an empty name.
        let name = self.name.as_deref().unwrap_or(OsStr::new(""));
        host::read_link(self.dir.as_fd(), name)
    }

    pub fn set_xattr(&self, key: &OsStr, value: &[u8], flags: i32) -> Result<()> {
        host::set_xattr(self.dir.as_fd(), self.name.as_deref(), key, value, flags)
    }

    pub fn get_xattr(&self, key: &OsStr) -> Result<Option<Vec<u8>>> {
        host::get_xattr(self.dir.as_fd(), self.name.as_deref(), key)
    }

    pub fn list_xattrs(&self) -> Result<Vec<OsString>> {
        host::list_xattrs(self.dir.as_fd(), self.name.as_deref())
    }

    pub fn remove_xattr(&self, key: &OsStr) -> Result<()> {
        host::remove_xattr(self.dir.as_fd(), self.name.as_deref(), key)
    }

    /// Makes a hard link to this entry at `dir/name`.
    pub fn link_to(&self, dir: BorrowedFd<'_>, name: &OsStr) -> Result<()> {
        match &self.name {
            Some(n) => {
                rustix::fs::linkat(self.dir.as_fd(), n.as_os_str(), dir, name, AtFlags::empty())?
            }
            None => rustix::fs::linkat(
                rustix::fs::CWD,
                self.proc_path().as_str(),
                dir,
                name,
                AtFlags::SYMLINK_FOLLOW,
            )?,
        }
        Ok(())
    }
}
