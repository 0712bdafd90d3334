//! The FUSE wire format (the kernel's `include/uapi/linux/fuse.h`, ABI 7.31 and later):
//! request parsing and reply encoding, field by field in native byte order, without
//! casting buffers to structs (no `unsafe`, no alignment assumptions).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use crate::attr::Attr;

/// `sizeof(struct fuse_in_header)`.
pub const IN_HEADER: usize = 40;
/// `sizeof(struct fuse_out_header)`.
pub const OUT_HEADER: usize = 16;
/// The ABI this code speaks (`FUSE_KERNEL_VERSION`.`FUSE_KERNEL_MINOR_VERSION`).
pub const MAJOR: u32 = 7;
pub const MINOR: u32 = 41;
/// The oldest kernel minor whose struct sizes match the ones encoded here.
pub const MIN_MINOR: u32 = 31;

/// Opcodes (`enum fuse_opcode`).
pub mod op {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const SYMLINK: u32 = 6;
    pub const MKNOD: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const UNLINK: u32 = 10;
    pub const RMDIR: u32 = 11;
    pub const RENAME: u32 = 12;
    pub const LINK: u32 = 13;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FSYNC: u32 = 20;
    pub const SETXATTR: u32 = 21;
    pub const GETXATTR: u32 = 22;
    pub const LISTXATTR: u32 = 23;
    pub const REMOVEXATTR: u32 = 24;
    pub const FLUSH: u32 = 25;
    pub const INIT: u32 = 26;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const FSYNCDIR: u32 = 30;
    pub const ACCESS: u32 = 34;
    pub const CREATE: u32 = 35;
    pub const INTERRUPT: u32 = 36;
    pub const DESTROY: u32 = 38;
    pub const BATCH_FORGET: u32 = 42;
    pub const FALLOCATE: u32 = 43;
    pub const READDIRPLUS: u32 = 44;
    pub const RENAME2: u32 = 45;
    pub const LSEEK: u32 = 46;
    pub const TMPFILE: u32 = 51;
}

/// An opcode's name, for the debug log.
pub fn op_name(opcode: u32) -> &'static str {
    match opcode {
        op::LOOKUP => "LOOKUP",
        op::FORGET => "FORGET",
        op::GETATTR => "GETATTR",
        op::SETATTR => "SETATTR",
        op::READLINK => "READLINK",
        op::SYMLINK => "SYMLINK",
        op::MKNOD => "MKNOD",
        op::MKDIR => "MKDIR",
        op::UNLINK => "UNLINK",
        op::RMDIR => "RMDIR",
        op::RENAME => "RENAME",
        op::LINK => "LINK",
        op::OPEN => "OPEN",
        op::READ => "READ",
        op::WRITE => "WRITE",
        op::STATFS => "STATFS",
        op::RELEASE => "RELEASE",
        op::FSYNC => "FSYNC",
        op::SETXATTR => "SETXATTR",
        op::GETXATTR => "GETXATTR",
        op::LISTXATTR => "LISTXATTR",
        op::REMOVEXATTR => "REMOVEXATTR",
        op::FLUSH => "FLUSH",
        op::INIT => "INIT",
        op::OPENDIR => "OPENDIR",
        op::READDIR => "READDIR",
        op::RELEASEDIR => "RELEASEDIR",
        op::FSYNCDIR => "FSYNCDIR",
        op::ACCESS => "ACCESS",
        op::CREATE => "CREATE",
        op::INTERRUPT => "INTERRUPT",
        op::DESTROY => "DESTROY",
        op::BATCH_FORGET => "BATCH_FORGET",
        op::FALLOCATE => "FALLOCATE",
        op::READDIRPLUS => "READDIRPLUS",
        op::RENAME2 => "RENAME2",
        op::LSEEK => "LSEEK",
        op::TMPFILE => "TMPFILE",
        _ => "(unserved opcode)",
    }
}

/// `FUSE_INIT` flags this server asks for.
pub mod init {
    pub const ASYNC_READ: u64 = 1 << 0;
    pub const ATOMIC_O_TRUNC: u64 = 1 << 3;
    pub const BIG_WRITES: u64 = 1 << 5;
    pub const DO_READDIRPLUS: u64 = 1 << 13;
    pub const READDIRPLUS_AUTO: u64 = 1 << 14;
    pub const PARALLEL_DIROPS: u64 = 1 << 18;
    pub const MAX_PAGES: u64 = 1 << 22;
    pub const CACHE_SYMLINKS: u64 = 1 << 23;
    pub const INIT_EXT: u64 = 1 << 30;
    pub const PASSTHROUGH: u64 = 1 << 37;
    pub const OVER_IO_URING: u64 = 1 << 41;
}

/// `fuse_setattr_in.valid` bits.
pub mod fattr {
    pub const MODE: u32 = 1 << 0;
    pub const UID: u32 = 1 << 1;
    pub const GID: u32 = 1 << 2;
    pub const SIZE: u32 = 1 << 3;
    pub const ATIME: u32 = 1 << 4;
    pub const MTIME: u32 = 1 << 5;
    pub const FH: u32 = 1 << 6;
    pub const ATIME_NOW: u32 = 1 << 7;
    pub const MTIME_NOW: u32 = 1 << 8;
}

/// `fuse_open_out.open_flags` bits.
pub mod fopen {
    pub const KEEP_CACHE: u32 = 1 << 1;
    pub const CACHE_DIR: u32 = 1 << 3;
    pub const PASSTHROUGH: u32 = 1 << 7;
}

/// `FUSE_NOTIFY_RESEND` (kernel 6.9): the `error` of an unsolicited message (unique 0)
/// asking the kernel to queue again every request read but not answered.
pub const NOTIFY_RESEND: i32 = 7;

/// `FUSE_UNIQUE_RESEND`: set in the unique id of a request the kernel sends again.
pub const UNIQUE_RESEND: u64 = 1 << 63;

/// `FUSE_GETATTR_FH`: `fuse_getattr_in.fh` is set.
pub const GETATTR_FH: u32 = 1;
/// `FUSE_FSYNC_FDATASYNC`.
pub const FSYNC_FDATASYNC: u32 = 1;

/// `struct fuse_in_header`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InHeader {
    pub len: u32,
    pub opcode: u32,
    pub unique: u64,
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

/// Splits one request read from the device into its header and arguments; `None` for a
/// request shorter than its header or than the length it states.
pub fn parse(buf: &[u8]) -> Option<(InHeader, &[u8])> {
    let mut a = Args::new(buf);
    let h = InHeader {
        len: a.u32()?,
        opcode: a.u32()?,
        unique: a.u64()?,
        nodeid: a.u64()?,
        uid: a.u32()?,
        gid: a.u32()?,
        pid: a.u32()?,
    };
    let len = h.len as usize;
    if len < IN_HEADER || len > buf.len() {
        return None;
    }
    Some((h, &buf[IN_HEADER..len]))
}

/// A reader over a request's arguments; each getter is `None` past the end.
pub struct Args<'a> {
    buf: &'a [u8],
}

impl<'a> Args<'a> {
    pub fn new(buf: &'a [u8]) -> Args<'a> {
        Args { buf }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_ne_bytes(self.take(4)?.try_into().ok()?))
    }

    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_ne_bytes(self.take(8)?.try_into().ok()?))
    }

    pub fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    /// A NUL-terminated name.
    pub fn name(&mut self) -> Option<&'a OsStr> {
        let end = self.buf.iter().position(|b| *b == 0)?;
        let name = self.take(end)?;
        self.skip(1)?;
        Some(OsStr::from_bytes(name))
    }

    /// The bytes left.
    pub fn rest(self) -> &'a [u8] {
        self.buf
    }
}

/// Appends to a reply body.
pub struct Out<'a>(pub &'a mut Vec<u8>);

impl Out<'_> {
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }

    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.0.resize(self.0.len() + n, 0);
        self
    }

    /// `struct fuse_attr` (88 bytes).
    pub fn attr(&mut self, a: &Attr) -> &mut Self {
        self.u64(a.ino)
            .u64(a.size)
            .u64(a.blocks)
            .u64(a.atime.sec as u64)
            .u64(a.mtime.sec as u64)
            .u64(a.ctime.sec as u64)
            .u32(a.atime.nsec)
            .u32(a.mtime.nsec)
            .u32(a.ctime.nsec)
            .u32(a.kind.mode_bits() | (a.perm & 0o7777))
            .u32(a.nlink.min(u32::MAX.into()) as u32)
            .u32(a.uid)
            .u32(a.gid)
            .u32(a.rdev as u32)
            .u32(if a.blksize == 0 { 4096 } else { a.blksize })
            .u32(0)
    }

    /// `struct fuse_entry_out` (128 bytes); node id 0 with `ttl` is a negative entry.
    pub fn entry(&mut self, nodeid: u64, generation: u64, ttl: Duration, a: &Attr) -> &mut Self {
        self.u64(nodeid)
            .u64(generation)
            .u64(ttl.as_secs())
            .u64(ttl.as_secs())
            .u32(ttl.subsec_nanos())
            .u32(ttl.subsec_nanos())
            .attr(a)
    }

    /// `struct fuse_attr_out` (104 bytes).
    pub fn attr_out(&mut self, ttl: Duration, a: &Attr) -> &mut Self {
        self.u64(ttl.as_secs())
            .u32(ttl.subsec_nanos())
            .u32(0)
            .attr(a)
    }

    /// `struct fuse_open_out` (16 bytes).
    pub fn open(&mut self, fh: u64, flags: u32) -> &mut Self {
        self.open_backing(fh, flags, 0)
    }

    /// `struct fuse_open_out` naming a passthrough backing id.
    pub fn open_backing(&mut self, fh: u64, flags: u32, backing_id: u32) -> &mut Self {
        self.u64(fh).u32(flags).u32(backing_id)
    }
}

/// The size of a `struct fuse_dirent` naming `namelen` bytes, padded to 8 bytes.
pub fn dirent_size(namelen: usize) -> usize {
    (24 + namelen + 7) & !7
}

/// Appends a `struct fuse_dirent` (the padding zeroed).
pub fn dirent(out: &mut Vec<u8>, ino: u64, off: u64, mode: u32, name: &[u8]) {
    let start = out.len();
    Out(out)
        .u64(ino)
        .u64(off)
        .u32(name.len() as u32)
        .u32((mode & libc::S_IFMT) >> 12);
    out.extend_from_slice(name);
    out.resize(start + dirent_size(name.len()), 0);
}

/// The out header for a reply of `body_len` bytes (`error` 0) or an error (negative errno).
pub fn out_header(unique: u64, error: i32, body_len: usize) -> [u8; OUT_HEADER] {
    let mut h = [0u8; OUT_HEADER];
    h[0..4].copy_from_slice(&((OUT_HEADER + body_len) as u32).to_ne_bytes());
    h[4..8].copy_from_slice(&error.to_ne_bytes());
    h[8..16].copy_from_slice(&unique.to_ne_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::{FileKind, Timestamp};

    fn request(opcode: u32, args: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        Out(&mut b)
            .u32((IN_HEADER + args.len()) as u32)
            .u32(opcode)
            .u64(7)
            .u64(1)
            .u32(1000)
            .u32(100)
            .u32(42)
            .u32(0);
        b.extend_from_slice(args);
        b
    }

    #[test]
    fn parses_header_and_names() {
        let buf = request(op::SYMLINK, b"link\0target\0");
        let (h, args) = parse(&buf).unwrap();
        assert_eq!(
            (h.opcode, h.unique, h.nodeid, h.uid, h.gid),
            (6, 7, 1, 1000, 100)
        );
        let mut a = Args::new(args);
        assert_eq!(a.name().unwrap(), "link");
        assert_eq!(a.name().unwrap(), "target");
        assert!(a.name().is_none());
    }

    #[test]
    fn refuses_short_and_overlong_requests() {
        assert!(parse(&[0u8; 20]).is_none());
        let mut buf = request(op::GETATTR, &[0; 16]);
        buf[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(parse(&buf).is_none());
    }

    #[test]
    fn struct_sizes_match_fuse_h() {
        let a = Attr {
            ino: 5,
            kind: FileKind::Directory,
            perm: 0o755,
            nlink: 2,
            uid: 0,
            gid: 0,
            rdev: 0,
            size: 4096,
            blocks: 8,
            blksize: 0,
            atime: Timestamp::default(),
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
        };
        let mut b = Vec::new();
        Out(&mut b).attr(&a);
        assert_eq!(b.len(), 88);
        assert_eq!(
            u32::from_ne_bytes(b[60..64].try_into().unwrap()),
            libc::S_IFDIR | 0o755
        );
        b.clear();
        Out(&mut b).entry(5, 0, Duration::from_secs(1), &a);
        assert_eq!(b.len(), 128);
        b.clear();
        Out(&mut b).attr_out(Duration::from_secs(1), &a);
        assert_eq!(b.len(), 104);
        b.clear();
        dirent(&mut b, 5, 1, libc::S_IFDIR, b"abc");
        assert_eq!(b.len(), 32);
        assert_eq!(u32::from_ne_bytes(b[20..24].try_into().unwrap()), 4);
    }
}
