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
//! - every change copies the file up first (`write.rs`); chmod/chown/utimens/xattr changes
//!   of a lower regular file copy its metadata only.
//!
//! Lock order: `ns` (a read-write lock over the namespace: lookups and reads share it,
//! changes take it alone) → `table` → `upper_dirs` → `handles`. Host calls are made with
//! only `ns` held, never `table`.

mod write;

#[cfg(test)]
mod tests;

pub use write::{Caller, NewKind, SetAttr, SetTime};

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use lru::LruCache;
use rustix::fs::OFlags;

use crate::attr::{Attr, FileKind};
use crate::errno::{Errno, Result};
use crate::host::{self, SharedFd};
use crate::ids::IdMapper;
use crate::inode::{stable_ino, Ino, InodeTable, LowerRef, Node, Placement, ROOT};
use crate::layer::{
    ByteRange, Layer, LayerDirEntry, LayerFile, LayerPath, Lookup, WHITEOUT_PREFIX,
};
use crate::upper::{self, Upper};

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

/// An open file of the union.
#[derive(Debug)]
pub struct OpenFile {
    pub file: File,
    /// For a file inside a layer's tar: where its bytes are in `file`. Such a file cannot
    /// be passed through to the kernel.
    pub range: Option<ByteRange>,
    pub ino: Ino,
    /// The file is a host file that writes may go to (an upper file).
    pub upper: bool,
}

enum Handle {
    File(Arc<OpenFile>),
    /// A directory; its listing once read.
    Dir(Option<Arc<Vec<DirEntry>>>),
}

/// The result of looking a name up in a stack of lower directories.
enum LowerHit {
    Missing,
    Found {
        attr: Attr,
        /// The topmost entry.
        top: LowerRef,
        /// For a directory: every lower directory merged into it, top first.
        dirs: Vec<LowerRef>,
    },
}

/// A name resolved to where its file lives, before it is entered in the table.
struct Resolved {
    kind: FileKind,
    key: Ino,
    place: Placement,
    /// The host attributes of the node's location when the lookup already read them (a
    /// lower hit), saving a second stat per looked-up name.
    host_attr: Option<Attr>,
}

/// Where to reach a node's file on the host.
enum Location {
    UpperRoot,
    Upper { dir: SharedFd, name: OsString },
    Index(OsString),
    Detached(SharedFd),
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

fn index_name(key: Ino) -> OsString {
    OsString::from(format!("{key:x}"))
}

impl Union {
    pub fn new(config: UnionConfig) -> Union {
        let root = Placement {
            upper: config.upper.is_some(),
            lower_dirs: (0..config.lowers.len())
                .map(|layer| LowerRef {
                    layer,
                    path: LayerPath::root(),
                })
                .collect(),
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
            return Ok(Location::Detached(fd.clone()));
        }
        if ino == ROOT {
            if self.upper.is_some() {
                return Ok(Location::UpperRoot);
            }
            return Ok(Location::Lower(
                p.lower_dirs.first().cloned().ok_or(Errno::EIO)?,
            ));
        }
        if p.upper {
            return Ok(Location::Upper {
                dir: self.upper_dir(node.parent)?,
                name: node.name.clone(),
            });
        }
        if node.kind == FileKind::Directory {
            return Ok(Location::Lower(
                p.lower_dirs.first().cloned().ok_or(Errno::EIO)?,
            ));
        }
        if let Some(origin) = &p.origin {
            if !p.single_link && self.indexed(node.key)? {
                return Ok(Location::Index(index_name(node.key)));
            }
            return Ok(Location::Lower(origin.clone()));
        }
        Err(Errno::EIO)
    }

    /// Whether a copied-up file with several lower names exists in the index.
    fn indexed(&self, key: Ino) -> Result<bool> {
        match &self.upper {
            Some(u) => Ok(host::stat_at(u.index.as_fd(), &index_name(key))?.is_some()),
            None => Ok(false),
        }
    }

    fn stat_location(&self, loc: &Location) -> Result<Attr> {
        match loc {
            Location::UpperRoot => host::stat_fd(self.upper()?.root.as_fd()),
            Location::Upper { dir, name } => {
                let a = host::stat_at(dir.as_fd(), name)?.ok_or(Errno::ENOENT)?;
                self.union_nlink(a, dir.as_fd(), Some(name), false)
            }
            Location::Index(name) => {
                let index = self.upper()?.index.as_fd();
                let a = host::stat_at(index, name)?.ok_or(Errno::ENOENT)?;
                self.union_nlink(a, index, Some(name), true)
            }
            Location::Detached(fd) => {
                self.union_nlink(host::stat_fd(fd.as_fd())?, fd.as_fd(), None, true)
            }
            Location::Lower(r) => self.lowers[r.layer].stat(&r.path),
        }
    }

    /// The link count the union shows for a copied-up file: a file with several lower
    /// names keeps in `strata.nlink` what to add to its host count (minus its index link,
    /// plus its lower names not copied up yet), as the kernel keeps `overlay.nlink`.
    /// `always` for the index entry and held files, whose host count may be 1; an upper
    /// name of an indexed file shares its inode with the index entry, so 1 means no index.
    fn union_nlink(
        &self,
        mut attr: Attr,
        dir: BorrowedFd<'_>,
        name: Option<&OsStr>,
        always: bool,
    ) -> Result<Attr> {
        let Some(upper) = &self.upper else {
            return Ok(attr);
        };
        if attr.kind == FileKind::Directory || !(always || attr.nlink > 1) {
            return Ok(attr);
        }
        let diff = host::get_xattr(dir, name, &upper.xattr(upper::NLINK_XATTR))?
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<i64>().ok());
        if let Some(diff) = diff {
            attr.nlink = (attr.nlink as i64 + diff).max(1) as u64;
        }
        Ok(attr)
    }

    fn location_xattr(&self, loc: &Location, key: &OsStr) -> Result<Option<Vec<u8>>> {
        match loc {
            Location::UpperRoot => host::get_xattr(self.upper()?.root.as_fd(), None, key),
            Location::Upper { dir, name } => host::get_xattr(dir.as_fd(), Some(name), key),
            Location::Index(name) => host::get_xattr(self.upper()?.index.as_fd(), Some(name), key),
            Location::Detached(fd) => host::get_xattr(fd.as_fd(), None, key),
            Location::Lower(r) => self.lowers[r.layer].get_xattr(&r.path, key),
        }
    }

    fn location_xattr_names(&self, loc: &Location) -> Result<Vec<OsString>> {
        match loc {
            Location::UpperRoot => host::list_xattrs(self.upper()?.root.as_fd(), None),
            Location::Upper { dir, name } => host::list_xattrs(dir.as_fd(), Some(name)),
            Location::Index(name) => host::list_xattrs(self.upper()?.index.as_fd(), Some(name)),
            Location::Detached(fd) => host::list_xattrs(fd.as_fd(), None),
            Location::Lower(r) => self.lowers[r.layer].list_xattrs(&r.path),
        }
    }

    /// The ownership a rootless mount recorded for a file, if any.
    fn override_of(&self, loc: &Location) -> Result<Option<(u32, u32, u32)>> {
        if !self.read_override {
            return Ok(None);
        }
        Ok(self
            .location_xattr(loc, OsStr::new(upper::OVERRIDE_STAT))?
            .and_then(|v| upper::parse_override(&v)))
    }

    /// Host attributes turned into what the merged view shows.
    fn present(
        &self,
        ino: Ino,
        node: &Node,
        over: Option<(u32, u32, u32)>,
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

    // ---- lookup ----

    /// Looks `name` up in a stack of lower directories. A lower directory with a redirect (a
    /// renamed directory of an upper that became a layer) continues at the place it names in
    /// the layers below it, as kernel overlayfs follows redirects in lower layers.
    fn lower_lookup(&self, stack: &[LowerRef], name: &OsStr) -> Result<LowerHit> {
        let mut top: Option<(Attr, LowerRef)> = None;
        let mut dirs = Vec::new();
        for (i, r) in stack.iter().enumerate() {
            match self.lowers[r.layer].lookup(&r.path, name)? {
                Lookup::Missing => continue,
                Lookup::Whiteout => break,
                Lookup::Found { attr, opaque } => {
                    let here = LowerRef {
                        layer: r.layer,
                        path: r.path.join(name),
                    };
                    let is_dir = attr.kind == FileKind::Directory;
                    match &top {
                        None => top = Some((attr, here.clone())),
                        Some(_) if !is_dir => break,
                        Some(_) => {}
                    }
                    if !is_dir {
                        break;
                    }
                    dirs.push(here.clone());
                    if opaque {
                        break;
                    }
                    let below = r.layer + 1;
                    if below < self.lowers.len() {
                        if let Some(to) = self.lowers[r.layer].redirect(&here.path)? {
                            dirs.extend(self.follow_redirect(&stack[i + 1..], below, &to)?);
                            break;
                        }
                    }
                }
            }
        }
        Ok(match top {
            Some((attr, top)) => LowerHit::Found { attr, top, dirs },
            None => LowerHit::Missing,
        })
    }

    /// Whether any lower entry shows under `name` in a directory whose lowers are `stack`.
    fn lower_visible(&self, stack: &[LowerRef], name: &OsStr) -> Result<bool> {
        Ok(matches!(
            self.lower_lookup(stack, name)?,
            LowerHit::Found { .. }
        ))
    }

    /// The directories of layers `below..` a redirect leads to: an absolute path is walked
    /// from the root of those layers; a bare name (the kernel writes one for a rename within
    /// the same directory) is looked up in the rest of the parent's stack, `siblings`.
    fn follow_redirect(
        &self,
        siblings: &[LowerRef],
        below: usize,
        redirect: &[u8],
    ) -> Result<Vec<LowerRef>> {
        let mut stack: Vec<LowerRef> = if redirect.starts_with(b"/") {
            (below..self.lowers.len())
                .map(|layer| LowerRef {
                    layer,
                    path: LayerPath::root(),
                })
                .collect()
        } else {
            siblings
                .iter()
                .filter(|r| r.layer >= below)
                .cloned()
                .collect()
        };
        for comp in LayerPath::from_bytes(redirect).components() {
            match self.lower_lookup(&stack, comp)? {
                LowerHit::Found { attr, dirs, .. } if attr.kind == FileKind::Directory => {
                    stack = dirs
                }
                _ => return Ok(Vec::new()),
            }
        }
        Ok(stack)
    }

    /// Resolves `name` in directory `parent` without entering it in the table.
    fn resolve(&self, parent: Ino, name: &OsStr) -> Result<Resolved> {
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
            match host::stat_at(pfd.as_fd(), name)? {
                Some(a) if a.is_whiteout_device() => return Err(Errno::ENOENT),
                Some(a) => return self.resolve_upper(&pfd, name, a, pplace),
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
                })
            }
            LowerHit::Missing => Err(Errno::ENOENT),
        }
    }

    /// The stable number of upper entry `name`: a copied-up file keeps its lower one (the
    /// `strata.ino` xattr), as overlayfs keeps the origin's st_ino.
    fn upper_key(&self, pfd: &SharedFd, name: &OsStr, host_ino: u64) -> Result<Ino> {
        let upper = self.upper()?;
        Ok(
            match host::get_xattr(pfd.as_fd(), Some(name), &upper.xattr("strata.ino"))? {
                Some(v) => std::str::from_utf8(&v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(stable_ino(0, host_ino)),
                None => stable_ino(0, host_ino),
            },
        )
    }

    fn resolve_upper(
        &self,
        pfd: &SharedFd,
        name: &OsStr,
        a: Attr,
        pplace: &Placement,
    ) -> Result<Resolved> {
        let upper = self.upper()?;
        let key = self.upper_key(pfd, name, a.ino)?;
        let mut place = Placement {
            upper: true,
            ..Placement::default()
        };
        if a.kind == FileKind::Directory {
            if !Upper::is_opaque(pfd.as_fd(), name)? {
                let redirect =
                    host::get_xattr(pfd.as_fd(), Some(name), &upper.xattr("overlay.redirect"))?;
                place.lower_dirs = match redirect {
                    Some(to) => self.follow_redirect(&pplace.lower_dirs, 0, &to)?.into(),
                    None => match self.lower_lookup(&pplace.lower_dirs, name)? {
                        LowerHit::Found { attr, dirs, .. } if attr.kind == FileKind::Directory => {
                            dirs.into()
                        }
                        _ => Arc::from(Vec::new()),
                    },
                };
            }
        } else if a.kind == FileKind::Regular
            && host::get_xattr(pfd.as_fd(), Some(name), &upper.xattr("overlay.metacopy"))?.is_some()
        {
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
            kind: a.kind,
            key,
            place,
            host_attr: None,
        })
    }

    fn enter(&self, parent: Ino, name: &OsStr, r: Resolved, count: bool) -> Result<Entry> {
        let (ino, generation) = self.table.lock().expect("table").intern(
            parent,
            name.to_os_string(),
            r.kind,
            r.key,
            r.place,
            count,
        );
        let node = self.node(ino)?;
        let attr = match r.host_attr {
            Some(host) if !node.place.upper => {
                let loc = self.location(ino, &node)?;
                // The lower hit's attributes, unless another name of this lower file was
                // copied up: the index holds the file then.
                let host = match loc {
                    Location::Lower(_) => host,
                    _ => self.stat_location(&loc)?,
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
            if f.upper {
                // An open upper file: its descriptor answers even once its name is gone.
                let host = host::stat_fd(f.file.as_fd())?;
                let host = self.union_nlink(host, f.file.as_fd(), None, false)?;
                let over = match self.read_override {
                    true => {
                        host::get_xattr(f.file.as_fd(), None, OsStr::new(upper::OVERRIDE_STAT))?
                            .and_then(|v| upper::parse_override(&v))
                    }
                    false => None,
                };
                return self.present(ino, &node, over, host);
            }
        }
        self.attr_of(ino, &node)
    }

    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        let _ns = self.ns.read().expect("ns");
        let node = self.node(ino)?;
        if node.kind != FileKind::Symlink {
            return Err(Errno::EINVAL);
        }
        match self.location(ino, &node)? {
            Location::Upper { dir, name } => host::read_link(dir.as_fd(), &name),
            Location::Index(name) => host::read_link(self.upper()?.index.as_fd(), &name),
            Location::Lower(r) => self.lowers[r.layer].read_link(&r.path),
            // A symlink that lost one of its hard links: its held O_PATH|O_NOFOLLOW handle.
            Location::Detached(fd) => host::read_link(fd.as_fd(), OsStr::new("")),
            Location::UpperRoot => Err(Errno::EINVAL),
        }
    }

    // ---- directories ----

    /// The merged listing of a directory, upper first, without whiteouts and duplicates.
    fn merged_listing(&self, ino: Ino, node: &Node) -> Result<Vec<DirEntry>> {
        if node.kind != FileKind::Directory {
            return Err(Errno::ENOTDIR);
        }
        let mut out = Vec::new();
        let mut seen: HashSet<OsString> = HashSet::new();
        let mut hidden: HashSet<OsString> = HashSet::new();
        let p = &node.place;
        if p.upper && self.upper.is_some() {
            let dir = self.upper_dir(ino)?;
            for e in host::read_dir(dir.as_fd())? {
                if let Some(target) = crate::layer::oci_whiteout_target(&e.name) {
                    if !target.is_empty() {
                        hidden.insert(target.to_os_string());
                    }
                    continue;
                }
                if e.name.as_bytes().starts_with(b"#strata-") && ino == ROOT {
                    continue;
                }
                let kind = match e.kind {
                    Some(FileKind::CharDevice) | None => match host::stat_at(dir.as_fd(), &e.name)?
                    {
                        Some(a) if a.is_whiteout_device() => {
                            hidden.insert(e.name);
                            continue;
                        }
                        Some(a) => a.kind,
                        None => continue,
                    },
                    Some(k) => k,
                };
                seen.insert(e.name.clone());
                out.push(DirEntry {
                    ino: self.upper_key(&dir, &e.name, e.ino)?,
                    kind,
                    name: e.name,
                });
            }
        }
        for r in p.lower_dirs.iter() {
            let entries = self.lowers[r.layer].read_dir(&r.path)?;
            let mut layer_whiteouts = Vec::new();
            for e in entries {
                match e {
                    LayerDirEntry::Whiteout(name) => layer_whiteouts.push(name),
                    LayerDirEntry::Entry {
                        name,
                        ino: host_ino,
                        kind,
                    } => {
                        if seen.contains(&name) || hidden.contains(&name) {
                            continue;
                        }
                        seen.insert(name.clone());
                        out.push(DirEntry {
                            ino: stable_ino(r.layer + 1, host_ino),
                            kind,
                            name,
                        });
                    }
                }
            }
            hidden.extend(layer_whiteouts);
        }
        // d_ino must equal st_ino: a live node may answer to its key under another number.
        let table = self.table.lock().expect("table");
        for e in &mut out {
            if let Some(ino) = table.by_key(e.ino) {
                e.ino = ino;
            }
        }
        Ok(out)
    }

    /// FUSE OPENDIR. The listing is taken at the first READDIR, not here: with the kernel's
    /// directory cache (FOPEN_CACHE_DIR) most opens are answered from it and never read.
    pub fn opendir(&self, ino: Ino) -> Result<u64> {
        let _ns = self.ns.read().expect("ns");
        if self.node(ino)?.kind != FileKind::Directory {
            return Err(Errno::ENOTDIR);
        }
        Ok(self.add_handle(Handle::Dir(None)))
    }

    /// FUSE READDIR(PLUS): the handle's snapshot of the merged listing, whose entry at index
    /// `i` has offset `i + 1`. Offsets stay valid for telldir/seekdir however the directory
    /// changes while it is read; offset 0 (a first read, or rewinddir) takes a new snapshot,
    /// as does a first read that continues where the kernel's cache of the listing ends.
    pub fn readdir(&self, fh: u64, ino: Ino, offset: u64) -> Result<Arc<Vec<DirEntry>>> {
        if offset != 0 {
            match self.handles.lock().expect("handles").get(&fh) {
                Some(Handle::Dir(Some(d))) => return Ok(d.clone()),
                Some(Handle::Dir(None)) => {}
                _ => return Err(Errno::EBADF),
            }
        }
        let _ns = self.ns.read().expect("ns");
        let node = self.node(ino)?;
        let mut entries = vec![
            DirEntry {
                ino,
                kind: FileKind::Directory,
                name: ".".into(),
            },
            DirEntry {
                ino: node.parent,
                kind: FileKind::Directory,
                name: "..".into(),
            },
        ];
        entries.extend(self.merged_listing(ino, &node)?);
        let entries = Arc::new(entries);
        match self.handles.lock().expect("handles").get_mut(&fh) {
            Some(Handle::Dir(d)) => *d = Some(entries.clone()),
            _ => return Err(Errno::EBADF),
        }
        Ok(entries)
    }

    pub fn release(&self, fh: u64) {
        self.handles.lock().expect("handles").remove(&fh);
    }

    // ---- files ----

    fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().expect("handles").insert(fh, h);
        fh
    }

    pub fn file_handle(&self, fh: u64) -> Result<Arc<OpenFile>> {
        match self.handles.lock().expect("handles").get(&fh) {
            Some(Handle::File(f)) => Ok(f.clone()),
            _ => Err(Errno::EBADF),
        }
    }

    /// FUSE OPEN. Opening for writing (or with O_TRUNC) copies the file up first.
    pub fn open(&self, ino: Ino, flags: i32) -> Result<(u64, Arc<OpenFile>)> {
        let acc = flags & libc::O_ACCMODE;
        let writing = acc != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
        let pass = OFlags::from_bits_retain(
            (flags
                & !(libc::O_CREAT
                    | libc::O_EXCL
                    | libc::O_NOCTTY
                    | libc::O_NOFOLLOW
                    | libc::O_CLOEXEC)) as u32,
        );
        let opened = if writing {
            let _ns = self.ns.write().expect("ns");
            self.copy_up(ino)?;
            let node = self.node(ino)?;
            self.open_location(&self.location(ino, &node)?, pass)?
        } else {
            let _ns = self.ns.read().expect("ns");
            let node = self.node(ino)?;
            let loc = if node.place.metacopy {
                Location::Lower(node.place.origin.clone().ok_or(Errno::EIO)?)
            } else {
                self.location(ino, &node)?
            };
            self.open_location(&loc, pass)?
        };
        let (file, upper) = opened;
        let of = Arc::new(OpenFile {
            file: file.file,
            range: file.range,
            ino,
            upper,
        });
        Ok((self.add_handle(Handle::File(of.clone())), of))
    }

    fn open_location(&self, loc: &Location, flags: OFlags) -> Result<(LayerFile, bool)> {
        let host = |fd| LayerFile::host(File::from(fd));
        match loc {
            Location::Upper { dir, name } => {
                Ok((host(host::open_at(dir.as_fd(), name, flags, 0)?), true))
            }
            Location::Index(name) => Ok((
                host(host::open_at(self.upper()?.index.as_fd(), name, flags, 0)?),
                true,
            )),
            Location::Detached(fd) => {
                use std::os::fd::AsRawFd;
                let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
                Ok((
                    host(rustix::fs::open(
                        path.as_str(),
                        flags | OFlags::CLOEXEC,
                        rustix::fs::Mode::empty(),
                    )?),
                    true,
                ))
            }
            Location::Lower(r) => Ok((self.lowers[r.layer].open(&r.path)?, false)),
            Location::UpperRoot => Err(Errno::EISDIR),
        }
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32, buf: &mut Vec<u8>) -> Result<()> {
        let f = self.file_handle(fh)?;
        let (base, size) = match f.range {
            Some(r) => (
                r.offset + offset.min(r.len),
                u64::from(size).min(r.len.saturating_sub(offset)) as usize,
            ),
            None => (offset, size as usize),
        };
        buf.resize(size, 0);
        let mut done = 0;
        while done < buf.len() {
            let n = f.file.read_at(&mut buf[done..], base + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        Ok(())
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        let f = self.file_handle(fh)?;
        if !f.upper {
            return Err(Errno::EBADF);
        }
        f.file.write_all_at(data, offset)?;
        Ok(data.len() as u32)
    }

    pub fn fsync(&self, fh: u64, datasync: bool) -> Result<()> {
        let f = self.file_handle(fh)?;
        if let Some(u) = &self.upper {
            if !u.fsync {
                return Ok(());
            }
        }
        if f.upper {
            if datasync {
                f.file.sync_data()?;
            } else {
                f.file.sync_all()?;
            }
        }
        Ok(())
    }

    pub fn fallocate(&self, fh: u64, offset: u64, length: u64, mode: i32) -> Result<()> {
        let f = self.file_handle(fh)?;
        if !f.upper {
            return Err(Errno::EBADF);
        }
        rustix::fs::fallocate(
            &f.file,
            rustix::fs::FallocateFlags::from_bits_retain(mode as u32),
            offset,
            length,
        )?;
        Ok(())
    }

    pub fn lseek(&self, fh: u64, offset: i64, whence: i32) -> Result<i64> {
        let f = self.file_handle(fh)?;
        if let Some(r) = f.range {
            // A file inside a tar has no holes: all data up to its end.
            let offset = u64::try_from(offset).map_err(|_| Errno::EINVAL)?;
            return match whence {
                libc::SEEK_DATA if offset < r.len => Ok(offset as i64),
                libc::SEEK_HOLE if offset < r.len => Ok(r.len as i64),
                libc::SEEK_DATA | libc::SEEK_HOLE => Err(Errno(libc::ENXIO)),
                _ => Err(Errno::EINVAL),
            };
        }
        let pos = match whence {
            libc::SEEK_DATA => rustix::fs::SeekFrom::Data(offset as u64),
            libc::SEEK_HOLE => rustix::fs::SeekFrom::Hole(offset as u64),
            libc::SEEK_SET => rustix::fs::SeekFrom::Start(offset as u64),
            libc::SEEK_END => rustix::fs::SeekFrom::End(offset),
            _ => return Err(Errno::EINVAL),
        };
        Ok(rustix::fs::seek(&f.file, pos)? as i64)
    }

    pub fn statfs(&self) -> Result<rustix::fs::StatVfs> {
        let fd = match &self.upper {
            Some(u) => u.root.clone(),
            None => return self.lowers_statfs(),
        };
        Ok(rustix::fs::fstatvfs(&*fd)?)
    }

    fn lowers_statfs(&self) -> Result<rustix::fs::StatVfs> {
        // A read-only union reports the top layer's filesystem.
        let node = self.node(ROOT)?;
        let top = node.place.lower_dirs.first().cloned().ok_or(Errno::EIO)?;
        let f = self.lowers[top.layer].open(&top.path).ok();
        match f {
            Some(f) => Ok(rustix::fs::fstatvfs(&f.file)?),
            None => Ok(rustix::fs::statvfs("/")?),
        }
    }

    // ---- xattrs ----

    /// Whether an xattr name is the filesystem's own bookkeeping, never shown or changed
    /// through the mount.
    pub fn is_private_xattr(&self, key: &OsStr) -> bool {
        upper::is_bookkeeping_xattr(key, self.read_override)
    }

    pub fn getxattr(&self, ino: Ino, key: &OsStr) -> Result<Vec<u8>> {
        if self.is_private_xattr(key) {
            return Err(Errno::ENODATA);
        }
        let _ns = self.ns.read().expect("ns");
        let node = self.node(ino)?;
        let loc = self.location(ino, &node)?;
        self.location_xattr(&loc, key)?.ok_or(Errno::ENODATA)
    }

    pub fn listxattr(&self, ino: Ino) -> Result<Vec<OsString>> {
        let _ns = self.ns.read().expect("ns");
        let node = self.node(ino)?;
        let loc = self.location(ino, &node)?;
        Ok(self
            .location_xattr_names(&loc)?
            .into_iter()
            .filter(|k| !self.is_private_xattr(k))
            .collect())
    }
}
