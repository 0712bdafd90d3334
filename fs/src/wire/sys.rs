//! The few calls on `/dev/fuse` that need `unsafe`: each one syscall (or one reinterpretation
//! of a plain-integer struct), commented, converted to a typed result at once.

use std::os::fd::{AsRawFd, BorrowedFd};

/// `struct fuse_backing_map` (fuse.h): the descriptor a backing registration names.
#[repr(C)]
struct BackingMap {
    fd: i32,
    flags: u32,
    padding: u64,
}

/// `FUSE_DEV_IOC_MAGIC`.
const IOC_MAGIC: u8 = 229;

nix::ioctl_write_ptr!(backing_open_ioctl, IOC_MAGIC, 1, BackingMap);
nix::ioctl_write_ptr!(backing_close_ioctl, IOC_MAGIC, 2, u32);
nix::ioctl_read!(clone_ioctl, IOC_MAGIC, 0, u32);

/// `FUSE_DEV_IOC_CLONE`: a new `/dev/fuse` descriptor serving the same connection as `dev`,
/// with its own queue of requests being processed, so threads that each read their own
/// clone do not contend on one file's lock (a reply must go back on the descriptor its
/// request was read from).
#[allow(unsafe_code)]
pub fn clone_device(dev: BorrowedFd<'_>) -> std::io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let clone = rustix::fs::open("/dev/fuse", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
    let mut old = dev.as_raw_fd() as u32;
    // SAFETY: one ioctl on a descriptor we own; the kernel reads the u32 (the descriptor
    // to clone) behind a pointer to a live local.
    unsafe { clone_ioctl(clone.as_raw_fd(), &mut old) }?;
    Ok(clone)
}

/// `FUSE_DEV_IOC_BACKING_OPEN`: registers `file` as a passthrough backing file of the
/// connection `dev` serves; returns the backing id an open reply names.
#[allow(unsafe_code)]
pub fn backing_open(dev: BorrowedFd<'_>, file: BorrowedFd<'_>) -> std::io::Result<u32> {
    let map = BackingMap {
        fd: file.as_raw_fd(),
        flags: 0,
        padding: 0,
    };
    // SAFETY: one ioctl on a descriptor we hold, reading the struct behind a pointer to a
    // live local of the layout the kernel expects (`struct fuse_backing_map`, 16 bytes).
    let id = unsafe { backing_open_ioctl(dev.as_raw_fd(), &map) }?;
    Ok(id as u32)
}

/// `FUSE_DEV_IOC_BACKING_CLOSE`: drops registration `id` (opens already made keep their file).
#[allow(unsafe_code)]
pub fn backing_close(dev: BorrowedFd<'_>, id: u32) -> std::io::Result<()> {
    // SAFETY: one ioctl on a descriptor we hold, reading a u32 behind a pointer to a local.
    unsafe { backing_close_ioctl(dev.as_raw_fd(), &id) }?;
    Ok(())
}

/// Sets `len` of a 128-byte SQE: FUSE's ring commands name their two buffers through an
/// iovec array at `addr` whose length the kernel reads from `len`, which io-uring's
/// `UringCmd80` builder leaves 0.
#[allow(unsafe_code)]
pub fn sqe_with_len(sqe: io_uring::squeue::Entry128, len: u32) -> io_uring::squeue::Entry128 {
    // SAFETY: `Entry128` is `#[repr(C)]` over the kernel's 128-byte `struct io_uring_sqe`
    // (transmute checks the size), made of integers only, so any bytes are a valid value;
    // `len` is the u32 at offset 24 of that struct.
    let mut raw: [u8; 128] = unsafe { std::mem::transmute(sqe) };
    raw[24..28].copy_from_slice(&len.to_ne_bytes());
    // SAFETY: as above.
    unsafe { std::mem::transmute::<[u8; 128], io_uring::squeue::Entry128>(raw) }
}

/// Queues `sqe` on `ring`'s submission queue (full: the caller submits first).
#[allow(unsafe_code)]
pub fn push(
    ring: &mut io_uring::IoUring<io_uring::squeue::Entry128>,
    sqe: &io_uring::squeue::Entry128,
) -> std::io::Result<()> {
    // SAFETY: the buffers the SQE names (a ring entry's header and payload, and the iovec
    // array pointing at them) are boxed in the queue that owns this ring, which drops the
    // ring before them, so they outlive every use the kernel makes of them.
    unsafe { ring.submission().push(sqe) }
        .map_err(|_| std::io::Error::other("io_uring submission queue full"))
}
