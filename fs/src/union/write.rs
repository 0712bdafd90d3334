//! Changes: copy-up, creation, removal, rename, attribute and xattr changes.
//!
//! Every change takes the namespace lock alone, copies what it touches up, then changes
//! the upper. Entries that replace a whiteout are built in the work directory and swapped
//! in with one rename, so the lower name never shows through in between.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use rustix::fs::{
    AtFlags, FileType, Mode, OFlags, RenameFlags, Timespec, Timestamps, UTIME_NOW, UTIME_OMIT,
};

use super::{Entry, Handle, Location, LowerHit, OpenFile, Resolved, Union};
use crate::attr::{Attr, FileKind, Timestamp};
use crate::errno::{Errno, Result};
use crate::host::{self, SharedFd};
use crate::inode::{Ino, LowerRef, Node, ROOT};
use crate::layer::{LayerPath, WHITEOUT_PREFIX};
use crate::upper::{self, Upper};

/// A file handle number and the file it opened.
pub type Opened = (u64, Arc<OpenFile>);

/// Who asks, in merged-view ids.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

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

/// What a new entry is.
pub enum NewKind<'a> {
    Regular { flags: i32 },
    Directory,
    Symlink(&'a [u8]),
    Node { kind: FileKind, rdev: u64 },
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

fn file_type(kind: FileKind) -> FileType {
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

/// A host entry to change: a directory and a name, or a descriptor of the file itself.
struct HostEntry {
    dir: SharedFd,
    name: Option<OsString>,
}

impl HostEntry {
    fn proc_path(&self) -> String {
        format!("/proc/self/fd/{}", self.dir.as_raw_fd())
    }

    fn chmod(&self, perm: u32) -> Result<()> {
        let mode = Mode::from_raw_mode(perm);
        match &self.name {
            Some(n) => {
                rustix::fs::chmodat(self.dir.as_fd(), n.as_os_str(), mode, AtFlags::empty())?
            }
            None => rustix::fs::chmod(self.proc_path().as_str(), mode)?,
        }
        Ok(())
    }

    fn chown(&self, uid: Option<u32>, gid: Option<u32>) -> rustix::io::Result<()> {
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

    fn utimes(&self, times: &Timestamps) -> Result<()> {
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

    fn open(&self, flags: OFlags) -> Result<std::fs::File> {
        Ok(std::fs::File::from(match &self.name {
            Some(n) => host::open_at(self.dir.as_fd(), n, flags, 0)?,
            None => rustix::fs::open(
                self.proc_path().as_str(),
                flags | OFlags::CLOEXEC,
                Mode::empty(),
            )?,
        }))
    }

    fn stat(&self) -> Result<Attr> {
        match &self.name {
            Some(n) => host::stat_at(self.dir.as_fd(), n)?.ok_or(Errno::ENOENT),
            None => host::stat_fd(self.dir.as_fd()),
        }
    }

    fn set_xattr(&self, key: &OsStr, value: &[u8], flags: i32) -> Result<()> {
        host::set_xattr(self.dir.as_fd(), self.name.as_deref(), key, value, flags)
    }

    fn get_xattr(&self, key: &OsStr) -> Result<Option<Vec<u8>>> {
        host::get_xattr(self.dir.as_fd(), self.name.as_deref(), key)
    }

    fn remove_xattr(&self, key: &OsStr) -> Result<()> {
        host::remove_xattr(self.dir.as_fd(), self.name.as_deref(), key)
    }
}

impl Union {
    fn host_entry(&self, ino: Ino, node: &Node) -> Result<HostEntry> {
        Ok(match self.location(ino, node)? {
            Location::UpperRoot => HostEntry {
                dir: self.upper()?.root.clone(),
                name: None,
            },
            Location::Upper { dir, name } => HostEntry {
                dir,
                name: Some(name),
            },
            Location::Index(name) => HostEntry {
                dir: self.upper()?.index.clone(),
                name: Some(name),
            },
            Location::Detached(fd) => HostEntry {
                dir: fd,
                name: None,
            },
            Location::Lower(_) => return Err(Errno::EIO),
        })
    }

    /// Records ownership the host refused (rootless): the override xattr, as
    /// containers/storage reads it.
    fn chown_or_override(&self, e: &HostEntry, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        match e.chown(uid, gid) {
            Ok(()) => Ok(()),
            Err(err @ (rustix::io::Errno::PERM | rustix::io::Errno::INVAL)) => {
                if !self.read_override {
                    return Err(err.into());
                }
                let cur = e.stat()?;
                let (cur_uid, cur_gid, cur_perm) = match e
                    .get_xattr(OsStr::new(upper::OVERRIDE_STAT))?
                    .and_then(|v| upper::parse_override(&v))
                {
                    Some(o) => o,
                    None => (cur.uid, cur.gid, cur.perm),
                };
                let value = upper::format_override(
                    uid.unwrap_or(cur_uid),
                    gid.unwrap_or(cur_gid),
                    cur_perm,
                );
                e.set_xattr(OsStr::new(upper::OVERRIDE_STAT), &value, 0)
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Copies `ino` up with its data (completing a metadata-only copy).
    pub(super) fn copy_up(&self, ino: Ino) -> Result<()> {
        self.copy_up_inner(ino, false)
    }

    /// Copies `ino` up; a lower regular file gets its metadata only.
    fn copy_up_meta(&self, ino: Ino) -> Result<()> {
        self.copy_up_inner(ino, true)
    }

    fn copy_up_inner(&self, ino: Ino, meta_only: bool) -> Result<()> {
        let upper = self.upper()?;
        if ino == ROOT {
            return Ok(());
        }
        let node = self.node(ino)?;
        if node.place.detached.is_some() {
            return Ok(());
        }
        if node.place.upper {
            if node.place.metacopy && !meta_only {
                self.complete_metacopy(ino, &node)?;
            }
            return Ok(());
        }
        self.copy_up(node.parent)?;
        let pfd = self.upper_dir(node.parent)?;
        let index_name = super::index_name(node.key);
        if node.kind != FileKind::Directory && !node.place.single_link && self.indexed(node.key)? {
            self.link_from_index(&index_name, &pfd, &node.name)?;
            self.set_place(ino, |p| {
                p.upper = true;
                p.metacopy = false;
            });
            return Ok(());
        }
        let src = match node.kind {
            FileKind::Directory => node.place.lower_dirs.first().cloned(),
            _ => node.place.origin.clone(),
        }
        .ok_or(Errno::EIO)?;
        let layer = &self.lowers[src.layer];
        let attr = layer.stat(&src.path)?;
        let tmp = upper.temp_name();
        let work = upper.work.as_fd();
        let mut metacopy = false;
        match node.kind {
            FileKind::Directory => rustix::fs::mkdirat(work, &tmp, Mode::from_raw_mode(0o700))?,
            FileKind::Regular => {
                let dst = host::open_at(
                    work,
                    &tmp,
                    OFlags::CREATE | OFlags::EXCL | OFlags::RDWR,
                    0o600,
                )?;
                if meta_only && attr.nlink <= 1 {
                    rustix::fs::ftruncate(&dst, attr.size)?;
                    metacopy = true;
                } else {
                    let srcf = layer.open(&src.path)?;
                    upper::copy_data(&srcf, dst.as_fd(), attr.size)?;
                }
                if upper.fsync {
                    rustix::fs::fsync(&dst)?;
                }
            }
            FileKind::Symlink => {
                let target = layer.read_link(&src.path)?;
                rustix::fs::symlinkat(OsStr::from_bytes(&target), work, &tmp)?;
            }
            kind => rustix::fs::mknodat(
                work,
                &tmp,
                file_type(kind),
                Mode::from_raw_mode(attr.perm),
                attr.rdev as _,
            )?,
        }
        let entry = HostEntry {
            dir: upper.work.clone(),
            name: Some(tmp.clone()),
        };
        let result = (|| -> Result<()> {
            for key in layer.list_xattrs(&src.path)? {
                if self.is_private_xattr(&key) && key.as_bytes() != upper::OVERRIDE_STAT.as_bytes()
                {
                    continue;
                }
                if let Some(v) = layer.get_xattr(&src.path, &key)? {
                    if let Err(e) = entry.set_xattr(&key, &v, 0) {
                        // Symlinks take no user.* xattrs; nothing else may be dropped.
                        if node.kind != FileKind::Symlink {
                            return Err(e);
                        }
                    }
                }
            }
            let ino_value = node.key.to_string();
            if let Err(e) = entry.set_xattr(&upper.xattr("strata.ino"), ino_value.as_bytes(), 0) {
                if node.kind != FileKind::Symlink {
                    return Err(e);
                }
            }
            if node.kind != FileKind::Directory && attr.nlink > 1 {
                // The union count is the lower one: host links are this name and the index.
                let diff = (attr.nlink as i64 - 2).to_string();
                if let Err(e) =
                    entry.set_xattr(&upper.xattr(upper::NLINK_XATTR), diff.as_bytes(), 0)
                {
                    if node.kind != FileKind::Symlink {
                        return Err(e);
                    }
                }
            }
            if metacopy {
                entry.set_xattr(&upper.xattr("overlay.metacopy"), b"", 0)?;
            }
            self.chown_or_override(&entry, Some(attr.uid), Some(attr.gid))?;
            if node.kind != FileKind::Symlink {
                entry.chmod(attr.perm)?;
            }
            entry.utimes(&timestamps_of(&attr))?;
            Ok(())
        })();
        if let Err(e) = result {
            let _ = rustix::fs::unlinkat(work, &tmp, AtFlags::empty());
            let _ = rustix::fs::unlinkat(work, &tmp, AtFlags::REMOVEDIR);
            return Err(e);
        }
        keeping_dir_times(&pfd, || upper.install(&tmp, pfd.as_fd(), &node.name))?;
        if node.kind != FileKind::Directory && attr.nlink > 1 {
            match rustix::fs::linkat(
                pfd.as_fd(),
                &node.name,
                upper.index.as_fd(),
                &index_name,
                AtFlags::empty(),
            ) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.set_place(ino, |p| {
            p.upper = true;
            p.metacopy = metacopy;
        });
        if node.kind != FileKind::Directory && attr.nlink > 1 {
            self.copy_up_other_names(node.key, &src, &index_name)?;
        }
        Ok(())
    }

    /// Gives a copied-up file with several lower names (its index entry `index_name`)
    /// the name `name` in upper directory `pfd`: a host link, which moves that name from the
    /// lower count to the host one.
    fn link_from_index(&self, index_name: &OsStr, pfd: &SharedFd, name: &OsStr) -> Result<()> {
        let upper = self.upper()?;
        keeping_dir_times(pfd, || {
            rustix::fs::linkat(
                upper.index.as_fd(),
                index_name,
                pfd.as_fd(),
                name,
                AtFlags::empty(),
            )
            .map_err(Errno::from)
        })?;
        let index = HostEntry {
            dir: upper.index.clone(),
            name: Some(index_name.to_os_string()),
        };
        let key = upper.xattr(upper::NLINK_XATTR);
        let diff = index
            .get_xattr(&key)?
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<i64>().ok());
        if let Some(diff) = diff {
            index.set_xattr(&key, (diff - 1).to_string().as_bytes(), 0)?;
        }
        Ok(())
    }

    /// After the first copy-up of a lower file with several names: every other name the
    /// union shows for it (same place in the merged tree, same file) is linked into the upper
    /// at once. The upper alone then says they are one file, so kernel overlayfs reading it
    /// shows the new content under each name; our index entry would be the only record
    /// otherwise, and the kernel's index has its own format (origin file handles).
    fn copy_up_other_names(&self, key: Ino, src: &LowerRef, index_name: &OsStr) -> Result<()> {
        for path in self.lowers[src.layer].hard_links(&src.path)? {
            if path == src.path {
                continue;
            }
            let Some((dir, name)) = path.split_last() else {
                continue;
            };
            let Some(parent) = self.merged_dir(&dir)? else {
                continue;
            };
            let r = match self.resolve(parent, name) {
                Ok(r) => r,
                Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => continue,
                Err(e) => return Err(e),
            };
            if r.key != key || r.place.upper {
                continue;
            }
            self.copy_up(parent)?;
            let pfd = self.upper_dir(parent)?;
            self.link_from_index(index_name, &pfd, name)?;
        }
        Ok(())
    }

    /// The node of directory `path` of the merged tree, entered without a lookup count;
    /// `None` when the path is no directory there.
    fn merged_dir(&self, path: &LayerPath) -> Result<Option<Ino>> {
        let mut ino = ROOT;
        for comp in path.components() {
            let r = match self.resolve(ino, comp) {
                Ok(r) if r.kind == FileKind::Directory => r,
                Ok(_) | Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Ok(None),
                Err(e) => return Err(e),
            };
            ino = self
                .table
                .lock()
                .expect("table")
                .intern(ino, comp.to_os_string(), r.kind, r.key, r.place, false)
                .0;
        }
        Ok(Some(ino))
    }

    /// Copies the data of a metadata-only copy-up into its upper file. The metacopy mark is
    /// removed only once the data is complete (and synced), so a crash leaves the lower
    /// data in use.
    fn complete_metacopy(&self, ino: Ino, node: &Node) -> Result<()> {
        let upper = self.upper()?;
        let origin = node.place.origin.clone().ok_or(Errno::EIO)?;
        let layer = &self.lowers[origin.layer];
        let size = layer.stat(&origin.path)?.size;
        let src = layer.open(&origin.path)?;
        let entry = self.host_entry(ino, node)?;
        let dst = entry.open(OFlags::WRONLY)?;
        upper::copy_data(&src, dst.as_fd(), size)?;
        if upper.fsync {
            dst.sync_all()?;
        }
        entry.remove_xattr(&upper.xattr("overlay.metacopy"))?;
        self.set_place(ino, |p| p.metacopy = false);
        Ok(())
    }

    fn set_place(&self, ino: Ino, f: impl FnOnce(&mut crate::inode::Placement)) {
        if let Some(n) = self.table.lock().expect("table").get_mut(ino) {
            f(&mut n.place);
        }
    }

    /// Checks that `name` is free in `parent` and copies the parent up. Returns the parent's
    /// upper directory and whether a lower layer holds the name (under a whiteout).
    fn prepare_new(&self, parent: Ino, name: &OsStr) -> Result<(SharedFd, bool)> {
        host::check_name(name)?;
        if name.as_bytes().starts_with(WHITEOUT_PREFIX) {
            return Err(Errno::EINVAL);
        }
        match self.resolve(parent, name) {
            Ok(_) => return Err(Errno::EEXIST),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
        self.upper()?;
        self.copy_up(parent)?;
        let pnode = self.node(parent)?;
        let lower_has = self.lower_visible(&pnode.place.lower_dirs, name)?;
        Ok((self.upper_dir(parent)?, lower_has))
    }

    /// Creates a file, directory, symlink or special file. Regular files come back open.
    pub fn create(
        &self,
        parent: Ino,
        name: &OsStr,
        new: NewKind<'_>,
        perm: u32,
        caller: Caller,
    ) -> Result<(Entry, Option<Opened>)> {
        let _ns = self.ns.write().expect("ns");
        let upper = self.upper()?;
        let (pfd, lower_has) = self.prepare_new(parent, name)?;
        let pattr = host::stat_fd(pfd.as_fd())?;
        let mut uid = self.ids.uid_to_host(caller.uid);
        let mut gid = self.ids.gid_to_host(caller.gid);
        let mut perm = perm & 0o7777;
        if pattr.perm & libc::S_ISGID != 0 {
            gid = pattr.gid;
            if matches!(new, NewKind::Directory) {
                perm |= libc::S_ISGID;
            }
        }
        if self.read_override {
            // What a rootless user sees as the parent's owner may be an override.
            uid = self.ids.uid_to_host(caller.uid);
        }
        // A whiteout at the name (the lower file was deleted): build in the work
        // directory and swap in, so the lower name never shows in between.
        let whiteout_dev =
            matches!(host::stat_at(pfd.as_fd(), name)?, Some(a) if a.is_whiteout_device());
        let (dir, at): (BorrowedFd<'_>, OsString) = if whiteout_dev {
            (upper.work.as_fd(), upper.temp_name())
        } else {
            (pfd.as_fd(), name.to_os_string())
        };
        let mut file = None;
        match new {
            NewKind::Regular { flags } => {
                let acc = OFlags::from_bits_retain(
                    (flags
                        & (libc::O_ACCMODE
                            | libc::O_APPEND
                            | libc::O_SYNC
                            | libc::O_DSYNC
                            | libc::O_DIRECT
                            | libc::O_NONBLOCK)) as u32,
                );
                file = Some(host::open_at(
                    dir,
                    &at,
                    OFlags::CREATE | OFlags::EXCL | acc,
                    perm,
                )?);
            }
            NewKind::Directory => rustix::fs::mkdirat(dir, &at, Mode::from_raw_mode(perm))?,
            NewKind::Symlink(target) => rustix::fs::symlinkat(OsStr::from_bytes(target), dir, &at)?,
            NewKind::Node { kind, rdev } => rustix::fs::mknodat(
                dir,
                &at,
                file_type(kind),
                Mode::from_raw_mode(perm),
                rdev as _,
            )?,
        }
        let is_dir = matches!(new, NewKind::Directory);
        let entry = HostEntry {
            dir: if whiteout_dev {
                upper.work.clone()
            } else {
                pfd.clone()
            },
            name: Some(at.clone()),
        };
        let finish = (|| -> Result<()> {
            let (euid, egid) = (
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
            );
            if uid != euid || gid != egid {
                self.chown_or_override(&entry, Some(uid), Some(gid))?;
            }
            if perm & 0o7000 != 0 && !matches!(new, NewKind::Symlink(_)) {
                // The process umask is 0, but setgid can be dropped by creation rules.
                entry.chmod(perm)?;
            }
            if is_dir && lower_has {
                upper.set_opaque(entry.dir.as_fd(), &at)?;
            }
            if whiteout_dev {
                let flags = if is_dir {
                    RenameFlags::EXCHANGE
                } else {
                    RenameFlags::empty()
                };
                rustix::fs::renameat_with(upper.work.as_fd(), &at, pfd.as_fd(), name, flags)?;
                if is_dir {
                    rustix::fs::unlinkat(upper.work.as_fd(), &at, AtFlags::empty())?;
                }
            }
            upper.remove_whiteout_file(pfd.as_fd(), name)
        })();
        if let Err(e) = finish {
            let _ = rustix::fs::unlinkat(
                entry.dir.as_fd(),
                &at,
                if is_dir {
                    AtFlags::REMOVEDIR
                } else {
                    AtFlags::empty()
                },
            );
            return Err(e);
        }
        let r = self.resolve(parent, name)?;
        let entry = self.enter(parent, name, r, true)?;
        let opened = match file {
            Some(fd) => {
                let of = Arc::new(OpenFile {
                    file: std::fs::File::from(fd),
                    range: None,
                    ino: entry.attr.ino,
                    upper: true,
                });
                Some((self.add_handle(Handle::File(of.clone())), of))
            }
            None => None,
        };
        Ok((entry, opened))
    }

    /// Makes a hard link `newparent/newname` to `ino`.
    pub fn link(&self, ino: Ino, newparent: Ino, newname: &OsStr) -> Result<Entry> {
        let _ns = self.ns.write().expect("ns");
        let node = self.node(ino)?;
        if node.kind == FileKind::Directory {
            return Err(Errno::EPERM);
        }
        let (pfd, _) = self.prepare_new(newparent, newname)?;
        self.copy_up(ino)?;
        let node = self.node(ino)?;
        let src = self.host_entry(ino, &node)?;
        let upper = self.upper()?;
        // Over a whiteout device (a deleted lower name) the link is made in the work dir
        // and renamed over it: the name goes from deleted to linked in one step.
        let over_whiteout =
            host::stat_at(pfd.as_fd(), newname)?.is_some_and(|a| a.is_whiteout_device());
        let tmp = upper.temp_name();
        let (dir, name) = match over_whiteout {
            true => (upper.work.as_fd(), tmp.as_os_str()),
            false => (pfd.as_fd(), newname),
        };
        match &src.name {
            Some(n) => {
                rustix::fs::linkat(src.dir.as_fd(), n.as_os_str(), dir, name, AtFlags::empty())?
            }
            None => rustix::fs::linkat(
                rustix::fs::CWD,
                src.proc_path().as_str(),
                dir,
                name,
                AtFlags::SYMLINK_FOLLOW,
            )?,
        }
        if over_whiteout {
            if let Err(e) = rustix::fs::renameat(upper.work.as_fd(), &tmp, pfd.as_fd(), newname) {
                let _ = rustix::fs::unlinkat(upper.work.as_fd(), &tmp, AtFlags::empty());
                return Err(e.into());
            }
        }
        upper.remove_whiteout(pfd.as_fd(), newname)?;
        let r = self.resolve(newparent, newname)?;
        self.enter(newparent, newname, r, true)
    }

    /// Removes a non-directory.
    pub fn unlink(&self, parent: Ino, name: &OsStr) -> Result<()> {
        let _ns = self.ns.write().expect("ns");
        let upper = self.upper()?;
        let r = self.resolve(parent, name)?;
        if r.kind == FileKind::Directory {
            return Err(Errno::EISDIR);
        }
        let pnode = self.node(parent)?;
        let lower_has = self.lower_visible(&pnode.place.lower_dirs, name)?;
        let mut node_ino = self.table.lock().expect("table").by_key(r.key);
        let mut in_upper = r.place.upper;
        if node_ino.is_some() {
            if let Some(ino) = self.copy_up_linked(parent, name, &r)? {
                node_ino = Some(ino);
                in_upper = true;
            }
        }
        let mut detached = None;
        if in_upper {
            let pfd = self.upper_dir(parent)?;
            if node_ino.is_some() {
                detached = upper::hold(pfd.as_fd(), name);
            }
            if lower_has {
                self.replace_with_whiteout(&pfd, name, false)?;
            } else {
                rustix::fs::unlinkat(pfd.as_fd(), name, AtFlags::empty())?;
            }
        } else {
            self.copy_up(parent)?;
            let pfd = self.upper_dir(parent)?;
            upper.create_whiteout(pfd.as_fd(), name)?;
        }
        if let Some(ino) = node_ino {
            self.name_removed(ino, detached)?;
        }
        Ok(())
    }

    /// Before a name of a lower non-directory with several names goes away (unlink, or a
    /// rename over it): copies the file up under that name, with its hard-link index entry,
    /// as the kernel's `ovl_nlink_start` does. Its node then keeps a host file to answer
    /// from through its other names, instead of a remembered name that no longer leads to
    /// it. Returns the node, when it was copied up.
    fn copy_up_linked(&self, parent: Ino, name: &OsStr, r: &Resolved) -> Result<Option<Ino>> {
        if r.kind == FileKind::Directory || r.place.upper || r.place.single_link {
            return Ok(None);
        }
        // The node now names this entry (it may have answered to another name).
        let (ino, _) = self.table.lock().expect("table").intern(
            parent,
            name.to_os_string(),
            r.kind,
            r.key,
            r.place.clone(),
            false,
        );
        self.copy_up(ino)?;
        Ok(Some(ino))
    }

    /// After a name of non-directory node `ino` went away: the node is unlinked when that was
    /// its last name; otherwise `detached`, its file held before the name went, answers for
    /// it (its remembered name may now lead to another file, or nowhere).
    fn name_removed(&self, ino: Ino, detached: Option<SharedFd>) -> Result<()> {
        let gone = match &detached {
            Some(fd) => host::stat_fd(fd.as_fd())?.nlink == 0,
            None => self
                .node(ino)
                .ok()
                .and_then(|n| n.place.origin.map(|o| self.lowers[o.layer].stat(&o.path)))
                .and_then(|a| a.ok())
                .is_none_or(|a| a.nlink <= 1),
        };
        let mut t = self.table.lock().expect("table");
        if gone {
            t.mark_unlinked(ino, detached);
        } else if let Some(n) = t.get_mut(ino) {
            n.place.detached = detached;
        }
        Ok(())
    }

    /// Replaces the upper entry `name` with a whiteout in one rename.
    fn replace_with_whiteout(&self, pfd: &SharedFd, name: &OsStr, is_dir: bool) -> Result<()> {
        let upper = self.upper()?;
        let tmp = upper.temp_name();
        match rustix::fs::mknodat(
            upper.work.as_fd(),
            &tmp,
            FileType::CharacterDevice,
            Mode::empty(),
            0,
        ) {
            Ok(()) => {
                let flags = if is_dir {
                    RenameFlags::EXCHANGE
                } else {
                    RenameFlags::empty()
                };
                rustix::fs::renameat_with(upper.work.as_fd(), &tmp, pfd.as_fd(), name, flags)?;
                if is_dir {
                    rustix::fs::unlinkat(upper.work.as_fd(), &tmp, AtFlags::REMOVEDIR)?;
                }
                Ok(())
            }
            Err(rustix::io::Errno::PERM) => {
                // Rootless: a `.wh.` file next to the name, then the name goes.
                upper.create_whiteout_file(pfd.as_fd(), name)?;
                rustix::fs::unlinkat(
                    pfd.as_fd(),
                    name,
                    if is_dir {
                        AtFlags::REMOVEDIR
                    } else {
                        AtFlags::empty()
                    },
                )?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes an empty (merged) directory.
    pub fn rmdir(&self, parent: Ino, name: &OsStr) -> Result<()> {
        let _ns = self.ns.write().expect("ns");
        let upper = self.upper()?;
        let r = self.resolve(parent, name)?;
        if r.kind != FileKind::Directory {
            return Err(Errno::ENOTDIR);
        }
        let (ino, _) = self.table.lock().expect("table").intern(
            parent,
            name.to_os_string(),
            r.kind,
            r.key,
            r.place.clone(),
            false,
        );
        let node = self.node(ino)?;
        if !self.merged_listing(ino, &node)?.is_empty() {
            return Err(Errno::ENOTEMPTY);
        }
        let pnode = self.node(parent)?;
        let lower_has = self.lower_visible(&pnode.place.lower_dirs, name)?;
        if r.place.upper {
            let pfd = self.upper_dir(parent)?;
            let cfd = host::open_dir_path(pfd.as_fd(), name)?;
            Upper::clear_dir(cfd.as_fd())?;
            if lower_has {
                self.replace_with_whiteout(&pfd, name, true)?;
            } else {
                rustix::fs::unlinkat(pfd.as_fd(), name, AtFlags::REMOVEDIR)?;
            }
        } else {
            self.copy_up(parent)?;
            let pfd = self.upper_dir(parent)?;
            upper.create_whiteout(pfd.as_fd(), name)?;
        }
        self.table.lock().expect("table").mark_unlinked(ino, None);
        self.forget_upper_dir(ino);
        Ok(())
    }

    /// Prepares a directory that moves: one with lower directories gets a redirect to its
    /// lower path (kernel `redirect_dir`), so its lower content follows it.
    fn copy_up_for_move(&self, ino: Ino) -> Result<()> {
        let upper = self.upper()?;
        let node = self.node(ino)?;
        self.copy_up(ino)?;
        if node.kind == FileKind::Directory && !node.place.lower_dirs.is_empty() {
            let pfd = self.upper_dir(node.parent)?;
            let key = upper.xattr("overlay.redirect");
            if host::get_xattr(pfd.as_fd(), Some(&node.name), &key)?.is_none() {
                let mut path = b"/".to_vec();
                path.extend_from_slice(node.place.lower_dirs[0].path.as_bytes());
                host::set_xattr(pfd.as_fd(), Some(&node.name), &key, &path, 0)?;
            }
        }
        Ok(())
    }

    /// Renames, with RENAME_NOREPLACE and RENAME_EXCHANGE as rename(2).
    pub fn rename(
        &self,
        parent: Ino,
        name: &OsStr,
        newparent: Ino,
        newname: &OsStr,
        flags: u32,
    ) -> Result<()> {
        let _ns = self.ns.write().expect("ns");
        let upper = self.upper()?;
        host::check_name(newname)?;
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 || (noreplace && exchange)
        {
            return Err(Errno::EINVAL);
        }
        if newname.as_bytes().starts_with(WHITEOUT_PREFIX) {
            return Err(Errno::EINVAL);
        }
        let src = self.resolve(parent, name)?;
        let dst = match self.resolve(newparent, newname) {
            Ok(d) => Some(d),
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(e),
        };
        if noreplace && dst.is_some() {
            return Err(Errno::EEXIST);
        }
        if exchange && dst.is_none() {
            return Err(Errno::ENOENT);
        }
        let (src_ino, _) = self.table.lock().expect("table").intern(
            parent,
            name.to_os_string(),
            src.kind,
            src.key,
            src.place.clone(),
            false,
        );
        let dst_ino = dst.as_ref().map(|d| {
            self.table
                .lock()
                .expect("table")
                .intern(
                    newparent,
                    newname.to_os_string(),
                    d.kind,
                    d.key,
                    d.place.clone(),
                    false,
                )
                .0
        });
        if dst_ino == Some(src_ino) {
            return Ok(());
        }
        if let (Some(d), false) = (&dst, exchange) {
            match (
                src.kind == FileKind::Directory,
                d.kind == FileKind::Directory,
            ) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                (true, true) => {
                    let dnode = self.node(dst_ino.expect("dst"))?;
                    if !self
                        .merged_listing(dst_ino.expect("dst"), &dnode)?
                        .is_empty()
                    {
                        return Err(Errno::ENOTEMPTY);
                    }
                }
                (false, false) => {}
            }
        }
        self.copy_up(parent)?;
        self.copy_up(newparent)?;
        self.copy_up_for_move(src_ino)?;
        if exchange {
            self.copy_up_for_move(dst_ino.expect("dst"))?;
        } else if let Some(d) = &dst {
            self.copy_up_linked(newparent, newname, d)?;
        }
        let pfd = self.upper_dir(parent)?;
        let npfd = self.upper_dir(newparent)?;
        let src_lower_has = self.lower_visible(&self.node(parent)?.place.lower_dirs, name)?;
        let dst_lower_has = self.lower_visible(&self.node(newparent)?.place.lower_dirs, newname)?;
        let dst_upper = match dst_ino {
            Some(d) => self.node(d)?.place.upper,
            None => false,
        };
        let mut dst_detached = None;
        match (&dst, exchange) {
            (Some(d), false) if dst_upper => {
                if d.kind == FileKind::Directory {
                    let cfd = host::open_dir_path(npfd.as_fd(), newname)?;
                    Upper::clear_dir(cfd.as_fd())?;
                } else {
                    dst_detached = upper::hold(npfd.as_fd(), newname);
                }
            }
            (None, _) => upper.remove_whiteout(npfd.as_fd(), newname)?,
            _ => {}
        }
        let mut host_flags = RenameFlags::empty();
        if noreplace {
            host_flags |= RenameFlags::NOREPLACE;
        }
        if exchange {
            host_flags |= RenameFlags::EXCHANGE;
        }
        rustix::fs::renameat_with(pfd.as_fd(), name, npfd.as_fd(), newname, host_flags)?;
        if !exchange && src_lower_has {
            upper.create_whiteout(pfd.as_fd(), name)?;
        }
        // A plain upper directory moved over a lower name must not merge with it.
        let src_has_redirect = !self.node(src_ino)?.place.lower_dirs.is_empty();
        if src.kind == FileKind::Directory && !src_has_redirect && dst_lower_has {
            upper.set_opaque(npfd.as_fd(), newname)?;
        }
        if exchange {
            let dst_node = self.node(dst_ino.expect("dst"))?;
            if dst_node.kind == FileKind::Directory
                && dst_node.place.lower_dirs.is_empty()
                && src_lower_has
            {
                upper.set_opaque(pfd.as_fd(), name)?;
            }
        }
        // The table follows.
        if let (Some(d), false) = (dst_ino, exchange) {
            if src.kind == FileKind::Directory {
                self.table.lock().expect("table").mark_unlinked(d, None);
            } else {
                self.name_removed(d, dst_detached)?;
            }
        }
        {
            let mut t = self.table.lock().expect("table");
            t.set_name(src_ino, newparent, newname.to_os_string());
            if let Some(n) = t.get_mut(src_ino) {
                n.place.upper = true;
            }
            if let (Some(d), true) = (dst_ino, exchange) {
                t.set_name(d, parent, name.to_os_string());
                if let Some(n) = t.get_mut(d) {
                    n.place.upper = true;
                }
            }
        }
        if let (Some(d), false) = (dst_ino, exchange) {
            self.forget_upper_dir(d);
        }
        Ok(())
    }

    /// SETATTR: truncation copies the data up, other changes the metadata only.
    pub fn setattr(&self, ino: Ino, set: SetAttr) -> Result<Attr> {
        let _ns = self.ns.write().expect("ns");
        let upper = self.upper()?;
        let from_handle = set
            .fh
            .and_then(|fh| self.file_handle(fh).ok())
            .filter(|f| f.upper);
        let entry = match &from_handle {
            Some(f) => HostEntry {
                dir: Arc::new(f.file.try_clone()?.into()),
                name: None,
            },
            None => {
                if set.size.is_some() {
                    self.copy_up(ino)?;
                } else {
                    self.copy_up_meta(ino)?;
                }
                let node = self.node(ino)?;
                self.host_entry(ino, &node)?
            }
        };
        if let Some(size) = set.size {
            match &from_handle {
                Some(f) => f.file.set_len(size)?,
                None => entry.open(OFlags::WRONLY)?.set_len(size)?,
            }
        }
        if set.uid.is_some() || set.gid.is_some() {
            let uid = set.uid.map(|u| self.ids.uid_to_host(u));
            let gid = set.gid.map(|g| self.ids.gid_to_host(g));
            self.chown_or_override(&entry, uid, gid)?;
        }
        if let Some(mode) = set.mode {
            let perm = mode & 0o7777;
            let kind = entry.stat()?.kind;
            if kind != FileKind::Symlink {
                entry.chmod(perm)?;
            }
            if self.read_override {
                if let Some((u, g, _)) = entry
                    .get_xattr(OsStr::new(upper::OVERRIDE_STAT))?
                    .and_then(|v| upper::parse_override(&v))
                {
                    entry.set_xattr(
                        OsStr::new(upper::OVERRIDE_STAT),
                        &upper::format_override(u, g, perm),
                        0,
                    )?;
                }
            }
        }
        if set.atime.is_some() || set.mtime.is_some() {
            entry.utimes(&Timestamps {
                last_access: timespec(set.atime),
                last_modification: timespec(set.mtime),
            })?;
        }
        let _ = upper;
        let node = self.node(ino)?;
        match &from_handle {
            Some(f) => {
                let host = host::stat_fd(f.file.as_fd())?;
                let host = self.union_nlink(host, f.file.as_fd(), None, false)?;
                let over = match self.read_override {
                    true => entry
                        .get_xattr(OsStr::new(upper::OVERRIDE_STAT))?
                        .and_then(|v| upper::parse_override(&v)),
                    false => None,
                };
                self.present(ino, &node, over, host)
            }
            None => self.attr_of(ino, &node),
        }
    }

    pub fn setxattr(&self, ino: Ino, key: &OsStr, value: &[u8], flags: i32) -> Result<()> {
        if self.is_private_xattr(key) {
            return Err(Errno::EPERM);
        }
        let _ns = self.ns.write().expect("ns");
        self.copy_up_meta(ino)?;
        let node = self.node(ino)?;
        self.host_entry(ino, &node)?.set_xattr(key, value, flags)
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
        self.host_entry(ino, &node)?.remove_xattr(key)
    }
}

#[allow(dead_code)]
fn _assert_types(_: LowerHit) {}

/// The atime and mtime of `attr`, as utimensat takes them.
fn timestamps_of(attr: &Attr) -> Timestamps {
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
fn keeping_dir_times<T>(dir: &SharedFd, change: impl FnOnce() -> Result<T>) -> Result<T> {
    let entry = HostEntry {
        dir: dir.clone(),
        name: None,
    };
    let before = entry.stat()?;
    let out = change()?;
    entry.utimes(&timestamps_of(&before))?;
    Ok(out)
}
