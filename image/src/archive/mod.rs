//! `save` and `load`: images as a tar archive.
//!
//! `save` writes what docker 25+ writes: one tar that is both an OCI image layout
//! (`oci-layout`, `index.json`, `blobs/sha256/…`) and a docker archive (`manifest.json`,
//! `repositories`), with every layer as its uncompressed tar (the blob named by its
//! diff-id, so the docker side's layers match the config). The OCI manifest is rewritten
//! for those uncompressed layers, as docker does; the config is the image's own, so the
//! image ID is kept.
//!
//! `load` reads that form, an older docker archive (`<id>/layer.tar`, symlinked duplicate
//! layers, gzip'd layers) or an OCI archive (skopeo's `oci-archive:`), gzip'd or not.
//! Members are unpacked into a temporary directory of the store (names checked: nothing
//! outside it), every blob is verified (an OCI blob against its name, docker layers against
//! the config's diff-ids) and stored as a pull stores it; names come from `RepoTags` or the
//! index's annotations. Nothing is named before everything verified.
//!
//! Both are library work; the binary opens the files, refuses a terminal, and prints.
//!
//! `unpack.rs` unpacks an archive into the store's `tmp/` (member names checked, links kept
//! as a map, nothing on disk that could point outside); `load.rs` verifies and stores what it
//! holds.

mod load;
mod unpack;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;

use serde_json::{json, Value};

pub use load::{load, LoadEvent};

use crate::digest::Digest;
use crate::oci::media;
use crate::reference::Reference;
use crate::store::image::Image;
use crate::store::Store;
use crate::{Error, Result};

use media::{OCI_CONFIG, OCI_LAYER};

/// Names the archive step that failed (`unpacking NAME`, `archive layer NAME`) around its
/// cause: the archive's own variants of [`Error`].
trait Step<T> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Step<T> for std::io::Result<T> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::ArchiveIo {
            what: what(),
            source,
        })
    }
}

impl<T> Step<T> for Result<T> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::ArchiveStep {
            what: what(),
            source: Box::new(e),
        })
    }
}

impl<T> Step<T> for serde_json::Result<T> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::ArchiveJson {
            what: what(),
            source,
        })
    }
}

impl<T> Step<T> for Option<T> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T> {
        self.ok_or_else(|| Error::Archive(what()))
    }
}
/// The most a manifest, index or config may be (read into memory; containerd's limit for
/// manifests is 4 MiB, configs with long histories are larger).
const MAX_JSON_MEMBER: u64 = 64 << 20;

fn add_file(tar: &mut tar::Builder<Box<dyn Write + '_>>, name: &str, bytes: &[u8]) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_size(bytes.len() as u64);
    tar.append_data(&mut h, name, bytes)
        .step(|| format!("writing {name} to the archive"))
}

fn add_dir(tar: &mut tar::Builder<Box<dyn Write + '_>>, name: &str) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_mtime(0);
    h.set_size(0);
    tar.append_data(&mut h, name, std::io::empty())
        .step(|| format!("writing {name} to the archive"))
}

/// Writes the archive of `images` (each with the names to give it) to `out`.
pub fn write_archive(
    store: &Store,
    images: &[(Image, Vec<Reference>)],
    out: Box<dyn Write + '_>,
) -> Result<()> {
    let mut tar = tar::Builder::new(out);
    add_file(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add_dir(&mut tar, "blobs/")?;
    add_dir(&mut tar, "blobs/sha256/")?;
    let mut written = std::collections::BTreeSet::new();
    let mut manifests_json = Vec::new();
    let mut index_entries = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (img, tags) in images {
        let config_digest = &img.manifest.config.digest;
        let config = store.read_blob(config_digest)?;
        if written.insert(config_digest.clone()) {
            add_file(
                &mut tar,
                &format!("blobs/sha256/{}", config_digest.hex()),
                &config,
            )?;
        }
        let mut layers = Vec::new();
        let mut layer_paths = Vec::new();
        for (blob, diff_id) in img.layers() {
            if store.is_lazy_layer(diff_id) {
                return Err(Error::LazyLayer {
                    diff_id: diff_id.clone(),
                    image: tags
                        .first()
                        .map(|t| t.familiar())
                        .unwrap_or_else(|| img.id.to_string()),
                });
            }
            store
                .ensure_layer(&blob.digest, &blob.media_type, diff_id)
                .step(|| format!("preparing layer {diff_id}"))?;
            let data = store.layer_dir(diff_id).join("data");
            let size = fs::metadata(&data)
                .step(|| format!("reading {}", data.display()))?
                .len();
            let path = format!("blobs/sha256/{}", diff_id.hex());
            if written.insert(diff_id.clone()) {
                let mut h = tar::Header::new_ustar();
                h.set_mode(0o644);
                h.set_mtime(0);
                h.set_size(size);
                let f = File::open(&data).step(|| format!("opening {}", data.display()))?;
                tar.append_data(&mut h, &path, f)
                    .step(|| format!("writing layer {diff_id} to the archive"))?;
            }
            layers
                .push(json!({"mediaType": OCI_LAYER, "digest": diff_id.to_string(), "size": size}));
            layer_paths.push(path);
        }
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest.to_string(), "size": config.len()},
            "layers": layers,
        }))
        .step(|| "writing the image manifest".to_string())?;
        let manifest_digest = Digest::of(&manifest);
        if written.insert(manifest_digest.clone()) {
            add_file(
                &mut tar,
                &format!("blobs/sha256/{}", manifest_digest.hex()),
                &manifest,
            )?;
        }
        let repo_tags: Vec<String> = tags.iter().map(Reference::familiar).collect();
        for t in tags {
            if let (Some(tag), Some(top)) = (&t.tag, img.layers().last()) {
                repositories
                    .entry(t.familiar_name())
                    .or_default()
                    .insert(tag.clone(), top.1.hex().to_string());
            }
        }
        manifests_json.push(json!({
            "Config": format!("blobs/sha256/{}", config_digest.hex()),
            "RepoTags": repo_tags,
            "Layers": layer_paths,
        }));
        let names: Vec<Option<&Reference>> = match tags.is_empty() {
            true => vec![None],
            false => tags.iter().map(Some).collect(),
        };
        for t in names {
            let mut annotations = serde_json::Map::new();
            if let Some(t) = t {
                annotations.insert("io.containerd.image.name".into(), json!(t.to_string()));
                if let Some(tag) = &t.tag {
                    annotations.insert("org.opencontainers.image.ref.name".into(), json!(tag));
                }
            }
            let mut entry = json!({
                "mediaType": media::OCI_MANIFEST,
                "digest": manifest_digest.to_string(),
                "size": manifest.len(),
            });
            if !annotations.is_empty() {
                entry["annotations"] = Value::Object(annotations);
            }
            index_entries.push(entry);
        }
    }
    add_file(
        &mut tar,
        "index.json",
        &serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": index_entries,
        }))
        .step(|| "writing the archive".to_string())?,
    )?;
    add_file(
        &mut tar,
        "manifest.json",
        &serde_json::to_vec(&manifests_json).step(|| "writing the archive".to_string())?,
    )?;
    if !repositories.is_empty() {
        add_file(
            &mut tar,
            "repositories",
            &serde_json::to_vec(&repositories).step(|| "writing the archive".to_string())?,
        )?;
    }
    let mut out = tar
        .into_inner()
        .step(|| "finishing the archive".to_string())?;
    out.flush().step(|| "writing the archive".to_string())?;
    Ok(())
}
