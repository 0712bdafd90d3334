//! Copy-up: a lower entry becomes an upper one before it changes. What is copied (data or
//! metadata only, xattrs, the origin's number, hard-link sharing) is decided here; how it
//! is written is [`crate::upper::Upper::copy_in`]'s.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

use super::{Resolved, Union};
use crate::attr::FileKind;
use crate::errno::{Errno, Result};
use crate::inode::{Ino, LowerRef, Node, ROOT};
use crate::layer::LayerPath;
use crate::upper::{self, Content, CopyIn};

impl Union {
    /// Copies `ino` up with its data (completing a metadata-only copy).
    pub(super) fn copy_up(&self, ino: Ino) -> Result<()> {
        self.copy_up_inner(ino, false)
    }

    /// Copies `ino` up; a lower regular file gets its metadata only.
    pub(super) fn copy_up_meta(&self, ino: Ino) -> Result<()> {
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
        if node.kind != FileKind::Directory
            && !node.place.single_link
            && upper.is_indexed(node.key)?
        {
            // Another name of this lower inode was copied up: share its inode.
            upper.link_from_index(node.key, &pfd, &node.name)?;
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
        // A file with several names copies whole: its other names will share the inode.
        let metacopy = node.kind == FileKind::Regular && meta_only && attr.nlink <= 1;
        let (file, target);
        let content = match node.kind {
            FileKind::Directory => Content::Directory,
            FileKind::Regular if metacopy => Content::MetaOnly,
            FileKind::Regular => {
                file = layer.open(&src.path)?;
                Content::Data(&*file)
            }
            FileKind::Symlink => {
                target = layer.read_link(&src.path)?;
                Content::Symlink(&target)
            }
            _ => Content::Node,
        };
        let mut xattrs = Vec::new();
        for key in layer.list_xattrs(&src.path)? {
            if self.is_private_xattr(&key) && key.as_bytes() != upper::OVERRIDE_STAT.as_bytes() {
                continue;
            }
            if let Some(v) = layer.get_xattr(&src.path, &key)? {
                xattrs.push((key, v));
            }
        }
        let copy = CopyIn {
            attr,
            content,
            xattrs,
            origin_ino: node.key,
            index_key: (node.kind != FileKind::Directory && attr.nlink > 1).then_some(node.key),
            may_override: self.read_override,
        };
        upper.copy_in(copy, &pfd, &node.name)?;
        self.set_place(ino, |p| {
            p.upper = true;
            p.metacopy = metacopy;
        });
        if node.kind != FileKind::Directory && attr.nlink > 1 {
            self.copy_up_other_names(node.key, &src)?;
        }
        Ok(())
    }

    /// After the first copy-up of a lower file with several names (union number `key`, in
    /// the index): every other name the union shows for it (same place in the merged tree,
    /// same file) is linked into the upper at once. The upper alone then says they are one
    /// file, so kernel overlayfs reading it shows the new content under each name; our index
    /// entry would be the only record otherwise, and the kernel's index has its own format
    /// (origin file handles).
    fn copy_up_other_names(&self, key: Ino, src: &LowerRef) -> Result<()> {
        let upper = self.upper()?;
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
            upper.link_from_index(key, &pfd, name)?;
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
            ino = self.intern_uncounted(ino, comp, &r);
        }
        Ok(Some(ino))
    }

    /// Copies the data of a metadata-only copy-up into its upper file.
    fn complete_metacopy(&self, ino: Ino, node: &Node) -> Result<()> {
        let origin = node.place.origin.clone().ok_or(Errno::EIO)?;
        let src = self.lowers[origin.layer].open(&origin.path)?;
        let entry = self.upper_entry(ino, node)?;
        self.upper()?.finish_metacopy(&entry, &*src)?;
        self.set_place(ino, |p| p.metacopy = false);
        Ok(())
    }

    /// Prepares a directory that moves: one with lower directories gets a redirect to its
    /// lower path (kernel `redirect_dir`), so its lower content follows it.
    pub(super) fn copy_up_for_move(&self, ino: Ino) -> Result<()> {
        let upper = self.upper()?;
        let node = self.node(ino)?;
        self.copy_up(ino)?;
        if node.kind == FileKind::Directory && !node.place.lower_dirs.is_empty() {
            let pfd = self.upper_dir(node.parent)?;
            upper.set_redirect(
                pfd.as_fd(),
                &node.name,
                node.place.lower_dirs[0].path.as_bytes(),
            )?;
        }
        Ok(())
    }

    /// Before a name of a lower non-directory with several names goes away (unlink, or a
    /// rename over it): copies the file up under that name, with its hard-link index entry,
    /// as the kernel's `ovl_nlink_start` does. Its node then keeps a host file to answer
    /// from through its other names, instead of a remembered name that no longer leads to
    /// it. Returns the node, when it was copied up.
    pub(super) fn copy_up_linked(
        &self,
        parent: Ino,
        name: &OsStr,
        r: &Resolved,
    ) -> Result<Option<Ino>> {
        if r.kind == FileKind::Directory || r.place.upper || r.place.single_link {
            return Ok(None);
        }
        // The node now names this entry (it may have answered to another name).
        let ino = self.intern_uncounted(parent, name, r);
        self.copy_up(ino)?;
        Ok(Some(ino))
    }
}
