//! Where an indexed layer's file contents come from.
//!
//! An index says where each file's bytes are in the layer tar; a [`DataSource`] serves
//! those bytes by offset. [`LocalData`] is the tar on local disk, read with `pread` (and
//! copied up with `copy_file_range`). A source may also be slow or remote (chunks of a
//! registry blob fetched on first read, issue 11): the trait asks for no host descriptor,
//! and every method takes a byte range, so a source can fetch and verify just that.

use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use crate::errno::{Errno, Result};
use crate::layer::{copy_by_reading, copy_host_range, read_full_at, LayerFile, StatVfs};

/// The bytes an index points into: positional reads of verified byte ranges.
pub trait DataSource: Send + Sync + fmt::Debug + 'static {
    /// Length of the whole blob (the layer tar).
    fn len(&self) -> u64;

    /// Whether the blob holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end of the blob. The
    /// bytes must be verified (a remote source checks a chunk's digest before serving it).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize>;

    /// Copies `len` bytes at `offset` into `dst` at offset 0 and sets `dst`'s size (a
    /// copy-up). The default goes through `read_at`.
    fn copy_range_to(&self, offset: u64, len: u64, dst: BorrowedFd<'_>) -> Result<()> {
        copy_by_reading(
            &SourceFile {
                source: RefSource(self),
                offset,
                len,
            },
            dst,
        )
    }

    /// The statistics a read-only union over this layer reports.
    fn statfs(&self) -> Result<StatVfs>;
}

/// The layer tar on local disk.
#[derive(Debug)]
pub struct LocalData {
    file: File,
    len: u64,
}

impl LocalData {
    /// Takes the open tar; its size is read once (a layer's data never changes).
    pub fn new(file: File) -> std::io::Result<LocalData> {
        let len = file.metadata()?.len();
        Ok(LocalData { file, len })
    }
}

impl DataSource for LocalData {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        read_full_at(&self.file, buf, offset)
    }

    fn copy_range_to(&self, offset: u64, len: u64, dst: BorrowedFd<'_>) -> Result<()> {
        // A range of a tar has no holes: copy it all, reflinked where the filesystem can.
        copy_host_range(self.file.as_fd(), offset, len, dst, false)
    }

    fn statfs(&self) -> Result<StatVfs> {
        Ok(rustix::fs::fstatvfs(self.file.as_fd())?)
    }
}

/// A borrowed source, so the default `copy_range_to` can reuse [`SourceFile`].
#[derive(Debug)]
struct RefSource<'a, S: ?Sized>(&'a S);

/// One file of an indexed layer: `len` bytes of its source at `offset`.
#[derive(Debug)]
pub(crate) struct SourceFile<P> {
    pub(crate) source: P,
    pub(crate) offset: u64,
    pub(crate) len: u64,
}

/// What a [`SourceFile`] holds its source by.
pub(crate) trait SourceRef: Send + Sync + fmt::Debug {
    type Source: DataSource + ?Sized;
    fn get(&self) -> &Self::Source;
}

impl<S: DataSource> SourceRef for Arc<S> {
    type Source = S;
    fn get(&self) -> &S {
        self
    }
}

impl<S: DataSource + ?Sized> SourceRef for RefSource<'_, S> {
    type Source = S;
    fn get(&self) -> &S {
        self.0
    }
}

impl<P: SourceRef> LayerFile for SourceFile<P> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        if offset >= self.len {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.len - offset) as usize;
        let at = self.offset.checked_add(offset).ok_or(Errno::EIO)?;
        self.source.get().read_at(&mut buf[..want], at)
    }

    fn copy_to(&self, dst: BorrowedFd<'_>) -> Result<()> {
        self.source.get().copy_range_to(self.offset, self.len, dst)
    }
}
