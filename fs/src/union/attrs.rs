//! Attribute and xattr changes: SETATTR (truncation copies the data up, the rest the
//! metadata only), and the xattr calls, which hide the filesystem's bookkeeping.

use std::ffi::{OsStr, OsString};
use std::sync::Arc;

use rustix::fs::{OFlags, Timespec, Timestamps, UTIME_NOW, UTIME_OMIT};

use super::Union;
use crate::attr::{Attr, Timestamp};
use crate::errno::{Errno, Result};
use crate::inode::Ino;
use crate::upper::UpperRef;

/// A time to set.
#[derive(Clone, Copy, Debug)]
pub enum SetTime {
    Now,
    At(Timestamp),
}

/// The changes of one SETATTR.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    pub fh: Option<u64>,
}

fn timespec(t: Option<SetTime>) -> Timespec {
    match t {
        None => Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        Some(SetTime::Now) => Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_NOW,
        },
        Some(SetTime::At(ts)) => Timespec {
            tv_sec: ts.sec,
            tv_nsec: ts.nsec.into(),
        },
    }
}

impl Union {
    /// SETATTR: truncation copies the data up, other changes the metadata only.
    pub fn setattr(&self, ino: Ino, set: SetAttr) -> Result<Attr> {
        let _ns = self.ns.write().expect("ns");
        let upper = self.upper()?;
        let from_handle = set
            .fh
            .and_then(|fh| self.file_handle(fh).ok())
            .filter(|f| f.upper);
        let from_file = match &from_handle {
            Some(f) => Some(f.upper_file()?),
            None => None,
        };
        let entry = match from_file {
            Some(f) => UpperRef::held(Arc::new(f.try_clone()?.into())),
            None => {
                if set.size.is_some() {
                    self.copy_up(ino)?;
                } else {
                    self.copy_up_meta(ino)?;
                }
                let node = self.node(ino)?;
                self.upper_entry(ino, &node)?
            }
        };
        if let Some(size) = set.size {
            match from_file {
                Some(f) => f.set_len(size)?,
                None => entry.open(OFlags::WRONLY)?.set_len(size)?,
            }
        }
        if set.uid.is_some() || set.gid.is_some() {
            let uid = set.uid.map(|u| self.ids.uid_to_host(u));
            let gid = set.gid.map(|g| self.ids.gid_to_host(g));
            upper.chown(&entry, uid, gid, self.read_override)?;
        }
        if let Some(mode) = set.mode {
            upper.chmod(&entry, mode, self.read_override)?;
        }
        if set.atime.is_some() || set.mtime.is_some() {
            entry.utimes(&Timestamps {
                last_access: timespec(set.atime),
                last_modification: timespec(set.mtime),
            })?;
        }
        let node = self.node(ino)?;
        match from_file {
            Some(f) => self.attr_of_open(ino, &node, f),
            None => self.attr_of(ino, &node),
        }
    }

    pub fn getxattr(&self, ino: Ino, key: &OsStr) -> Result<Vec<u8>> {
        if self.is_private_xattr(key) {
            return Err(Errno::ENODATA);
        }
        let _ns = self.ns.read().expect("ns");
        let node = self.node(ino)?;
        let loc = self.location(ino, &node)?;
        self.location_xattr(&loc, key)?.ok_or(Errno::ENODATA)
    }

    pub fn listxattr(&self, ino: Ino) -> Result<Vec<OsString>> {
        let _ns = self.ns.read().expect("ns");
        let node = self.node(ino)?;
        let loc = self.location(ino, &node)?;
        Ok(self
            .location_xattr_names(&loc)?
            .into_iter()
            .filter(|k| !self.is_private_xattr(k))
            .collect())
    }

    pub fn setxattr(&self, ino: Ino, key: &OsStr, value: &[u8], flags: i32) -> Result<()> {
        if self.is_private_xattr(key) {
            return Err(Errno::EPERM);
        }
        let _ns = self.ns.write().expect("ns");
        self.copy_up_meta(ino)?;
        let node = self.node(ino)?;
        self.upper_entry(ino, &node)?.set_xattr(key, value, flags)
    }

    pub fn removexattr(&self, ino: Ino, key: &OsStr) -> Result<()> {
        if self.is_private_xattr(key) {
            return Err(Errno::ENODATA);
        }
        let _ns = self.ns.write().expect("ns");
        {
            // Removing an attribute the file does not have changes nothing: no copy-up.
            let node = self.node(ino)?;
            let loc = self.location(ino, &node)?;
            if self.location_xattr(&loc, key)?.is_none() {
                return Err(Errno::ENODATA);
            }
        }
        self.copy_up_meta(ino)?;
        let node = self.node(ino)?;
        self.upper_entry(ino, &node)?.remove_xattr(key)
    }
}
