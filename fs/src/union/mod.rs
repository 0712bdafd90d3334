//! The merge of read-only layers and a copy-on-write upper, as pure logic: every call
//! takes union inode numbers and names and returns a value or an [`Errno`]. `fuse.rs`
//! only translates. Kernel overlayfs is the reference for every case:
//!
//! - lookup goes top-down: the upper first, then each lower directory merged into the
//!   parent; a whiteout ends the search, an opaque directory ends the merge below it, a
//!   non-directory ends it too;
//! - a directory renamed in the upper carries a redirect to its lower path, and its lower
//!   directories are found through it (the kernel's `redirect_dir`); a redirect found in a
//!   lower layer (an upper that became a layer) is followed in the layers below it, as the
//!   kernel follows one, an absolute path from their root or a bare name in the same parent;
//! - merged listings put the upper first, then each lower, dropping names already seen and
//!   names whited out above;
//! - every change copies the file up first (`copy_up.rs`); chmod/chown/utimens/xattr
//!   changes of a lower regular file copy its metadata only.
//!
//! The upper's on-disk format (whiteouts, opaque and redirect marks, metacopy, origin
//! inode, link counts, override_stat) is [`Upper`]'s: this module asks it typed questions
//! and gives it typed orders, and never names a bookkeeping xattr. A node's file is in the
//! upper or in a lower (`Location`).
//!
//! Files, by concept: `lookup.rs` (names to nodes, attributes), `readdir.rs` (merged
//! listings), `files.rs` (open files: read, write, seek, statfs), `copy_up.rs`,
//! `namespace.rs` (create, link, unlink, rmdir, rename), `attrs.rs` (setattr, xattrs).
//!
//! Lock order: `ns` (a read-write lock over the namespace: lookups and reads share it,
//! changes take it alone) → `table` → `upper_dirs` → `handles`. Host calls are made with
//! only `ns` held, never `table`.

mod attrs;
mod copy_up;
mod files;
mod lookup;
mod namespace;
mod readdir;

#[cfg(test)]
mod suite;
#[cfg(test)]
mod tests;

pub use attrs::{SetAttr, SetTime};
use files::FileData;
pub use files::OpenFile;
pub use namespace::{Caller, NewKind};

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use lru::LruCache;

use crate::attr::{Attr, FileKind};
use crate::errno::{Errno, Result};
use crate::host::{self, SharedFd};
use crate::ids::IdMapper;
use crate::inode::{Ino, InodeTable, LowerRef, Node, Placement, ROOT};
use crate::layer::stack;
use crate::layer::Layer;
use crate::upper::{self, Override, Upper, UpperRef};

/// How a union is put together.
pub struct UnionConfig {
    /// Lower layers, top first.
    pub lowers: Vec<Arc<dyn Layer>>,
    /// The writable layer; `None` for a read-only union.
    pub upper: Option<Upper>,
    pub ids: IdMapper,
    /// Read `user.containers.override_stat` (rootless mounts).
    pub read_override: bool,
    /// Upper directory handles kept open.
    pub fd_cache: usize,
}

/// A looked-up entry: the attributes carry the node number as `ino`.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub attr: Attr,
    pub generation: u64,
}

/// One merged directory entry.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub ino: u64,
    pub kind: FileKind,
    pub name: OsString,
}

enum Handle {
    File(Arc<OpenFile>),
    /// A directory; its listing once read.
    Dir(Option<Arc<Vec<DirEntry>>>),
}

/// A name resolved to where its file lives, before it is entered in the table.
struct Resolved {
    kind: FileKind,
    key: Ino,
    place: Placement,
    /// The host attributes of the node's location when the lookup already read them (a
    /// lower hit), saving a second stat per looked-up name.
    host_attr: Option<Attr>,
    /// For an upper entry: its attributes (union link count) and override record, as the
    /// one read of the entry found them, saving a second stat and xattr reads.
    upper_attr: Option<(Attr, Option<Override>)>,
}

/// Where a node's file is: an upper entry (its name, the index entry of a copied-up hard
/// link, or a held handle), or a lower file or directory.
enum Location {
    Upper(UpperRef),
    Lower(LowerRef),
}

/// The union filesystem.
pub struct Union {
    lowers: Vec<Arc<dyn Layer>>,
    upper: Option<Upper>,
    ids: IdMapper,
    read_override: bool,
    ns: RwLock<()>,
    table: Mutex<InodeTable>,
    upper_dirs: Mutex<LruCache<Ino, SharedFd>>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_handle: AtomicU64,
}

impl std::fmt::Debug for Union {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Union")
            .field("lowers", &self.lowers)
            .field("upper", &self.upper.is_some())
            .finish()
    }
}

impl Union {
    /// A union of `config`'s layers: any [`Layer`]s (top first) and an optional upper.
    pub fn new(config: UnionConfig) -> Union {
        let root = Placement {
            upper: config.upper.is_some(),
            lower_dirs: stack::root_stack(&config.lowers).into(),
            ..Placement::default()
        };
        Union {
            lowers: config.lowers,
            upper: config.upper,
            ids: config.ids,
            read_override: config.read_override,
            ns: RwLock::new(()),
            table: Mutex::new(InodeTable::new(root)),
            upper_dirs: Mutex::new(LruCache::new(
                NonZeroUsize::new(config.fd_cache.max(16)).expect("nonzero"),
            )),
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
        }
    }

    pub fn is_read_only(&self) -> bool {
        self.upper.is_none()
    }

    fn upper(&self) -> Result<&Upper> {
        self.upper.as_ref().ok_or(Errno::EROFS)
    }

    fn node(&self, ino: Ino) -> Result<Node> {
        self.table
            .lock()
            .expect("table")
            .get(ino)
            .cloned()
            .ok_or(Errno::ENOENT)
    }

    // ---- locating files ----

    /// The upper directory of node `ino`, which must exist in the upper.
    fn upper_dir(&self, ino: Ino) -> Result<SharedFd> {
        let upper = self.upper()?;
        if ino == ROOT {
            return Ok(upper.root.clone());
        }
        if let Some(fd) = self.upper_dirs.lock().expect("upper dirs").get(&ino) {
            return Ok(fd.clone());
        }
        let node = self.node(ino)?;
        if !node.place.upper || node.kind != FileKind::Directory {
            return Err(Errno::EIO);
        }
        let parent = self.upper_dir(node.parent)?;
        let fd = Arc::new(host::open_dir_path(parent.as_fd(), &node.name)?);
        self.upper_dirs
            .lock()
            .expect("upper dirs")
            .put(ino, fd.clone());
        Ok(fd)
    }

    fn forget_upper_dir(&self, ino: Ino) {
        self.upper_dirs.lock().expect("upper dirs").pop(&ino);
    }

    fn location(&self, ino: Ino, node: &Node) -> Result<Location> {
        let p = &node.place;
        if let Some(fd) = &p.detached {
            return Ok(Location::Upper(UpperRef::held(fd.clone())));
        }
        let first_lower = || p.lower_dirs.first().cloned().ok_or(Errno::EIO);
        if ino == ROOT {
            return Ok(match &self.upper {
                Some(u) => Location::Upper(UpperRef::of(u.root.clone())),
                None => Location::Lower(first_lower()?),
            });
        }
        if p.upper {
            return Ok(Location::Upper(UpperRef::at(
                self.upper_dir(node.parent)?,
                node.name.clone(),
            )));
        }
        if node.kind == FileKind::Directory {
            return Ok(Location::Lower(first_lower()?));
        }
        let origin = p.origin.clone().ok_or(Errno::EIO)?;
        if !p.single_link {
            if let Some(u) = &self.upper {
                // Another name of this lower file was copied up: the index holds it.
                if u.is_indexed(node.key)? {
                    return Ok(Location::Upper(u.index_ref(node.key)));
                }
            }
        }
        Ok(Location::Lower(origin))
    }

    fn stat_location(&self, loc: &Location) -> Result<Attr> {
        match loc {
            Location::Upper(e) => self.upper()?.stat(e),
            Location::Lower(r) => self.lowers[r.layer].stat(&r.path),
        }
    }

    fn location_xattr(&self, loc: &Location, key: &OsStr) -> Result<Option<Vec<u8>>> {
        match loc {
            Location::Upper(e) => e.get_xattr(key),
            Location::Lower(r) => self.lowers[r.layer].get_xattr(&r.path, key),
        }
    }

    fn location_xattr_names(&self, loc: &Location) -> Result<Vec<OsString>> {
        match loc {
            Location::Upper(e) => e.list_xattrs(),
            Location::Lower(r) => self.lowers[r.layer].list_xattrs(&r.path),
        }
    }

    /// The ownership a rootless mount recorded for a file, if any.
    fn override_of(&self, loc: &Location) -> Result<Option<Override>> {
        if !self.read_override {
            return Ok(None);
        }
        match loc {
            Location::Upper(e) => self.upper()?.override_of(e),
            // A lower that was once a rootless upper carries the record too.
            Location::Lower(r) => Ok(self.lowers[r.layer]
                .get_xattr(&r.path, OsStr::new(upper::OVERRIDE_STAT))?
                .and_then(|v| upper::parse_override(&v))),
        }
    }

    /// The upper entry of a node that is in the upper; `EIO` for a lower one.
    fn upper_entry(&self, ino: Ino, node: &Node) -> Result<UpperRef> {
        match self.location(ino, node)? {
            Location::Upper(e) => Ok(e),
            Location::Lower(_) => Err(Errno::EIO),
        }
    }

    /// Host attributes turned into what the merged view shows.
    fn present(
        &self,
        ino: Ino,
        node: &Node,
        over: Option<Override>,
        mut attr: Attr,
    ) -> Result<Attr> {
        attr.ino = ino;
        if let Some((uid, gid, perm)) = over {
            attr.uid = uid;
            attr.gid = gid;
            attr.perm = perm;
        }
        attr.uid = self.ids.uid_to_view(attr.uid);
        attr.gid = self.ids.gid_to_view(attr.gid);
        let p = &node.place;
        if node.kind == FileKind::Directory
            && (p.lower_dirs.len() > 1 || (p.upper && !p.lower_dirs.is_empty()))
        {
            // As overlayfs: a merged directory's link count is not known without a full
            // listing, and 1 tells find(1) not to rely on it.
            attr.nlink = 1;
        }
        if p.unlinked {
            attr.nlink = 0;
        }
        Ok(attr)
    }

    fn attr_of(&self, ino: Ino, node: &Node) -> Result<Attr> {
        let loc = self.location(ino, node)?;
        let host = self.stat_location(&loc)?;
        let over = self.override_of(&loc)?;
        self.present(ino, node, over, host)
    }

    fn set_place(&self, ino: Ino, f: impl FnOnce(&mut crate::inode::Placement)) {
        if let Some(n) = self.table.lock().expect("table").get_mut(ino) {
            f(&mut n.place);
        }
    }

    /// Whether an xattr name is the filesystem's own bookkeeping, never shown or changed
    /// through the mount.
    pub fn is_private_xattr(&self, key: &OsStr) -> bool {
        upper::is_bookkeeping_xattr(key, self.read_override)
    }
}
