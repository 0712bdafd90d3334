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

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};

use crate::digest::Digest;
use crate::oci::{self, media, Descriptor, ManifestKind};
use crate::reference::Reference;
use crate::store::image::Image;
use crate::store::Store;
use crate::Global;

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
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

#[derive(Args)]
pub struct LoadArgs {
    /// Read from a tar archive file instead of standard input
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    /// Suppress the load output
    #[arg(short, long)]
    pub quiet: bool,
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

/// An unpacked archive: its members in a temporary directory (removed on drop), and the
/// symlinks old docker archives use for repeated layers.
struct Unpacked {
    dir: PathBuf,
    links: HashMap<String, String>,
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `name` as a relative path of plain components; `None` for `..`, absolute or empty.
fn member_path(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

impl Unpacked {
    fn read(input: &mut dyn Read, tmp: &Path) -> Result<Unpacked> {
        let dir = crate::store::fsutil::temp_name(tmp, "load");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut u = Unpacked {
            dir,
            links: HashMap::new(),
        };
        let mut input = BufReader::new(input);
        let head = std::io::BufRead::fill_buf(&mut input).context("reading the archive")?;
        let reader: Box<dyn Read + '_> = match head.starts_with(&[0x1f, 0x8b]) {
            true => Box::new(flate2::read::MultiGzDecoder::new(input)),
            false => Box::new(input),
        };
        let mut archive = tar::Archive::new(reader);
        let entries = archive
            .entries()
            .context("the input is not a tar archive")?;
        for entry in entries {
            let mut entry = entry.context("reading the archive (not a tar, or cut short)")?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(rel) = member_path(&name) else {
                bail!("archive member {name:?}: the name leaves the archive");
            };
            let kind = entry.header().entry_type();
            let target = u.dir.join(&rel);
            match kind {
                tar::EntryType::Directory => {
                    fs::create_dir_all(&target)?;
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    if let Some(parent) = target.parent() {
                        fs::create_dir_all(parent)?;
                    }
                    let mut f =
                        File::create(&target).with_context(|| format!("unpacking {name}"))?;
                    std::io::copy(&mut entry, &mut f)
                        .with_context(|| format!("unpacking {name}"))?;
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let link = entry
                        .link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    // Relative to the link's directory for symlinks, to the root for links.
                    let base = match kind {
                        tar::EntryType::Symlink => {
                            rel.parent().unwrap_or(Path::new("")).join(&link)
                        }
                        _ => PathBuf::from(&link),
                    };
                    let resolved = normalize(&base).with_context(|| {
                        format!("archive member {name:?}: its link leaves the archive")
                    })?;
                    u.links.insert(
                        rel.to_string_lossy().into_owned(),
                        resolved.to_string_lossy().into_owned(),
                    );
                }
                // pax global headers (as git archive writes): metadata for tar, no member.
                tar::EntryType::XGlobalHeader => {}
                other => bail!("archive member {name:?}: unexpected entry type {other:?}"),
            }
        }
        Ok(u)
    }

    /// Where member `name` was unpacked (following the archive's own links).
    fn member_file(&self, name: &str) -> Result<PathBuf> {
        let rel = member_path(name).with_context(|| format!("{name:?} names no archive member"))?;
        let mut key = rel.to_string_lossy().into_owned();
        for _ in 0..16 {
            match self.links.get(&key) {
                Some(t) => key = t.clone(),
                None => break,
            }
        }
        let path = self.dir.join(&key);
        if !path.is_file() {
            bail!("archive member {name:?} is missing");
        }
        Ok(path)
    }

    /// The bytes of a small member: a manifest or a config (layers are streamed).
    fn member(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.member_file(name)?;
        let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len > MAX_JSON_MEMBER {
            bail!("archive member {name:?}: {len} bytes is too large for a manifest or config");
        }
        fs::read(&path).with_context(|| format!("reading archive member {name:?}"))
    }

    fn has(&self, name: &str) -> bool {
        self.dir.join(name).is_file()
    }
}

/// A relative path with `..` resolved lexically; an error when it climbs out.
fn normalize(p: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    bail!("{} climbs out", p.display());
                }
            }
            _ => bail!("{} is absolute", p.display()),
        }
    }
    Ok(out)
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
    let mut file = File::open(&path).with_context(|| format!("opening archive member {name}"))?;
    let mut head = [0u8; 8];
    let head_len = read_head(&mut file, &mut head)
        .with_context(|| format!("reading archive member {name}"))?;
    std::io::Seek::rewind(&mut file)?;
    let (digest, size) = crate::digest::HashingReader::new(BufReader::new(&mut file))
        .finish()
        .with_context(|| format!("reading archive member {name}"))?;
    if let Some(expected) = expected {
        if &digest != expected {
            bail!("archive member {name}: its content hashes to {digest}, not {expected}");
        }
    }
    let media_type = media_type
        .map(str::to_string)
        .unwrap_or_else(|| layer_media_type(&head[..head_len]).to_string());
    if !store.has_blob(&digest) {
        // The member is already in the store's tmp/: a hard link, synced, renamed into place.
        file.sync_all()
            .with_context(|| format!("syncing archive member {name}"))?;
        let tmp = crate::store::fsutil::temp_name(&store.tmp_dir(), digest.hex());
        fs::hard_link(&path, &tmp)
            .with_context(|| format!("linking archive member {name} into the store"))?;
        if let Err(e) = crate::store::fsutil::commit_file(&tmp, &store.blob_path(&digest)) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    }
    let context = || format!("archive layer {name}");
    if store.has_layer(diff_id) && &digest != diff_id {
        // Indexed already (from another blob): only check this blob's content.
        let mut f = File::open(store.blob_path(&digest)).with_context(context)?;
        drop(
            store
                .prepare_layer(&digest, &media_type, &mut f, Some(diff_id))
                .with_context(context)?,
        );
    } else {
        store
            .ensure_layer(&digest, &media_type, diff_id)
            .with_context(context)?;
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
        .context("manifest.json: an entry without Config")?;
    let config = u.member(config_path)?;
    let config_digest = Digest::of(&config);
    let parsed: oci::ImageConfig = serde_json::from_slice(&config)
        .with_context(|| format!("{config_path}: not an image config"))?;
    let layer_paths: Vec<&str> = entry["Layers"]
        .as_array()
        .context("manifest.json: an entry without Layers")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if layer_paths.len() != parsed.rootfs.diff_ids.len() {
        bail!(
            "{config_path}: the config lists {} layers, manifest.json {}",
            parsed.rootfs.diff_ids.len(),
            layer_paths.len()
        );
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
    }))?;
    let digest = Digest::of(&manifest);
    store.put_blob(&digest, &manifest)?;
    let mut names = Vec::new();
    for t in entry["RepoTags"].as_array().into_iter().flatten() {
        if let Some(t) = t.as_str() {
            names.push(Reference::parse(t).with_context(|| format!("RepoTags: {t:?}"))?);
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
        bail!("archive member {name}: its content hashes to {got}, not {digest}");
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
                .context("the archive's index has no image for this platform")?
                .clone();
            let mut inner = load_oci(store, u, &pick)?;
            inner.names = names_of(desc);
            return Ok(inner);
        }
    };
    let config = oci_blob(u, &manifest.config.digest)?;
    let parsed: oci::ImageConfig =
        serde_json::from_slice(&config).context("not an image config")?;
    if manifest.layers.len() != parsed.rootfs.diff_ids.len() {
        bail!(
            "manifest {}: {} layers, but its config names {} diff-ids",
            desc.digest,
            manifest.layers.len(),
            parsed.rootfs.diff_ids.len()
        );
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

pub fn load(global: &Global, args: LoadArgs) -> Result<()> {
    let store = Store::new(&global.root);
    store.init()?;
    let mut input: Box<dyn Read> = match &args.input {
        Some(p) => Box::new(File::open(p).with_context(|| format!("opening {}", p.display()))?),
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                bail!("requested load from stdin, but stdin is empty");
            }
            Box::new(std::io::stdin().lock())
        }
    };
    let tmp = store.tmp_dir();
    fs::create_dir_all(&tmp)?;
    let u = Unpacked::read(&mut input, &tmp)?;
    // Blobs stored before naming are unreachable until then: hold off the GC meanwhile.
    let gc = store.gc_guard()?;
    let loaded = match verify_and_store(&store, &u) {
        Ok(l) => l,
        Err(e) => {
            // What was stored before the error is unreachable: collect it.
            drop(gc);
            let _ = store.gc_if_idle();
            return Err(e);
        }
    };
    let mut lines = String::new();
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
                    lines.push_str(&format!(
                        "The image {} already exists, renaming the old one with ID {old} to \
                         empty string\n",
                        n.familiar()
                    ));
                }
                t.set_tag(&l.desc.digest, n);
                lines.push_str(&format!("Loaded image: {}\n", n.familiar()));
            }
            if l.names.is_empty() {
                lines.push_str(&format!("Loaded image ID: {}\n", l.id));
            }
        }
        Ok(())
    })?;
    drop(gc);
    if !args.quiet {
        super::print(lines.as_bytes())?;
    }
    Ok(())
}

/// Every image of the archive, verified and its blobs stored (not yet named).
fn verify_and_store(store: &Store, u: &Unpacked) -> Result<Vec<Loaded>> {
    let mut loaded = Vec::new();
    if u.has("manifest.json") {
        let manifests: Value = serde_json::from_slice(&u.member("manifest.json")?)
            .context("manifest.json is not JSON")?;
        for entry in manifests
            .as_array()
            .context("manifest.json is not a list")?
        {
            loaded.push(load_docker(store, u, entry)?);
        }
    } else if u.has("index.json") {
        let index: oci::Index = serde_json::from_slice(&u.member("index.json")?)
            .context("index.json is not an OCI index")?;
        for desc in &index.manifests {
            loaded.push(load_oci(store, u, desc)?);
        }
    } else {
        bail!("the archive has neither manifest.json (docker) nor index.json (OCI)");
    }
    Ok(loaded)
}
