//! Test images as OCI image layouts: layers from [`LayerBuilder`]s (or raw tars, for hostile
//! input), compressed as asked, with a config and a manifest, ready for `skopeo copy oci:…`.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use strata_image::digest::Digest;
use strata_image::lazy::estargz;
pub use strata_image::oci::media::{
    OCI_CONFIG as CONFIG_MEDIA_TYPE, OCI_MANIFEST as MANIFEST_MEDIA_TYPE,
};
pub use strata_image::oci::Compression;

use crate::fixture::LayerBuilder;

/// `data` compressed as `compression` says (strata-image reads these; writing them is the
/// tests' part).
pub fn compress(compression: Compression, data: &[u8]) -> Result<Vec<u8>> {
    Ok(match compression {
        Compression::None => data.to_vec(),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(data)?;
            enc.finish()?
        }
        Compression::Zstd => zstd::encode_all(data, 3)?,
    })
}

/// `sha256:<hex>` of `data`.
pub fn digest(data: &[u8]) -> String {
    Digest::of(data).to_string()
}

struct Layer {
    tar: Vec<u8>,
    compression: Compression,
    /// Written as eStargz (gzip members, TOC, annotations) by strata's writer, chunks of
    /// this many bytes.
    estargz: Option<u64>,
    created_by: String,
}

/// An image under construction.
pub struct ImageBuilder {
    layers: Vec<Layer>,
    config: Value,
    created: String,
    architecture: String,
    empty_history: Vec<String>,
}

/// What was written: digests a test asserts against.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    pub diff_ids: Vec<String>,
    /// Sum of the compressed layer sizes.
    pub layers_size: u64,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageBuilder {
    pub fn new() -> Self {
        ImageBuilder {
            layers: Vec::new(),
            config: json!({}),
            created: "2026-01-02T03:04:05Z".into(),
            architecture: host_architecture(),
            empty_history: Vec::new(),
        }
    }

    /// Adds a gzip layer (bottom first).
    pub fn layer(self, layer: &LayerBuilder) -> Result<Self> {
        self.layer_with(layer, Compression::Gzip)
    }

    pub fn layer_with(self, layer: &LayerBuilder, compression: Compression) -> Result<Self> {
        let tar = layer.tar_bytes(1_700_000_000)?;
        Ok(self.raw_layer(tar, compression))
    }

    /// Adds a layer from tar bytes as given (hostile ones included).
    pub fn raw_layer(mut self, tar: Vec<u8>, compression: Compression) -> Self {
        let n = self.layers.len();
        self.layers.push(Layer {
            tar,
            compression,
            estargz: None,
            created_by: format!("/bin/sh -c #(nop) layer {n}"),
        });
        self
    }

    /// Adds an eStargz layer (strata's writer, files cut into chunks of `chunk_size`
    /// bytes, with the TOC digest and uncompressed size annotations): pulled lazily.
    pub fn estargz_layer(mut self, layer: &LayerBuilder, chunk_size: u64) -> Result<Self> {
        self = self.layer_with(layer, Compression::Gzip)?;
        if let Some(l) = self.layers.last_mut() {
            l.estargz = Some(chunk_size);
        }
        Ok(self)
    }

    /// A history entry without a layer (as `ENV`, `CMD` make).
    pub fn empty_layer_history(mut self, created_by: &str) -> Self {
        self.empty_history.push(created_by.into());
        self
    }

    /// Sets `config.KEY` (Env, Cmd, Entrypoint, WorkingDir, User, Labels, Volumes, …).
    pub fn config(mut self, key: &str, value: Value) -> Self {
        self.config[key] = value;
        self
    }

    pub fn created(mut self, rfc3339: &str) -> Self {
        self.created = rfc3339.into();
        self
    }

    pub fn architecture(mut self, arch: &str) -> Self {
        self.architecture = arch.into();
        self
    }

    /// Writes (or adds to) the OCI layout at `dir`, tagging the manifest `tag`.
    pub fn write_layout(&self, dir: &Path, tag: &str) -> Result<BuiltImage> {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let put = |data: &[u8]| -> Result<String> {
            let d = digest(data);
            fs::write(blobs.join(&d["sha256:".len()..]), data)?;
            Ok(d)
        };
        let mut layer_descs = Vec::new();
        let mut built = BuiltImage {
            manifest_digest: String::new(),
            config_digest: String::new(),
            layer_digests: Vec::new(),
            diff_ids: Vec::new(),
            layers_size: 0,
        };
        let mut history = Vec::new();
        for layer in &self.layers {
            let (blob, diff_id, annotations) = match layer.estargz {
                None => (
                    compress(layer.compression, &layer.tar)?,
                    digest(&layer.tar),
                    Value::Null,
                ),
                Some(chunk_size) => {
                    let mut blob = Vec::new();
                    let w = estargz::write(&layer.tar[..], &mut blob, chunk_size)?;
                    let annotations = json!({
                        estargz::TOC_DIGEST_ANNOTATION: w.toc_digest.to_string(),
                        estargz::UNCOMPRESSED_SIZE_ANNOTATION: w.uncompressed_size.to_string(),
                    });
                    (blob, w.diff_id.to_string(), annotations)
                }
            };
            let d = put(&blob)?;
            let mut desc = json!({
                "mediaType": layer.compression.layer_media_type(),
                "digest": d,
                "size": blob.len(),
            });
            if !annotations.is_null() {
                desc["annotations"] = annotations;
            }
            layer_descs.push(desc);
            built.layers_size += blob.len() as u64;
            built.layer_digests.push(d);
            built.diff_ids.push(diff_id);
            history.push(json!({"created": self.created, "created_by": layer.created_by}));
        }
        for created_by in &self.empty_history {
            history.push(json!({
                "created": self.created,
                "created_by": created_by,
                "empty_layer": true,
            }));
        }
        let config = json!({
            "created": self.created,
            "architecture": self.architecture,
            "os": "linux",
            "config": self.config,
            "rootfs": {"type": "layers", "diff_ids": built.diff_ids},
            "history": history,
        });
        let config_bytes = serde_json::to_vec(&config)?;
        built.config_digest = put(&config_bytes)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": CONFIG_MEDIA_TYPE,
                "digest": built.config_digest,
                "size": config_bytes.len(),
            },
            "layers": layer_descs,
        });
        let manifest_bytes = serde_json::to_vec(&manifest)?;
        built.manifest_digest = put(&manifest_bytes)?;
        let index_path = dir.join("index.json");
        let mut index: Value = match fs::read(&index_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)?,
            Err(_) => json!({"schemaVersion": 2, "manifests": []}),
        };
        let manifests = index["manifests"]
            .as_array_mut()
            .context("index.json without manifests")?;
        manifests.retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != tag);
        manifests.push(json!({
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": built.manifest_digest,
            "size": manifest_bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
        fs::write(&index_path, serde_json::to_vec_pretty(&index)?)?;
        Ok(built)
    }
}

/// The OCI architecture name of this machine.
pub fn host_architecture() -> String {
    strata_image::oci::host_platform().1
}

/// A layer with the host's static busybox as `/bin/busybox`, its common applets as
/// symlinks, and minimal `/etc/passwd` and `/etc/group` (root, nobody, and `app` 1000).
pub fn busybox_layer() -> Result<LayerBuilder> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .find_map(|p| fs::read(p).ok())
        .context("busybox not found: install busybox-static")?;
    let mut layer = LayerBuilder::new()
        .dir("bin")
        .dir("etc")
        .dir("tmp")
        .mode(0o1777)
        .dir("root")
        .mode(0o700)
        .file("bin/busybox", busybox)
        .mode(0o755);
    for applet in [
        "sh", "ls", "cat", "echo", "id", "sleep", "true", "false", "env", "pwd", "hostname", "ps",
        "mkdir", "rm", "touch", "stat", "wc", "head", "tail", "grep", "find", "kill", "mount",
        "whoami", "dd", "cp", "mv", "chmod", "chown", "ln", "readlink", "sync",
    ] {
        layer = layer.symlink(format!("bin/{applet}"), "busybox");
    }
    Ok(layer
        .file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n\
             nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        )
        .file("etc/group", "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n"))
}
