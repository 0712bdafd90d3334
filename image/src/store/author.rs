//! Authoring images: the write side that `commit`, `import` and `build` share.
//!
//! - [`Authoring::add_layer`] takes an uncompressed OCI layer tar as a stream and, in one
//!   pass, hashes it (the diff-id), compresses it into a temp blob (hashing that: the blob
//!   digest) and feeds it to the layer indexer a pulled layer goes through (the same
//!   hostile-tar checks, the same `layers/<diffid>/`). The blob and the index are renamed
//!   into place only when the whole stream went through.
//! - [`Authoring::write_image`] writes the config and the manifest of a new image made of a
//!   base image (or none) plus new layers, a runtime config and history rows, and names it.
//!
//! An [`Authoring`] holds the store's GC guard, so the blobs and indexes it stored are not
//! collected before an image names them; dropped after an error (something stored, nothing
//! named), it collects them once no pull is under way: a failed commit leaves the store as it
//! was.

use std::cell::Cell;
use std::fs::{self, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;

use serde_json::Value;

use super::image::Image;
use super::layers::IndexTarError;
use super::lock::Lock;
use super::{fsutil, Store};
use crate::digest::{Digest, Hasher};
use crate::oci::{media, Compression, Descriptor, History, ImageConfig, RootFs};
use crate::reference::Reference;
use crate::{Error, Result};

/// How the store compresses the layers it writes itself: gzip, which every registry and
/// client reads (docker's default on push), at the fast level (commit time is what a user
/// waits for; `push --compression-format` may recompress).
pub const DEFAULT_COMPRESSION: Compression = Compression::Gzip;

/// A layer written by [`Authoring::add_layer`].
#[derive(Clone, Debug, PartialEq)]
pub struct NewLayer {
    /// The compressed blob, as a manifest lists it.
    pub descriptor: Descriptor,
    /// sha256 of the uncompressed tar, as the config's `rootfs.diff_ids` lists it.
    pub diff_id: Digest,
    /// Bytes of the uncompressed tar.
    pub size: u64,
}

/// What [`Authoring::write_image`] writes.
#[derive(Clone, Debug, Default)]
pub struct NewImage {
    /// The image the new one is made on (its layers, config and history come first); `None`
    /// for an image from scratch (`import`, `FROM scratch`).
    pub base: Option<Image>,
    /// The new layers, bottom first.
    pub layers: Vec<NewLayer>,
    /// The runtime config (the config's `config`: Env, Cmd, Labels, …); `None` keeps the
    /// base's.
    pub config: Option<Value>,
    /// Rows appended to the base's history, one per new layer plus any `empty_layer` rows.
    pub history: Vec<History>,
    /// The config's `author`; `None` keeps the base's.
    pub author: Option<String>,
    /// RFC 3339; `None` is now. The history rows without a time get it too.
    pub created: Option<String>,
    /// Names to give the image (each taken from any image that had it).
    pub tags: Vec<Reference>,
}

/// A written image.
#[derive(Clone, Debug, PartialEq)]
pub struct WrittenImage {
    /// The image ID: the config's digest.
    pub id: Digest,
    /// The manifest, as index.json lists it.
    pub manifest: Descriptor,
}

/// The right to add layers and images to a store: see the module docs.
pub struct Authoring<'s> {
    store: &'s Store,
    gc: Option<Lock>,
    /// Layers stored since the last image was written (collected on drop when some are).
    unnamed: Cell<usize>,
}

impl Store {
    /// Starts authoring (creates the store's layout if needed, takes the GC guard).
    pub fn authoring(&self) -> Result<Authoring<'_>> {
        self.init()?;
        Ok(Authoring {
            store: self,
            gc: Some(self.gc_guard()?),
            unnamed: Cell::new(0),
        })
    }
}

impl Drop for Authoring<'_> {
    fn drop(&mut self) {
        drop(self.gc.take());
        if self.unnamed.get() > 0 {
            // Stored, never named: unreachable, so the GC takes them (unless a pull or
            // another authoring holds the guard; a later GC does it then).
            let _ = self.store.gc_if_idle();
        }
    }
}

/// Copies what is read through it into the compressed blob, hashing the compressed bytes.
struct Tee<'a, W: Write> {
    input: &'a mut dyn Read,
    out: W,
    /// The first write error (a full disk): reported as the step that failed, not as a tar
    /// the indexer could not read.
    write_error: Option<io::Error>,
}

impl<W: Write> Read for Tee<'_, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.input.read(buf)?;
        if let Err(e) = self.out.write_all(&buf[..n]) {
            let kind = e.kind();
            self.write_error.get_or_insert(e);
            return Err(io::Error::new(kind, "writing the layer blob failed"));
        }
        Ok(n)
    }
}

/// A file writer that hashes and counts what goes through.
struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    count: u64,
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

/// The compressor over the blob file.
enum Encoder<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    fn new(c: Compression, w: W) -> io::Result<Self> {
        Ok(match c {
            Compression::None => Encoder::Plain(w),
            Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                w,
                flate2::Compression::fast(),
            )),
            Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(w, 3)?),
        })
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Plain(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

/// Deletes a temp file unless disarmed.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.0);
        }
    }
}

impl Authoring<'_> {
    pub fn store(&self) -> &Store {
        self.store
    }

    /// Adds a layer from an uncompressed OCI layer tar read to its end from `tar`,
    /// compressed with [`DEFAULT_COMPRESSION`]. See the module docs.
    pub fn add_layer(&self, tar: &mut dyn Read) -> Result<NewLayer> {
        self.add_layer_compressed(tar, DEFAULT_COMPRESSION)
    }

    /// [`Authoring::add_layer`] with the blob compressed as `compression` says.
    pub fn add_layer_compressed(
        &self,
        tar: &mut dyn Read,
        compression: Compression,
    ) -> Result<NewLayer> {
        let store = self.store;
        let blob_tmp = TempFile(fsutil::temp_name(&store.tmp_dir(), "layer"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&blob_tmp.0)
            .map_err(|source| Error::Create {
                path: blob_tmp.0.clone(),
                source,
            })?;
        let write_err = |source| Error::WriteLayerBlob {
            path: blob_tmp.0.clone(),
            source,
        };
        let out = HashingWriter {
            inner: BufWriter::with_capacity(256 * 1024, file),
            hasher: Hasher::default(),
            count: 0,
        };
        let mut tee = Tee {
            input: tar,
            out: Encoder::new(compression, out).map_err(write_err)?,
            write_error: None,
        };
        let indexed = store.index_tar("new", &mut tee);
        if let Some(e) = tee.write_error.take() {
            return Err(write_err(e));
        }
        let mut prepared = indexed.map_err(|e| match e {
            IndexTarError::Index(e) => Error::IndexNewLayer(Box::new(e)),
            IndexTarError::Read(source) => Error::ReadNewLayer(source),
            IndexTarError::Other(e) => e,
        })?;
        let out = tee.out.finish().map_err(write_err)?;
        let digest = out.hasher.finish();
        let size = out.count;
        let file = out
            .inner
            .into_inner()
            .map_err(|e| write_err(e.into_error()))?;
        file.sync_all().map_err(write_err)?;
        drop(file);
        prepared.meta.blob = digest.clone();
        let diff_id = prepared.meta.diff_id.clone();
        let uncompressed = prepared.meta.size;
        self.unnamed.set(self.unnamed.get() + 1);
        if !store.has_blob(&digest) {
            fsutil::commit_file(&blob_tmp.0, &store.blob_path(&digest))?;
        }
        prepared.commit()?;
        Ok(NewLayer {
            descriptor: Descriptor {
                media_type: compression.layer_media_type().to_string(),
                digest,
                size,
                platform: None,
                annotations: Default::default(),
                extra: Default::default(),
            },
            diff_id,
            size: uncompressed,
        })
    }

    /// Writes the config and manifest of `new` and names it. See [`NewImage`].
    pub fn write_image(&self, new: &NewImage) -> Result<WrittenImage> {
        let store = self.store;
        let created = new
            .created
            .clone()
            .unwrap_or_else(|| jiff::Timestamp::now().to_string());
        let (mut config, mut layers) = match &new.base {
            Some(base) => {
                let mut c = base.config.clone();
                // docker's commit drops what described the base's build container.
                c.extra.remove("container");
                c.extra.remove("container_config");
                let layers: Vec<Descriptor> = base.manifest.layers.iter().map(oci_layer).collect();
                (c, layers)
            }
            None => {
                let p = crate::oci::PlatformSpec::host();
                let c = ImageConfig {
                    architecture: p.arch,
                    os: p.os,
                    variant: p.variant,
                    rootfs: RootFs {
                        kind: "layers".to_string(),
                        diff_ids: Vec::new(),
                    },
                    ..Default::default()
                };
                (c, Vec::new())
            }
        };
        config.created = Some(created.clone());
        if new.author.is_some() {
            config.author = new.author.clone();
        }
        if new.config.is_some() {
            config.config = new.config.clone();
        }
        config.rootfs.kind = "layers".to_string();
        for l in &new.layers {
            config.rootfs.diff_ids.push(l.diff_id.clone());
            layers.push(l.descriptor.clone());
        }
        for h in &new.history {
            let mut h = h.clone();
            h.created.get_or_insert_with(|| created.clone());
            config.history.push(h);
        }
        let config_bytes = serde_json::to_vec(&config).map_err(|source| Error::Serialize {
            what: "the new image config",
            source,
        })?;
        let id = Digest::of(&config_bytes);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "digest": id.to_string(),
                       "size": config_bytes.len()},
            "layers": layers,
        }))
        .map_err(|source| Error::Serialize {
            what: "the new image manifest",
            source,
        })?;
        let digest = Digest::of(&manifest);
        store.put_blob(&id, &config_bytes)?;
        store.put_blob(&digest, &manifest)?;
        let desc = Descriptor {
            media_type: media::OCI_MANIFEST.to_string(),
            digest,
            size: manifest.len() as u64,
            platform: None,
            annotations: Default::default(),
            extra: Default::default(),
        };
        store.update(|t| {
            t.ensure(&desc);
            for tag in &new.tags {
                t.set_tag(&desc.digest, tag);
            }
            Ok::<_, Error>(())
        })?;
        self.unnamed.set(0);
        Ok(WrittenImage { id, manifest: desc })
    }
}

/// A base layer's descriptor as an OCI manifest lists it (docker's media types mapped to
/// OCI's: the blobs are the same bytes).
fn oci_layer(d: &Descriptor) -> Descriptor {
    let mut d = d.clone();
    let mt = match d.media_type.as_str() {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => Some(media::OCI_LAYER_GZIP),
        "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(media::OCI_LAYER_ZSTD),
        "application/vnd.docker.image.rootfs.diff.tar" => Some(media::OCI_LAYER),
        _ => None,
    };
    if let Some(mt) = mt {
        d.media_type = mt.to_string();
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::new(dir.path());
        s.init().unwrap();
        (dir, s)
    }

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// Everything under the store's blobs/, layers/ and tmp/ (lock files aside).
    fn left(s: &Store) -> Vec<PathBuf> {
        [s.blobs_dir(), s.layers_dir(), s.tmp_dir()]
            .iter()
            .flat_map(|d| fs::read_dir(d).unwrap().flatten())
            .map(|e| e.path())
            .filter(|p| !p.to_string_lossy().ends_with(".lock"))
            .collect()
    }

    #[test]
    fn a_new_layer_is_compressed_indexed_and_named_by_its_digests() {
        let (_d, s) = store();
        let raw = tar_of(&[("hello", b"world"), ("dir/x", b"")]);
        let a = s.authoring().unwrap();
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let l = a.add_layer_compressed(&mut &raw[..], c).unwrap();
            assert_eq!(l.diff_id, Digest::of(&raw));
            assert_eq!(l.size, raw.len() as u64);
            assert_eq!(l.descriptor.media_type, c.layer_media_type());
            let blob = s.read_blob(&l.descriptor.digest).unwrap();
            assert_eq!(blob.len() as u64, l.descriptor.size);
            // The stored blob is a layer pull would accept with the same diff-id.
            drop(
                s.prepare_layer(
                    &l.descriptor.digest,
                    &l.descriptor.media_type,
                    &mut &blob[..],
                    Some(&l.diff_id),
                )
                .unwrap(),
            );
            assert!(s.has_layer(&l.diff_id));
            assert_eq!(s.layer_meta(&l.diff_id).unwrap().entries, 3);
        }
    }

    #[test]
    fn an_image_from_scratch_and_one_on_a_base() {
        let (_d, s) = store();
        let a = s.authoring().unwrap();
        let l1 = a.add_layer(&mut &tar_of(&[("a", b"1")])[..]).unwrap();
        let base = a
            .write_image(&NewImage {
                layers: vec![l1.clone()],
                config: Some(serde_json::json!({"Cmd": ["sh"]})),
                history: vec![History {
                    comment: Some("Imported from -".into()),
                    ..Default::default()
                }],
                tags: vec![Reference::parse("base:1").unwrap()],
                ..Default::default()
            })
            .unwrap();
        let t = s.table().unwrap();
        let img = s.find(&t, "base:1").unwrap().image().clone();
        assert_eq!(img.id, base.id);
        assert_eq!(
            img.config.rootfs.diff_ids,
            std::slice::from_ref(&l1.diff_id)
        );
        assert_eq!(img.config.history.len(), 1);
        assert!(img.config.history[0].created.is_some());
        let l2 = a.add_layer(&mut &tar_of(&[("b", b"2")])[..]).unwrap();
        let top = a
            .write_image(&NewImage {
                base: Some(img.clone()),
                layers: vec![l2.clone()],
                author: Some("me".into()),
                history: vec![History {
                    created_by: Some("sh".into()),
                    ..Default::default()
                }],
                tags: vec![Reference::parse("top").unwrap()],
                ..Default::default()
            })
            .unwrap();
        let t = s.table().unwrap();
        let img2 = s.find(&t, "top").unwrap().image().clone();
        assert_eq!(img2.id, top.id);
        assert_eq!(img2.config.rootfs.diff_ids, [l1.diff_id, l2.diff_id]);
        assert_eq!(img2.config.author.as_deref(), Some("me"));
        assert_eq!(img2.config.config, img.config.config);
        assert_eq!(img2.config.history.len(), 2);
        assert_eq!(s.image_layer_dirs(&img2).unwrap().len(), 2);
        drop(a);
        // Both images are named: nothing for the GC.
        assert!(s.gc().unwrap().blobs.is_empty());
    }

    #[test]
    fn a_hostile_or_broken_tar_leaves_nothing() {
        let (_d, s) = store();
        let mut hostile = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.as_gnu_mut().unwrap().name[..5].copy_from_slice(b"../x\0");
        h.set_cksum();
        hostile.append(&h, &b"x"[..]).unwrap();
        let hostile = hostile.into_inner().unwrap();
        {
            let a = s.authoring().unwrap();
            let e = a.add_layer(&mut &hostile[..]).unwrap_err().chain();
            assert!(e.contains("../x"), "{e}");
            let e = a
                .add_layer(&mut &b"this is not a tar, not at all"[..])
                .unwrap_err()
                .chain();
            assert!(e.contains("new layer"), "{e}");
        }
        assert!(left(&s).is_empty(), "{:?}", left(&s));
    }

    #[test]
    fn layers_never_named_are_collected() {
        let (_d, s) = store();
        {
            let a = s.authoring().unwrap();
            a.add_layer(&mut &tar_of(&[("a", b"1")])[..]).unwrap();
        }
        assert!(left(&s).is_empty(), "{:?}", left(&s));
    }
}
