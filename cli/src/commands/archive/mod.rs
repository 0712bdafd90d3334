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
//! `unpack.rs` unpacks an archive into the store's `tmp/` (member names checked, links kept
//! as a map, nothing on disk that could point outside); `load.rs` verifies and stores what it
//! holds.

mod load;
mod unpack;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};

pub use load::{load, LoadArgs};

use crate::digest::Digest;
use crate::oci::media;
use crate::reference::Reference;
use crate::store::image::Image;
use crate::store::Store;
use crate::Global;

use media::{OCI_CONFIG, OCI_LAYER};
/// The most a manifest, index or config may be (read into memory; containerd's limit for
/// manifests is 4 MiB, configs with long histories are larger).
const MAX_JSON_MEMBER: u64 = 64 << 20;

#[derive(Args)]
pub struct SaveArgs {
    /// Write to a file instead of standard output
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Images (names or IDs)
    #[arg(required = true)]
    pub images: Vec<String>,
}

fn add_file(tar: &mut tar::Builder<Box<dyn Write + '_>>, name: &str, bytes: &[u8]) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_size(bytes.len() as u64);
    tar.append_data(&mut h, name, bytes)
        .with_context(|| format!("writing {name} to the archive"))
}

fn add_dir(tar: &mut tar::Builder<Box<dyn Write + '_>>, name: &str) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_mtime(0);
    h.set_size(0);
    tar.append_data(&mut h, name, std::io::empty())
        .with_context(|| format!("writing {name} to the archive"))
}

pub fn save(global: &Global, args: SaveArgs) -> Result<()> {
    let store = Store::new(&global.root);
    let table = store.table()?;
    // One entry per image, with every name asked for it (docker's manifest.json).
    let mut images: Vec<(Image, Vec<Reference>)> = Vec::new();
    for name in &args.images {
        let found = store
            .find(&table, name)
            .map_err(|_| anyhow::anyhow!("No such image: {}", Store::familiar(name)))?;
        let tags = match &found {
            crate::store::image::Found::Tag(r, _) => vec![r.clone()],
            crate::store::image::Found::Digest(..) => Vec::new(),
            crate::store::image::Found::Id(img) => img.tags.clone(),
        };
        let img = found.image().clone();
        match images.iter_mut().find(|(i, _)| i.id == img.id) {
            Some((_, names)) => {
                for t in tags {
                    if !names.contains(&t) {
                        names.push(t);
                    }
                }
            }
            None => images.push((img, tags)),
        }
    }
    match &args.output {
        Some(p) => {
            // As docker: a temp file beside the target, renamed over it once complete, so a
            // failed save leaves no half archive (and an earlier one stays).
            let dir = match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            let stem = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let tmp = crate::store::fsutil::temp_name(dir, &stem);
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("creating {}", p.display()))?;
            let result = write_archive(&store, &images, Box::new(std::io::BufWriter::new(&file)))
                .and_then(|()| {
                    file.sync_all()
                        .with_context(|| format!("writing {}", p.display()))?;
                    fs::rename(&tmp, p).with_context(|| format!("writing {}", p.display()))
                });
            if result.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            result
        }
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            write_archive(&store, &images, Box::new(std::io::stdout().lock()))
        }
    }
}

/// Writes the archive of `images` (each with the names to give it) to `out`.
fn write_archive(
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
            store
                .ensure_layer(&blob.digest, &blob.media_type, diff_id)
                .with_context(|| format!("preparing layer {diff_id}"))?;
            let data = store.layer_dir(diff_id).join("data");
            let size = fs::metadata(&data)
                .with_context(|| format!("reading {}", data.display()))?
                .len();
            let path = format!("blobs/sha256/{}", diff_id.hex());
            if written.insert(diff_id.clone()) {
                let mut h = tar::Header::new_ustar();
                h.set_mode(0o644);
                h.set_mtime(0);
                h.set_size(size);
                let f = File::open(&data).with_context(|| format!("opening {}", data.display()))?;
                tar.append_data(&mut h, &path, f)
                    .with_context(|| format!("writing layer {diff_id} to the archive"))?;
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
        }))?;
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
        }))?,
    )?;
    add_file(
        &mut tar,
        "manifest.json",
        &serde_json::to_vec(&manifests_json)?,
    )?;
    if !repositories.is_empty() {
        add_file(
            &mut tar,
            "repositories",
            &serde_json::to_vec(&repositories)?,
        )?;
    }
    let mut out = tar.into_inner().context("finishing the archive")?;
    out.flush().context("writing the archive")?;
    Ok(())
}
