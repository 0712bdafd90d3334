//! What every seekable format's TOC turns into: the entries of the layer index and the table
//! of chunks (where each piece of the layer's virtual uncompressed data lies in the blob).
//! Shared by the formats and by everything after them (the store, the chunk cache, reads).

use std::io::{self, Read};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

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

/// Reads `chunk`'s bytes out of `decoder` (its compressed unit, decompressing), checked
/// against its digest. `Err` is a short reason: `bad` when it does not decompress, `short`
/// when it ends before the chunk, or a digest mismatch.
pub fn decode(
    chunk: &Chunk,
    mut decoder: impl Read,
    bad: &'static str,
    short: &'static str,
) -> Result<Vec<u8>, &'static str> {
    io::copy(
        &mut (&mut decoder).take(chunk.inner_offset),
        &mut io::sink(),
    )
    .map_err(|_| bad)?;
    let mut out = Vec::with_capacity(chunk.len as usize);
    decoder
        .take(chunk.len)
        .read_to_end(&mut out)
        .map_err(|_| bad)?;
    if out.len() as u64 != chunk.len {
        return Err(short);
    }
    if !chunk.digest.is_empty() && Digest::of(&out).as_str() != chunk.digest {
        return Err("the chunk's bytes do not match its digest");
    }
    Ok(out)
}
