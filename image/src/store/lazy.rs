//! Lazily pulled layers in the store (issue 11): a layer whose blob stays in the registry.
//!
//! ```text
//! ROOT/layers/<diffid-hex>/index              built from the TOC (no `data` file)
//! ROOT/layers/<diffid-hex>/lazy-chunks.json   the chunk table (format-independent)
//! ROOT/layers/<diffid-hex>/strata-layer.json  LayerMeta with `lazy`: format, registry, repo
//! ROOT/layers/<diffid-hex>/access-order       chunks in first-read order (lazy::order)
//! ROOT/chunks/<blob-hex>/{data,ready,chunks}  the store's chunk cache (lazy::cache)
//! ```
//!
//! A lazy layer has an index but no blob in `blobs/`; `pull --full` replaces it by an
//! ordinary layer. Opening one gives an `IndexedLayer` over [`LazyData`], its chunks in the
//! one chunk cache of this store and process ([`Store::chunk_cache`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use strata_fs::layer::index::{build_index_from_entries, IndexLimits, IndexedLayer};
use strata_fs::layer::Layer;

use super::layers::{LayerMeta, LazyLayer, PreparedLayer};
use super::{fsutil, Store};
use crate::digest::Digest;
use crate::lazy::cache::{BlobCache, ChunkCache};
use crate::lazy::{Chunk, Format, LazyData, RegistryChunks};
use crate::oci::Descriptor;
use crate::registry::auth::AuthFile;
use crate::registry::Client;
use crate::{Error, Result};

/// The chunk table of a lazy layer, beside its index.
pub const LAZY_CHUNKS: &str = "lazy-chunks.json";

/// The recorded access order of a lazy layer, beside its index.
pub const ACCESS_ORDER: &str = "access-order";

/// How much of a lazy layer is local.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LazyProgress {
    pub diff_id: Digest,
    pub blob: Digest,
    pub format: Format,
    /// Bytes of file data in the chunk cache.
    pub local: u64,
    /// Bytes of file data in all.
    pub data_len: u64,
    /// Bytes of the uncompressed layer.
    pub size: u64,
}

/// The chunk caches this process has opened, one per store root: every mount of a store
/// in this process shares one table.
static CACHES: Mutex<Vec<(PathBuf, Arc<ChunkCache>)>> = Mutex::new(Vec::new());

/// Set in processes that serve mounts (a container's monitor or root file system server,
/// `strata mount`): only they prefetch and fetch in the background.
static SERVING: AtomicBool = AtomicBool::new(false);

/// Marks this process as one serving mounts: lazy layers it opens from now on prefetch
/// their landmark region before the first read, then (unless `STRATA_LAZY_BACKGROUND=off`)
/// fetch the rest on a thread of their own.
pub fn serve_mounts() {
    SERVING.store(true, Ordering::SeqCst);
}

/// Whether `STRATA_LAZY_BACKGROUND` allows fetching whole layers in the background.
fn background_allowed() -> bool {
    !matches!(
        std::env::var("STRATA_LAZY_BACKGROUND").as_deref(),
        Ok("off" | "0" | "false" | "no")
    )
}

/// A tenth of the store's filesystem when `STRATA_LAZY_CACHE_SIZE` is unset.
const DEFAULT_SHARE: u64 = 10;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Write {
        path: path.to_path_buf(),
        source,
    }
}

impl Store {
    /// `chunks/`: the chunk cache of lazily pulled layers.
    pub fn chunks_dir(&self) -> PathBuf {
        self.root().join("chunks")
    }

    /// The cache's bound in bytes: `STRATA_LAZY_CACHE_SIZE` (`2G`, `512M`, bytes), else a
    /// tenth of the store's filesystem.
    pub fn chunk_cache_limit(&self) -> Result<u64> {
        if let Ok(v) = std::env::var("STRATA_LAZY_CACHE_SIZE") {
            return crate::lazy::parse_size(&v).ok_or(Error::LazyCacheSize(v));
        }
        let st = nix::sys::statvfs::statvfs(self.root()).map_err(|e| Error::Read {
            path: self.root().to_path_buf(),
            source: e.into(),
        })?;
        Ok(st.blocks() as u64 * st.fragment_size() as u64 / DEFAULT_SHARE)
    }

    /// This store's chunk cache, shared by every lazy layer this process opens.
    pub fn chunk_cache(&self) -> Result<Arc<ChunkCache>> {
        let mut caches = CACHES.lock().expect("not poisoned");
        let dir = self.chunks_dir();
        if let Some((_, c)) = caches.iter().find(|(d, _)| *d == dir) {
            return Ok(c.clone());
        }
        let cache = ChunkCache::open(&dir, self.chunk_cache_limit()?).map_err(io_err(&dir))?;
        caches.push((dir, cache.clone()));
        Ok(cache)
    }

    /// Reads `layer`'s TOC from the registry `client` talks to (verified against the digest
    /// its annotations give) and builds the index of lazy layer `diff_id` from it, in a temp
    /// directory: [`PreparedLayer::commit`] puts it in place.
    pub fn prepare_lazy_layer(
        &self,
        client: &Client,
        layer: &Descriptor,
        diff_id: &Digest,
        format: Format,
    ) -> Result<PreparedLayer> {
        let fetcher = RegistryChunks::new(client.reopen(), layer.digest.clone());
        let opened = format.open(&fetcher, layer)?;
        let index = opened.index;
        let tmp = fsutil::temp_name(&self.layers_dir(), layer.digest.hex());
        fs::create_dir(&tmp).map_err(|source| Error::Create {
            path: tmp.clone(),
            source,
        })?;
        let summary =
            build_index_from_entries(index.entries, index.data_len, &tmp, &IndexLimits::default())
                .map_err(|e| {
                    let _ = fs::remove_dir_all(&tmp);
                    Error::IndexLayer {
                        digest: layer.digest.clone(),
                        source: Box::new(e.into()),
                    }
                });
        let meta = LayerMeta {
            diff_id: diff_id.clone(),
            size: format.uncompressed_size(layer).unwrap_or(index.data_len),
            entries: summary.as_ref().map(|s| s.entries).unwrap_or(0),
            blob: layer.digest.clone(),
            seen_in: Default::default(),
            lazy: Some(LazyLayer {
                format,
                media_type: layer.media_type.clone(),
                blob_size: layer.size,
                domain: client.domain().to_string(),
                base: client.base().to_string(),
                repo: client.repo().to_string(),
                data_len: index.data_len,
                prefetch_end: index.prefetch_end,
            }),
        };
        let prepared = PreparedLayer::new(tmp, self.layer_dir(diff_id), meta);
        summary?;
        let chunks = serde_json::to_vec(&index.chunks).map_err(|source| Error::Serialize {
            what: LAZY_CHUNKS,
            source,
        })?;
        let path = prepared.tmp_path().join(LAZY_CHUNKS);
        fs::write(&path, chunks).map_err(io_err(&path))?;
        Ok(prepared)
    }

    /// The chunk table of lazy layer `diff_id`.
    fn lazy_chunks(&self, diff_id: &Digest) -> Result<Vec<Chunk>> {
        let path = self.layer_dir(diff_id).join(LAZY_CHUNKS);
        let bytes = fs::read(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| Error::ParseLazyChunks { path, source })
    }

    /// Opens lazy layer `diff_id` (whose meta is `meta`): its index over the blob's chunks in
    /// the registry, kept in the store's chunk cache. No request is made here: a registry
    /// that is down makes reads of chunks not yet local fail, not the open.
    pub(super) fn open_lazy_layer(
        &self,
        diff_id: &Digest,
        meta: &LayerMeta,
        lazy: &LazyLayer,
    ) -> Result<Arc<dyn Layer>> {
        let dir = self.layer_dir(diff_id);
        let chunks = self.lazy_chunks(diff_id)?;
        let chunks_len = chunks.len();
        let creds = AuthFile::new(self.root()).get(&lazy.domain)?;
        let client = Client::at(&lazy.domain, &lazy.base, &lazy.repo, creds);
        let index_path = dir.join(strata_fs::layer::index::INDEX_FILE);
        let local = fs::File::open(&index_path).map_err(|source| Error::Read {
            path: index_path.clone(),
            source,
        })?;
        let cache = self.chunk_cache()?;
        let blob_cache = BlobCache::open(&cache, meta.blob.hex(), &chunks)
            .map_err(io_err(&self.chunks_dir()))?;
        let data = LazyData::new(
            lazy.format,
            chunks,
            lazy.data_len,
            RegistryChunks::new(client, meta.blob.clone()),
            local,
        )
        .map_err(io_err(&index_path))?
        .with_cache(blob_cache);
        let serving = SERVING.load(Ordering::SeqCst);
        // Only mounts record: a read by `strata export` or a diff is no container's start.
        let order_path = dir.join(ACCESS_ORDER);
        let recorded = crate::lazy::order::load(&order_path, chunks_len);
        let data = if serving {
            data.with_record(&order_path)
        } else {
            data
        };
        if serving {
            // What the last mount read first comes first, then the producer's landmark
            // region, then (in the background) the rest.
            if !recorded.is_empty() && data.prefetch_chunks(&recorded).is_err() {
                log::warn!("prefetching the recorded access order of layer {diff_id} failed");
            }
            if let Some(end) = lazy.prefetch_end {
                // Best effort: a registry down now fails the reads, not the mount.
                if data.prefetch(end).is_err() {
                    log::warn!("prefetching the landmark region of layer {diff_id} failed");
                }
            }
            // A layer larger than the cache would only churn it.
            if background_allowed() && lazy.data_len <= cache.limit() {
                let background = data.background();
                std::thread::spawn(move || background.run());
            }
        }
        let layer =
            IndexedLayer::with_source(&index_path, data).map_err(|source| Error::OpenLayer {
                diff_id: diff_id.clone(),
                source,
            })?;
        Ok(Arc::new(layer))
    }

    /// How much of lazy layer `diff_id` is local; `None`: not a lazy layer.
    pub fn lazy_progress(&self, diff_id: &Digest) -> Option<LazyProgress> {
        let meta = self.layer_meta(diff_id)?;
        let lazy = meta.lazy.as_ref()?;
        let chunks = self.lazy_chunks(diff_id).ok()?;
        let ready =
            fs::read(self.chunks_dir().join(meta.blob.hex()).join("ready")).unwrap_or_default();
        let local = chunks
            .iter()
            .enumerate()
            .filter(|(n, _)| ready.get(*n) == Some(&1))
            .map(|(_, c)| c.len)
            .sum();
        Some(LazyProgress {
            diff_id: diff_id.clone(),
            blob: meta.blob.clone(),
            format: lazy.format,
            local,
            data_len: lazy.data_len,
            size: meta.size,
        })
    }

    /// Moves lazy layer `diff_id` out of the way of its whole index (a temp name the next
    /// GC deletes), and its chunks with it.
    pub fn retire_lazy_layer(&self, diff_id: &Digest) -> Result<()> {
        let blob = self.layer_meta(diff_id).map(|m| m.blob);
        let dir = self.layer_dir(diff_id);
        let aside = fsutil::temp_name(&self.layers_dir(), diff_id.hex());
        fsutil::commit_file(&dir, &aside)?;
        if let Some(blob) = blob {
            let chunks = self.chunks_dir().join(blob.hex());
            let _ = fs::remove_dir_all(chunks);
        }
        Ok(())
    }

    /// Whether `diff_id` is a lazily pulled layer (its blob not in the store).
    pub fn is_lazy_layer(&self, diff_id: &Digest) -> bool {
        self.layer_meta(diff_id).is_some_and(|m| m.lazy.is_some())
    }
}
