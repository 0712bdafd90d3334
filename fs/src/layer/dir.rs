//! `DirLayer`: a host directory as a read-only layer.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use lru::LruCache;
use rustix::fs::OFlags;

use super::{
    oci_whiteout_target, whiteout_file_name, HostFile, Layer, LayerDirEntry, LayerFile, LayerPath,
    Lookup, StatVfs, OPAQUE_MARKER, REDIRECT_XATTRS,
};
use crate::attr::{Attr, FileKind};
use crate::errno::{Errno, Result};
use crate::host::{self, SharedFd};

/// Opaque-directory xattrs, privileged (kernel default) and unprivileged (`userxattr`).
pub const OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];

/// A plain host directory serving as a lower layer.
///
/// Directory handles are kept in a bounded LRU so walks do not reopen every ancestor, while
/// the number of open descriptors stays within the caller's limits however large the tree.
pub struct DirLayer {
    path: PathBuf,
    root: SharedFd,
    dirs: Mutex<LruCache<LayerPath, SharedFd>>,
    /// Hashes of the raw names (whiteout markers included) of directories listed lately. A
    /// layer does not change while mounted, so a lookup of a name absent there needs no
    /// syscall: a merged lookup probes every layer, and most probes miss. Hashes keep this
    /// at 8 bytes a name; a collision only costs the stat it would have cost anyway.
    listed: Mutex<LruCache<LayerPath, Arc<[u64]>>>,
    hasher: std::collections::hash_map::RandomState,
    /// Hard-link groups (host inode → every path naming it), found by one walk of the layer
    /// when the first file with several names is copied up.
    links: Mutex<Option<Arc<LinkGroups>>>,
}

/// Host inode → every path of the layer naming it, for inodes with several names.
type LinkGroups = HashMap<u64, Vec<LayerPath>>;

/// How many directory listings a layer remembers.
const LISTINGS_CACHED: usize = 256;

impl std::fmt::Debug for DirLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirLayer")
            .field("path", &self.path)
            .finish()
    }
}

impl DirLayer {
    /// Opens `path` as a layer; `cache` bounds the directory handles it keeps open.
    pub fn open(path: &Path, cache: usize) -> std::io::Result<DirLayer> {
        let root = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        Ok(DirLayer {
            path: path.to_path_buf(),
            root: Arc::new(root),
            dirs: Mutex::new(LruCache::new(
                NonZeroUsize::new(cache.max(16)).expect("nonzero"),
            )),
            listed: Mutex::new(LruCache::new(
                NonZeroUsize::new(LISTINGS_CACHED).expect("nonzero"),
            )),
            hasher: Default::default(),
            links: Mutex::new(None),
        })
    }

    /// A handle on directory `path`, walking from the nearest cached ancestor.
    fn dir(&self, path: &LayerPath) -> Result<SharedFd> {
        if path.is_root() {
            return Ok(self.root.clone());
        }
        if let Some(fd) = self.dirs.lock().expect("dir cache").get(path) {
            return Ok(fd.clone());
        }
        let (parent, name) = path.split_last().expect("not root");
        let parent_fd = self.dir(&parent)?;
        let fd = Arc::new(host::open_dir_path(parent_fd.as_fd(), name)?);
        self.dirs
            .lock()
            .expect("dir cache")
            .put(path.clone(), fd.clone());
        Ok(fd)
    }

    fn parent_of<'p>(&self, path: &'p LayerPath) -> Result<(SharedFd, &'p OsStr)> {
        let (parent, name) = path.split_last().ok_or(Errno::EINVAL)?;
        Ok((self.dir(&parent)?, name))
    }

    /// Whether directory `path` is opaque in either format.
    fn is_opaque(&self, path: &LayerPath) -> Result<bool> {
        let fd = self.dir(path)?;
        for key in OPAQUE_XATTRS {
            if host::get_xattr(fd.as_fd(), None, OsStr::new(key))?.as_deref() == Some(b"y") {
                return Ok(true);
            }
        }
        Ok(host::stat_at(fd.as_fd(), OsStr::from_bytes(OPAQUE_MARKER))?.is_some())
    }
}

impl DirLayer {
    /// Every non-directory host inode with more than one name in the layer, and its paths.
    fn link_groups(&self) -> Result<LinkGroups> {
        let mut all: HashMap<u64, Vec<LayerPath>> = HashMap::new();
        let mut dirs = vec![LayerPath::root()];
        while let Some(dir) = dirs.pop() {
            for e in self.read_dir(&dir)? {
                if let LayerDirEntry::Entry { name, ino, kind } = e {
                    match kind {
                        FileKind::Directory => dirs.push(dir.join(&name)),
                        _ => all.entry(ino).or_default().push(dir.join(&name)),
                    }
                }
            }
        }
        all.retain(|_, paths| paths.len() > 1);
        Ok(all)
    }
}

impl Layer for DirLayer {
    fn lookup(&self, dir: &LayerPath, name: &OsStr) -> Result<Lookup> {
        // A name too long for a whiteout has none.
        let wh = whiteout_file_name(name);
        // From a cached listing: whether each name may be there (a hash match, confirmed by
        // the stat below) or surely is not.
        let (maybe_name, maybe_wh) = match self.listed.lock().expect("listings").get(dir) {
            Some(hashes) => (
                hashes.binary_search(&self.hasher.hash_one(name)).is_ok(),
                wh.as_ref()
                    .is_some_and(|wh| hashes.binary_search(&self.hasher.hash_one(wh)).is_ok()),
            ),
            None => (true, wh.is_some()),
        };
        if !maybe_name && !maybe_wh {
            return Ok(Lookup::Missing);
        }
        let fd = match self.dir(dir) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Ok(Lookup::Missing),
            Err(e) => return Err(e),
        };
        let found = match maybe_name {
            true => host::stat_at(fd.as_fd(), name)?,
            false => None,
        };
        match found {
            Some(attr) if attr.is_whiteout_device() => Ok(Lookup::Whiteout),
            Some(attr) => {
                let opaque = attr.kind == FileKind::Directory && self.is_opaque(&dir.join(name))?;
                Ok(Lookup::Found { attr, opaque })
            }
            None if maybe_wh
                && host::stat_at(fd.as_fd(), wh.as_deref().expect("maybe_wh"))?.is_some() =>
            {
                Ok(Lookup::Whiteout)
            }
            None => Ok(Lookup::Missing),
        }
    }

    fn stat(&self, path: &LayerPath) -> Result<Attr> {
        if path.is_root() {
            return host::stat_fd(self.root.as_fd());
        }
        let (dir, name) = self.parent_of(path)?;
        host::stat_at(dir.as_fd(), name)?.ok_or(Errno::ENOENT)
    }

    fn read_dir(&self, dir: &LayerPath) -> Result<Vec<LayerDirEntry>> {
        let fd = self.dir(dir)?;
        let mut out = Vec::new();
        let entries = host::read_dir(fd.as_fd())?;
        let mut hashes: Vec<u64> = entries
            .iter()
            .map(|e| self.hasher.hash_one(&e.name))
            .collect();
        hashes.sort_unstable();
        self.listed
            .lock()
            .expect("listings")
            .put(dir.clone(), hashes.into());
        for e in entries {
            if let Some(target) = oci_whiteout_target(&e.name) {
                if !target.is_empty() {
                    out.push(LayerDirEntry::Whiteout(target.to_os_string()));
                }
                continue;
            }
            let kind = match e.kind {
                Some(FileKind::CharDevice) | None => match host::stat_at(fd.as_fd(), &e.name)? {
                    Some(a) if a.is_whiteout_device() => {
                        out.push(LayerDirEntry::Whiteout(e.name));
                        continue;
                    }
                    Some(a) => a.kind,
                    None => continue,
                },
                Some(k) => k,
            };
            out.push(LayerDirEntry::Entry {
                name: e.name,
                ino: e.ino,
                kind,
            });
        }
        Ok(out)
    }

    fn open(&self, path: &LayerPath) -> Result<Box<dyn LayerFile>> {
        let (dir, name) = self.parent_of(path)?;
        let file = File::from(host::open_at(dir.as_fd(), name, OFlags::RDONLY, 0)?);
        Ok(Box::new(HostFile::new(file)?))
    }

    fn read_link(&self, path: &LayerPath) -> Result<Vec<u8>> {
        let (dir, name) = self.parent_of(path)?;
        host::read_link(dir.as_fd(), name)
    }

    fn list_xattrs(&self, path: &LayerPath) -> Result<Vec<OsString>> {
        if path.is_root() {
            return host::list_xattrs(self.root.as_fd(), None);
        }
        let (dir, name) = self.parent_of(path)?;
        host::list_xattrs(dir.as_fd(), Some(name))
    }

    fn get_xattr(&self, path: &LayerPath, key: &OsStr) -> Result<Option<Vec<u8>>> {
        if path.is_root() {
            return host::get_xattr(self.root.as_fd(), None, key);
        }
        let (dir, name) = self.parent_of(path)?;
        host::get_xattr(dir.as_fd(), Some(name), key)
    }

    fn statfs(&self) -> Result<StatVfs> {
        Ok(rustix::fs::fstatvfs(self.root.as_fd())?)
    }

    fn hard_links(&self, path: &LayerPath) -> Result<Vec<LayerPath>> {
        let ino = self.stat(path)?.ino;
        let groups = {
            let mut cached = self.links.lock().expect("links");
            match &*cached {
                Some(g) => g.clone(),
                None => {
                    let g = Arc::new(self.link_groups()?);
                    *cached = Some(g.clone());
                    g
                }
            }
        };
        Ok(groups.get(&ino).cloned().unwrap_or_default())
    }

    fn redirect(&self, path: &LayerPath) -> Result<Option<Vec<u8>>> {
        // One listing rather than a probe per format: asked of every directory a merged
        // lookup finds, and most have no xattrs at all.
        let fd = self.dir(path)?;
        let names = host::list_xattrs(fd.as_fd(), None)?;
        for key in REDIRECT_XATTRS {
            if names.iter().any(|n| n == key) {
                return host::get_xattr(fd.as_fd(), None, OsStr::new(key));
            }
        }
        Ok(None)
    }
}
