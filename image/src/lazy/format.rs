//! The seekable layer formats, behind one seam: which layers of a manifest can be pulled
//! lazily, how their TOC is fetched and verified and turned into index entries and a chunk
//! table, and how one chunk's bytes are decoded. Everything after that (the store's record,
//! the chunk cache, Range requests, the union) is the same for every format.
//!
//! A new format is one more [`Format`] variant and an arm in each `match` here.

use serde::{Deserialize, Serialize};

use super::chunks::{Chunk, Opened};
use super::estargz;
use super::zstd_chunked;
use super::ChunkFetcher;
use crate::oci::Descriptor;
use crate::{Error, Result};

/// A seekable layer format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// gzip members per file or chunk, `stargz.index.json` and a 51-byte footer.
    Estargz,
    /// zstd frames per file or chunk, a zstd-compressed TOC in a skippable frame, the
    /// position and checksum in annotations (containers/storage).
    #[serde(rename = "zstd:chunked")]
    ZstdChunked,
}

impl Format {
    /// The format of `layer`, from its annotations; `None`: not seekable (pulled whole).
    pub fn detect(layer: &Descriptor) -> Option<Format> {
        if layer
            .annotations
            .contains_key(estargz::TOC_DIGEST_ANNOTATION)
        {
            return Some(Format::Estargz);
        }
        if zstd_chunked::manifest_checksum(&layer.annotations).is_some() {
            return Some(Format::ZstdChunked);
        }
        None
    }

    /// How the format is named to users (`strata pull`, `inspect`).
    pub fn name(self) -> &'static str {
        match self {
            Format::Estargz => "estargz",
            Format::ZstdChunked => "zstd:chunked",
        }
    }

    /// Fetches `layer`'s TOC through `fetcher`, verifies it against the digest its
    /// annotations give and builds the index entries and chunk table from it.
    pub fn open(self, fetcher: &dyn ChunkFetcher, layer: &Descriptor) -> Result<Opened> {
        match self {
            Format::Estargz => {
                let toc_digest = layer
                    .annotations
                    .get(estargz::TOC_DIGEST_ANNOTATION)
                    .ok_or_else(|| Error::EstargzFooter {
                        digest: layer.digest.clone(),
                        reason: "the layer has no TOC digest annotation",
                    })?;
                estargz::open(fetcher, &layer.digest, layer.size, toc_digest)
            }
            Format::ZstdChunked => {
                zstd_chunked::open(fetcher, &layer.digest, layer.size, &layer.annotations)
            }
        }
    }

    /// The bytes of `chunk` from its compressed `member` (the chunk's `blob_len` bytes of the
    /// blob), checked against its digest. `Err` is a short reason.
    pub fn decode_chunk(self, chunk: &Chunk, member: &[u8]) -> Result<Vec<u8>, &'static str> {
        match self {
            Format::Estargz => estargz::decode_chunk(chunk, member),
            Format::ZstdChunked => zstd_chunked::decode_chunk(chunk, member),
        }
    }

    /// The uncompressed size of `layer` (the layer tar's bytes) when its annotations say.
    pub fn uncompressed_size(self, layer: &Descriptor) -> Option<u64> {
        match self {
            Format::Estargz => layer
                .annotations
                .get(estargz::UNCOMPRESSED_SIZE_ANNOTATION)
                .and_then(|s| s.parse().ok()),
            // The TOC gives the files' sizes, not the tar's: the caller's estimate stands.
            Format::ZstdChunked => None,
        }
    }
}
