//! `load`: verifies and stores the images of an unpacked archive (docker's `manifest.json`
//! first, else the OCI `index.json`), then names them all at once.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{BufReader, Read};

use super::Step;
use crate::{Error, Result};
use serde_json::{json, Value};

use super::unpack::Unpacked;
use super::{OCI_CONFIG, OCI_LAYER};
use crate::digest::Digest;
use crate::oci::{self, media, Descriptor, ManifestKind};
use crate::reference::Reference;
use crate::store::Store;

/// What a load did, one line of docker's output each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadEvent {
    /// `name` was taken from the image `old` (docker: "already exists, renaming").
    Renamed { name: Reference, old: Digest },
    /// An image loaded under `name`.
    Loaded(Reference),
    /// An image loaded without a name.
    LoadedId(Digest),
}

/// A verified image ready to be named: its manifest descriptor, and its names.
struct Loaded {
    desc: Descriptor,
    id: Digest,
    names: Vec<Reference>,
}

fn layer_media_type(head: &[u8]) -> &'static str {
    match oci::Compression::from_magic(head) {
        oci::Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        oci::Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        oci::Compression::None => OCI_LAYER,
    }
}

/// A layer of the archive as stored: its blob's digest, media type and size.
struct StoredLayer {
    digest: Digest,
    media_type: String,
    size: u64,
}

/// Stores the layer unpacked at member `name`, streaming (a layer may be larger than memory):
/// hashes it (checked against `expected` when the archive names the blob by digest), links
/// it into `blobs/` and builds its index with the function pulls use, which checks the
/// uncompressed content against the config's `diff_id`. A layer already indexed is checked
/// against the diff-id all the same unless the blob is that uncompressed tar.
fn store_layer(
    store: &Store,
    u: &Unpacked,
    name: &str,
    expected: Option<&Digest>,
    media_type: Option<&str>,
    diff_id: &Digest,
) -> Result<StoredLayer> {
    let path = u.member_file(name)?;
    let mut file = File::open(&path).step(|| format!("opening archive member {name}"))?;
    let mut head = [0u8; 8];
    let head_len =
        read_head(&mut file, &mut head).step(|| format!("reading archive member {name}"))?;
    std::io::Seek::rewind(&mut file).step(|| format!("reading archive member {name}"))?;
    let (digest, size) = crate::digest::HashingReader::new(BufReader::new(&mut file))
        .finish()
        .step(|| format!("reading archive member {name}"))?;
    if let Some(expected) = expected {
        if &digest != expected {
            return Err(Error::Archive(format!(
                "archive member {name}: its content hashes to {digest}, not {expected}"
            )));
        }
    }
    let media_type = media_type
        .map(str::to_string)
        .unwrap_or_else(|| layer_media_type(&head[..head_len]).to_string());
    if !store.has_blob(&digest) {
        // The member is already in the store's tmp/: a hard link, synced, renamed into place.
        file.sync_all()
            .step(|| format!("syncing archive member {name}"))?;
        let tmp = crate::store::fsutil::temp_name(&store.tmp_dir(), digest.hex());
        fs::hard_link(&path, &tmp)
            .step(|| format!("linking archive member {name} into the store"))?;
        if let Err(e) = crate::store::fsutil::commit_file(&tmp, &store.blob_path(&digest)) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    }
    let context = || format!("archive layer {name}");
    if store.has_layer(diff_id) && &digest != diff_id {
        // Indexed already (from another blob): only check this blob's content.
        let mut f = File::open(store.blob_path(&digest)).step(context)?;
        drop(
            store
                .prepare_layer(&digest, &media_type, &mut f, Some(diff_id))
                .step(context)?,
        );
    } else {
        store
            .ensure_layer(&digest, &media_type, diff_id)
            .step(context)?;
    }
    Ok(StoredLayer {
        digest,
        media_type,
        size,
    })
}

/// Reads up to `buf.len()` bytes (fewer only at the end of the file).
fn read_head(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Stores a docker-archive image: config, layers (checked against the config's diff-ids
/// when indexed), and a new OCI manifest for them.
fn load_docker(store: &Store, u: &Unpacked, entry: &Value) -> Result<Loaded> {
    let config_path = entry["Config"]
        .as_str()
        .step(|| "manifest.json: an entry without Config".to_string())?;
    let config = u.member(config_path)?;
    let config_digest = Digest::of(&config);
    let parsed: oci::ImageConfig =
        serde_json::from_slice(&config).step(|| format!("{config_path}: not an image config"))?;
    let layer_paths: Vec<&str> = entry["Layers"]
        .as_array()
        .step(|| "manifest.json: an entry without Layers".to_string())?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if layer_paths.len() != parsed.rootfs.diff_ids.len() {
        return Err(Error::Archive(format!(
            "{config_path}: the config lists {} layers, manifest.json {}",
            parsed.rootfs.diff_ids.len(),
            layer_paths.len()
        )));
    }
    let mut layers = Vec::new();
    for (path, diff_id) in layer_paths.iter().zip(&parsed.rootfs.diff_ids) {
        let l = store_layer(store, u, path, None, None, diff_id)?;
        layers.push(
            json!({"mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.size}),
        );
    }
    store.put_blob(&config_digest, &config)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest.to_string(), "size": config.len()},
        "layers": layers,
    }))
    .step(|| "writing the image manifest".to_string())?;
    let digest = Digest::of(&manifest);
    store.put_blob(&digest, &manifest)?;
    let mut names = Vec::new();
    for t in entry["RepoTags"].as_array().into_iter().flatten() {
        if let Some(t) = t.as_str() {
            names.push(Reference::parse(t).step(|| format!("RepoTags: {t:?}"))?);
        }
    }
    Ok(Loaded {
        desc: descriptor(media::OCI_MANIFEST, digest, manifest.len()),
        id: config_digest,
        names,
    })
}

fn descriptor(media_type: &str, digest: Digest, size: usize) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest,
        size: size as u64,
        platform: None,
        annotations: BTreeMap::new(),
        extra: BTreeMap::new(),
    }
}

/// An OCI blob of the archive, checked against its name.
fn oci_blob(u: &Unpacked, digest: &Digest) -> Result<Vec<u8>> {
    let name = format!("blobs/sha256/{}", digest.hex());
    let bytes = u.member(&name)?;
    let got = Digest::of(&bytes);
    if &got != digest {
        return Err(Error::Archive(format!(
            "archive member {name}: its content hashes to {got}, not {digest}"
        )));
    }
    Ok(bytes)
}

/// Stores an OCI-archive image named by a manifest descriptor of index.json.
fn load_oci(store: &Store, u: &Unpacked, desc: &Descriptor) -> Result<Loaded> {
    let bytes = oci_blob(u, &desc.digest)?;
    let manifest = match oci::parse_manifest(Some(&desc.media_type), &bytes)?.1 {
        ManifestKind::Image(m) => m,
        ManifestKind::Index(idx) => {
            let platform = oci::PlatformSpec::host();
            let pick = idx
                .manifests
                .iter()
                .find(|d| {
                    d.platform
                        .as_ref()
                        .is_none_or(|p| p.os == platform.os && p.architecture == platform.arch)
                })
                .step(|| "the archive's index has no image for this platform".to_string())?
                .clone();
            let mut inner = load_oci(store, u, &pick)?;
            inner.names = names_of(desc);
            return Ok(inner);
        }
    };
    let config = oci_blob(u, &manifest.config.digest)?;
    let parsed: oci::ImageConfig =
        serde_json::from_slice(&config).step(|| "not an image config".to_string())?;
    if manifest.layers.len() != parsed.rootfs.diff_ids.len() {
        return Err(Error::Archive(format!(
            "manifest {}: {} layers, but its config names {} diff-ids",
            desc.digest,
            manifest.layers.len(),
            parsed.rootfs.diff_ids.len()
        )));
    }
    for (layer, diff_id) in manifest.layers.iter().zip(&parsed.rootfs.diff_ids) {
        store_layer(
            store,
            u,
            &format!("blobs/sha256/{}", layer.digest.hex()),
            Some(&layer.digest),
            Some(&layer.media_type),
            diff_id,
        )?;
    }
    store.put_blob(&manifest.config.digest, &config)?;
    store.put_blob(&desc.digest, &bytes)?;
    Ok(Loaded {
        desc: descriptor(&desc.media_type, desc.digest.clone(), bytes.len()),
        id: manifest.config.digest.clone(),
        names: names_of(desc),
    })
}

/// The names index.json gives an image: containerd's full name, else a ref.name that is
/// a whole reference (skopeo's `oci-archive:FILE:busybox:1`); a bare tag names nothing.
fn names_of(desc: &Descriptor) -> Vec<Reference> {
    let a = &desc.annotations;
    let candidate = a.get("io.containerd.image.name").or_else(|| {
        a.get("org.opencontainers.image.ref.name")
            .filter(|n| n.contains([':', '/']))
    });
    candidate
        .and_then(|n| Reference::parse(n).ok())
        .into_iter()
        .collect()
}

/// Loads the archive read from `input` (gzip'd or not) into `store`: every blob verified,
/// nothing named unless all of it is. Returns what docker would print.
pub fn load(store: &Store, input: &mut dyn Read) -> Result<Vec<LoadEvent>> {
    store.init()?;
    let tmp = store.tmp_dir();
    fs::create_dir_all(&tmp).map_err(|source| Error::Create {
        path: tmp.clone(),
        source,
    })?;
    let u = Unpacked::read(input, &tmp)?;
    // Blobs stored before naming are unreachable until then: hold off the GC meanwhile.
    let gc = store.gc_guard()?;
    let loaded = match verify_and_store(store, &u) {
        Ok(l) => l,
        Err(e) => {
            // What was stored before the error is unreachable: collect it.
            drop(gc);
            let _ = store.gc_if_idle();
            return Err(e);
        }
    };
    let mut events = Vec::new();
    store.update(|t| {
        // What each name is now, to say which image a loaded one takes it from (docker's line).
        let before: HashMap<String, Digest> = store
            .images()?
            .into_iter()
            .flat_map(|i| {
                let id = i.id.clone();
                i.tags.into_iter().map(move |r| (r.to_string(), id.clone()))
            })
            .collect();
        for l in &loaded {
            t.ensure(&l.desc);
            for n in &l.names {
                if let Some(old) = before.get(&n.to_string()).filter(|old| **old != l.id) {
                    events.push(LoadEvent::Renamed {
                        name: n.clone(),
                        old: old.clone(),
                    });
                }
                t.set_tag(&l.desc.digest, n);
                events.push(LoadEvent::Loaded(n.clone()));
            }
            if l.names.is_empty() {
                events.push(LoadEvent::LoadedId(l.id.clone()));
            }
        }
        Ok::<_, Error>(())
    })?;
    drop(gc);
    Ok(events)
}

/// Every image of the archive, verified and its blobs stored (not yet named).
fn verify_and_store(store: &Store, u: &Unpacked) -> Result<Vec<Loaded>> {
    let mut loaded = Vec::new();
    if u.has("manifest.json") {
        let manifests: Value = serde_json::from_slice(&u.member("manifest.json")?)
            .step(|| "manifest.json is not JSON".to_string())?;
        for entry in manifests
            .as_array()
            .step(|| "manifest.json is not a list".to_string())?
        {
            loaded.push(load_docker(store, u, entry)?);
        }
    } else if u.has("index.json") {
        let index: oci::Index = serde_json::from_slice(&u.member("index.json")?)
            .step(|| "index.json is not an OCI index".to_string())?;
        for desc in &index.manifests {
            loaded.push(load_oci(store, u, desc)?);
        }
    } else {
        return Err(Error::Archive(
            "the archive has neither manifest.json (docker) nor index.json (OCI)".to_string(),
        ));
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(annotations: &[(&str, &str)]) -> Descriptor {
        let mut d = descriptor(media::OCI_MANIFEST, Digest::of(b"m"), 1);
        for (k, v) in annotations {
            d.annotations.insert(k.to_string(), v.to_string());
        }
        d
    }

    #[test]
    fn names_from_index_annotations() {
        let familiar = |d: &Descriptor| -> Vec<String> {
            names_of(d).iter().map(Reference::familiar).collect()
        };
        // containerd's full name wins over the OCI tag docker writes beside it.
        let d = desc(&[
            ("io.containerd.image.name", "docker.io/library/busybox:1"),
            ("org.opencontainers.image.ref.name", "1"),
        ]);
        assert_eq!(familiar(&d), ["busybox:1"]);
        // skopeo's oci-archive:FILE:NAME puts the whole reference in ref.name.
        let d = desc(&[("org.opencontainers.image.ref.name", "other/name:2")]);
        assert_eq!(familiar(&d), ["other/name:2"]);
        // A bare tag names no repository: the image loads by ID.
        let d = desc(&[("org.opencontainers.image.ref.name", "latest")]);
        assert!(names_of(&d).is_empty());
        assert!(names_of(&desc(&[])).is_empty());
    }

    #[test]
    fn layer_media_type_from_magic() {
        assert_eq!(
            layer_media_type(&[0x1f, 0x8b, 8, 0]),
            OCI_LAYER.to_string() + "+gzip"
        );
        assert_eq!(
            layer_media_type(&[0x28, 0xb5, 0x2f, 0xfd]),
            OCI_LAYER.to_string() + "+zstd"
        );
        assert_eq!(layer_media_type(b"hello\0\0\0"), OCI_LAYER);
        assert_eq!(layer_media_type(b""), OCI_LAYER);
    }

    /// A docker archive whose layer is not what its config says stores nothing.
    #[test]
    fn a_layer_that_is_not_the_configs_stores_nothing() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path());
        store.init().unwrap();
        let mut layer = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(2);
        h.set_mode(0o644);
        layer.append_data(&mut h, "f", &b"hi"[..]).unwrap();
        let layer = layer.into_inner().unwrap();
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [Digest::of(b"another").to_string()]},
        }))
        .unwrap();
        let manifest =
            json!([{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["l/layer.tar"]}]);
        let mut archive = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("l/layer.tar", layer),
            ("c.json", config),
            ("manifest.json", serde_json::to_vec(&manifest).unwrap()),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            archive.append_data(&mut h, name, data.as_slice()).unwrap();
        }
        let archive = archive.into_inner().unwrap();
        let u = Unpacked::read(&mut &archive[..], &store.tmp_dir()).unwrap();
        let e = match verify_and_store(&store, &u) {
            Ok(_) => panic!("stored"),
            Err(e) => e.chain(),
        };
        assert!(e.contains("archive layer l/layer.tar"), "{e}");
        assert!(e.contains("but the image config says"), "{e}");
        drop(u);
        store.gc().unwrap();
        let left: Vec<_> = ["blobs/sha256", "layers", "tmp"]
            .iter()
            .flat_map(|d| fs::read_dir(root.path().join(d)).unwrap().flatten())
            .map(|e| e.path())
            .filter(|p| !p.to_string_lossy().ends_with(".lock"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
