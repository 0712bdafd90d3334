//! Lazy layers, as stargz-snapshotter makes them: when containerd prepares a layer with the
//! remote labels (`ctr-remote image rpull`, or CRI with `disable_snapshot_annotations =
//! false` and a handler that adds them), the snapshotter reads the layer's footer and TOC
//! from the registry (two Range requests; strata-image's `lazy::estargz`), builds the layer
//! index in `snapshots/<id>/lazy/`, commits the target snapshot at once and answers
//! ALREADY_EXISTS, so containerd never downloads the blob. A union over such a layer is
//! served by `strata-snapshotter serve-union` (strata-fs has no registry client), whose
//! reads fetch the chunks they need through the store's byte-bounded chunk cache
//! (`ROOT/chunks`, shared with strata).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use strata_fs::layer::index::{build_index_from_entries, IndexLimits, IndexedLayer};
use strata_fs::layer::Layer;
use strata_image::digest::Digest;
use strata_image::lazy::cache::{BlobCache, ChunkCache};
use strata_image::lazy::{estargz, Format, LazyData, RegistryChunks};
use strata_image::oci::{parse_manifest, ManifestKind};
use strata_image::reference::Reference;
use strata_image::registry::Client;

/// The name containerd wants the layer's committed snapshot under.
pub const TARGET_LABEL: &str = "containerd.io/snapshot.ref";
/// stargz-snapshotter's labels (ctr-remote's rpull handler sets them).
const REFERENCE_LABELS: [&str; 2] = [
    "containerd.io/snapshot/remote/stargz.reference",
    "containerd.io/snapshot/cri.image-ref",
];
const DIGEST_LABELS: [&str; 2] = [
    "containerd.io/snapshot/remote/stargz.digest",
    "containerd.io/snapshot/cri.layer-digest",
];

/// A lazy layer's origin, kept in its snapshot's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remote {
    pub reference: String,
    pub digest: String,
    pub size: u64,
    pub toc_digest: String,
}

/// What a lazy Prepare asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub target: String,
    pub reference: String,
    pub digest: String,
    pub toc_digest: String,
}

/// Why a layer could not be made lazy (containerd then downloads it as usual).
#[derive(Debug, thiserror::Error)]
pub enum LazyError {
    #[error("layer {digest}: {message}")]
    Layer { digest: String, message: String },
}

fn fail(digest: &str, message: impl std::fmt::Display) -> LazyError {
    LazyError::Layer {
        digest: digest.to_string(),
        message: message.to_string(),
    }
}

impl Request {
    /// The lazy request in Prepare's labels, if they make one (all of target, reference,
    /// layer digest and TOC digest).
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Option<Request> {
        let first = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| labels.get(*k).filter(|v| !v.is_empty()).cloned())
        };
        Some(Request {
            target: first(&[TARGET_LABEL])?,
            reference: first(&REFERENCE_LABELS)?,
            digest: first(&DIGEST_LABELS)?,
            toc_digest: first(&[estargz::TOC_DIGEST_ANNOTATION])?,
        })
    }
}

impl Remote {
    fn client(&self) -> Result<Client, LazyError> {
        client(&self.reference, &self.digest)
    }

    fn blob(&self) -> Result<Digest, LazyError> {
        Digest::parse(&self.digest).map_err(|e| fail(&self.digest, e))
    }
}

fn client(reference: &str, digest: &str) -> Result<Client, LazyError> {
    let r = Reference::parse(reference).map_err(|e| fail(digest, e))?;
    Client::for_repo(&r.domain, &r.domain, &r.path, false, None).map_err(|e| fail(digest, e))
}

/// The size of layer `digest` as the image's manifest (or one of its index's) gives it.
fn layer_size(client: &Client, reference: &str, digest: &Digest) -> Result<u64, LazyError> {
    let r = Reference::parse(reference).map_err(|e| fail(digest.as_str(), e))?;
    let top = r
        .digest
        .as_ref()
        .map(|d| d.as_str().to_string())
        .or(r.tag.clone())
        .unwrap_or_else(|| "latest".into());
    let mut todo = vec![top];
    while let Some(m) = todo.pop() {
        let fetched = client.manifest(&m).map_err(|e| fail(digest.as_str(), e))?;
        match parse_manifest(fetched.content_type.as_deref(), &fetched.bytes) {
            Ok((_, ManifestKind::Image(man))) => {
                if let Some(l) = man.layers.iter().find(|l| &l.digest == digest) {
                    return Ok(l.size);
                }
            }
            Ok((_, ManifestKind::Index(idx))) => {
                todo.extend(idx.manifests.iter().map(|d| d.digest.as_str().to_string()))
            }
            Err(e) => return Err(fail(digest.as_str(), e)),
        }
    }
    Err(fail(digest.as_str(), format!("not a layer of {reference}")))
}

/// [`estargz::Chunk`] as `lazy/chunks.json` keeps it, so that a union's server need not
/// read and parse the TOC again.
#[derive(Serialize, Deserialize)]
struct SavedChunk {
    offset: u64,
    len: u64,
    blob_offset: u64,
    blob_len: u64,
    inner_offset: u64,
    digest: String,
}

/// The chunk table and the virtual data's length.
#[derive(Serialize, Deserialize)]
struct SavedChunks {
    data_len: u64,
    chunks: Vec<SavedChunk>,
}

const CHUNKS_FILE: &str = "chunks.json";

fn save_chunks(dir: &Path, chunks: &[estargz::Chunk], data_len: u64) -> std::io::Result<()> {
    let saved = SavedChunks {
        data_len,
        chunks: chunks
            .iter()
            .map(|c| SavedChunk {
                offset: c.offset,
                len: c.len,
                blob_offset: c.blob_offset,
                blob_len: c.blob_len,
                inner_offset: c.inner_offset,
                digest: c.digest.clone(),
            })
            .collect(),
    };
    let bytes = serde_json::to_vec(&saved).map_err(std::io::Error::other)?;
    let tmp = dir.join(".chunks.json.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, dir.join(CHUNKS_FILE))
}

fn load_chunks(dir: &Path) -> std::io::Result<(Vec<estargz::Chunk>, u64)> {
    let bytes = std::fs::read(dir.join(CHUNKS_FILE))?;
    let saved: SavedChunks = serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
    let chunks = saved
        .chunks
        .into_iter()
        .map(|c| estargz::Chunk {
            offset: c.offset,
            len: c.len,
            blob_offset: c.blob_offset,
            blob_len: c.blob_len,
            inner_offset: c.inner_offset,
            digest: c.digest,
        })
        .collect();
    Ok((chunks, saved.data_len))
}

/// Reads the layer's TOC from the registry and builds its index (and chunk table) in `dir`.
pub fn build(req: &Request, dir: &Path) -> Result<Remote, LazyError> {
    let client = client(&req.reference, &req.digest)?;
    let blob = Digest::parse(&req.digest).map_err(|e| fail(&req.digest, e))?;
    let size = layer_size(&client, &req.reference, &blob)?;
    let fetcher = RegistryChunks::new(client, blob.clone());
    let opened =
        estargz::open(&fetcher, &blob, size, &req.toc_digest).map_err(|e| fail(&req.digest, e))?;
    std::fs::create_dir_all(dir).map_err(|e| fail(&req.digest, e))?;
    save_chunks(dir, &opened.index.chunks, opened.index.data_len)
        .map_err(|e| fail(&req.digest, e))?;
    build_index_from_entries(
        opened.index.entries,
        opened.index.data_len,
        dir,
        &IndexLimits::default(),
    )
    .map_err(|e| fail(&req.digest, e))?;
    Ok(Remote {
        reference: req.reference.clone(),
        digest: req.digest.clone(),
        size,
        toc_digest: req.toc_digest.clone(),
    })
}

/// The layer whose index [`build`] wrote in `dir`, reading its data from the registry
/// through `cache` (in the serving process).
pub fn open(
    remote: &Remote,
    dir: &Path,
    cache: &Arc<ChunkCache>,
) -> Result<Arc<dyn Layer>, LazyError> {
    let blob = remote.blob()?;
    let fetcher = RegistryChunks::new(remote.client()?, blob.clone());
    let (chunks, data_len) = load_chunks(dir).map_err(|e| fail(&remote.digest, e))?;
    let index = dir.join("index");
    let blob_cache =
        BlobCache::open(cache, blob.hex(), &chunks).map_err(|e| fail(&remote.digest, e))?;
    let local = File::open(&index).map_err(|e| fail(&remote.digest, e))?;
    let data = LazyData::new(Format::Estargz, chunks, data_len, fetcher, local)
        .map_err(|e| fail(&remote.digest, e))?
        .with_cache(blob_cache);
    let layer = IndexedLayer::with_source(&index, data).map_err(|e| fail(&remote.digest, e))?;
    Ok(Arc::new(layer))
}

/// The store's chunk cache directory.
pub fn cache_dir(root: &Path) -> PathBuf {
    strata_image::store::Store::new(root).chunks_dir()
}
