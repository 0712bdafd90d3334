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
pub mod chunks;
pub mod estargz;
pub mod format;
pub mod order;
pub mod zstd_chunked;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use strata_fs::layer::{DataSource, LocalData, StatVfs};
use strata_fs::Errno;

pub use chunks::Chunk;
pub use format::Format;

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
    inner: Arc<Inner<F>>,
    /// Answers `statfs` for the filesystem the layer's directory is on.
    local: LocalData,
}

/// What readers, the prefetch and the background fetch share.
struct Inner<F> {
    format: Format,
    chunks: Vec<Chunk>,
    len: u64,
    fetcher: F,
    /// Where fetched chunks are kept; `None` fetches on every read.
    cache: Option<cache::BlobCache>,
    /// How long a read waits for a chunk another reader fetches.
    timeout: std::time::Duration,
    /// Reads waiting for chunks from the registry: the background fetch pauses for them.
    waiting: AtomicUsize,
    /// Where the order of first reads goes; `None`: not recorded.
    record: Option<order::AccessRecorder>,
}

impl<F> fmt::Debug for LazyData<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazyData")
            .field("chunks", &self.inner.chunks.len())
            .field("len", &self.inner.len)
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
            inner: Arc::new(Inner {
                format,
                chunks,
                len,
                fetcher,
                cache: None,
                timeout: lazy_timeout(),
                waiting: AtomicUsize::new(0),
                record: None,
            }),
            local: LocalData::new(local)?,
        })
    }

    /// Keeps fetched chunks in `cache` (the store's chunk cache, this blob's files).
    pub fn with_cache(mut self, cache: cache::BlobCache) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("set before the data is shared")
            .cache = Some(cache);
        self
    }

    /// Records the order in which chunks are first read into `path` ([`order`]).
    pub fn with_record(mut self, path: &std::path::Path) -> Self {
        let inner = Arc::get_mut(&mut self.inner).expect("set before the data is shared");
        inner.record = Some(order::AccessRecorder::new(path, inner.chunks.len()));
        self
    }

    /// Fetches the chunks `ns` into the cache in that order (a recorded access order),
    /// stopping before they would fill more than half the cache: they are to be read, not
    /// to evict each other.
    pub fn prefetch_chunks(&self, ns: &[u32]) -> Result<(), Errno> {
        let Some(cache) = &self.inner.cache else {
            return Ok(());
        };
        let room = cache.cache().limit() / 2;
        let mut total = 0u64;
        let ns: Vec<u32> = ns
            .iter()
            .copied()
            .filter(|n| (*n as usize) < self.inner.chunks.len())
            .take_while(|n| {
                total += self.inner.chunks[*n as usize].len;
                total <= room
            })
            .collect();
        // In batches, so that what was read first comes first.
        for batch in ns.chunks(64) {
            self.inner.fetch_into_cache(batch)?;
        }
        Ok(())
    }

    /// Fetches the chunks whose compressed bytes start before `blob_end` (the prefetch
    /// region an image producer marked with `.prefetch.landmark`), adjacent ones in one
    /// request, into the cache.
    pub fn prefetch(&self, blob_end: u64) -> Result<(), Errno> {
        let ns: Vec<u32> = (0..self.inner.chunks.len() as u32)
            .filter(|n| self.inner.chunks[*n as usize].blob_offset < blob_end)
            .collect();
        self.inner.fetch_into_cache(&ns)
    }

    /// A handle that fetches every chunk in the background ([`Background::run`], on a
    /// thread of its own) while this data is open.
    pub fn background(&self) -> Background<F> {
        Background {
            inner: Arc::downgrade(&self.inner),
        }
    }
}

/// The background fetch of one lazy layer (the whole layer, in blob order, so that a
/// container outlives its registry).
pub struct Background<F> {
    inner: Weak<Inner<F>>,
}

/// Compressed bytes the background fetch asks for at once.
const BACKGROUND_BATCH: u64 = 4 << 20;

impl<F: ChunkFetcher> Background<F> {
    /// Fetches every chunk not yet present, a batch at a time, pausing while on-demand
    /// reads wait for the registry and backing off while it fails. Returns when every
    /// chunk has been fetched once or the layer is closed.
    pub fn run(self) {
        let pause = std::time::Duration::from_millis(20);
        let mut backoff = std::time::Duration::from_millis(500);
        let mut next = 0usize;
        loop {
            let Some(inner) = self.inner.upgrade() else {
                return;
            };
            if inner.cache.is_none() || next >= inner.chunks.len() {
                return;
            }
            if inner.waiting.load(Ordering::SeqCst) > 0 {
                drop(inner);
                std::thread::sleep(pause);
                continue;
            }
            let start = next;
            let mut bytes = 0u64;
            let mut batch = Vec::new();
            while next < inner.chunks.len() && bytes < BACKGROUND_BATCH {
                bytes += inner.chunks[next].blob_len;
                batch.push(next as u32);
                next += 1;
            }
            if inner.fetch_into_cache(&batch).is_err() {
                next = start;
                drop(inner);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
            } else {
                backoff = std::time::Duration::from_millis(500);
            }
        }
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

impl<F: ChunkFetcher> Inner<F> {
    /// Makes the chunks `ns` present in the cache: those absent are fetched (adjacent
    /// ones in one request), unless another reader fetches them already.
    fn fetch_into_cache(&self, ns: &[u32]) -> Result<(), Errno> {
        let Some(cache) = &self.cache else {
            return Ok(());
        };
        let mut pinned = Vec::new();
        let mut missing = Vec::new();
        let mut result = Ok(());
        let mut claims = Vec::new();
        for &n in ns {
            match cache.cache().acquire(&cache.key(n), self.timeout) {
                Some(cache::Slot::Ready) => pinned.push(n),
                // Another process fetching it: left to that one.
                Some(cache::Slot::Fetch) => {
                    match cache.claim(n, self.chunks[n as usize].len, None) {
                        Ok(cache::Claimed::Mine(claim)) => {
                            claims.push(claim);
                            missing.push(n);
                        }
                        Ok(cache::Claimed::Present) => pinned.push(n),
                        Ok(cache::Claimed::Busy) | Err(_) => cache.cache().abandon(&cache.key(n)),
                    }
                }
                None => {
                    result = Err(Errno::EIO);
                    break;
                }
            }
        }
        if result.is_ok() {
            // Nothing here is a read's own: a bad chunk is left absent (a read of it fails).
            result = self.fetch(&missing, &missing, &mut pinned).map(|_| ());
        }
        cache.let_go(&missing, pinned);
        result
    }

    /// Fetches the chunks `ns` (merged into Range requests), checks each against its
    /// digest, keeps them in the cache (pinned: they join `pinned`) and returns their bytes.
    /// A chunk of `optional` (read ahead) that fails its check is only left out.
    fn fetch(
        &self,
        ns: &[u32],
        optional: &[u32],
        pinned: &mut Vec<u32>,
    ) -> Result<HashMap<u32, Vec<u8>>, Errno> {
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
                let data = match self.format.decode_chunk(c, member) {
                    Ok(data) => data,
                    Err(why) => {
                        log::warn!("chunk at blob offset {}: {why}", c.blob_offset);
                        if optional.contains(&n) {
                            continue;
                        }
                        return Err(Errno::EIO);
                    }
                };
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
        self.inner.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> strata_fs::errno::Result<usize> {
        self.inner.read_at(buf, offset)
    }

    fn statfs(&self) -> strata_fs::errno::Result<StatVfs> {
        self.local.statfs()
    }
}

/// Compressed bytes a read that goes to the registry fetches at least, the chunks after its
/// own included: files read together are mostly stored together (a directory's small
/// files), and one request for them costs one round trip instead of one each.
const READ_AHEAD: u64 = 512 << 10;

impl<F: ChunkFetcher> Inner<F> {
    /// Adds to `missing` (the chunks of a read that go to the registry) the chunks that
    /// follow the read's last one in the blob, up to [`READ_AHEAD`] bytes from the first
    /// missing one, while they are absent and nobody fetches them — and while they take a
    /// quarter of the cache's bound at most (more would evict what the read itself needs).
    fn read_ahead(
        &self,
        cache: &cache::BlobCache,
        all: &[u32],
        missing: &mut Vec<u32>,
        claims: &mut Vec<cache::Claim>,
        pinned: &mut Vec<u32>,
    ) {
        let (Some(&first), Some(&last)) = (missing.first(), all.last()) else {
            return;
        };
        if missing.last() != Some(&last) {
            return;
        }
        let start = self.chunks[first as usize].blob_offset;
        let room = cache.cache().limit() / 4;
        let mut taken = 0u64;
        let mut prev = &self.chunks[last as usize];
        for n in last as usize + 1..self.chunks.len() {
            let c = &self.chunks[n];
            let adjacent = c.blob_offset == prev.blob_offset
                || c.blob_offset == prev.blob_offset + prev.blob_len;
            taken += c.len;
            if !adjacent || c.blob_offset + c.blob_len - start > READ_AHEAD || taken > room {
                return;
            }
            if !cache.cache().try_fetch(&cache.key(n as u32)) {
                return;
            }
            match cache.claim(n as u32, c.len, None) {
                Ok(cache::Claimed::Mine(claim)) => {
                    claims.push(claim);
                    missing.push(n as u32);
                }
                Ok(cache::Claimed::Present) => pinned.push(n as u32),
                Ok(cache::Claimed::Busy) | Err(_) => {
                    cache.cache().abandon(&cache.key(n as u32));
                    return;
                }
            }
            prev = c;
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> strata_fs::errno::Result<usize> {
        let want = (buf.len() as u64).min(self.len.saturating_sub(offset));
        let first = self.chunks.partition_point(|c| c.offset + c.len <= offset) as u32;
        let count = chunks::chunks_in(&self.chunks, offset, want).len() as u32;
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
        // Other processes fetching the same chunks are waited for (their locks are held
        // until the end of this read).
        let mut claims = Vec::new();
        if let (Some(cache), false) = (&self.cache, failed) {
            let mut mine = Vec::new();
            for n in std::mem::take(&mut missing) {
                if failed {
                    cache.cache().abandon(&cache.key(n));
                    continue;
                }
                let len = self.chunks[n as usize].len;
                match cache.claim(n, len, Some(self.timeout)) {
                    Ok(cache::Claimed::Mine(claim)) => {
                        claims.push(claim);
                        mine.push(n);
                    }
                    Ok(cache::Claimed::Present) => pinned.push(n),
                    result => {
                        if let Err(e) = result {
                            log::warn!("waiting for chunk {n}: {e}");
                        }
                        cache.cache().abandon(&cache.key(n));
                        failed = true;
                    }
                }
            }
            missing = mine;
        }
        // The read's own chunks come first in `missing`, those read ahead after.
        let own = missing.len();
        if let (Some(cache), false) = (&self.cache, failed) {
            self.read_ahead(cache, &all, &mut missing, &mut claims, &mut pinned);
        }
        let fetched = if failed {
            Err(Errno::EIO)
        } else if missing.is_empty() {
            Ok(HashMap::new())
        } else {
            // The background fetch gives way while this read waits.
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let got = self.fetch(&missing, &missing[own..], &mut pinned);
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            got
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
                            let again = self.fetch(&[n], &[], &mut pinned)?;
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
        if let (Some(record), Ok(_)) = (&self.record, &result) {
            record.read(all.iter().copied());
        }
        if let Some(cache) = &self.cache {
            cache.let_go(&missing, pinned);
        }
        result
    }
}
