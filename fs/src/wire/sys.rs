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
