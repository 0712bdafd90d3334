//! Indexed layers: an image layer served straight from its tar, without extracting it.
//!
//! [`build_index`] reads a layer tar once, front to back, copies it verbatim to `DIR/data`
//! and writes `DIR/index` (path → metadata, xattrs, link target, hard-link groups, where
//! each file's bytes are in `data`). [`IndexedLayer`] maps the index (memmap2) and serves it
//! as a [`super::Layer`] over a [`DataSource`]: [`LocalData`] (`DIR/data`, read with
//! `pread` at the file's offset, no copy in between) today, chunks fetched on demand later. Owners, modes, device numbers and xattrs come from the index, so they are exact
//! whoever mounts the layer, and pulling a layer of 100k files is one sequential write.
//!
//! A layer tar is untrusted input. The rules, as container runtimes apply them when they
//! extract (containerd, Go's archive/tar):
//! - names are cleaned lexically (`a/./b`, `a//b`, a leading `/` or `./` are plain `a/b`);
//!   a name that climbs out of the layer with `..` is an error;
//! - an entry below a symlink of the same layer (`link -> /etc`, then `link/passwd`) is an
//!   error: extracting it would write through the link;
//! - a hard link must name an earlier non-directory entry of the same layer; one to a path
//!   outside the layer or not yet seen is an error;
//! - a duplicate name replaces the earlier entry (the last wins, as tar extracts), except
//!   that a directory over a directory keeps the children and takes the new metadata;
//! - parents missing from the archive are created as `0755` directories owned by root;
//! - whiteouts `.wh.NAME` and the opaque marker `.wh..wh..opq` are decoded. A whiteout
//!   hides only lower layers: a name both whited out and present in this layer stays, and
//!   a directory whited out and recreated in one layer becomes opaque (OCI image spec);
//! - devices, fifos, owners and xattrs (PAX `SCHILY.xattr.*`) are metadata only;
//! - [`IndexLimits`] caps the uncompressed size and the number of entries, so a
//!   decompression bomb ends with an error naming the cap, not a full disk.

mod build;
mod format;
mod layer;
mod source;
mod tar;

use std::path::PathBuf;

pub use build::{build_index, build_index_from_entries};
pub use format::Xattr;
pub use layer::IndexedLayer;
pub use source::{DataSource, LocalData};
pub use tar::{TarEntry, TarKind};

/// Name of the tar's bytes inside a layer directory.
pub const DATA_FILE: &str = "data";
/// Name of the index inside a layer directory.
pub const INDEX_FILE: &str = "index";

/// Bounds on what one layer may hold.
#[derive(Clone, Copy, Debug)]
pub struct IndexLimits {
    /// Bytes of uncompressed tar.
    pub max_bytes: u64,
    /// Entries (names) in the archive.
    pub max_entries: u64,
    /// Names at the layer's root that are the archive's metadata, not content (an eStargz
    /// TOC and its landmarks): left out of the index, their bytes kept in the data.
    pub hidden: &'static [&'static str],
}

impl IndexLimits {
    /// Whether `path` (a tar entry's name) is one of [`IndexLimits::hidden`].
    pub fn hides(&self, path: &[u8]) -> bool {
        let mut p = path;
        while let Some(rest) = p.strip_prefix(b"./") {
            p = rest;
        }
        let p = p.strip_suffix(b"/").unwrap_or(p);
        self.hidden.iter().any(|h| h.as_bytes() == p)
    }
}

impl Default for IndexLimits {
    /// 64 GiB and 10 million entries: far above real images, far below a bomb's output.
    fn default() -> Self {
        IndexLimits {
            max_bytes: 64 << 30,
            max_entries: 10_000_000,
            hidden: &[],
        }
    }
}

/// What a built index holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexSummary {
    /// Names in the layer, whiteouts included, the root not counted.
    pub entries: u64,
    /// Distinct files (hard links share one).
    pub inodes: u64,
    /// Bytes of the tar (the size of `data`).
    pub tar_bytes: u64,
    /// Bytes of the index.
    pub index_bytes: u64,
}

/// Why a layer could not be indexed or opened. Each names the archive entry or file.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("reading the layer at entry {entry}: {source}")]
    Read {
        entry: String,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the layer tar ends in the middle of entry {entry} (truncated download?)")]
    Truncated { entry: String },
    #[error(
        "the layer is larger than the limit of {max_bytes} bytes uncompressed (at entry \
         {entry}); a decompression bomb?"
    )]
    TooLarge { entry: String, max_bytes: u64 },
    #[error("the layer has more than {max_entries} entries")]
    TooManyEntries { max_entries: u64 },
    #[error("bad tar header at byte {offset} (after entry {after}): {reason}")]
    BadHeader {
        offset: u64,
        after: String,
        reason: &'static str,
    },
    #[error("bad pax header for entry after {entry}: {reason}")]
    BadPax { entry: String, reason: &'static str },
    #[error("entry {entry}: sparse files are not supported in layers")]
    Sparse { entry: String },
    #[error("entry {entry}: unsupported tar entry type {typeflag:?}")]
    UnsupportedType { entry: String, typeflag: char },
    #[error("entry {entry}: the path leaves the layer (\"..\")")]
    PathEscape { entry: String },
    #[error("entry {entry}: it is below {symlink}, a symlink of the same layer")]
    ThroughSymlink { entry: String, symlink: String },
    #[error("entry {entry}: it is below {parent}, which is not a directory")]
    ParentNotDirectory { entry: String, parent: String },
    #[error("entry {entry}: hard link to {target}: {reason}")]
    BadHardLink {
        entry: String,
        target: String,
        reason: &'static str,
    },
    #[error("entry {entry}: {reason}")]
    BadName { entry: String, reason: &'static str },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a layer index ({reason})")]
    BadIndex { path: PathBuf, reason: String },
}

#[cfg(test)]
mod tests;
