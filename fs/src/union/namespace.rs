//! Namespace changes: create, link, unlink, rmdir, rename. Each takes the namespace lock
//! alone, copies what it touches up, then changes the upper. Entries that replace a
//! whiteout are built in the work directory and swapped in with one rename, so the lower
//! name never shows through in between.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};

use super::{Entry, FileData, Handle, OpenFile, Union};
use crate::attr::FileKind;
use crate::errno::{Errno, Result};
use crate::host::{self, SharedFd};
use crate::inode::Ino;
use crate::layer::WHITEOUT_PREFIX;
use crate::upper::{self, Upper, UpperRef};

/// A file handle number and the file it opened.
pub type Opened = (u64, Arc<OpenFile>);

/// Who asks, in merged-view ids.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// What a new entry is.
pub enum NewKind<'a> {
    Regular { flags: i32 },
    Directory,
    Symlink(&'a [u8]),
    Node { kind: FileKind, rdev: u64 },
}

impl Union {
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
        let whiteout_dev = upper.has_whiteout_device(pfd.as_fd(), name)?;
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
                upper::file_type(kind),
                Mode::from_raw_mode(perm),
                rdev as _,
            )?,
        }
        let is_dir = matches!(new, NewKind::Directory);
        let entry = UpperRef::at(
            match whiteout_dev {
                true => upper.work.clone(),
                false => pfd.clone(),
            },
            at.clone(),
        );
        let finish = (|| -> Result<()> {
            let (euid, egid) = (
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
            );
            if uid != euid || gid != egid {
                upper.chown(&entry, Some(uid), Some(gid), self.read_override)?;
            }
            if perm & 0o7000 != 0 && !matches!(new, NewKind::Symlink(_)) {
                // The process umask is 0, but setgid can be dropped by creation rules.
                entry.chmod(perm)?;
            }
            if is_dir && lower_has {
                upper.set_opaque(entry.dir.as_fd(), &at)?;
            }
            if whiteout_dev {
                upper.swap_in(&at, pfd.as_fd(), name, is_dir)?;
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
                    data: FileData::Upper(File::from(fd)),
                    ino: entry.attr.ino,
                    upper: true,
                });
                Some((self.add_handle(Handle::File(of.clone())), of))
            }
            None => None,
        };
        Ok((entry, opened))
    }

    /// Creates an unnamed regular file in directory `parent` (`O_TMPFILE`), returned open: a
    /// node with no name, its file held by a descriptor, until a link (`linkat` of
    /// `/proc/self/fd/N`) names it. The host file is an `O_TMPFILE` of the parent's upper
    /// directory, so that link is one `linkat` on the host too.
    pub fn tmpfile(
        &self,
        parent: Ino,
        flags: i32,
        perm: u32,
        caller: Caller,
    ) -> Result<(Entry, Opened)> {
        let _ns = self.ns.write().expect("ns");
        let upper = self.upper()?;
        if self.node(parent)?.kind != FileKind::Directory {
            return Err(Errno::ENOTDIR);
        }
        self.copy_up(parent)?;
        let pfd = self.upper_dir(parent)?;
        let pattr = host::stat_fd(pfd.as_fd())?;
        let uid = self.ids.uid_to_host(caller.uid);
        let gid = match pattr.perm & libc::S_ISGID {
            0 => self.ids.gid_to_host(caller.gid),
            _ => pattr.gid,
        };
        // O_EXCL keeps the file from ever being linked, as on any filesystem.
        let keep = libc::O_ACCMODE
            | libc::O_APPEND
            | libc::O_SYNC
            | libc::O_DSYNC
            | libc::O_DIRECT
            | libc::O_NONBLOCK
            | libc::O_EXCL;
        let oflags =
            OFlags::TMPFILE | OFlags::CLOEXEC | OFlags::from_bits_retain((flags & keep) as u32);
        let fd = rustix::fs::openat(pfd.as_fd(), ".", oflags, Mode::from_raw_mode(perm & 0o7777))?;
        let held: SharedFd = Arc::new(rustix::io::fcntl_dupfd_cloexec(&fd, 3)?);
        let entry = upper::UpperRef::held(held.clone());
        let (euid, egid) = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        if uid != euid || gid != egid {
            upper.chown(&entry, Some(uid), Some(gid), self.read_override)?;
        }
        let key = crate::inode::stable_ino(0, host::stat_fd(held.as_fd())?.ino);
        let place = crate::inode::Placement {
            upper: true,
            detached: Some(held),
            ..Default::default()
        };
        let ino = {
            let mut t = self.table.lock().expect("table");
            let (ino, _) = t.intern(parent, OsString::new(), FileKind::Regular, key, place, true);
            t.mark_unlinked(ino, None);
            ino
        };
        let node = self.node(ino)?;
        let entry = Entry {
            attr: self.attr_of(ino, &node)?,
            generation: node.generation,
        };
        let of = Arc::new(OpenFile {
            data: FileData::Upper(File::from(fd)),
            ino,
            upper: true,
        });
        Ok((entry, (self.add_handle(Handle::File(of.clone())), of)))
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
        let src = self.upper_entry(ino, &node)?;
        let upper = self.upper()?;
        // Over a whiteout device (a deleted lower name) the link is made in the work dir
        // and renamed over it: the name goes from deleted to linked in one step.
        let over_whiteout = upper.has_whiteout_device(pfd.as_fd(), newname)?;
        let tmp = upper.temp_name();
        let (dir, name) = match over_whiteout {
            true => (upper.work.as_fd(), tmp.as_os_str()),
            false => (pfd.as_fd(), newname),
        };
        src.link_to(dir, name)?;
        if over_whiteout {
            if let Err(e) = upper.swap_in(&tmp, pfd.as_fd(), newname, false) {
                let _ = rustix::fs::unlinkat(upper.work.as_fd(), &tmp, AtFlags::empty());
                return Err(e);
            }
        }
        upper.remove_whiteout(pfd.as_fd(), newname)?;
        if node.place.unlinked {
            // Only an O_TMPFILE file can be linked once unlinked (the host refuses others):
            // its node is the one the new name leads to.
            self.table.lock().expect("table").relink(ino);
        }
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
                upper.replace_with_whiteout(pfd.as_fd(), name, false)?;
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

    /// Removes an empty (merged) directory.
    pub fn rmdir(&self, parent: Ino, name: &OsStr) -> Result<()> {
        let _ns = self.ns.write().expect("ns");
        let upper = self.upper()?;
        let r = self.resolve(parent, name)?;
        if r.kind != FileKind::Directory {
            return Err(Errno::ENOTDIR);
        }
        let ino = self.intern_uncounted(parent, name, &r);
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
                upper.replace_with_whiteout(pfd.as_fd(), name, true)?;
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
        let src_ino = self.intern_uncounted(parent, name, &src);
        let dst_ino = dst
            .as_ref()
            .map(|d| self.intern_uncounted(newparent, newname, d));
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
}
