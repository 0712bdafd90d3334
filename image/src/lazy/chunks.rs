//! What every seekable format's TOC turns into: the entries of the layer index and the table
//! of chunks (where each piece of the layer's virtual uncompressed data lies in the blob).
//! Shared by the formats and by everything after them (the store, the chunk cache, reads).

use serde::{Deserialize, Serialize};

/// A seekable layer read from its blob: the TOC's bytes (as the blob holds them) and what
/// it turns into.
#[derive(Debug)]
pub struct Opened {
    pub toc_json: Vec<u8>,
    pub toc_offset: u64,
    pub index: LazyIndex,
}

/// One chunk of a file: `len` bytes at `offset` of the layer's virtual uncompressed data,
/// found `inner_offset` bytes into the compressed member at `blob_offset` (`blob_len` bytes
/// long).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub offset: u64,
    pub len: u64,
    pub blob_offset: u64,
    pub blob_len: u64,
    pub inner_offset: u64,
    /// `sha256:…` of the chunk's bytes; empty when the TOC gives none (then the file's
    /// whole digest is checked, which the single chunk covers).
    pub digest: String,
}

/// What a TOC turns into: the entries of the layer index and the chunk table.
#[derive(Debug, Default)]
pub struct LazyIndex {
    pub entries: Vec<strata_fs::layer::index::TarEntry>,
    /// Sorted by `offset`, not overlapping.
    pub chunks: Vec<Chunk>,
    /// Bytes of the virtual data (the regular files' sizes added up).
    pub data_len: u64,
    /// Where the `.prefetch.landmark` entry's bytes start in the blob: the chunks before it
    /// are the files an image producer marked as needed first.
    pub prefetch_end: Option<u64>,
}

impl LazyIndex {
    /// The chunks overlapping `[offset, offset + len)`.
    pub fn chunks_in(&self, offset: u64, len: u64) -> &[Chunk] {
        chunks_in(&self.chunks, offset, len)
    }
}

/// The chunks of a sorted table overlapping `[offset, offset + len)`.
pub fn chunks_in(chunks: &[Chunk], offset: u64, len: u64) -> &[Chunk] {
    let first = chunks.partition_point(|c| c.offset + c.len <= offset);
    let end = offset.saturating_add(len);
    let last = chunks.partition_point(|c| c.offset < end);
    &chunks[first..last.max(first)]
}
