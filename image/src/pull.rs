//! Pulling an image into the store: resolve the manifest (choosing a platform in an index),
//! store the config, fetch the layers a few at a time — each in one streaming pass that
//! verifies the blob, computes the diff-id and builds the layer index — then the manifest,
//! and name it in index.json last, so a crash leaves no name pointing at missing content.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::sync::Mutex;

use crate::digest::Digest;
use crate::lazy::Format;
use crate::oci::{parse_manifest, Descriptor, ImageConfig, ManifestKind, PlatformSpec};
use crate::reference::Reference;
use crate::registry::auth::AuthFile;
use crate::registry::Client;
use crate::store::ingest::Begin;
use crate::store::lazy::LazyProgress;
use crate::store::Store;
use crate::{Error, Result};

/// What a pull tells whoever shows its progress (the binary: bars or docker's lines). A
/// library never prints; it calls these.
pub trait PullObserver: Sync {
    /// One layer to fetch, `size` bytes, shown as `id` (the digest's short form).
    fn layer(&self, id: &str, size: u64) -> Box<dyn LayerObserver + '_>;
}

/// The progress of one layer.
pub trait LayerObserver: Send + Sync {
    /// A step, shown as docker's `ID: status` line.
    fn status(&self, status: &str);
    /// A step shown only while bytes move (docker's plain output does not print it).
    fn transfer(&self, status: &str);
    /// Bytes of the blob received so far.
    fn bytes(&self, done: u64);
    /// The final state.
    fn finish(&self, status: &str);
    fn fail(&self, error: &Error);
}

/// Reports nothing (`pull -q`, a pull the engine makes for `run` without a terminal).
pub struct Silent;

impl PullObserver for Silent {
    fn layer(&self, _: &str, _: u64) -> Box<dyn LayerObserver + '_> {
        Box::new(Silent)
    }
}

impl LayerObserver for Silent {
    fn status(&self, _: &str) {}
    fn transfer(&self, _: &str) {}
    fn bytes(&self, _: u64) {}
    fn finish(&self, _: &str) {}
    fn fail(&self, _: &Error) {}
}

/// Layers fetched at once.
const PARALLEL_LAYERS: usize = 3;

pub struct PullOptions {
    pub platform: PlatformSpec,
    /// `--platform` was given: a single-platform image must match it.
    pub explicit_platform: bool,
    pub insecure: bool,
    /// Download every layer whole (`pull --full`), also completing layers pulled lazily
    /// before; otherwise seekable layers ([`Format::detect`]) are pulled lazily.
    pub full: bool,
}

pub struct Pulled {
    /// What the reference resolved to in the registry (an index or a manifest).
    pub digest: Digest,
    /// The tag already named this manifest before the pull.
    pub up_to_date: bool,
    /// The image's layers that are lazy after the pull, bottom first.
    pub lazy: Vec<LazyProgress>,
}

/// Pulls `reference`. A failed pull leaves nothing in the store but the partial file of an
/// interrupted transfer (to resume from; not when writing it failed, as on a full disk):
/// what it had stored is collected again, unless another pull is running.
pub fn pull(
    store: &Store,
    auth: &AuthFile,
    reference: &Reference,
    opts: &PullOptions,
    progress: &dyn PullObserver,
) -> Result<Pulled> {
    let result = pull_unguarded(store, auth, reference, opts, progress);
    if result.is_err() && store.root().join("index.json").exists() {
        let _ = store.gc_if_idle();
    }
    result
}

fn pull_unguarded(
    store: &Store,
    auth: &AuthFile,
    reference: &Reference,
    opts: &PullOptions,
    progress: &dyn PullObserver,
) -> Result<Pulled> {
    store.init()?;
    let creds = auth.get(&reference.domain)?;
    let client = Client::new(reference, opts.insecure, creds)?;
    let top = client.manifest(&reference.manifest_ref())?;
    let (media_type, kind) =
        parse_manifest(top.content_type.as_deref(), &top.bytes).map_err(|e| Error::Manifest {
            reference: reference.to_string(),
            source: Box::new(e),
        })?;
    let (descriptor, bytes, manifest) = match kind {
        ManifestKind::Image(m) => (
            Descriptor {
                media_type,
                digest: top.digest.clone(),
                size: top.bytes.len() as u64,
                platform: None,
                annotations: Default::default(),
                extra: Default::default(),
            },
            top.bytes.clone(),
            m,
        ),
        ManifestKind::Index(index) => {
            let chosen = opts.platform.select(&index.manifests).ok_or_else(|| {
                Error::NoPlatformManifest {
                    platform: opts.platform.to_string(),
                    reference: reference.to_string(),
                }
            })?;
            let fetched = client.manifest(chosen.digest.as_str())?;
            let (mt, kind) = parse_manifest(
                fetched.content_type.as_deref().or(Some(&chosen.media_type)),
                &fetched.bytes,
            )
            .map_err(|e| Error::PlatformManifest {
                digest: chosen.digest.clone(),
                reference: reference.to_string(),
                source: Box::new(e),
            })?;
            let ManifestKind::Image(m) = kind else {
                return Err(Error::NestedIndex {
                    digest: chosen.digest.clone(),
                    reference: reference.to_string(),
                });
            };
            let mut d = chosen.clone();
            d.media_type = mt;
            d.annotations.clear();
            (d, fetched.bytes, m)
        }
    };

    let table = store.table()?;
    let up_to_date = match &reference.digest {
        None => table
            .by_tag(&reference.to_string())
            .is_some_and(|e| e.digest() == &descriptor.digest),
        Some(_) => table.get(&descriptor.digest).is_some(),
    } && store.has_blob(&descriptor.digest);

    // Blobs stored from here on are unreferenced until index.json names them.
    let _gc = store.gc_guard()?;
    let config_bytes = if store.has_blob(&manifest.config.digest) {
        store.read_blob(&manifest.config.digest)?
    } else {
        client.blob_bytes(&manifest.config.digest, manifest.config.size)?
    };
    let config: ImageConfig =
        serde_json::from_slice(&config_bytes).map_err(|source| Error::ParseConfig {
            digest: manifest.config.digest.clone(),
            source,
        })?;
    if opts.explicit_platform
        && (config.os != opts.platform.os || config.architecture != opts.platform.arch)
    {
        return Err(Error::PlatformMismatch {
            reference: reference.to_string(),
            wanted: opts.platform.to_string(),
            actual: format!("{}/{}", config.os, config.architecture),
        });
    }
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(Error::LayerCount {
            reference: reference.to_string(),
            layers: manifest.layers.len(),
            diff_ids: config.rootfs.diff_ids.len(),
        });
    }

    store.put_blob(&manifest.config.digest, &config_bytes)?;

    let mut seen = BTreeSet::new();
    let jobs: Vec<(&Descriptor, &Digest)> = manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .filter(|(l, _)| seen.insert(l.digest.clone()))
        .collect();
    fetch_layers(store, &client, &jobs, opts.full, progress)?;

    store.put_blob(&descriptor.digest, &bytes)?;
    store.update(|t| {
        let repo_digest = reference.with_digest(&top.digest).to_string();
        t.ensure(&descriptor).repo_digests.insert(repo_digest);
        if reference.digest.is_none() {
            t.set_tag(&descriptor.digest, reference);
        }
        Ok::<_, Error>(())
    })?;
    let lazy = config
        .rootfs
        .diff_ids
        .iter()
        .filter_map(|d| store.lazy_progress(d))
        .collect();
    Ok(Pulled {
        digest: top.digest,
        up_to_date: up_to_date && !opts.full,
        lazy,
    })
}

/// Fetches layers with a few threads; the first error stops the others taking new work.
fn fetch_layers(
    store: &Store,
    client: &Client,
    jobs: &[(&Descriptor, &Digest)],
    full: bool,
    progress: &dyn PullObserver,
) -> Result<()> {
    let bars: Vec<Box<dyn LayerObserver + '_>> = jobs
        .iter()
        .map(|(l, _)| progress.layer(l.digest.short(), l.size))
        .collect();
    let queue = Mutex::new((0..jobs.len()).collect::<Vec<_>>());
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
                match fetch_layer(store, client, layer, diff_id, full, &*bars[i]) {
                    // A later push to this registry mounts the blob from here.
                    Ok(()) => {
                        store.note_blob_repository(diff_id, &layer.digest, &client.repository())
                    }
                    Err(e) => {
                        bars[i].fail(&e);
                        errors.lock().expect("not poisoned").push(e);
                    }
                }
            });
        }
    });
    match errors
        .into_inner()
        .expect("not poisoned")
        .into_iter()
        .next()
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn fetch_layer(
    store: &Store,
    client: &Client,
    layer: &Descriptor,
    diff_id: &Digest,
    full: bool,
    bar: &dyn LayerObserver,
) -> Result<()> {
    let lazy_here = store.is_lazy_layer(diff_id);
    if store.has_layer(diff_id) && (store.has_blob(&layer.digest) || (lazy_here && !full)) {
        bar.finish("Already exists");
        return Ok(());
    }
    bar.status("Pulling fs layer");
    if let Some(format) = Format::detect(layer).filter(|_| !full && !lazy_here) {
        match store.prepare_lazy_layer(client, layer, diff_id, format) {
            Ok(prepared) => {
                prepared.commit()?;
                bar.finish(&format!("Pulled lazily ({})", format.name()));
                return Ok(());
            }
            // A registry that does not serve ranges: the layer comes whole, as any other.
            Err(Error::FetchRange { source, .. })
                if source.kind() == io::ErrorKind::Unsupported =>
            {
                bar.status("The registry does not serve byte ranges: pulling whole");
            }
            Err(e) => return Err(e),
        }
    }
    let ingest = match store.begin_ingest(&layer.digest, layer.size)? {
        Begin::Present => {
            // Fetched by another process meanwhile, or copied in without an index.
            store.ensure_layer(&layer.digest, &layer.media_type, diff_id)?;
            bar.finish("Already exists");
            return Ok(());
        }
        Begin::Ingest(i) => i,
    };
    let source = client.blob(&layer.digest);
    let mut reader = ingest.reader(&source, Box::new(|n| bar.bytes(n)))?;
    bar.transfer("Downloading");
    if store.has_layer(diff_id) && !lazy_here {
        // Same content under another compression: only the blob is new.
        io::copy(&mut reader, &mut io::sink()).map_err(|source| Error::Download {
            digest: layer.digest.clone(),
            source,
        })?;
        ingest.commit(reader)?;
        bar.finish("Pull complete");
        return Ok(());
    }
    match store.prepare_layer(&layer.digest, &layer.media_type, &mut reader, Some(diff_id)) {
        Ok(prepared) => {
            bar.status("Verifying Checksum");
            ingest.commit(reader)?;
            bar.status("Download complete");
            if lazy_here {
                // Completing a lazy layer: its index gives way to the whole one (mounts
                // that have it open keep reading it).
                store.retire_lazy_layer(diff_id)?;
            }
            prepared.commit()?;
        }
        Err(e) => {
            // Bad bytes from the registry say so by their digest; a verified blob whose
            // content is bad is not kept either.
            if let Err(c) = ingest.commit(reader) {
                return Err(Error::LayerAndBlob {
                    layer: e.chain(),
                    blob: Box::new(c),
                });
            }
            let _ = fs::remove_file(store.blob_path(&layer.digest));
            return Err(e);
        }
    }
    bar.finish("Pull complete");
    Ok(())
}
