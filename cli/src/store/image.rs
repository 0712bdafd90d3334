//! Images as the commands see them: a manifest in the table, with its config read, its names
//! and sizes; and docker's rules for finding one by name or ID.

use anyhow::{bail, Context, Result};

use super::table::{ImageEntry, ImageTable};
use super::Store;
use crate::digest::Digest;
use crate::oci::{ImageConfig, Manifest, ManifestKind, PlatformSpec};
use crate::reference::Reference;

#[derive(Clone, Debug)]
pub struct Image {
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    pub manifest: Manifest,
    /// The image ID.
    pub id: Digest,
    pub config: ImageConfig,
    /// Tags, parsed where they parse (foreign names in index.json may not).
    pub tags: Vec<Reference>,
    pub repo_digests: Vec<Reference>,
    /// Uncompressed size of the layers (compressed where no index was built yet).
    pub size: u64,
}

impl Image {
    /// Whether the image has no names at all (`<none>:<none>`).
    pub fn dangling(&self) -> bool {
        self.tags.is_empty() && self.repo_digests.is_empty()
    }

    /// `created` from the config, as Unix seconds.
    pub fn created_unix(&self) -> Option<i64> {
        self.config
            .created
            .as_deref()
            .and_then(crate::format::parse_time)
    }

    /// Layer blobs paired with their diff-ids.
    pub fn layers(&self) -> impl Iterator<Item = (&crate::oci::Descriptor, &Digest)> {
        self.manifest
            .layers
            .iter()
            .zip(self.config.rootfs.diff_ids.iter())
    }
}

/// What a name or ID given on the command line resolved to.
pub enum Found {
    /// A tag reference (`busybox`, `busybox:1.36`).
    Tag(Reference, Image),
    /// A repo digest reference (`busybox@sha256:…`).
    Digest(Reference, Image),
    /// An image ID or a prefix of one.
    Id(Image),
}

impl Found {
    pub fn image(&self) -> &Image {
        match self {
            Found::Tag(_, i) | Found::Digest(_, i) | Found::Id(i) => i,
        }
    }
}

impl Store {
    /// Reads manifest and config of one table entry.
    pub fn load_image(&self, entry: &ImageEntry) -> Result<Image> {
        let digest = entry.digest();
        let bytes = self.read_blob(digest)?;
        let manifest = match crate::oci::parse_manifest(Some(&entry.descriptor.media_type), &bytes)
            .with_context(|| format!("manifest {digest}"))?
            .1
        {
            ManifestKind::Image(m) => m,
            // An index copied in whole (`skopeo copy --all`): the host's platform is the image.
            ManifestKind::Index(index) => {
                let chosen = PlatformSpec::host()
                    .select(&index.manifests)
                    .with_context(|| format!("index {digest} has no manifest for this platform"))?;
                match crate::oci::parse_manifest(
                    Some(&chosen.media_type),
                    &self.read_blob(&chosen.digest)?,
                )
                .with_context(|| format!("manifest {}", chosen.digest))?
                .1
                {
                    ManifestKind::Image(m) => m,
                    ManifestKind::Index(_) => {
                        bail!("{digest}: nested image indexes are not supported")
                    }
                }
            }
        };
        let config: ImageConfig = serde_json::from_slice(&self.read_blob(&manifest.config.digest)?)
            .with_context(|| format!("parsing image config {}", manifest.config.digest))?;
        let size = manifest
            .layers
            .iter()
            .zip(
                config
                    .rootfs
                    .diff_ids
                    .iter()
                    .map(Some)
                    .chain(std::iter::repeat(None)),
            )
            .map(|(l, d)| {
                d.and_then(|d| self.layer_meta(d))
                    .map(|m| m.size)
                    .unwrap_or(l.size)
            })
            .sum();
        Ok(Image {
            manifest_digest: digest.clone(),
            manifest_media_type: entry.descriptor.media_type.clone(),
            id: manifest.config.digest.clone(),
            manifest: *manifest,
            config,
            tags: entry
                .tags
                .iter()
                .filter_map(|t| Reference::parse(t).ok())
                .collect(),
            repo_digests: entry
                .repo_digests
                .iter()
                .filter_map(|t| Reference::parse(t).ok())
                .collect(),
            size,
        })
    }

    /// Every image in the store, in index.json order. Entries whose blobs are missing are
    /// skipped (a half-copied foreign image).
    pub fn images(&self) -> Result<Vec<Image>> {
        let table = self.table()?;
        Ok(table
            .images
            .iter()
            .filter_map(|e| self.load_image(e).ok())
            .collect())
    }

    /// Finds an image as docker does: a tag reference first (`:latest` added), then a repo
    /// digest reference, then an image ID or unique ID prefix (`sha256:` optional).
    pub fn find(&self, table: &ImageTable, what: &str) -> Result<Found> {
        if let Ok(r) = Reference::parse(what) {
            match &r.digest {
                None => {
                    if let Some(e) = table.by_tag(&r.to_string()) {
                        return Ok(Found::Tag(r, self.load_image(e)?));
                    }
                }
                Some(digest) => {
                    let plain = r.with_digest(digest);
                    let name = plain.to_string();
                    if let Some(e) = table.images.iter().find(|e| {
                        e.repo_digests.contains(&name)
                            || (e.digest() == digest
                                && e.tags.iter().any(|t| {
                                    Reference::parse(t).is_ok_and(|t| t.name() == plain.name())
                                }))
                    }) {
                        return Ok(Found::Digest(plain, self.load_image(e)?));
                    }
                }
            }
        }
        if let Some(hex) = id_prefix(what) {
            let images = self.images()?;
            let mut hits = images.into_iter().filter(|i| i.id.hex().starts_with(hex));
            if let Some(first) = hits.next() {
                if hits.any(|i| i.id != first.id) {
                    bail!("image ID prefix {what:?} is ambiguous");
                }
                return Ok(Found::Id(first));
            }
        }
        bail!("No such image: {what}")
    }

    /// The name to show for `what` in errors: docker's familiar form where it parses.
    pub fn familiar(what: &str) -> String {
        Reference::parse(what)
            .map(|r| r.familiar())
            .unwrap_or_else(|_| what.to_string())
    }
}

/// The hex part of an image ID or ID prefix, if `s` looks like one.
fn id_prefix(s: &str) -> Option<&str> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    (!hex.is_empty()
        && hex.len() <= 64
        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
    .then_some(hex)
}
