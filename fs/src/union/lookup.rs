//! Names to nodes: the top-down lookup through the upper and the lower stack, redirects,
//! entering nodes in the table, and their attributes.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use super::{Entry, Location, Resolved, Union};
use crate::attr::{Attr, FileKind};
use crate::errno::{Errno, Result};
use crate::host;
use crate::inode::{stable_ino, Ino, Node, Placement};
use crate::layer::stack::{self, LowerHit, LowerRef};
use crate::layer::WHITEOUT_PREFIX;
use crate::upper::{Upper, UpperEntry};

impl Union {
    /// Looks `name` up in a stack of lower directories ([`stack::lookup`]: whiteouts,
    /// opaque directories and lower redirects honoured).
    fn lower_lookup(&self, stack: &[LowerRef], name: &OsStr) -> Result<LowerHit> {
        stack::lookup(&self.lowers, stack, name)
    }

    /// Whether any lower entry shows under `name` in a directory whose lowers are `stack`.
    pub(super) fn lower_visible(&self, stack: &[LowerRef], name: &OsStr) -> Result<bool> {
        Ok(matches!(
            self.lower_lookup(stack, name)?,
            LowerHit::Found { .. }
        ))
    }

    /// Resolves `name` in directory `parent` without entering it in the table.
    pub(super) fn resolve(&self, parent: Ino, name: &OsStr) -> Result<Resolved> {
        host::check_name(name)?;
        if name.as_bytes().starts_with(WHITEOUT_PREFIX) {
            return Err(Errno::ENOENT);
        }
        let pnode = self.node(parent)?;
        if pnode.kind != FileKind::Directory {
            return Err(Errno::ENOTDIR);
        }
        let pplace = &pnode.place;
        if pplace.upper && self.upper.is_some() {
            let pfd = self.upper_dir(parent)?;
            match Upper::entry(pfd.as_fd(), name)? {
                Some(e) if e.whiteout => return Err(Errno::ENOENT),
                Some(e) => return self.resolve_upper(e, name, pplace),
                None => {
                    if !pplace.lower_dirs.is_empty() && Upper::has_file_whiteout(pfd.as_fd(), name)?
                    {
                        return Err(Errno::ENOENT);
                    }
                }
            }
        }
        match self.lower_lookup(&pplace.lower_dirs, name)? {
            LowerHit::Found { attr, top, dirs } => {
                let key = stable_ino(top.layer + 1, attr.ino);
                let place = if attr.kind == FileKind::Directory {
                    Placement {
                        lower_dirs: dirs.into(),
                        ..Placement::default()
                    }
                } else {
                    Placement {
                        origin: Some(top),
                        single_link: attr.nlink <= 1,
                        ..Placement::default()
                    }
                };
                Ok(Resolved {
                    kind: attr.kind,
                    key,
                    place,
                    host_attr: Some(attr),
                    upper_attr: None,
                })
            }
            LowerHit::Missing => Err(Errno::ENOENT),
        }
    }

    /// An upper entry as a node: its number (a copied-up file keeps its lower one, as
    /// overlayfs keeps the origin's st_ino), and for a directory the lower directories
    /// merged into it (through its redirect, unless opaque), for a metacopy its origin.
    fn resolve_upper(&self, e: UpperEntry, name: &OsStr, pplace: &Placement) -> Result<Resolved> {
        let upper_attr = Some((e.union_attr(), e.override_stat));
        let key = e.origin_ino.unwrap_or(stable_ino(0, e.attr.ino));
        let mut place = Placement {
            upper: true,
            ..Placement::default()
        };
        if e.attr.kind == FileKind::Directory {
            if !e.opaque {
                place.lower_dirs = match e.redirect {
                    Some(to) => {
                        stack::follow_redirect(&self.lowers, &pplace.lower_dirs, 0, &to)?.into()
                    }
                    None => match self.lower_lookup(&pplace.lower_dirs, name)? {
                        LowerHit::Found { attr, dirs, .. } if attr.kind == FileKind::Directory => {
                            dirs.into()
                        }
                        _ => Arc::from(Vec::new()),
                    },
                };
            }
        } else if e.attr.kind == FileKind::Regular && e.metacopy {
            if let LowerHit::Found { attr, top, .. } =
                self.lower_lookup(&pplace.lower_dirs, name)?
            {
                if attr.kind == FileKind::Regular {
                    place.metacopy = true;
                    place.origin = Some(top);
                }
            }
        }
        Ok(Resolved {
            kind: e.attr.kind,
            key,
            place,
            host_attr: None,
            upper_attr,
        })
    }

    /// Enters resolved `name` of `parent` in the table without a lookup count (for an
    /// operation of the union's own, not a kernel reference) and returns its node.
    pub(super) fn intern_uncounted(&self, parent: Ino, name: &OsStr, r: &Resolved) -> Ino {
        self.table
            .lock()
            .expect("table")
            .intern(
                parent,
                name.to_os_string(),
                r.kind,
                r.key,
                r.place.clone(),
                false,
            )
            .0
    }

    pub(super) fn enter(
        &self,
        parent: Ino,
        name: &OsStr,
        r: Resolved,
        count: bool,
    ) -> Result<Entry> {
        let (ino, generation) = self.table.lock().expect("table").intern(
            parent,
            name.to_os_string(),
            r.kind,
            r.key,
            r.place,
            count,
        );
        let node = self.node(ino)?;
        let attr = match (r.host_attr, r.upper_attr) {
            // The node is the upper entry just read (interning replaced its placement).
            (_, Some((host, over))) if node.place.upper && node.place.detached.is_none() => {
                let over = over.filter(|_| self.read_override);
                self.present(ino, &node, over, host)?
            }
            (Some(host), _) if !node.place.upper => {
                let loc = self.location(ino, &node)?;
                // The lower hit's attributes, unless another name of this lower file was
                // copied up: the index holds the file then.
                let host = match loc {
                    Location::Lower(_) => host,
                    Location::Upper(_) => self.stat_location(&loc)?,
                };
                let over = self.override_of(&loc)?;
                self.present(ino, &node, over, host)?
            }
            _ => self.attr_of(ino, &node)?,
        };
        Ok(Entry { attr, generation })
    }

    /// FUSE LOOKUP: counts one reference on the node returned.
    pub fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Entry> {
        let _ns = self.ns.read().expect("ns");
        let r = self.resolve(parent, name)?;
        self.enter(parent, name, r, true)
    }

    /// FUSE FORGET.
    /// Whether node `ino` is in the table (a server that took over a connection starts
    /// with none of the nodes the kernel holds).
    pub fn knows(&self, ino: Ino) -> bool {
        self.table.lock().expect("table").get(ino).is_some()
    }

    /// Re-enters node `ino`, which a previous server of this connection handed the kernel
    /// as `name` in `parent`; `ESTALE` when that name leads to another file now. Inode
    /// numbers derive from where a file lives, so the same file gets the same number.
    pub fn revive(&self, parent: Ino, name: &OsStr, ino: Ino) -> Result<()> {
        let e = self.lookup(parent, name)?;
        if e.attr.ino != ino {
            self.forget(e.attr.ino, 1);
            return Err(Errno(libc::ESTALE));
        }
        Ok(())
    }

    pub fn forget(&self, ino: Ino, n: u64) {
        let dropped = {
            let mut t = self.table.lock().expect("table");
            t.forget(ino, n);
            t.take_dropped()
        };
        for ino in dropped {
            self.forget_upper_dir(ino);
        }
    }

    pub fn getattr(&self, ino: Ino, fh: Option<u64>) -> Result<Attr> {
        let _ns = self.ns.read().expect("ns");
        let node = self.node(ino)?;
        if let Some(f) = fh.and_then(|fh| self.file_handle(fh).ok()) {
            if let Ok(file) = f.upper_file() {
                // An open upper file: its descriptor answers even once its name is gone.
                return self.attr_of_open(ino, &node, file);
            }
        }
        self.attr_of(ino, &node)
    }

    /// The attributes of node `ino` from an open upper file of it.
    pub(super) fn attr_of_open(&self, ino: Ino, node: &Node, file: &File) -> Result<Attr> {
        let upper = self.upper()?;
        let host = upper.union_nlink_at(host::stat_fd(file.as_fd())?, file.as_fd(), None, false)?;
        let over = match self.read_override {
            true => upper.override_at(file.as_fd(), None)?,
            false => None,
        };
        self.present(ino, node, over, host)
    }

    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        let _ns = self.ns.read().expect("ns");
        let node = self.node(ino)?;
        if node.kind != FileKind::Symlink {
            return Err(Errno::EINVAL);
        }
        match self.location(ino, &node)? {
            Location::Upper(e) => e.read_link(),
            Location::Lower(r) => self.lowers[r.layer].read_link(&r.path),
        }
    }
}
