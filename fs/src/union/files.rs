//! Open files: a handle on an upper file (reads and writes go to the host) or on a lower
//! file's reader (reads only); seeking and statfs.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rustix::fs::OFlags;

use super::{Handle, Location, Union};
use crate::attr::FileKind;
use crate::errno::{Errno, Result};
use crate::inode::Ino;
use crate::layer::{read_full_at, LayerFile, StatVfs};

/// An open file of the union.
#[derive(Debug)]
pub struct OpenFile {
    pub(super) data: FileData,
    pub ino: Ino,
    /// The file is a host file that writes may go to (an upper file).
    pub upper: bool,
}

/// What an open file reads from.
#[derive(Debug)]
pub(super) enum FileData {
    /// An upper file (or its index entry): reads and writes go to the host file.
    Upper(File),
    /// A lower file, through its layer's reader.
    Lower(Box<dyn LayerFile>),
}

impl OpenFile {
    /// The host descriptor holding the whole file, for FUSE passthrough: an upper file, or
    /// a lower one that is a whole host file. `None` for a file the daemon must serve.
    pub fn host_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.data {
            FileData::Upper(f) => Some(f.as_fd()),
            FileData::Lower(l) => l.host_fd(),
        }
    }

    /// The upper file writes go to; `EBADF` for a lower file (opened read-only).
    pub(super) fn upper_file(&self) -> Result<&File> {
        match &self.data {
            FileData::Upper(f) => Ok(f),
            FileData::Lower(_) => Err(Errno::EBADF),
        }
    }
}

impl Union {
    pub(super) fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().expect("handles").insert(fh, h);
        fh
    }

    /// Re-creates handle `fh`, which a previous server of this connection handed the kernel:
    /// a file open of node `ino` with `flags` (what creates or truncates left out: that was
    /// done when it was first opened), or a directory handle when `flags` is `None`.
    pub fn reopen_handle(&self, fh: u64, ino: Ino, flags: Option<i32>) -> Result<()> {
        let h = match flags {
            Some(f) => {
                let (tmp, _) =
                    self.open(ino, f & !(libc::O_TRUNC | libc::O_CREAT | libc::O_EXCL))?;
                let mut handles = self.handles.lock().expect("handles");
                handles.remove(&tmp).ok_or(Errno::EIO)?
            }
            None => {
                self.opendir(ino).map(|tmp| self.release(tmp))?;
                Handle::Dir(None)
            }
        };
        self.handles.lock().expect("handles").insert(fh, h);
        self.skip_handles(fh + 1);
        Ok(())
    }

    /// Hands out no handle number below `next` from now on (numbers a previous server of
    /// this connection gave the kernel stay its).
    pub fn skip_handles(&self, next: u64) {
        self.next_handle.fetch_max(next, Ordering::Relaxed);
    }

    pub fn file_handle(&self, fh: u64) -> Result<Arc<OpenFile>> {
        match self.handles.lock().expect("handles").get(&fh) {
            Some(Handle::File(f)) => Ok(f.clone()),
            _ => Err(Errno::EBADF),
        }
    }

    /// FUSE OPEN. Opening for writing (or with O_TRUNC) copies the file up first.
    pub fn open(&self, ino: Ino, flags: i32) -> Result<(u64, Arc<OpenFile>)> {
        let acc = flags & libc::O_ACCMODE;
        let writing = acc != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
        let pass = OFlags::from_bits_retain(
            (flags
                & !(libc::O_CREAT
                    | libc::O_EXCL
                    | libc::O_NOCTTY
                    | libc::O_NOFOLLOW
                    | libc::O_CLOEXEC)) as u32,
        );
        if self.node(ino)?.kind == FileKind::Directory {
            return Err(Errno::EISDIR);
        }
        let opened = if writing {
            let _ns = self.ns.write().expect("ns");
            self.copy_up(ino)?;
            let node = self.node(ino)?;
            self.open_location(&self.location(ino, &node)?, pass)?
        } else {
            let _ns = self.ns.read().expect("ns");
            let node = self.node(ino)?;
            let loc = if node.place.metacopy {
                Location::Lower(node.place.origin.clone().ok_or(Errno::EIO)?)
            } else {
                self.location(ino, &node)?
            };
            self.open_location(&loc, pass)?
        };
        let upper = matches!(opened, FileData::Upper(_));
        let of = Arc::new(OpenFile {
            data: opened,
            ino,
            upper,
        });
        Ok((self.add_handle(Handle::File(of.clone())), of))
    }

    fn open_location(&self, loc: &Location, flags: OFlags) -> Result<FileData> {
        match loc {
            Location::Upper(e) => Ok(FileData::Upper(e.open(flags)?)),
            Location::Lower(r) => Ok(FileData::Lower(self.lowers[r.layer].open(&r.path)?)),
        }
    }

    /// FUSE READ into `buf` (resized to what was read).
    pub fn read(&self, fh: u64, offset: u64, size: u32, buf: &mut Vec<u8>) -> Result<()> {
        let f = self.file_handle(fh)?;
        buf.resize(size as usize, 0);
        let n = match &f.data {
            FileData::Upper(file) => read_full_at(file, buf, offset)?,
            FileData::Lower(l) => l.read_at(buf, offset)?,
        };
        buf.truncate(n);
        Ok(())
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        let f = self.file_handle(fh)?;
        f.upper_file()?.write_all_at(data, offset)?;
        Ok(data.len() as u32)
    }

    pub fn fsync(&self, fh: u64, datasync: bool) -> Result<()> {
        let f = self.file_handle(fh)?;
        if let Some(u) = &self.upper {
            if !u.fsync {
                return Ok(());
            }
        }
        if let Ok(file) = f.upper_file() {
            if datasync {
                file.sync_data()?;
            } else {
                file.sync_all()?;
            }
        }
        Ok(())
    }

    pub fn fallocate(&self, fh: u64, offset: u64, length: u64, mode: i32) -> Result<()> {
        let f = self.file_handle(fh)?;
        rustix::fs::fallocate(
            f.upper_file()?,
            rustix::fs::FallocateFlags::from_bits_retain(mode as u32),
            offset,
            length,
        )?;
        Ok(())
    }

    pub fn lseek(&self, fh: u64, offset: i64, whence: i32) -> Result<i64> {
        let f = self.file_handle(fh)?;
        let Some(fd) = f.host_fd() else {
            // A lower file without a host file (a range of a tar, chunks) has no holes: all
            // data up to its end.
            let FileData::Lower(l) = &f.data else {
                return Err(Errno::EIO);
            };
            let offset = u64::try_from(offset).map_err(|_| Errno::EINVAL)?;
            return match whence {
                libc::SEEK_DATA if offset < l.len() => Ok(offset as i64),
                libc::SEEK_HOLE if offset < l.len() => Ok(l.len() as i64),
                libc::SEEK_DATA | libc::SEEK_HOLE => Err(Errno(libc::ENXIO)),
                _ => Err(Errno::EINVAL),
            };
        };
        let pos = match whence {
            libc::SEEK_DATA => rustix::fs::SeekFrom::Data(offset as u64),
            libc::SEEK_HOLE => rustix::fs::SeekFrom::Hole(offset as u64),
            libc::SEEK_SET => rustix::fs::SeekFrom::Start(offset as u64),
            libc::SEEK_END => rustix::fs::SeekFrom::End(offset),
            _ => return Err(Errno::EINVAL),
        };
        Ok(rustix::fs::seek(fd, pos)? as i64)
    }

    /// The upper's filesystem; a read-only union reports its top layer's.
    pub fn statfs(&self) -> Result<StatVfs> {
        match (&self.upper, self.lowers.first()) {
            (Some(u), _) => Ok(rustix::fs::fstatvfs(&*u.root)?),
            (None, Some(top)) => top.statfs(),
            (None, None) => Ok(rustix::fs::statvfs("/")?),
        }
    }
}
