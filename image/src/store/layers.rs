//! Layer indexes: a layer blob's bytes are decompressed (by media type, else by magic bytes),
//! hashed into the diff-id, and handed as a tar stream to the layer indexer, all in the pass
//! that downloads the blob. The index is built in a temp directory and renamed to
//! `layers/<diffid>/` only once the blob's digest and the diff-id both checked out.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

use super::{fsutil, Store};
use crate::digest::{Digest, HashingReader};
use crate::lazy::Format;
use crate::oci::Compression;
use std::sync::Arc;
use strata_fs::layer::index::{build_index, IndexLimits, IndexedLayer};
use strata_fs::layer::Layer;

/// Why [`Store::index_tar`] failed: the indexer refused the tar, reading it failed, or the
/// store did.
pub(super) enum IndexTarError {
    Index(Error),
    Read(io::Error),
    Other(Error),
}

/// strata's own record of a layer, written beside the index in its directory.
pub const LAYER_META: &str = "strata-layer.json";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LayerMeta {
    pub diff_id: Digest,
    /// Bytes of the uncompressed tar.
    pub size: u64,
    /// Entries in the index.
    pub entries: u64,
    /// The blob it was built from.
    pub blob: Digest,
    /// Repositories (`domain/path`) known to hold a blob of this layer, by blob digest:
    /// where it was pulled from or pushed to. A push mounts the blob from one of them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub seen_in: BTreeMap<Digest, BTreeSet<String>>,
    /// Set for a lazily pulled layer: its blob is in the registry, not the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lazy: Option<LazyLayer>,
}

/// Where a lazy layer's blob is and how to read it: strata-layer.json's `lazy`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LazyLayer {
    pub format: Format,
    pub media_type: String,
    /// Bytes of the compressed blob.
    pub blob_size: u64,
    /// The registry's domain (credentials are looked up by it), its base URL
    /// (`https://host`, `http://127.0.0.1:5000`: no probe is needed to reopen) and the
    /// repository path.
    pub domain: String,
    pub base: String,
    pub repo: String,
    /// Bytes of the virtual data the index points into (the regular files' sizes).
    pub data_len: u64,
    /// The end of the prefetch region in the blob ([`crate::lazy::chunks::LazyIndex::prefetch_end`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefetch_end: Option<u64>,
}

/// An index built in a temp directory, not yet in place. Dropped uncommitted, it is deleted.
pub struct PreparedLayer {
    tmp: PathBuf,
    dest: PathBuf,
    pub meta: LayerMeta,
}

impl PreparedLayer {
    /// An index built in `tmp`, to be moved to `dest`.
    pub(super) fn new(tmp: PathBuf, dest: PathBuf, meta: LayerMeta) -> PreparedLayer {
        PreparedLayer { tmp, dest, meta }
    }

    /// Where the index is being built.
    pub(super) fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// Moves the index into `layers/<diffid>/` (keeping one built meanwhile by another
    /// process: both describe the same bytes).
    pub fn commit(mut self) -> Result<LayerMeta> {
        if self.dest.exists() {
            return Ok(self.meta.clone());
        }
        // Written here, not when indexed: a new layer's blob digest is known only once its
        // compressed copy is complete ([`super::author`]).
        let meta_path = self.tmp.join(LAYER_META);
        let meta = serde_json::to_vec(&self.meta).map_err(|source| Error::Serialize {
            what: LAYER_META,
            source,
        })?;
        fs::write(&meta_path, meta).map_err(|source| Error::Write {
            path: meta_path,
            source,
        })?;
        let tmp = std::mem::take(&mut self.tmp);
        if self.dest.exists() {
            let _ = fs::remove_dir_all(&tmp);
            return Ok(self.meta.clone());
        }
        fsutil::sync_tree(&tmp)?;
        if let Err(e) = fsutil::commit_file(&tmp, &self.dest) {
            let _ = fs::remove_dir_all(&tmp);
            if !self.dest.exists() {
                return Err(e);
            }
        }
        Ok(self.meta.clone())
    }
}

impl Drop for PreparedLayer {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

impl Store {
    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_dir(diff_id).is_dir()
    }

    pub fn layer_meta(&self, diff_id: &Digest) -> Option<LayerMeta> {
        let bytes = fs::read(self.layer_dir(diff_id).join(LAYER_META)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Records that `repository` (`domain/path`) holds `blob`, a blob of layer `diff_id`.
    /// Best effort: a layer without an index has no record (a push then uploads instead of
    /// mounting), and two processes noting at once may keep only one note.
    pub fn note_blob_repository(&self, diff_id: &Digest, blob: &Digest, repository: &str) {
        let Some(mut meta) = self.layer_meta(diff_id) else {
            return;
        };
        if !meta
            .seen_in
            .entry(blob.clone())
            .or_default()
            .insert(repository.to_string())
        {
            return;
        }
        if let Ok(bytes) = serde_json::to_vec(&meta) {
            let _ = fsutil::atomic_write(
                &self.tmp_dir(),
                &self.layer_dir(diff_id).join(LAYER_META),
                &bytes,
            );
        }
    }

    /// Repositories known to hold `blob` of layer `diff_id` (see [`LayerMeta::seen_in`]).
    pub fn blob_repositories(&self, diff_id: &Digest, blob: &Digest) -> Vec<String> {
        self.layer_meta(diff_id)
            .and_then(|mut m| m.seen_in.remove(blob))
            .map(|s| s.into_iter().collect())
            .unwrap_or_default()
    }

    /// Reads a (compressed) layer blob from `blob`, builds its index. `expected` is the
    /// diff-id the image config names; a different one is an error.
    pub fn prepare_layer(
        &self,
        blob_digest: &Digest,
        media_type: &str,
        blob: &mut dyn Read,
        expected: Option<&Digest>,
    ) -> Result<PreparedLayer> {
        let mut input = BufReader::with_capacity(256 * 1024, blob);
        let compression = match Compression::from_media_type(media_type) {
            Some(c) => c,
            None => {
                let head =
                    io::BufRead::fill_buf(&mut input).map_err(|source| Error::ReadLayer {
                        digest: blob_digest.clone(),
                        source,
                    })?;
                Compression::from_magic(head)
            }
        };
        let mut decoded: Box<dyn Read + '_> = match compression {
            Compression::None => Box::new(&mut input),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut input)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(&mut input).map_err(|source| {
                    Error::Zstd {
                        digest: blob_digest.clone(),
                        source,
                    }
                })?,
            ),
        };
        let mut prepared =
            self.index_tar(blob_digest.hex(), &mut decoded)
                .map_err(|e| match e {
                    IndexTarError::Index(e) => Error::IndexLayer {
                        digest: blob_digest.clone(),
                        source: Box::new(e),
                    },
                    IndexTarError::Read(source) => Error::Decompress {
                        digest: blob_digest.clone(),
                        source,
                    },
                    IndexTarError::Other(e) => e,
                })?;
        prepared.meta.blob = blob_digest.clone();
        if let Some(expected) = expected {
            if &prepared.meta.diff_id != expected {
                return Err(Error::DiffId {
                    blob: blob_digest.clone(),
                    diff_id: prepared.meta.diff_id.clone(),
                    expected: expected.clone(),
                });
            }
        }
        Ok(prepared)
    }

    /// Indexes an uncompressed layer tar read to its end from `tar` (the hostile-tar checks
    /// are the indexer's) into a temp directory under `layers/`, hashing it into the diff-id
    /// as it goes. `meta.blob` is the diff-id until the caller names the blob.
    pub(super) fn index_tar(
        &self,
        stem: &str,
        tar: &mut dyn Read,
    ) -> std::result::Result<PreparedLayer, IndexTarError> {
        let tmp = fsutil::temp_name(&self.layers_dir(), stem);
        fs::create_dir(&tmp).map_err(|source| {
            IndexTarError::Other(Error::Create {
                path: tmp.clone(),
                source,
            })
        })?;
        // From here on, dropping `prepared` deletes the temp directory.
        let mut prepared = PreparedLayer {
            tmp,
            dest: PathBuf::new(),
            meta: LayerMeta {
                diff_id: Digest::of(b""),
                size: 0,
                entries: 0,
                blob: Digest::of(b""),
                seen_in: BTreeMap::new(),
                lazy: None,
            },
        };
        let mut tar = HashingReader::new(tar);
        let entries = build_layer_index(&mut tar, &prepared.tmp).map_err(IndexTarError::Index)?;
        let (diff_id, size) = tar.finish().map_err(IndexTarError::Read)?;
        prepared.meta = LayerMeta {
            diff_id: diff_id.clone(),
            size,
            entries,
            blob: diff_id.clone(),
            seen_in: BTreeMap::new(),
            lazy: None,
        };
        prepared.dest = self.layer_dir(&diff_id);
        Ok(prepared)
    }

    /// The layers of `img` as a union's lowers, top first, building any index that is
    /// missing: what `strata mount` and a container mount.
    pub fn image_layers(&self, img: &super::image::Image) -> Result<Vec<Arc<dyn Layer>>> {
        self.image_layer_dirs(img)?;
        let diff_ids: Vec<Digest> = img.layers().map(|(_, d)| d.clone()).collect();
        self.open_layers(&diff_ids)
    }

    /// The layers `diff_ids` (bottom first, as an image config lists them) as a union's
    /// lowers, top first. The one place that opens an image's layers: mounts, `diff` and
    /// commit all take them from here, so they read the same data the same way.
    pub fn open_layers(&self, diff_ids: &[Digest]) -> Result<Vec<Arc<dyn Layer>>> {
        let mut lowers: Vec<Arc<dyn Layer>> = Vec::with_capacity(diff_ids.len());
        for diff_id in diff_ids.iter().rev() {
            let dir = self.layer_dir(diff_id);
            if !dir.is_dir() {
                return Err(Error::MissingLayer {
                    diff_id: diff_id.clone(),
                });
            }
            if let Some(meta) = self.layer_meta(diff_id) {
                if let Some(lazy) = &meta.lazy {
                    lowers.push(self.open_lazy_layer(diff_id, &meta, lazy)?);
                    continue;
                }
            }
            let layer = IndexedLayer::open(&dir).map_err(|source| Error::OpenLayer {
                diff_id: diff_id.clone(),
                source,
            })?;
            lowers.push(Arc::new(layer));
        }
        Ok(lowers)
    }

    /// The layer index directories of `img`, top first, building any index that is
    /// missing.
    pub fn image_layer_dirs(&self, img: &super::image::Image) -> Result<Vec<PathBuf>> {
        let mut dirs = Vec::new();
        for (blob, diff_id) in img.layers() {
            self.ensure_layer(&blob.digest, &blob.media_type, diff_id)
                .map_err(|e| Error::PrepareLayer {
                    diff_id: diff_id.clone(),
                    source: Box::new(e),
                })?;
            dirs.push(self.layer_dir(diff_id));
        }
        dirs.reverse();
        Ok(dirs)
    }

    /// Builds the index of a layer whose blob is in the store but whose index is not (an
    /// image copied in by skopeo, or an index deleted by hand).
    pub fn ensure_layer(
        &self,
        blob_digest: &Digest,
        media_type: &str,
        diff_id: &Digest,
    ) -> Result<()> {
        if self.has_layer(diff_id) {
            return Ok(());
        }
        let path = self.blob_path(blob_digest);
        let mut f = fs::File::open(&path).map_err(|source| Error::OpenLayerBlob {
            digest: blob_digest.clone(),
            source,
        })?;
        self.prepare_layer(blob_digest, media_type, &mut f, Some(diff_id))?
            .commit()?;
        Ok(())
    }
}

/// The one call into the layer indexer: `dir/data` (the tar) and `dir/index`. Returns the
/// number of names indexed. `STRATA_MAX_LAYER_BYTES` lowers the uncompressed size cap (the
/// guard against decompression bombs; 64 GiB by default).
fn build_layer_index(tar: &mut dyn Read, dir: &Path) -> Result<u64> {
    let mut limits = IndexLimits {
        // A full pull of an eStargz layer shows what a lazy one does.
        hidden: crate::lazy::estargz::HIDDEN,
        ..IndexLimits::default()
    };
    if let Ok(v) = std::env::var("STRATA_MAX_LAYER_BYTES") {
        limits.max_bytes = v.parse().map_err(|e| Error::MaxLayerBytes(v.clone(), e))?;
    }
    let summary = build_index(tar, dir, &limits)?;
    Ok(summary.entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tar_bytes() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "hello", &b"world"[..]).unwrap();
        b.into_inner().unwrap()
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::new(dir.path());
        s.init().unwrap();
        (dir, s)
    }

    #[test]
    fn indexes_each_compression_with_the_same_diff_id() {
        let (_d, s) = store();
        let raw = tar_bytes();
        let diff_id = Digest::of(&raw);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&raw[..], 3).unwrap();
        for (mt, bytes) in [
            ("application/vnd.oci.image.layer.v1.tar", &raw),
            ("application/vnd.oci.image.layer.v1.tar+gzip", &gz),
            ("application/vnd.oci.image.layer.v1.tar+zstd", &zst),
            ("application/octet-stream", &gz),
            ("application/octet-stream", &zst),
        ] {
            let blob = Digest::of(bytes);
            let p = s
                .prepare_layer(&blob, mt, &mut &bytes[..], Some(&diff_id))
                .unwrap();
            assert_eq!(p.meta.diff_id, diff_id, "{mt}");
            assert_eq!(p.meta.size, raw.len() as u64);
            p.commit().unwrap();
            assert!(s.has_layer(&diff_id));
        }
        assert_eq!(s.layer_meta(&diff_id).unwrap().size, raw.len() as u64);
        // nothing left behind in layers/ but the one index
        assert_eq!(fs::read_dir(s.layers_dir()).unwrap().count(), 1);
    }

    #[test]
    fn wrong_diff_id_leaves_nothing() {
        let (_d, s) = store();
        let raw = tar_bytes();
        let e = s
            .prepare_layer(
                &Digest::of(&raw),
                "application/vnd.oci.image.layer.v1.tar",
                &mut &raw[..],
                Some(&Digest::of(b"other")),
            )
            .err()
            .unwrap();
        assert!(e.to_string().contains("image config says"), "{e}");
        assert_eq!(fs::read_dir(s.layers_dir()).unwrap().count(), 0);
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let (_d, s) = store();
        let bad = [0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7];
        let e = s.prepare_layer(&Digest::of(&bad), "x", &mut &bad[..], None);
        assert!(e.is_err());
        assert_eq!(fs::read_dir(s.layers_dir()).unwrap().count(), 0);
    }
}
