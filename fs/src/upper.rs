//! The copy-on-write upper directory: its on-disk format and the data copy.
//!
//! Format (so that kernel overlayfs, fuse-overlayfs and containers/storage read our uppers):
//! - whiteout: a character device 0/0 when this process may `mknod` it, else an empty file
//!   `.wh.NAME` as fuse-overlayfs writes rootless;
//! - opaque directory: xattr `trusted.overlay.opaque=y` as root, `user.overlay.opaque=y`
//!   rootless (kernel `userxattr`);
//! - renamed lower directory: `*.overlay.redirect` holding the absolute lower path, as the
//!   kernel's `redirect_dir`;
//! - metadata-only copy-up: `*.overlay.metacopy` on an upper file whose data is still the
//!   lower file's (the kernel's `metacopy`);
//! - `*.strata.ino`: the union inode number a copied-up file keeps;
//! - `*.strata.nlink`: on a copied-up file with several lower names, what to add to its host
//!   link count for the union one (the kernel's `overlay.nlink`, as a signed difference);
//! - `user.containers.override_stat`: `uid:gid:mode` a rootless user could not set on the
//!   host (the containers/storage convention);
//! - `WORK/strata-index/<ino>`: a hard link to every copied-up file that had several lower
//!   names, so that its other names copy up to the same inode (the kernel's `index`, but
//!   not in `WORK/index`: the kernel refuses to mount with `index=on` over entries not named
//!   by its origin file handles). The other names the union shows are linked into the upper
//!   at the first copy-up, so the upper alone holds the link group.
//!
//! New entries are built in the work directory and renamed into place, so a crash never
//! leaves a half-copied file visible.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, SeekFrom};

use crate::attr::Attr;
use crate::errno::{Errno, Result};
use crate::host::{self, SharedFd};
use crate::layer::{LayerFile, WHITEOUT_PREFIX};

/// Suffix of the xattr holding a copied-up hard link's link-count difference.
pub const NLINK_XATTR: &str = "strata.nlink";

/// Name of the override xattr (containers/storage).
pub const OVERRIDE_STAT: &str = "user.containers.override_stat";

/// The upper and work directories of a mount.
#[derive(Debug)]
pub struct Upper {
    pub root: SharedFd,
    pub work: SharedFd,
    pub index: SharedFd,
    /// `trusted.` as root in the initial namespace, `user.` otherwise.
    prefix: &'static str,
    can_mknod: AtomicBool,
    pub fsync: bool,
    tmp_counter: AtomicU64,
}

/// An owner to give a new or changed file: host ids after mapping.
#[derive(Clone, Copy, Debug)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Upper {
    /// Opens the upper and work directories; creates `WORK/index`.
    pub fn open(
        upper: &Path,
        work: &Path,
        privileged: bool,
        fsync: bool,
    ) -> std::io::Result<Upper> {
        let open = |p: &Path| {
            rustix::fs::open(
                p,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
        };
        let root = open(upper)?;
        let work_fd = open(work)?;
        match rustix::fs::mkdirat(&work_fd, INDEX_DIR, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let index = rustix::fs::openat(
            &work_fd,
            INDEX_DIR,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        move_old_index_entries(&work_fd, &index)?;
        Ok(Upper {
            root: Arc::new(root),
            work: Arc::new(work_fd),
            index: Arc::new(index),
            prefix: if privileged { "trusted." } else { "user." },
            can_mknod: AtomicBool::new(true),
            fsync,
            tmp_counter: AtomicU64::new(0),
        })
    }

    /// The name of one of our bookkeeping xattrs, e.g. `overlay.opaque`.
    pub fn xattr(&self, suffix: &str) -> OsString {
        OsString::from(format!("{}{}", self.prefix, suffix))
    }

    /// A fresh name for building an entry in the work directory.
    pub fn temp_name(&self) -> OsString {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        OsString::from(format!("#strata-{}-{}", std::process::id(), n))
    }

    /// Whether `attr` (an upper entry named `name`) is a whiteout.
    pub fn is_whiteout(attr: &Attr) -> bool {
        attr.is_whiteout_device()
    }

    /// Whether the file-format whiteout `.wh.NAME` exists in `dir`.
    pub fn has_file_whiteout(dir: BorrowedFd<'_>, name: &OsStr) -> Result<bool> {
        match whiteout_file_name(name) {
            Some(wh) => Ok(host::stat_at(dir, &wh)?.is_some()),
            None => Ok(false),
        }
    }

    /// Writes a whiteout for `name` in `dir` (the name itself must be free).
    pub fn create_whiteout(&self, dir: BorrowedFd<'_>, name: &OsStr) -> Result<()> {
        if self.can_mknod.load(Ordering::Relaxed) {
            match rustix::fs::mknodat(dir, name, FileType::CharacterDevice, Mode::empty(), 0) {
                Ok(()) => return Ok(()),
                Err(rustix::io::Errno::PERM) => self.can_mknod.store(false, Ordering::Relaxed),
                Err(e) => return Err(e.into()),
            }
        }
        self.create_whiteout_file(dir, name)
    }

    /// Writes the file-format whiteout `.wh.NAME`.
    pub fn create_whiteout_file(&self, dir: BorrowedFd<'_>, name: &OsStr) -> Result<()> {
        let wh = whiteout_file_name(name).ok_or(Errno::ENAMETOOLONG)?;
        match host::open_at(dir, &wh, OFlags::CREATE | OFlags::WRONLY, 0o600) {
            Ok(_) | Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes the file-format whiteout `.wh.NAME` if there is one.
    pub fn remove_whiteout_file(&self, dir: BorrowedFd<'_>, name: &OsStr) -> Result<()> {
        if let Some(wh) = whiteout_file_name(name) {
            match rustix::fs::unlinkat(dir, &wh, AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Removes a whiteout for `name` in `dir`, in either format, if there is one.
    pub fn remove_whiteout(&self, dir: BorrowedFd<'_>, name: &OsStr) -> Result<()> {
        if let Some(a) = host::stat_at(dir, name)? {
            if a.is_whiteout_device() {
                rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
            }
        }
        if let Some(wh) = whiteout_file_name(name) {
            match rustix::fs::unlinkat(dir, &wh, AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Marks directory `name` in `dir` opaque.
    pub fn set_opaque(&self, dir: BorrowedFd<'_>, name: &OsStr) -> Result<()> {
        host::set_xattr(dir, Some(name), &self.xattr("overlay.opaque"), b"y", 0)
    }

    /// Whether an upper directory is opaque (either prefix: a root mount may read a rootless
    /// upper).
    pub fn is_opaque(dir: BorrowedFd<'_>, name: &OsStr) -> Result<bool> {
        for key in crate::layer::OPAQUE_XATTRS {
            if host::get_xattr(dir, Some(name), OsStr::new(key))?.as_deref() == Some(b"y") {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Reads one of our xattrs under either prefix.
    pub fn get_bookkeeping(
        dir: BorrowedFd<'_>,
        name: Option<&OsStr>,
        suffix: &str,
    ) -> Result<Option<Vec<u8>>> {
        for prefix in ["trusted.", "user."] {
            if let Some(v) = host::get_xattr(dir, name, OsStr::new(&format!("{prefix}{suffix}")))? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// Empties an upper directory that holds only whiteouts and markers, before removing it.
    pub fn clear_dir(dir: BorrowedFd<'_>) -> Result<()> {
        for e in host::read_dir(dir)? {
            let flags = if e.kind == Some(crate::attr::FileKind::Directory) {
                AtFlags::REMOVEDIR
            } else {
                AtFlags::empty()
            };
            match rustix::fs::unlinkat(dir, &e.name, flags) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Moves a finished entry from the work directory into place, without replacing.
    pub fn install(&self, tmp: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> Result<()> {
        rustix::fs::renameat_with(
            self.work.as_fd(),
            tmp,
            dir,
            name,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .map_err(|e| {
            let _ = rustix::fs::unlinkat(self.work.as_fd(), tmp, AtFlags::empty());
            let _ = rustix::fs::unlinkat(self.work.as_fd(), tmp, AtFlags::REMOVEDIR);
            Errno::from(e)
        })
    }
}

/// What one upper entry records, as a reader of the upper (the changes walk) sees it.
#[derive(Clone, Debug)]
pub enum UpperRecord {
    /// A whiteout for the name (a 0/0 character device, or the rootless `.wh.NAME`).
    Whiteout(OsString),
    /// An entry the merged view shows.
    Entry(UpperEntry),
    /// Bookkeeping the merged view never shows: the opaque marker, build names.
    Hidden,
}

/// An upper entry and its bookkeeping, read with one xattr listing.
#[derive(Clone, Debug)]
pub struct UpperEntry {
    pub attr: Attr,
    /// A directory that hides the lower directories below it.
    pub opaque: bool,
    /// `*.overlay.redirect`: the lower path a renamed directory's lower content comes from.
    pub redirect: Option<Vec<u8>>,
    /// `*.overlay.metacopy`: the data is still the lower file's.
    pub metacopy: bool,
    /// `*.strata.ino`: the union inode number a copied-up file kept.
    pub ino: Option<u64>,
    /// `*.strata.nlink`: a copied-up file that had several lower names.
    pub lower_links: bool,
    /// `user.containers.override_stat`, parsed.
    pub override_stat: Option<(u32, u32, u32)>,
}

/// Reads upper entry `name` of `dir`. Both xattr prefixes are read: a root reader may read
/// a rootless upper.
pub fn read_entry(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Option<UpperRecord>> {
    if name.as_bytes() == crate::layer::OPAQUE_MARKER || name.as_bytes().starts_with(b"#strata-") {
        return Ok(Some(UpperRecord::Hidden));
    }
    if let Some(target) = crate::layer::oci_whiteout_target(name) {
        return Ok(Some(UpperRecord::Whiteout(target.to_os_string())));
    }
    let Some(attr) = host::stat_at(dir, name)? else {
        return Ok(None);
    };
    if attr.is_whiteout_device() {
        return Ok(Some(UpperRecord::Whiteout(name.to_os_string())));
    }
    let mut e = UpperEntry {
        attr,
        opaque: false,
        redirect: None,
        metacopy: false,
        ino: None,
        lower_links: false,
        override_stat: None,
    };
    // Symlinks may carry none of ours (user.* is refused on them).
    let keys = match attr.kind {
        crate::attr::FileKind::Symlink => Vec::new(),
        _ => host::list_xattrs(dir, Some(name))?,
    };
    for key in keys {
        let k = key.as_bytes();
        let suffix = k
            .strip_prefix(b"trusted.")
            .or_else(|| k.strip_prefix(b"user."))
            .unwrap_or(b"");
        let get = || host::get_xattr(dir, Some(name), &key);
        match suffix {
            b"overlay.opaque" => e.opaque |= get()?.as_deref() == Some(b"y"),
            b"overlay.redirect" => e.redirect = get()?,
            b"overlay.metacopy" => e.metacopy = true,
            b"strata.ino" => {
                e.ino = get()?.and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
            }
            _ if suffix == NLINK_XATTR.as_bytes() => e.lower_links = true,
            _ if k == OVERRIDE_STAT.as_bytes() => {
                e.override_stat = get()?.and_then(|v| parse_override(&v))
            }
            _ => {}
        }
    }
    if attr.kind == crate::attr::FileKind::Directory && !e.opaque {
        // fuse-overlayfs marks a directory opaque with a marker file where xattrs fail.
        let fd = host::open_dir_path(dir, name)?;
        e.opaque =
            host::stat_at(fd.as_fd(), OsStr::from_bytes(crate::layer::OPAQUE_MARKER))?.is_some();
    }
    Ok(Some(UpperRecord::Entry(e)))
}

/// Whether an xattr is bookkeeping of an upper (ours, the kernel's, fuse-overlayfs's, and
/// the override when `override_stat` is read), never part of the file's content.
pub fn is_bookkeeping_xattr(key: &OsStr, override_stat: bool) -> bool {
    const PRIVATE: [&[u8]; 6] = [
        b"trusted.overlay.",
        b"user.overlay.",
        b"trusted.strata.",
        b"user.strata.",
        b"user.fuseoverlayfs.",
        b"trusted.fuseoverlayfs.",
    ];
    let k = key.as_bytes();
    PRIVATE.iter().any(|p| k.starts_with(p)) || (override_stat && k == OVERRIDE_STAT.as_bytes())
}

/// Where our hard-link index lives in the work directory.
pub const INDEX_DIR: &str = "strata-index";

/// Moves the index entries an earlier strata kept in `WORK/index` to [`INDEX_DIR`]: ours
/// are named by a union inode number in hex (at most 16 digits), the kernel's by a file
/// handle (at least 42), which stay.
fn move_old_index_entries(work: &OwnedFd, index: &OwnedFd) -> std::io::Result<()> {
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
        match rustix::fs::renameat_with(
            &old,
            &e.name,
            index,
            &e.name,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) | Err(rustix::io::Errno::EXIST) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `.wh.NAME`, or `None` when that would exceed NAME_MAX.
pub fn whiteout_file_name(name: &OsStr) -> Option<OsString> {
    if name.len() + WHITEOUT_PREFIX.len() > host::NAME_MAX {
        return None;
    }
    let mut v = WHITEOUT_PREFIX.to_vec();
    v.extend_from_slice(name.as_bytes());
    Some(OsString::from_vec(v))
}

/// Copies the data of lower file `src` into `dst` (at offset 0), keeping holes: only the
/// data extents are copied, with `copy_file_range` (a reflink where the filesystem can). A
/// file inside a layer's tar is its byte range of the tar, which has no holes.
pub fn copy_data(src: &LayerFile, dst: BorrowedFd<'_>, size: u64) -> Result<()> {
    let (base, size) = match src.range {
        Some(r) => (r.offset, size.min(r.len)),
        None => (0, size),
    };
    let src_fd = src.file.as_fd();
    rustix::fs::ftruncate(dst, size)?;
    let mut pos = 0u64;
    while pos < size {
        let (data, hole) = match src.range {
            Some(_) => (pos, size),
            None => {
                let data = match rustix::fs::seek(src_fd, SeekFrom::Data(pos)) {
                    Ok(d) => d,
                    Err(rustix::io::Errno::NXIO) => break,
                    // No SEEK_DATA here: copy everything from `pos`.
                    Err(rustix::io::Errno::INVAL) => pos,
                    Err(e) => return Err(e.into()),
                };
                let hole = match rustix::fs::seek(src_fd, SeekFrom::Hole(data)) {
                    Ok(h) => h.min(size),
                    Err(_) => size,
                };
                (data, hole)
            }
        };
        let mut off_in = base + data;
        let mut off_out = data;
        let end_in = base + hole;
        while off_in < end_in {
            let len = (end_in - off_in).min(1 << 30) as usize;
            match rustix::fs::copy_file_range(
                src_fd,
                Some(&mut off_in),
                dst,
                Some(&mut off_out),
                len,
            ) {
                Ok(0) => break,
                Ok(_) => {}
                Err(rustix::io::Errno::XDEV)
                | Err(rustix::io::Errno::NOSYS)
                | Err(rustix::io::Errno::OPNOTSUPP)
                | Err(rustix::io::Errno::INVAL) => {
                    copy_with_buffer(src_fd, dst, &mut off_in, &mut off_out, end_in)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        pos = hole.max(off_in - base);
    }
    Ok(())
}

/// The plain read/write loop, for sources `copy_file_range` does not take.
fn copy_with_buffer(
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
        let mut written = 0;
        while written < n {
            written += rustix::io::pwrite(dst, &buf[written..n], *off_out + written as u64)?;
        }
        *off_in += n as u64;
        *off_out += n as u64;
    }
    Ok(())
}

/// Parses `uid:gid:mode` of the override xattr (mode octal, with or without file type bits,
/// trailing fields ignored).
pub fn parse_override(value: &[u8]) -> Option<(u32, u32, u32)> {
    let s = std::str::from_utf8(value).ok()?;
    let mut parts = s.trim_end_matches('\0').split(':');
    let uid = parts.next()?.parse().ok()?;
    let gid = parts.next()?.parse().ok()?;
    let mode = u32::from_str_radix(parts.next()?, 8).ok()?;
    Some((uid, gid, mode & 0o7777))
}

/// Formats the override xattr value.
pub fn format_override(uid: u32, gid: u32, perm: u32) -> Vec<u8> {
    format!("{uid}:{gid}:0{:o}", perm & 0o7777).into_bytes()
}

/// Keeps an `O_PATH` handle on an entry, for a node about to lose its name.
pub fn hold(dir: BorrowedFd<'_>, name: &OsStr) -> Option<SharedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()
    .map(|fd: OwnedFd| Arc::new(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_stat_round_trips() {
        let v = format_override(1000, 100, 0o4755);
        assert_eq!(v, b"1000:100:04755");
        assert_eq!(parse_override(&v), Some((1000, 100, 0o4755)));
        assert_eq!(parse_override(b"0:0:0100644"), Some((0, 0, 0o644)));
        assert_eq!(parse_override(b"junk"), None);
    }

    #[test]
    fn index_entries_of_an_earlier_strata_move_out_of_the_kernels_index_dir() {
        let dir = tempfile::tempdir().unwrap();
        let (upper, work) = (dir.path().join("upper"), dir.path().join("work"));
        std::fs::create_dir_all(work.join("index")).unwrap();
        std::fs::create_dir(&upper).unwrap();
        std::fs::write(work.join("index/20000009a01b8"), "ours").unwrap();
        let kernel = "00fb2100".to_string() + &"ab".repeat(30);
        std::fs::write(work.join("index").join(&kernel), "the kernel's").unwrap();
        Upper::open(&upper, &work, false, false).unwrap();
        let moved = work.join("strata-index/20000009a01b8");
        assert_eq!(std::fs::read_to_string(moved).unwrap(), "ours");
        assert!(!work.join("index/20000009a01b8").exists());
        assert!(work.join("index").join(&kernel).exists());
    }

    #[test]
    fn whiteout_names_respect_name_max() {
        assert_eq!(whiteout_file_name(OsStr::new("a")).unwrap(), ".wh.a");
        assert!(whiteout_file_name(OsStr::new(&"x".repeat(252))).is_none());
    }

    #[test]
    fn copy_keeps_holes_and_data() {
        use std::io::{Seek, Write};
        let dir = tempfile::tempdir().unwrap();
        let mut src = std::fs::File::create(dir.path().join("src")).unwrap();
        src.write_all(b"head").unwrap();
        src.seek(std::io::SeekFrom::Start(8 << 20)).unwrap();
        src.write_all(b"tail").unwrap();
        let src = std::fs::File::open(dir.path().join("src")).unwrap();
        let dst = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.path().join("dst"))
            .unwrap();
        let size = src.metadata().unwrap().len();
        copy_data(&LayerFile::host(src), dst.as_fd(), size).unwrap();
        let got = std::fs::read(dir.path().join("dst")).unwrap();
        let want = std::fs::read(dir.path().join("src")).unwrap();
        assert_eq!(got, want);
        // a byte range of a host file, as a file inside a layer's tar is
        let src = std::fs::File::open(dir.path().join("src")).unwrap();
        let range = LayerFile {
            file: src,
            range: Some(crate::layer::ByteRange { offset: 2, len: 4 }),
        };
        copy_data(&range, dst.as_fd(), 100).unwrap();
        assert_eq!(std::fs::read(dir.path().join("dst")).unwrap(), b"ad\0\0");
    }
}
