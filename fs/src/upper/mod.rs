//! The copy-on-write upper directory: its on-disk format, read and written only here.
//!
//! The union asks the upper typed questions and gives it typed orders: [`Upper::entry`]
//! reads everything the format says about one entry (whiteout, opaque, redirect, metacopy,
//! origin inode, link-count bookkeeping, override_stat) with one stat and one xattr
//! listing; [`Upper::copy_in`], [`Upper::create_whiteout`], [`Upper::link_from_index`],
//! [`Upper::set_redirect`] and their kin write it. An entry is reached by an [`UpperRef`]
//! (a directory and a name, or a held descriptor of the file itself).
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
//! - `WORK/strata-index/<ino>` ([`INDEX_DIR`]): a hard link to every copied-up file that
//!   had several lower names, so that its other names copy up to the same inode (the
//!   kernel's `index`, but not in `WORK/index`: the kernel refuses to mount with `index=on`
//!   over entries not named by its origin file handles). The other names the union shows are
//!   linked into the upper at the first copy-up, so the upper alone holds the link group.
//!   Entries an earlier strata kept in `WORK/index` move at [`Upper::open`].
//!
//! New entries are built in the work directory and renamed into place, so a crash never
//! leaves a half-copied file visible.
//!
//! Both xattr prefixes are read (a root mount may read an upper a rootless one wrote); the
//! mount's own prefix is written.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};

use crate::attr::{Attr, FileKind};
use crate::errno::{Errno, Result};
use crate::host::{self, SharedFd};
use crate::layer::{oci_whiteout_target, whiteout_file_name, LayerFile, OPAQUE_MARKER};

mod entry_ref;
mod index;

pub use index::INDEX_DIR;
use index::{index_name, move_old_index_entries};

pub use entry_ref::{file_type, keeping_dir_times, timestamps_of, UpperRef};

/// Suffix of the xattr holding a copied-up hard link's link-count difference.
const NLINK_XATTR: &str = "strata.nlink";
/// Suffix of the xattr holding the union inode number a copied-up file keeps.
const INO_XATTR: &str = "strata.ino";
const OPAQUE_XATTR: &str = "overlay.opaque";
const REDIRECT_XATTR: &str = "overlay.redirect";
const METACOPY_XATTR: &str = "overlay.metacopy";

/// Prefixes of xattrs that are the filesystem's bookkeeping (ours, the kernel's,
/// fuse-overlayfs's): never shown or changed through the mount.
const PRIVATE_XATTR_PREFIXES: [&[u8]; 6] = [
    b"trusted.overlay.",
    b"user.overlay.",
    b"trusted.strata.",
    b"user.strata.",
    b"user.fuseoverlayfs.",
    b"trusted.fuseoverlayfs.",
];

/// Whether `key` is one of the bookkeeping xattrs of an upper (or of a kernel-format layer),
/// never part of a file's content; with `override_stat` (a mount that reads it), the
/// override xattr too.
pub fn is_bookkeeping_xattr(key: &OsStr, override_stat: bool) -> bool {
    let k = key.as_bytes();
    PRIVATE_XATTR_PREFIXES.iter().any(|p| k.starts_with(p))
        || (override_stat && k == OVERRIDE_STAT.as_bytes())
}

/// Ownership a rootless mount could not set on the host: `uid`, `gid`, permission bits.
pub type Override = (u32, u32, u32);

/// What the upper's format says about one entry.
#[derive(Clone, Debug)]
pub struct UpperEntry {
    /// The host attributes (link count as the host has it).
    pub attr: Attr,
    /// A whiteout device (char 0/0): the name is deleted.
    pub whiteout: bool,
    /// An opaque directory: the lowers below it do not show.
    pub opaque: bool,
    /// A renamed lower directory: the absolute lower path its contents come from.
    pub redirect: Option<Vec<u8>>,
    /// A metadata-only copy-up: the data is still the lower file's.
    pub metacopy: bool,
    /// The union inode number a copied-up file keeps.
    pub origin_ino: Option<u64>,
    /// What to add to the host link count for the union one.
    pub nlink_diff: Option<i64>,
    /// Ownership recorded for a rootless mount.
    pub override_stat: Option<Override>,
}

impl UpperEntry {
    /// The attributes with the union's link count, as [`Upper::stat`] gives them for a
    /// named entry: no second stat or xattr read.
    pub fn union_attr(&self) -> Attr {
        let mut attr = self.attr;
        if attr.kind != FileKind::Directory && attr.nlink > 1 {
            if let Some(diff) = self.nlink_diff {
                attr.nlink = (attr.nlink as i64 + diff).max(1) as u64;
            }
        }
        attr
    }
}

/// One entry of an upper directory listing, the format decoded.
#[derive(Clone, Debug)]
pub enum UpperDirEntry {
    Entry {
        name: OsString,
        host_ino: u64,
        kind: FileKind,
    },
    /// A whiteout for `name`, in either format.
    Whiteout(OsString),
}

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
    /// Opens the upper and work directories; creates [`INDEX_DIR`] (and moves into it the
    /// entries an earlier strata kept in `WORK/index`).
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
    fn xattr(&self, suffix: &str) -> OsString {
        OsString::from(format!("{}{}", self.prefix, suffix))
    }

    /// A fresh name for building an entry in the work directory.
    pub fn temp_name(&self) -> OsString {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        OsString::from(format!("#strata-{}-{}", std::process::id(), n))
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
        self.remove_whiteout_file(dir, name)
    }

    /// Marks directory `name` in `dir` opaque.
    pub fn set_opaque(&self, dir: BorrowedFd<'_>, name: &OsStr) -> Result<()> {
        host::set_xattr(dir, Some(name), &self.xattr(OPAQUE_XATTR), b"y", 0)
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

    // ---- reading the format ----

    /// Reads everything the format says about entry `name` of `dir`: one `lstat` and one
    /// xattr listing (then only the xattrs listed are read); a directory not marked opaque
    /// by xattr is also probed for fuse-overlayfs's opaque marker file, which it writes
    /// where xattrs fail. `None` when there is no entry. The one reader of an upper entry:
    /// the union's lookups and the changes walk both ask it.
    pub fn entry(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Option<UpperEntry>> {
        let Some(attr) = host::stat_at(dir, name)? else {
            return Ok(None);
        };
        let mut e = UpperEntry {
            attr,
            whiteout: attr.is_whiteout_device(),
            opaque: false,
            redirect: None,
            metacopy: false,
            origin_ino: None,
            nlink_diff: None,
            override_stat: None,
        };
        if e.whiteout {
            return Ok(Some(e));
        }
        for key in host::list_xattrs(dir, Some(name))? {
            let k = key.as_bytes();
            let suffix = k
                .strip_prefix(b"trusted.")
                .or_else(|| k.strip_prefix(b"user."));
            let get = || host::get_xattr(dir, Some(name), &key);
            match suffix {
                Some(s) if s == OPAQUE_XATTR.as_bytes() => {
                    e.opaque |= get()?.as_deref() == Some(b"y")
                }
                Some(s) if s == REDIRECT_XATTR.as_bytes() => e.redirect = get()?,
                Some(s) if s == METACOPY_XATTR.as_bytes() => e.metacopy = true,
                Some(s) if s == INO_XATTR.as_bytes() => e.origin_ino = get()?.and_then(parse),
                Some(s) if s == NLINK_XATTR.as_bytes() => e.nlink_diff = get()?.and_then(parse),
                _ if k == OVERRIDE_STAT.as_bytes() => {
                    e.override_stat = get()?.and_then(|v| parse_override(&v))
                }
                _ => {}
            }
        }
        if attr.kind == FileKind::Directory && !e.opaque {
            let mut marker = name.as_bytes().to_vec();
            marker.push(b'/');
            marker.extend_from_slice(OPAQUE_MARKER);
            e.opaque = match rustix::fs::statat(dir, marker.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(_) => true,
                // No marker, or a directory we may not search: not marked.
                Err(rustix::io::Errno::NOENT | rustix::io::Errno::ACCESS) => false,
                Err(err) => return Err(err.into()),
            };
        }
        Ok(Some(e))
    }

    /// The union inode number entry `name` keeps from its lower origin, if it has one (a
    /// listing needs only this of each entry).
    pub fn origin_ino(&self, dir: BorrowedFd<'_>, name: &OsStr) -> Result<Option<u64>> {
        self.bookkeeping(dir, Some(name), INO_XATTR)
            .map(|v| v.and_then(parse))
    }

    /// Reads one of our xattrs under either prefix, ours first.
    fn bookkeeping(
        &self,
        dir: BorrowedFd<'_>,
        name: Option<&OsStr>,
        suffix: &str,
    ) -> Result<Option<Vec<u8>>> {
        let other = if self.prefix == "trusted." {
            "user."
        } else {
            "trusted."
        };
        for prefix in [self.prefix, other] {
            if let Some(v) = host::get_xattr(dir, name, OsStr::new(&format!("{prefix}{suffix}")))? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// Lists an upper directory with whiteouts (both formats) decoded; `root` leaves out
    /// the temporary names of an upper that is also its work directory.
    pub fn read_dir(dir: BorrowedFd<'_>, root: bool) -> Result<Vec<UpperDirEntry>> {
        let mut out = Vec::new();
        for e in host::read_dir(dir)? {
            if let Some(target) = oci_whiteout_target(&e.name) {
                if !target.is_empty() {
                    out.push(UpperDirEntry::Whiteout(target.to_os_string()));
                }
                continue;
            }
            if root && e.name.as_bytes().starts_with(b"#strata-") {
                continue;
            }
            let kind = match e.kind {
                Some(FileKind::CharDevice) | None => match host::stat_at(dir, &e.name)? {
                    Some(a) if a.is_whiteout_device() => {
                        out.push(UpperDirEntry::Whiteout(e.name));
                        continue;
                    }
                    Some(a) => a.kind,
                    None => continue,
                },
                Some(k) => k,
            };
            out.push(UpperDirEntry::Entry {
                name: e.name,
                host_ino: e.ino,
                kind,
            });
        }
        Ok(out)
    }

    /// The attributes of an upper entry with the union's link count: a file with several
    /// lower names keeps in the link-count bookkeeping what to add to its host count (minus
    /// its index link, plus its lower names not copied up yet), as the kernel keeps
    /// `overlay.nlink`. An upper name of an indexed file shares its inode with the index
    /// entry, so a host count of 1 means no index (unless `e.shared`).
    pub fn stat(&self, e: &UpperRef) -> Result<Attr> {
        let attr = e.stat()?;
        self.union_nlink(attr, e)
    }

    /// [`Upper::stat`] of attributes already read.
    pub fn union_nlink(&self, attr: Attr, e: &UpperRef) -> Result<Attr> {
        self.union_nlink_at(attr, e.dir.as_fd(), e.name.as_deref(), e.shared)
    }

    /// [`Upper::union_nlink`] of entry `name` of `dir` (no name: the descriptor's file).
    pub fn union_nlink_at(
        &self,
        mut attr: Attr,
        dir: BorrowedFd<'_>,
        name: Option<&OsStr>,
        shared: bool,
    ) -> Result<Attr> {
        if attr.kind == FileKind::Directory || !(shared || attr.nlink > 1) {
            return Ok(attr);
        }
        let diff = self
            .bookkeeping(dir, name, NLINK_XATTR)?
            .and_then(parse::<i64>);
        if let Some(diff) = diff {
            attr.nlink = (attr.nlink as i64 + diff).max(1) as u64;
        }
        Ok(attr)
    }

    /// The ownership recorded for a rootless mount, if any.
    pub fn override_of(&self, e: &UpperRef) -> Result<Option<Override>> {
        self.override_at(e.dir.as_fd(), e.name.as_deref())
    }

    /// [`Upper::override_of`] of entry `name` of `dir` (no name: the descriptor's file).
    pub fn override_at(
        &self,
        dir: BorrowedFd<'_>,
        name: Option<&OsStr>,
    ) -> Result<Option<Override>> {
        Ok(host::get_xattr(dir, name, OsStr::new(OVERRIDE_STAT))?.and_then(|v| parse_override(&v)))
    }

    /// Whether `dir/name` is a whiteout device (a deleted lower name a new entry replaces
    /// with one rename).
    pub fn has_whiteout_device(&self, dir: BorrowedFd<'_>, name: &OsStr) -> Result<bool> {
        Ok(host::stat_at(dir, name)?.is_some_and(|a| a.is_whiteout_device()))
    }

    // ---- changing the format ----

    /// Changes the owner of `e`; where the host refuses (rootless) and `may_override`,
    /// records it in the override xattr, as containers/storage reads it.
    pub fn chown(
        &self,
        e: &UpperRef,
        uid: Option<u32>,
        gid: Option<u32>,
        may_override: bool,
    ) -> Result<()> {
        match e.chown(uid, gid) {
            Ok(()) => Ok(()),
            Err(err @ (rustix::io::Errno::PERM | rustix::io::Errno::INVAL)) => {
                if !may_override {
                    return Err(err.into());
                }
                let cur = e.stat()?;
                let (cur_uid, cur_gid, cur_perm) =
                    self.override_of(e)?.unwrap_or((cur.uid, cur.gid, cur.perm));
                let value =
                    format_override(uid.unwrap_or(cur_uid), gid.unwrap_or(cur_gid), cur_perm);
                e.set_xattr(OsStr::new(OVERRIDE_STAT), &value, 0)
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Changes the permission bits of `e` (a symlink has none), and those of its override
    /// record when it has one.
    pub fn chmod(&self, e: &UpperRef, perm: u32, read_override: bool) -> Result<()> {
        let perm = perm & 0o7777;
        if e.stat()?.kind != FileKind::Symlink {
            e.chmod(perm)?;
        }
        if read_override {
            if let Some((u, g, _)) = self.override_of(e)? {
                e.set_xattr(OsStr::new(OVERRIDE_STAT), &format_override(u, g, perm), 0)?;
            }
        }
        Ok(())
    }

    /// Copies a lower entry into the upper as `dir/name`: built in the work directory with
    /// its data (or metadata only), xattrs, owner, mode and times, then renamed into place
    /// (the directory's times kept). A non-directory with several lower names also gets a
    /// link in the index, so that its other names copy up to the same inode.
    pub fn copy_in(&self, src: CopyIn<'_>, dir: &SharedFd, name: &OsStr) -> Result<()> {
        let attr = src.attr;
        let tmp = self.temp_name();
        let work = self.work.as_fd();
        match &src.content {
            Content::Directory => rustix::fs::mkdirat(work, &tmp, Mode::from_raw_mode(0o700))?,
            Content::Data(_) | Content::MetaOnly => {
                let dst = host::open_at(
                    work,
                    &tmp,
                    OFlags::CREATE | OFlags::EXCL | OFlags::RDWR,
                    0o600,
                )?;
                // Only written data needs a sync before the rename: the size, xattrs and the
                // rename itself are journalled in order, so a crash that keeps the name keeps
                // them too. A metadata-only copy (a chmod, a chown) writes no data: no sync.
                let synced = match &src.content {
                    Content::Data(f) => f.copy_to(dst.as_fd()).and_then(|()| match self.fsync {
                        true => rustix::fs::fdatasync(&dst).map_err(Errno::from),
                        false => Ok(()),
                    }),
                    _ => rustix::fs::ftruncate(&dst, attr.size).map_err(Errno::from),
                };
                if let Err(e) = synced {
                    let _ = rustix::fs::unlinkat(work, &tmp, AtFlags::empty());
                    return Err(e);
                }
            }
            Content::Symlink(target) => {
                rustix::fs::symlinkat(OsStr::from_bytes(target), work, &tmp)?
            }
            Content::Node => rustix::fs::mknodat(
                work,
                &tmp,
                file_type(attr.kind),
                Mode::from_raw_mode(attr.perm),
                attr.rdev as _,
            )?,
        }
        let entry = UpperRef::at(self.work.clone(), tmp.clone());
        let is_symlink = attr.kind == FileKind::Symlink;
        // Symlinks take no user.* xattrs; nothing else may be dropped.
        let set = |key: &OsStr, value: &[u8]| match entry.set_xattr(key, value, 0) {
            Err(_) if is_symlink => Ok(()),
            r => r,
        };
        let result = (|| -> Result<()> {
            for (key, value) in &src.xattrs {
                set(key, value)?;
            }
            set(
                &self.xattr(INO_XATTR),
                src.origin_ino.to_string().as_bytes(),
            )?;
            if attr.kind != FileKind::Directory && attr.nlink > 1 {
                // The union count is the lower one: host links are this name and the index.
                let diff = (attr.nlink as i64 - 2).to_string();
                set(&self.xattr(NLINK_XATTR), diff.as_bytes())?;
            }
            if matches!(src.content, Content::MetaOnly) {
                entry.set_xattr(&self.xattr(METACOPY_XATTR), b"", 0)?;
            }
            self.chown(&entry, Some(attr.uid), Some(attr.gid), src.may_override)?;
            if !is_symlink {
                entry.chmod(attr.perm)?;
            }
            entry.utimes(&timestamps_of(&attr))
        })();
        if let Err(e) = result {
            let _ = rustix::fs::unlinkat(work, &tmp, AtFlags::empty());
            let _ = rustix::fs::unlinkat(work, &tmp, AtFlags::REMOVEDIR);
            return Err(e);
        }
        keeping_dir_times(dir, || self.install(&tmp, dir.as_fd(), name))?;
        if let Some(key) = src.index_key {
            match rustix::fs::linkat(
                dir.as_fd(),
                name,
                self.index.as_fd(),
                index_name(key),
                AtFlags::empty(),
            ) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Copies the data of a metadata-only copy-up into its upper file `e`. The metacopy
    /// mark goes only once the data is complete (and synced), so a crash leaves the lower
    /// data in use.
    pub fn finish_metacopy(&self, e: &UpperRef, src: &dyn LayerFile) -> Result<()> {
        let dst = e.open(OFlags::WRONLY)?;
        src.copy_to(dst.as_fd())?;
        if self.fsync {
            dst.sync_data()?;
        }
        e.remove_xattr(&self.xattr(METACOPY_XATTR))
    }

    /// Gives directory `dir/name`, which moves, a redirect to `lower_path` (kernel
    /// `redirect_dir`) unless it has one: its lower contents follow it.
    pub fn set_redirect(&self, dir: BorrowedFd<'_>, name: &OsStr, lower_path: &[u8]) -> Result<()> {
        let key = self.xattr(REDIRECT_XATTR);
        if host::get_xattr(dir, Some(name), &key)?.is_none() {
            let mut path = b"/".to_vec();
            path.extend_from_slice(lower_path);
            host::set_xattr(dir, Some(name), &key, &path, 0)?;
        }
        Ok(())
    }

    /// Replaces the upper entry `name` with a whiteout in one rename.
    pub fn replace_with_whiteout(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        is_dir: bool,
    ) -> Result<()> {
        let tmp = self.temp_name();
        match rustix::fs::mknodat(
            self.work.as_fd(),
            &tmp,
            FileType::CharacterDevice,
            Mode::empty(),
            0,
        ) {
            Ok(()) => self.swap_in(&tmp, dir, name, is_dir),
            Err(rustix::io::Errno::PERM) => {
                // Rootless: a `.wh.` file next to the name, then the name goes.
                self.create_whiteout_file(dir, name)?;
                let flags = match is_dir {
                    true => AtFlags::REMOVEDIR,
                    false => AtFlags::empty(),
                };
                rustix::fs::unlinkat(dir, name, flags)?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Moves work entry `tmp` over `dir/name` (a whiteout, or an entry that becomes one) in
    /// one rename: a directory is exchanged with it and what it replaced removed, so the
    /// name never shows the lower entry in between.
    pub fn swap_in(
        &self,
        tmp: &OsStr,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        is_dir: bool,
    ) -> Result<()> {
        let flags = match is_dir {
            true => RenameFlags::EXCHANGE,
            false => RenameFlags::empty(),
        };
        rustix::fs::renameat_with(self.work.as_fd(), tmp, dir, name, flags)?;
        if is_dir {
            // What is left under `tmp` is the whiteout, or the directory replaced.
            match rustix::fs::unlinkat(self.work.as_fd(), tmp, AtFlags::empty()) {
                Err(rustix::io::Errno::ISDIR) => {
                    rustix::fs::unlinkat(self.work.as_fd(), tmp, AtFlags::REMOVEDIR)?
                }
                r => r?,
            }
        }
        Ok(())
    }
}

/// Parses `uid:gid:mode` of the override xattr (mode octal, with or without file type bits,
/// trailing fields ignored).
pub fn parse_override(value: &[u8]) -> Option<Override> {
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

/// What [`Upper::copy_in`] copies.
pub struct CopyIn<'a> {
    /// The lower entry's attributes (kind, mode, owner, times, device, link count, size).
    pub attr: Attr,
    pub content: Content<'a>,
    /// The lower entry's xattrs to keep (the mount's own bookkeeping left out).
    pub xattrs: Vec<(OsString, Vec<u8>)>,
    /// The union inode number the copy keeps.
    pub origin_ino: u64,
    /// For a file with several lower names: its index entry's number.
    pub index_key: Option<u64>,
    /// Record in the override xattr an owner the host refuses (rootless).
    pub may_override: bool,
}

/// The contents of an entry [`Upper::copy_in`] copies.
pub enum Content<'a> {
    Directory,
    /// A regular file's data.
    Data(&'a dyn LayerFile),
    /// A regular file, metadata only: sized, data left in the lower (kernel `metacopy`).
    MetaOnly,
    Symlink(&'a [u8]),
    /// A device, fifo or socket.
    Node,
}

fn parse<T: std::str::FromStr>(v: Vec<u8>) -> Option<T> {
    std::str::from_utf8(&v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests;
