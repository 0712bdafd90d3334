//! Lazy pulling: a layer whose blob stays in the registry and whose files' bytes are
//! fetched chunk by chunk on first read (issue 11).
//!
//! ```text
//!   format    the seam: which layers are seekable, TOC fetch + verify, chunk decoding
//!   estargz   footer → TOC → (entries for strata-fs's index builder, chunk table); writer
//!   zstd_chunked  annotations (footer as fallback) → TOC → the same; writer
//!   LazyData  strata-fs's DataSource over the chunk table: a read becomes Range fetches
//!             (adjacent members merged into one) through a ChunkFetcher, each chunk
//!             checked against its digest before a byte of it is served
//! ```
//!
//! strata-fs knows nothing of registries: it reads a layer through its `DataSource` trait,
//! which [`LazyData`] implements here with the registry client behind a [`ChunkFetcher`].
//! A chunk that fails its digest or cannot be fetched is `EIO`, never wrong bytes.

pub mod cache;
pub mod estargz;
pub mod format;
pub mod zstd_chunked;

use std::collections::HashMap;
use std::fmt;
use std::io;

use strata_fs::layer::{DataSource, LocalData, StatVfs};
use strata_fs::Errno;

pub use format::{Chunk, Format};

/// Byte ranges of one blob. One call is one attempt; the caller owns any retry policy.
pub trait ChunkFetcher: Send + Sync + fmt::Debug + 'static {
    /// Exactly `len` bytes of the blob at `offset` (fewer is an error).
    fn fetch(&self, offset: u64, len: u64) -> io::Result<Vec<u8>>;
}

/// A blob held in memory (tests, and a blob already read whole).
impl ChunkFetcher for Vec<u8> {
    fn fetch(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let end = offset.checked_add(len).filter(|e| *e <= self.len() as u64);
        match end {
            Some(end) => Ok(self[offset as usize..end as usize].to_vec()),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "range past the end of the blob",
            )),
        }
    }
}

/// The chunks of one registry blob, fetched with Range requests.
pub struct RegistryChunks {
    client: crate::registry::Client,
    digest: crate::digest::Digest,
}

impl fmt::Debug for RegistryChunks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RegistryChunks({}@{})",
            self.client.repository(),
            self.digest
        )
    }
}

impl RegistryChunks {
    /// Fetches blob `digest` of `client`'s repository, each request bounded by
    /// [`lazy_timeout`].
    pub fn new(client: crate::registry::Client, digest: crate::digest::Digest) -> Self {
        RegistryChunks {
            client: client.with_timeout(lazy_timeout()),
            digest,
        }
    }
}

impl ChunkFetcher for RegistryChunks {
    fn fetch(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        self.client.blob_range(&self.digest, offset, len)
    }
}

/// A size as docker writes one (`RAMInBytes`): `512m`, `1g`, `1024`, `1.5G`, `100kb`;
/// `None` when it is not one. `run --memory` and `STRATA_LAZY_CACHE_SIZE` both read this.
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("ib")
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(&t);
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return None,
    };
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    Some((n * mult as f64) as u64)
}

/// How long a lazy read may wait for the registry: `STRATA_LAZY_TIMEOUT` seconds, 30 when
/// unset or not a number.
pub fn lazy_timeout() -> std::time::Duration {
    let secs = std::env::var("STRATA_LAZY_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(30.0);
    std::time::Duration::from_secs_f64(secs)
}

/// A lazily pulled layer's data: the virtual uncompressed bytes the index points into,
/// served from the blob's chunks.
pub struct LazyData<F> {
    format: Format,
    chunks: Vec<Chunk>,
    len: u64,
    fetcher: F,
    /// Where fetched chunks are kept; `None` fetches on every read.
    cache: Option<cache::BlobCache>,
    /// How long a read waits for a chunk another reader fetches.
    timeout: std::time::Duration,
    /// Answers `statfs` for the filesystem the layer's directory is on.
    local: LocalData,
}

impl<F> fmt::Debug for LazyData<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazyData")
            .field("chunks", &self.chunks.len())
            .field("len", &self.len)
            .finish()
    }
}

impl<F: ChunkFetcher> LazyData<F> {
    /// Serves `len` virtual bytes cut into `chunks` (sorted, as a [`Format`] makes them)
    /// of a blob in `format` from `fetcher`; `local` is any file on the layer directory's
    /// filesystem, for `statfs`.
    pub fn new(
        format: Format,
        chunks: Vec<Chunk>,
        len: u64,
        fetcher: F,
        local: std::fs::File,
    ) -> io::Result<Self> {
        Ok(LazyData {
            format,
            chunks,
            len,
            fetcher,
            cache: None,
            timeout: lazy_timeout(),
            local: LocalData::new(local)?,
        })
    }

    /// Keeps fetched chunks in `cache` (the store's chunk cache, this blob's files).
    pub fn with_cache(mut self, cache: cache::BlobCache) -> Self {
        self.cache = Some(cache);
        self
    }
}

/// Runs of chunk numbers (ascending) whose gzip members lie end to end (or are shared):
/// one Range request each.
fn runs(chunks: &[Chunk], ns: &[u32]) -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = Vec::new();
    for &n in ns {
        let c = &chunks[n as usize];
        match out.last_mut() {
            Some(run)
                if {
                    let p = *run.last().expect("runs are not empty");
                    let a = &chunks[p as usize];
                    p + 1 == n
                        && (c.blob_offset == a.blob_offset
                            || c.blob_offset == a.blob_offset + a.blob_len)
                } =>
            {
                run.push(n)
            }
            _ => out.push(vec![n]),
        }
    }
    out
}

impl<F: ChunkFetcher> LazyData<F> {
    /// Fetches the chunks `ns` (merged into Range requests), checks each against its
    /// digest, keeps them in the cache (pinned: they join `pinned`) and returns their bytes.
    fn fetch(&self, ns: &[u32], pinned: &mut Vec<u32>) -> Result<HashMap<u32, Vec<u8>>, Errno> {
        let mut out = HashMap::new();
        for run in runs(&self.chunks, ns) {
            let first = &self.chunks[run[0] as usize];
            let from = first.blob_offset;
            let to = run
                .iter()
                .map(|n| &self.chunks[*n as usize])
                .map(|c| c.blob_offset + c.blob_len)
                .max()
                .unwrap_or(from);
            let bytes = self.fetcher.fetch(from, to - from).map_err(|e| {
                log::warn!("fetching bytes {from}..{to} of a lazy layer: {e}");
                Errno::EIO
            })?;
            for n in run {
                let c = &self.chunks[n as usize];
                let at = (c.blob_offset - from) as usize;
                let member = &bytes[at..at + c.blob_len as usize];
                let data = self.format.decode_chunk(c, member).map_err(|why| {
                    log::warn!("chunk at blob offset {}: {why}", c.blob_offset);
                    Errno::EIO
                })?;
                if let Some(cache) = &self.cache {
                    cache.store(n, c, &data).map_err(|e| {
                        log::warn!("keeping chunk {n} in the cache: {e}");
                        Errno::EIO
                    })?;
                    pinned.push(n);
                }
                out.insert(n, data);
            }
        }
        Ok(out)
    }
}

impl<F: ChunkFetcher> DataSource for LazyData<F> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> strata_fs::errno::Result<usize> {
        let want = (buf.len() as u64).min(self.len.saturating_sub(offset));
        let first = self.chunks.partition_point(|c| c.offset + c.len <= offset) as u32;
        let count = format::chunks_in(&self.chunks, offset, want).len() as u32;
        let all: Vec<u32> = (first..first + count).collect();
        // Which chunks are here (pinned) and which this reader fetches.
        let mut pinned = Vec::new();
        let mut missing = Vec::new();
        let mut failed = false;
        match &self.cache {
            None => missing = all.clone(),
            Some(cache) => {
                for &n in &all {
                    match cache.cache().acquire(&cache.key(n), self.timeout) {
                        Some(cache::Slot::Ready) => pinned.push(n),
                        Some(cache::Slot::Fetch) => missing.push(n),
                        None => {
                            failed = true;
                            break;
                        }
                    }
                }
            }
        }
        let fetched = if failed {
            Err(Errno::EIO)
        } else {
            self.fetch(&missing, &mut pinned)
        };
        let result = fetched.and_then(|fetched| {
            let mut done = 0u64;
            for &n in &all {
                let c = &self.chunks[n as usize];
                // The part of this chunk inside [offset, offset + want).
                let lo = offset.max(c.offset);
                let hi = (offset + want).min(c.offset + c.len);
                let dst = &mut buf[(lo - offset) as usize..(hi - offset) as usize];
                match (fetched.get(&n), &self.cache) {
                    (Some(data), _) => dst
                        .copy_from_slice(&data[(lo - c.offset) as usize..(hi - c.offset) as usize]),
                    (None, Some(cache)) => {
                        let present = cache.read_chunk(n, dst, lo).map_err(|e| {
                            log::warn!("reading chunk {n} from the cache: {e}");
                            Errno::EIO
                        })?;
                        if !present {
                            // Evicted by another process since this one saw it.
                            let again = self.fetch(&[n], &mut pinned)?;
                            let data = again.get(&n).ok_or(Errno::EIO)?;
                            dst.copy_from_slice(
                                &data[(lo - c.offset) as usize..(hi - c.offset) as usize],
                            );
                        }
                    }
                    (None, None) => return Err(Errno::EIO),
                }
                done = done.max(hi - offset);
            }
            Ok(done as usize)
        });
        if let Some(cache) = &self.cache {
            for n in &missing {
                if !pinned.contains(n) {
                    cache.cache().abandon(&cache.key(*n));
                }
            }
            for n in pinned {
                cache.cache().release(&cache.key(n));
            }
        }
        result
    }

    fn statfs(&self) -> strata_fs::errno::Result<StatVfs> {
        self.local.statfs()
    }
}
