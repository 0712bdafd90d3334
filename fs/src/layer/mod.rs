//! Read-only layers: what the union needs from a lower.
//!
//! A [`Layer`] answers by layer-relative path ([`LayerPath`]): look a name up in a
//! directory (with whiteouts and opaque markers already decoded), stat, list, open, read a
//! link, read xattrs, statfs. The union never sees a layer's storage: an open file is a
//! [`LayerFile`] reader, which hands out a host descriptor only when the file is a whole
//! host file. Drivers:
//! - [`DirLayer`]: a plain host directory (fuse-overlayfs compatibility, unpacked rootfs);
//!   reads go to the host file, so they are as fast as the host and can use FUSE
//!   passthrough and `copy_file_range`. Its cost is one host inode per file and per-file
//!   extraction.
//! - [`IndexedLayer`]: an image layer's tar with its index (`index/`), generic over a
//!   [`DataSource`]; file contents are byte ranges of the tar, so reads are served by the
//!   daemon (no passthrough): a `pread` of the local data, or a fetch for a remote source.
//! - [`MemLayer`]: built in memory entry by entry, for tests of the union.
//!
//! Lower whiteouts are read in both formats: OCI (`.wh.NAME`, `.wh..wh..opq`) and kernel
//! overlay (character device 0/0, `trusted.overlay.opaque`/`user.overlay.opaque` = `y`).

mod dir;
mod file;
pub mod index;
mod mem;
pub mod stack;

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::Arc;

pub use dir::{DirLayer, OPAQUE_XATTRS};
pub use file::{copy_by_reading, copy_host_range, read_full_at, HostFile, LayerFile};
pub use index::{DataSource, IndexedLayer, LocalData};
pub use mem::{MemLayer, MemLayerBuilder};
pub use rustix::fs::StatVfs;

use crate::attr::{Attr, FileKind};
use crate::errno::Result;

/// Prefix of an OCI whiteout entry.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Name of the OCI opaque-directory marker.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Redirect xattrs of a renamed directory, privileged (kernel default) and unprivileged
/// (`userxattr`): an absolute path from the root of the layers below, or a name in the
/// same parent (kernel `redirect_dir`).
pub const REDIRECT_XATTRS: [&str; 2] = ["trusted.overlay.redirect", "user.overlay.redirect"];

/// A path inside a layer: names joined by `/`, empty for the root. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct LayerPath(Arc<[u8]>);

impl LayerPath {
    /// The layer's root directory.
    pub fn root() -> LayerPath {
        LayerPath(Arc::from(&b""[..]))
    }

    /// Parses an absolute or relative path such as a redirect xattr holds.
    pub fn from_bytes(path: &[u8]) -> LayerPath {
        let parts: Vec<&[u8]> = path
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        LayerPath(Arc::from(parts.join(&b'/').as_slice()))
    }

    /// The path of `name` inside this directory.
    pub fn join(&self, name: &OsStr) -> LayerPath {
        if self.0.is_empty() {
            return LayerPath(Arc::from(name.as_bytes()));
        }
        let mut v = Vec::with_capacity(self.0.len() + 1 + name.len());
        v.extend_from_slice(&self.0);
        v.push(b'/');
        v.extend_from_slice(name.as_bytes());
        LayerPath(Arc::from(v.as_slice()))
    }

    /// The parent directory and the last name; `None` for the root.
    pub fn split_last(&self) -> Option<(LayerPath, &OsStr)> {
        if self.0.is_empty() {
            return None;
        }
        match self.0.iter().rposition(|b| *b == b'/') {
            Some(i) => Some((
                LayerPath(Arc::from(&self.0[..i])),
                OsStr::from_bytes(&self.0[i + 1..]),
            )),
            None => Some((LayerPath::root(), OsStr::from_bytes(&self.0))),
        }
    }

    /// The names along the path.
    pub fn components(&self) -> impl Iterator<Item = &OsStr> {
        self.0
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty())
            .map(OsStr::from_bytes)
    }

    /// The path as bytes, without a leading `/`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for LayerPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", String::from_utf8_lossy(&self.0))
    }
}

/// What a layer holds under a name.
#[derive(Clone, Debug)]
pub enum Lookup {
    /// Nothing: look further down.
    Missing,
    /// A whiteout: the name is deleted here and in every layer below.
    Whiteout,
    /// An entry; `opaque` for a directory that hides the layers below it.
    Found { attr: Attr, opaque: bool },
}

/// One entry of a layer directory listing.
#[derive(Clone, Debug)]
pub enum LayerDirEntry {
    Entry {
        name: OsString,
        ino: u64,
        kind: FileKind,
    },
    /// A whiteout for `name` (in either format); it hides the name in layers below.
    Whiteout(OsString),
}

/// A read-only layer of the union.
pub trait Layer: Send + Sync + fmt::Debug {
    /// Looks `name` up in directory `dir`.
    fn lookup(&self, dir: &LayerPath, name: &OsStr) -> Result<Lookup>;
    /// Attributes of the entry at `path` (not followed if a symlink).
    fn stat(&self, path: &LayerPath) -> Result<Attr>;
    /// The entries of directory `dir`, whiteouts decoded, opaque markers left out.
    fn read_dir(&self, dir: &LayerPath) -> Result<Vec<LayerDirEntry>>;
    /// Opens the regular file at `path` for reading: a reader object, which has a host
    /// descriptor only where the file is a whole host file.
    fn open(&self, path: &LayerPath) -> Result<Box<dyn LayerFile>>;
    /// The target of the symlink at `path`, as bytes.
    fn read_link(&self, path: &LayerPath) -> Result<Vec<u8>>;
    /// The names of the extended attributes of `path`.
    fn list_xattrs(&self, path: &LayerPath) -> Result<Vec<OsString>>;
    /// One extended attribute of `path`; `None` when not set.
    fn get_xattr(&self, path: &LayerPath, key: &OsStr) -> Result<Option<Vec<u8>>>;
    /// The filesystem statistics a read-only union of this layer reports (the host
    /// filesystem that holds its data).
    fn statfs(&self) -> Result<StatVfs>;

    /// Every path of this layer naming the same file as the non-directory `path` (its
    /// hard-link group, `path` included). A walk of the whole layer: only the first copy-up
    /// of a file with several names asks.
    fn hard_links(&self, path: &LayerPath) -> Result<Vec<LayerPath>> {
        let ino = self.stat(path)?.ino;
        let mut out = Vec::new();
        let mut dirs = vec![LayerPath::root()];
        while let Some(dir) = dirs.pop() {
            for e in self.read_dir(&dir)? {
                if let LayerDirEntry::Entry { name, ino: i, kind } = e {
                    if kind == FileKind::Directory {
                        dirs.push(dir.join(&name));
                    } else if i == ino {
                        out.push(dir.join(&name));
                    }
                }
            }
        }
        Ok(out)
    }

    /// The redirect of directory `path`, in either format: where its contents are in the
    /// layers below, when it was renamed in an upper that became this layer.
    fn redirect(&self, path: &LayerPath) -> Result<Option<Vec<u8>>> {
        for key in REDIRECT_XATTRS {
            if let Some(v) = self.get_xattr(path, OsStr::new(key))? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }
}

// OCI whiteout names (image-spec "Representing Changes"), also the rootless upper's format:
// the one decoder and the one encoder, side by side. Every reader of a layer tar, a layer
// directory or an upper asks the first; the upper and the layer tar writer ask the second.

/// Decodes an OCI whiteout name: `Some(hidden name)` for `.wh.NAME`, `Some("")` for the
/// opaque marker, `None` for an ordinary name.
pub fn oci_whiteout_target(name: &OsStr) -> Option<&OsStr> {
    let b = name.as_bytes();
    if b == OPAQUE_MARKER {
        return Some(OsStr::new(""));
    }
    b.strip_prefix(WHITEOUT_PREFIX).map(OsStr::from_bytes)
}

/// Encodes the OCI whiteout of `name`, `.wh.NAME`; `None` when that would exceed NAME_MAX
/// (no such whiteout can exist).
pub fn whiteout_file_name(name: &OsStr) -> Option<OsString> {
    if name.len() + WHITEOUT_PREFIX.len() > crate::host::NAME_MAX {
        return None;
    }
    let mut v = WHITEOUT_PREFIX.to_vec();
    v.extend_from_slice(name.as_bytes());
    Some(OsString::from_vec(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_path_join_and_split() {
        let p = LayerPath::root()
            .join(OsStr::new("a"))
            .join(OsStr::new("b"));
        assert_eq!(p.as_bytes(), b"a/b");
        let (parent, name) = p.split_last().unwrap();
        assert_eq!(parent.as_bytes(), b"a");
        assert_eq!(name, "b");
        assert_eq!(LayerPath::from_bytes(b"/x//y/").as_bytes(), b"x/y");
        assert!(LayerPath::root().split_last().is_none());
    }

    #[test]
    fn oci_whiteout_names_decode() {
        assert_eq!(
            oci_whiteout_target(OsStr::new(".wh.foo")),
            Some(OsStr::new("foo"))
        );
        assert_eq!(
            oci_whiteout_target(OsStr::new(".wh..wh..opq")),
            Some(OsStr::new(""))
        );
        assert_eq!(oci_whiteout_target(OsStr::new("foo")), None);
        let wh = whiteout_file_name(OsStr::new("foo")).unwrap();
        assert_eq!(oci_whiteout_target(&wh), Some(OsStr::new("foo")));
    }
}
