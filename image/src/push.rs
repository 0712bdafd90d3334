//! Pushing an image of the store to a registry, in docker's order: every blob the manifest
//! names first — skipped when the repository has it (HEAD), mounted from another repository
//! of the same registry that is known to hold it (pulled from or pushed to there, see
//! [`LayerMeta::seen_in`](crate::store::layers::LayerMeta)), uploaded otherwise — then the
//! config, the manifest last, so the tag never names a blob the registry lacks.
//!
//! `--format` rewrites the manifest's media types (OCI ↔ Docker schema 2); `--compression-
//! format` recompresses layers whose stored blob is compressed otherwise, from the layer's
//! uncompressed tar. `estargz` and `zstd:chunked` write them seekable (a compressed member or
//! frame per file chunk and a TOC, [`crate::lazy`]): strata pulls them lazily. The config is
//! rewritten only for `--compression-format estargz`: an eStargz blob decompresses to the
//! layer's tar plus its TOC entry, a new diff-id (as `ctr-remote image convert --estargz`
//! makes them); a zstd:chunked one decompresses to the tar itself, and otherwise too the
//! image ID stays.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::Mutex;

use crate::digest::{Digest, Hasher, HashingReader};
use crate::lazy::{estargz, zstd_chunked, Format};
use crate::oci::{media, Compression, Descriptor, Manifest};
use crate::pull::LayerObserver;
use crate::reference::Reference;
use crate::registry::auth::AuthFile;
use crate::registry::upload::Mounted;
use crate::registry::Client;
use crate::store::image::Image;
use crate::store::{fsutil, Store};
use crate::{Error, Result};

/// What a push tells whoever shows its progress: one observer per layer, as a pull's.
pub trait PushObserver: Sync {
    /// One layer to push, `size` bytes, shown as `id` (its diff-id's short form, as docker).
    fn layer(&self, id: &str, size: u64) -> Box<dyn LayerObserver + '_>;
}

impl PushObserver for crate::pull::Silent {
    fn layer(&self, _: &str, _: u64) -> Box<dyn LayerObserver + '_> {
        Box::new(crate::pull::Silent)
    }
}

/// The manifest format to push (`--format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestFormat {
    Oci,
    /// Docker image manifest schema 2.
    V2s2,
}

impl ManifestFormat {
    fn of_media_type(mt: &str) -> ManifestFormat {
        if mt == media::DOCKER_MANIFEST {
            ManifestFormat::V2s2
        } else {
            ManifestFormat::Oci
        }
    }

    fn manifest_media_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => media::OCI_MANIFEST,
            ManifestFormat::V2s2 => media::DOCKER_MANIFEST,
        }
    }

    fn config_media_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => media::OCI_CONFIG,
            ManifestFormat::V2s2 => media::DOCKER_CONFIG,
        }
    }

    /// A layer's media type in this format, or None when the format has none (zstd in
    /// Docker schema 2).
    fn layer_media_type(self, c: Compression) -> Option<&'static str> {
        match (self, c) {
            (ManifestFormat::Oci, c) => Some(c.layer_media_type()),
            (ManifestFormat::V2s2, Compression::None) => Some(media::DOCKER_LAYER),
            (ManifestFormat::V2s2, Compression::Gzip) => Some(media::DOCKER_LAYER_GZIP),
            (ManifestFormat::V2s2, Compression::Zstd) => None,
        }
    }
}

pub struct PushOptions {
    /// None: the stored manifest's format.
    pub format: Option<ManifestFormat>,
    /// None: each layer as it is stored.
    pub compression: Option<Compression>,
    /// Write layers in a seekable format (pulled lazily: eStargz is gzip, zstd:chunked
    /// zstd), `compression` unset.
    pub seekable: Option<Format>,
    pub insecure: bool,
}

pub struct Pushed {
    pub tag: String,
    pub digest: Digest,
    /// Bytes of the manifest.
    pub size: u64,
}

/// Layers pushed at once (docker's default is 5; the registry is usually the bottleneck).
const PARALLEL_LAYERS: usize = 3;

/// One blob to push: where its bytes are and what the manifest will call it.
struct Blob {
    descriptor: Descriptor,
    /// The file to upload: the store's blob, or a recompressed temp file.
    path: PathBuf,
    /// A temp file to delete once pushed.
    temp: bool,
}

impl Drop for Blob {
    fn drop(&mut self) {
        if self.temp {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Pushes the image tagged `reference` to its registry under the same tag.
pub fn push(
    store: &Store,
    auth: &AuthFile,
    reference: &Reference,
    opts: &PushOptions,
    progress: &dyn PushObserver,
) -> Result<Pushed> {
    if reference.digest.is_some() {
        return Err(Error::InvalidReference {
            why: format!("{reference}: cannot push a digest reference"),
        });
    }
    let tag = reference.manifest_ref();
    let table = store.table()?;
    let entry = table
        .by_tag(&reference.to_string())
        .ok_or_else(|| Error::NoLocalTag(reference.familiar()))?;
    // Blobs must not go away under the push (a concurrent rmi's collection).
    let _gc = store.gc_guard()?;
    let img = store.load_image(entry)?;
    let format = opts
        .format
        .unwrap_or_else(|| ManifestFormat::of_media_type(&img.manifest_media_type));
    let compression = match opts.seekable {
        Some(Format::Estargz) => Some(Compression::Gzip),
        Some(Format::ZstdChunked) => Some(Compression::Zstd),
        None => opts.compression,
    };
    check_local(store, &img, reference, format, compression)?;

    let client = Client::new(reference, opts.insecure, auth.get(&reference.domain)?)?.for_push();

    let how = LayerHow {
        format,
        compression,
        seekable: opts.seekable,
    };
    let pushed = push_layers(store, &client, &img, &how, progress)?;
    let (layers, diff_ids): (Vec<Descriptor>, Vec<Digest>) = pushed.into_iter().unzip();

    let config = if diff_ids == img.config.rootfs.diff_ids {
        Blob {
            descriptor: Descriptor {
                media_type: format.config_media_type().to_string(),
                ..img.manifest.config.clone()
            },
            path: store.blob_path(&img.manifest.config.digest),
            temp: false,
        }
    } else {
        rewritten_config(store, &img, format, &diff_ids)?
    };
    if !client.has_blob(&config.descriptor.digest)? {
        upload(&client, &config, &|_| {})?;
    }

    let (media_type, bytes) = manifest_bytes(store, &img, format, &config.descriptor, &layers)?;
    let digest = client.put_manifest(&tag, media_type, &bytes)?;
    if digest == img.manifest_digest {
        // As docker: the pushed image gains the repo digest it now has in the registry.
        store.update(|t| {
            t.ensure(&entry.descriptor)
                .repo_digests
                .insert(reference.with_digest(&digest).to_string());
            Ok::<_, Error>(())
        })?;
    }
    Ok(Pushed {
        tag,
        digest,
        size: bytes.len() as u64,
    })
}

/// Refuses before any request what cannot be pushed: a blob missing from the store, a zstd
/// layer in Docker schema 2.
fn check_local(
    store: &Store,
    img: &Image,
    reference: &Reference,
    format: ManifestFormat,
    compression: Option<Compression>,
) -> Result<()> {
    let missing = |d: &Digest| Error::PushBlobMissing {
        digest: d.clone(),
        reference: reference.familiar(),
        path: store.blob_path(d),
    };
    if !store.has_blob(&img.manifest.config.digest) {
        return Err(missing(&img.manifest.config.digest));
    }
    for (layer, diff_id) in img.layers() {
        if store.is_lazy_layer(diff_id) && !store.has_blob(&layer.digest) {
            return Err(Error::LazyLayer {
                diff_id: diff_id.clone(),
                image: reference.familiar(),
            });
        }
        if !store.has_blob(&layer.digest) {
            return Err(missing(&layer.digest));
        }
        let c = compression.unwrap_or(stored_compression(store, layer)?);
        if format.layer_media_type(c).is_none() && !is_foreign(&layer.media_type) {
            return Err(Error::ZstdInDockerFormat {
                digest: layer.digest.clone(),
            });
        }
    }
    Ok(())
}

/// How layers go to the registry.
struct LayerHow {
    format: ManifestFormat,
    /// None: as stored.
    compression: Option<Compression>,
    seekable: Option<Format>,
}

/// The image's config with `diff_ids`, in a temp file to upload.
fn rewritten_config(
    store: &Store,
    img: &Image,
    format: ManifestFormat,
    diff_ids: &[Digest],
) -> Result<Blob> {
    let mut config: serde_json::Value = serde_json::from_slice(
        &store.read_blob(&img.manifest.config.digest)?,
    )
    .map_err(|source| Error::ParseConfig {
        digest: img.manifest.config.digest.clone(),
        source,
    })?;
    config["rootfs"]["diff_ids"] = serde_json::json!(diff_ids);
    let bytes = serde_json::to_vec(&config).map_err(|source| Error::Serialize {
        what: "the config to push",
        source,
    })?;
    let path = fsutil::temp_name(&store.tmp_dir(), "config.push");
    std::fs::write(&path, &bytes).map_err(|source| Error::Write {
        path: path.clone(),
        source,
    })?;
    Ok(Blob {
        descriptor: Descriptor {
            media_type: format.config_media_type().to_string(),
            digest: Digest::of(&bytes),
            size: bytes.len() as u64,
            ..img.manifest.config.clone()
        },
        path,
        temp: true,
    })
}

/// Layers that are not pushed as themselves keep their type (docker's foreign layers).
fn is_foreign(media_type: &str) -> bool {
    media_type.contains("foreign") || media_type.contains("nondistributable")
}

/// How a stored layer blob is compressed: its media type says, or its first bytes.
fn stored_compression(store: &Store, layer: &Descriptor) -> Result<Compression> {
    if let Some(c) = Compression::from_media_type(&layer.media_type) {
        return Ok(c);
    }
    let path = store.blob_path(&layer.digest);
    let mut head = [0u8; 4];
    let n = File::open(&path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|source| Error::PushRead {
            digest: layer.digest.clone(),
            source,
        })?;
    Ok(Compression::from_magic(&head[..n]))
}

/// Pushes the layers a few at a time; returns their descriptors as the manifest names them
/// and their diff-ids (new ones for eStargz).
fn push_layers(
    store: &Store,
    client: &Client,
    img: &Image,
    how: &LayerHow,
    progress: &dyn PushObserver,
) -> Result<Vec<(Descriptor, Digest)>> {
    let jobs: Vec<(&Descriptor, &Digest)> = img.layers().collect();
    // docker lists the top layer first.
    let mut seen = BTreeSet::new();
    let bars: Vec<Option<Box<dyn LayerObserver + '_>>> = jobs
        .iter()
        .map(|(l, d)| {
            seen.insert(&l.digest).then(|| {
                let bar = progress.layer(d.short(), l.size);
                bar.status("Preparing");
                bar
            })
        })
        .collect();
    let results: Vec<Mutex<Option<(Descriptor, Digest)>>> =
        jobs.iter().map(|_| Mutex::new(None)).collect();
    let queue = Mutex::new(
        (0..jobs.len())
            .filter(|&i| bars[i].is_some())
            .collect::<Vec<_>>(),
    );
    let errors: Mutex<Vec<Error>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..PARALLEL_LAYERS.min(jobs.len()) {
            s.spawn(|| loop {
                if !errors.lock().expect("not poisoned").is_empty() {
                    return;
                }
                let Some(i) = ({
                    let mut q = queue.lock().expect("not poisoned");
                    (!q.is_empty()).then(|| q.remove(0))
                }) else {
                    return;
                };
                let (layer, diff_id) = jobs[i];
                let bar = bars[i].as_deref().expect("queued layers have a bar");
                match push_layer(store, client, layer, diff_id, how, bar) {
                    Ok(d) => *results[i].lock().expect("not poisoned") = Some(d),
                    Err(e) => {
                        bar.fail(&e);
                        errors.lock().expect("not poisoned").push(e);
                    }
                }
            });
        }
    });
    if let Some(e) = errors
        .into_inner()
        .expect("not poisoned")
        .into_iter()
        .next()
    {
        return Err(e);
    }
    // A layer listed twice is pushed once and named twice.
    let mut out = Vec::new();
    for (i, (layer, _)) in jobs.iter().enumerate() {
        let d = match results[i].lock().expect("not poisoned").clone() {
            Some(d) => d,
            None => {
                let first = jobs
                    .iter()
                    .position(|(l, _)| l.digest == layer.digest)
                    .expect("the layer itself");
                results[first]
                    .lock()
                    .expect("not poisoned")
                    .clone()
                    .expect("pushed")
            }
        };
        out.push(d);
    }
    Ok(out)
}

fn push_layer(
    store: &Store,
    client: &Client,
    layer: &Descriptor,
    diff_id: &Digest,
    how: &LayerHow,
    bar: &dyn LayerObserver,
) -> Result<(Descriptor, Digest)> {
    let (blob, pushed_diff_id) = layer_blob(store, layer, diff_id, how, bar)?;
    let diff_id = &pushed_diff_id;
    let digest = &blob.descriptor.digest;
    let repository = client.repository();
    if client.has_blob(digest)? {
        store.note_blob_repository(diff_id, digest, &repository);
        bar.finish("Layer already exists");
        return Ok((blob.descriptor.clone(), pushed_diff_id.clone()));
    }
    // Another repository of this registry known to hold the blob: ask for a mount.
    let prefix = format!("{}/", client.domain());
    let from = store
        .blob_repositories(diff_id, digest)
        .into_iter()
        .filter_map(|r| r.strip_prefix(&prefix).map(str::to_string))
        .find(|r| r != client.repo());
    let location = match from {
        Some(from) => match client.mount_blob(digest, &from)? {
            Mounted::Yes => {
                store.note_blob_repository(diff_id, digest, &repository);
                bar.finish(&format!("Mounted from {from}"));
                return Ok((blob.descriptor.clone(), pushed_diff_id.clone()));
            }
            Mounted::Upload(location) => location,
        },
        None => client.start_upload(digest)?,
    };
    bar.transfer("Pushing");
    upload_to(client, &location, &blob, &|n| bar.bytes(n))?;
    store.note_blob_repository(diff_id, digest, &repository);
    bar.finish("Pushed");
    Ok((blob.descriptor.clone(), pushed_diff_id.clone()))
}

/// The blob to push for a layer: the stored one, or a recompressed (or eStargz) copy in the
/// store's temp directory; and the diff-id it has.
fn layer_blob(
    store: &Store,
    layer: &Descriptor,
    diff_id: &Digest,
    how: &LayerHow,
    bar: &dyn LayerObserver,
) -> Result<(Blob, Digest)> {
    let format = how.format;
    let stored = stored_compression(store, layer)?;
    let want = how.compression.unwrap_or(stored);
    let media_type = if is_foreign(&layer.media_type) {
        layer.media_type.clone()
    } else {
        format
            .layer_media_type(want)
            .expect("checked before pushing")
            .to_string()
    };
    // A zstd:chunked blob is a zstd blob too, an eStargz one a gzip one.
    let as_stored = match how.seekable {
        Some(f) => Format::detect(layer) == Some(f),
        None => want == stored,
    };
    if as_stored || is_foreign(&layer.media_type) {
        let blob = Blob {
            descriptor: Descriptor {
                media_type,
                ..layer.clone()
            },
            path: store.blob_path(&layer.digest),
            temp: false,
        };
        return Ok((blob, diff_id.clone()));
    }
    bar.transfer("Compressing");
    let mut descriptor = Descriptor {
        media_type,
        annotations: without_toc_annotations(&layer.annotations),
        ..layer.clone()
    };
    let (path, digest, size, new_diff_id) = match how.seekable {
        Some(Format::Estargz) => {
            let (path, digest, size, w) = rewrite(store, layer, diff_id, stored, |tar, out| {
                estargz::write(tar, out, estargz::CHUNK_SIZE)
            })?;
            descriptor.annotations.insert(
                estargz::TOC_DIGEST_ANNOTATION.into(),
                w.toc_digest.to_string(),
            );
            descriptor.annotations.insert(
                estargz::UNCOMPRESSED_SIZE_ANNOTATION.into(),
                w.uncompressed_size.to_string(),
            );
            (path, digest, size, w.diff_id)
        }
        Some(Format::ZstdChunked) => {
            let (path, digest, size, w) = rewrite(store, layer, diff_id, stored, |tar, out| {
                zstd_chunked::write(tar, out, zstd_chunked::CHUNK_SIZE)
            })?;
            descriptor.annotations.extend(w.annotations());
            // The blob decompresses to the tar itself.
            (path, digest, size, diff_id.clone())
        }
        None => {
            let (path, digest, size, ()) = recompress(store, layer, diff_id, stored, want)?;
            (path, digest, size, diff_id.clone())
        }
    };
    descriptor.digest = digest;
    descriptor.size = size;
    let blob = Blob {
        descriptor,
        path,
        temp: true,
    };
    Ok((blob, new_diff_id))
}

/// The stored layer's tar, decompressed from its blob.
fn layer_tar(store: &Store, layer: &Descriptor, stored: Compression) -> io::Result<Box<dyn Read>> {
    let blob = File::open(store.blob_path(&layer.digest))?;
    let blob = BufReader::with_capacity(1 << 20, blob);
    Ok(match stored {
        Compression::None => Box::new(blob),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(blob)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(blob)?),
    })
}

/// A recompressed layer's annotations: the old ones but those that tell where a seekable
/// format's TOC is in the old blob.
fn without_toc_annotations(old: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    const TOC_BOUND: [&str; 4] = [
        "io.github.containers.zstd-chunked.",
        "io.containers.zstd-chunked.",
        "containerd.io/snapshot/stargz/",
        "io.containers.estargz.",
    ];
    old.iter()
        .filter(|(k, _)| !TOC_BOUND.iter().any(|p| k.starts_with(p)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Writes the layer's tar through `write` (a compressor or a seekable format's writer) to a
/// temp file; returns it, its digest and size, and what `write` returned. The tar read is
/// checked against `diff_id`.
fn rewrite<T>(
    store: &Store,
    layer: &Descriptor,
    diff_id: &Digest,
    stored: Compression,
    write: impl FnOnce(&mut dyn Read, &mut dyn Write) -> io::Result<T>,
) -> Result<(PathBuf, Digest, u64, T)> {
    let err = |source| Error::Recompress {
        diff_id: diff_id.clone(),
        source,
    };
    let mut tar = HashingReader::new(layer_tar(store, layer, stored).map_err(err)?);
    let path = fsutil::temp_name(&store.tmp_dir(), &format!("{}.push", diff_id.hex()));
    let result = (|| {
        let file = File::create(&path)?;
        let mut out = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
        let made = write(&mut tar, &mut out)?;
        // A writer may stop at the tar's end-of-archive blocks: read to the end for the hash.
        io::copy(&mut tar, &mut io::sink())?;
        out.inner.flush()?;
        Ok((out.hasher.finish(), out.count, made))
    })();
    let (digest, size, made) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(err(e));
        }
    };
    let (got, _) = tar.finish().map_err(err)?;
    if &got != diff_id {
        let _ = std::fs::remove_file(&path);
        return Err(Error::DiffId {
            blob: layer.digest.clone(),
            diff_id: got,
            expected: diff_id.clone(),
        });
    }
    Ok((path, digest, size, made))
}

/// Writes the layer compressed as `want` to a temp file (see [`rewrite`]).
fn recompress(
    store: &Store,
    layer: &Descriptor,
    diff_id: &Digest,
    stored: Compression,
    want: Compression,
) -> Result<(PathBuf, Digest, u64, ())> {
    rewrite(store, layer, diff_id, stored, |tar, out| {
        match want {
            Compression::None => {
                io::copy(tar, out)?;
            }
            Compression::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
                io::copy(tar, &mut gz)?;
                gz.finish()?;
            }
            Compression::Zstd => {
                let mut z = zstd::stream::write::Encoder::new(out, 3)?;
                io::copy(tar, &mut z)?;
                z.finish()?;
            }
        }
        Ok(())
    })
}

/// Hashes and counts what is written through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::default(),
            count: 0,
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Uploads a blob in a new session.
fn upload(client: &Client, blob: &Blob, progress: &dyn Fn(u64)) -> Result<()> {
    let location = client.start_upload(&blob.descriptor.digest)?;
    upload_to(client, &location, blob, progress)
}

fn upload_to(client: &Client, location: &str, blob: &Blob, progress: &dyn Fn(u64)) -> Result<()> {
    let digest = &blob.descriptor.digest;
    let file = File::open(&blob.path).map_err(|source| Error::PushRead {
        digest: digest.clone(),
        source,
    })?;
    let reader = Counting {
        inner: BufReader::with_capacity(1 << 20, file),
        done: 0,
        progress,
    };
    client.finish_upload(location, digest, blob.descriptor.size, reader)
}

/// Reports the bytes read through it.
struct Counting<'a, R> {
    inner: R,
    done: u64,
    progress: &'a dyn Fn(u64),
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        (self.progress)(self.done);
        Ok(n)
    }
}

/// The manifest to put: the stored bytes when nothing changed (so the digest is the same),
/// otherwise the manifest rewritten with the pushed descriptors.
fn manifest_bytes(
    store: &Store,
    img: &Image,
    format: ManifestFormat,
    config: &Descriptor,
    layers: &[Descriptor],
) -> Result<(&'static str, Vec<u8>)> {
    let media_type = format.manifest_media_type();
    let unchanged = img.manifest_media_type == media_type
        && img.manifest.config.media_type == config.media_type
        && img.manifest.layers == layers;
    if unchanged {
        return Ok((media_type, store.read_blob(&img.manifest_digest)?));
    }
    let mut manifest = Manifest {
        schema_version: 2,
        media_type: Some(media_type.to_string()),
        config: config.clone(),
        layers: layers.to_vec(),
        extra: img.manifest.extra.clone(),
    };
    if format == ManifestFormat::V2s2 {
        // Docker schema 2 has no annotations, subject or artifactType.
        manifest.extra.clear();
        for d in std::iter::once(&mut manifest.config).chain(&mut manifest.layers) {
            d.annotations.clear();
        }
    }
    let bytes = serde_json::to_vec(&manifest).map_err(|source| Error::Serialize {
        what: "the manifest to push",
        source,
    })?;
    Ok((media_type, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_per_format() {
        use Compression::*;
        use ManifestFormat::*;
        assert_eq!(Oci.layer_media_type(Zstd), Some(media::OCI_LAYER_ZSTD));
        assert_eq!(Oci.layer_media_type(None), Some(media::OCI_LAYER));
        assert_eq!(
            V2s2.layer_media_type(Gzip),
            Some("application/vnd.docker.image.rootfs.diff.tar.gzip")
        );
        assert_eq!(V2s2.layer_media_type(Zstd), Option::None);
        assert_eq!(
            V2s2.config_media_type(),
            "application/vnd.docker.container.image.v1+json"
        );
        assert_eq!(ManifestFormat::of_media_type(media::DOCKER_MANIFEST), V2s2);
        assert_eq!(ManifestFormat::of_media_type(media::OCI_MANIFEST), Oci);
        assert!(is_foreign(
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
        ));
    }

    #[test]
    fn a_recompressed_layer_keeps_no_toc_annotation_of_its_old_blob() {
        let old: BTreeMap<String, String> = [
            (estargz::TOC_DIGEST_ANNOTATION, "sha256:aa"),
            (estargz::UNCOMPRESSED_SIZE_ANNOTATION, "5"),
            (zstd_chunked::MANIFEST_CHECKSUM_ANNOTATION, "sha256:bb"),
            (zstd_chunked::OLD_MANIFEST_POSITION_ANNOTATION, "1:2:3:1"),
            ("org.opencontainers.image.title", "kept"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let kept = without_toc_annotations(&old);
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(kept["org.opencontainers.image.title"], "kept");
    }

    #[test]
    fn recompresses_with_the_same_diff_id() {
        use crate::store::image::testing::{name_image, put_image};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "hello", &b"world"[..]).unwrap();
        let raw = b.into_inner().unwrap();
        let desc = put_image(
            &store,
            "2024-01-01T00:00:00Z",
            serde_json::json!(null),
            &raw,
        );
        name_image(&store, &desc, &["x"]);
        let img = store
            .load_image(store.table().unwrap().by_tag("x").unwrap())
            .unwrap();
        let (layer, diff_id) = img.layers().next().unwrap();
        let mut blobs = Vec::new();
        for (c, seekable) in [
            (Compression::Gzip, None),
            (Compression::Zstd, None),
            (Compression::None, None),
            (Compression::Zstd, Some(Format::ZstdChunked)),
        ] {
            let how = LayerHow {
                format: ManifestFormat::Oci,
                compression: Some(c),
                seekable,
            };
            let (blob, same) =
                layer_blob(&store, layer, diff_id, &how, &crate::pull::Silent).unwrap();
            assert_eq!(&same, diff_id);
            let bytes = std::fs::read(&blob.path).unwrap();
            assert_eq!(Digest::of(&bytes), blob.descriptor.digest);
            assert_eq!(bytes.len() as u64, blob.descriptor.size);
            assert_eq!(blob.descriptor.media_type, c.layer_media_type());
            // Only zstd:chunked says where its TOC is, and it is there.
            assert_eq!(Format::detect(&blob.descriptor), seekable);
            if seekable.is_some() {
                let opened = zstd_chunked::open(
                    &bytes,
                    &blob.descriptor.digest,
                    blob.descriptor.size,
                    &blob.descriptor.annotations,
                )
                .unwrap();
                assert_eq!(opened.index.data_len, 5);
            }
            let p = store
                .prepare_layer(
                    &blob.descriptor.digest,
                    &blob.descriptor.media_type,
                    &mut &bytes[..],
                    Some(diff_id),
                )
                .unwrap();
            assert_eq!(&p.meta.diff_id, diff_id);
            blobs.push(blob);
        }
        // uncompressed as stored: the store's own blob, nothing written
        assert!(!blobs[2].temp);
        assert_eq!(blobs[2].descriptor.digest, layer.digest);
        let gz = blobs[0].path.clone();
        drop(blobs);
        assert!(!gz.exists(), "the temp file is removed");
        // a zstd layer has no Docker schema 2 type
        let r = Reference::parse("x").unwrap();
        assert!(check_local(
            &store,
            &img,
            &r,
            ManifestFormat::V2s2,
            Some(Compression::Zstd)
        )
        .is_err());
        assert!(check_local(&store, &img, &r, ManifestFormat::V2s2, None).is_ok());
        std::fs::remove_file(store.blob_path(&layer.digest)).unwrap();
        let e = check_local(&store, &img, &r, ManifestFormat::Oci, None).unwrap_err();
        assert!(e.to_string().contains(layer.digest.as_str()), "{e}");
    }
}
