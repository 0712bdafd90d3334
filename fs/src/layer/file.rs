//! An open lower file: a reader object, not a host `File`.
//!
//! The union reads a lower file through [`LayerFile`] only: positional reads, the length,
//! and a copy into an upper file. Where the bytes are a whole host file ([`HostFile`]: a
//! `DirLayer` file) it also hands out the descriptor, which keeps the fast paths: FUSE
//! passthrough, `copy_file_range` (a reflink where the filesystem can) and `SEEK_DATA`.
//! A file whose bytes are elsewhere (a byte range of a layer tar, chunks fetched on demand)
//! has no descriptor: the daemon serves its reads, and `copy_to` copies through `read_at`
//! unless the source knows better.

use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::FileExt;

use rustix::fs::SeekFrom;

use crate::errno::Result;

/// The bytes of an open lower file.
pub trait LayerFile: Send + Sync + fmt::Debug {
    /// The file's size in bytes.
    fn len(&self) -> u64;

    /// Whether the file holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end of the file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize>;

    /// The host descriptor holding the whole file, byte for byte, when there is one: FUSE
    /// passthrough and `SEEK_DATA`/`SEEK_HOLE` need it.
    fn host_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// Writes the whole file into `dst` at offset 0 and sets `dst`'s size to it (copy-up).
    fn copy_to(&self, dst: BorrowedFd<'_>) -> Result<()> {
        copy_by_reading(self, dst)
    }
}

/// A lower file that is a whole host file.
#[derive(Debug)]
pub struct HostFile {
    file: File,
    len: u64,
}

impl HostFile {
    /// Takes `file`, whose size is read once: a layer does not change while mounted.
    pub fn new(file: File) -> Result<HostFile> {
        let len = file.metadata()?.len();
        Ok(HostFile { file, len })
    }
}

impl LayerFile for HostFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        read_full_at(&self.file, buf, offset)
    }

    fn host_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.file.as_fd())
    }

    fn copy_to(&self, dst: BorrowedFd<'_>) -> Result<()> {
        copy_host_range(self.file.as_fd(), 0, self.len, dst, true)
    }
}

/// `pread` until `buf` is full or the file ends.
pub fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// Copies `len` bytes of host file `src` from `base` into `dst` at offset 0, with
/// `copy_file_range`; `sparse` copies only the data extents (a whole host file may have
/// holes; a range of a tar has none).
pub fn copy_host_range(
    src: BorrowedFd<'_>,
    base: u64,
    len: u64,
    dst: BorrowedFd<'_>,
    sparse: bool,
) -> Result<()> {
    rustix::fs::ftruncate(dst, len)?;
    let mut pos = 0u64;
    while pos < len {
        let (data, hole) = if sparse {
            let data = match rustix::fs::seek(src, SeekFrom::Data(pos)) {
                Ok(d) => d,
                Err(rustix::io::Errno::NXIO) => break,
                // No SEEK_DATA here: copy everything from `pos`.
                Err(rustix::io::Errno::INVAL) => pos,
                Err(e) => return Err(e.into()),
            };
            let hole = match rustix::fs::seek(src, SeekFrom::Hole(data)) {
                Ok(h) => h.min(len),
                Err(_) => len,
            };
            (data, hole)
        } else {
            (pos, len)
        };
        let mut off_in = base + data;
        let mut off_out = data;
        let end_in = base + hole;
        while off_in < end_in {
            let want = (end_in - off_in).min(WRITEBACK_CHUNK) as usize;
            let at = off_out;
            match rustix::fs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want)
            {
                Ok(0) => break,
                Ok(n) => start_writeback(dst, at, n as u64),
                Err(rustix::io::Errno::XDEV)
                | Err(rustix::io::Errno::NOSYS)
                | Err(rustix::io::Errno::OPNOTSUPP)
                | Err(rustix::io::Errno::INVAL) => {
                    copy_fd_with_buffer(src, dst, &mut off_in, &mut off_out, end_in)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        pos = hole.max(off_in - base);
    }
    Ok(())
}

/// How much a copy-up copies between two writeback starts: large enough for few calls,
/// small enough that the disk works while the copy goes on.
const WRITEBACK_CHUNK: u64 = 32 << 20;

/// Starts writing `len` bytes of `fd` at `offset` to the disk without waiting, so the
/// copy-up's final sync finds most of its data already written (the sync overlapped with
/// the copy). Only a hint: a failure shows at that sync.
#[allow(unsafe_code)]
fn start_writeback(fd: BorrowedFd<'_>, offset: u64, len: u64) {
    // SAFETY: sync_file_range takes no pointers; `fd` is a live descriptor for the call.
    unsafe {
        libc::sync_file_range(
            fd.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// The plain read/write loop, for sources `copy_file_range` does not take.
fn copy_fd_with_buffer(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    off_in: &mut u64,
    off_out: &mut u64,
    end: u64,
) -> Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    while *off_in < end {
        let want = ((end - *off_in) as usize).min(buf.len());
        let n = rustix::io::pread(src, &mut buf[..want], *off_in)?;
        if n == 0 {
            break;
        }
        write_all_at(dst, &buf[..n], *off_out)?;
        start_writeback(dst, *off_out, n as u64);
        *off_in += n as u64;
        *off_out += n as u64;
    }
    Ok(())
}

fn write_all_at(dst: BorrowedFd<'_>, buf: &[u8], offset: u64) -> Result<()> {
    let mut written = 0;
    while written < buf.len() {
        written += rustix::io::pwrite(dst, &buf[written..], offset + written as u64)?;
    }
    Ok(())
}

/// The generic copy-up of a file without a host descriptor: `read_at` into a buffer,
/// `pwrite` out.
pub fn copy_by_reading<F: LayerFile + ?Sized>(src: &F, dst: BorrowedFd<'_>) -> Result<()> {
    let len = src.len();
    rustix::fs::ftruncate(dst, len)?;
    let mut buf = vec![0u8; (len.min(1 << 20) as usize).max(1)];
    let mut pos = 0u64;
    while pos < len {
        let want = ((len - pos) as usize).min(buf.len());
        let n = src.read_at(&mut buf[..want], pos)?;
        if n == 0 {
            break;
        }
        write_all_at(dst, &buf[..n], pos)?;
        pos += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_keeps_holes_and_data() {
        use std::io::{Seek, Write};
        let dir = tempfile::tempdir().unwrap();
        let mut src = File::create(dir.path().join("src")).unwrap();
        src.write_all(b"head").unwrap();
        src.seek(std::io::SeekFrom::Start(8 << 20)).unwrap();
        src.write_all(b"tail").unwrap();
        let src = HostFile::new(File::open(dir.path().join("src")).unwrap()).unwrap();
        let dst = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.path().join("dst"))
            .unwrap();
        src.copy_to(dst.as_fd()).unwrap();
        let got = std::fs::read(dir.path().join("dst")).unwrap();
        let want = std::fs::read(dir.path().join("src")).unwrap();
        assert_eq!(got, want);
        // The copy is sparse: the hole is not written.
        use std::os::unix::fs::MetadataExt;
        assert!(dst.metadata().unwrap().blocks() < 1024);
        // a byte range of a host file, as a file inside a layer's tar is
        copy_host_range(src.host_fd().unwrap(), 2, 4, dst.as_fd(), false).unwrap();
        assert_eq!(std::fs::read(dir.path().join("dst")).unwrap(), b"ad\0\0");
        // and through reads only, as a file without a host descriptor is copied
        copy_by_reading(&src, dst.as_fd()).unwrap();
        assert_eq!(std::fs::read(dir.path().join("dst")).unwrap(), want);
    }
}
