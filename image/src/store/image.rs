//! Images as the commands see them: a manifest in the table, with its config read, its names
//! and sizes; and docker's rules for finding one by name or ID.

use crate::{Error, Result};

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
            .and_then(|s| s.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_second())
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
            .map_err(|e| Error::StoredManifest {
                digest: digest.clone(),
                source: Box::new(e),
            })?
            .1
        {
            ManifestKind::Image(m) => m,
            // An index copied in whole (`skopeo copy --all`): the host's platform is the image.
            ManifestKind::Index(index) => {
                let chosen = PlatformSpec::host()
                    .select(&index.manifests)
                    .ok_or_else(|| Error::NoHostPlatform(digest.clone()))?;
                match crate::oci::parse_manifest(
                    Some(&chosen.media_type),
                    &self.read_blob(&chosen.digest)?,
                )
                .map_err(|e| Error::StoredManifest {
                    digest: chosen.digest.clone(),
                    source: Box::new(e),
                })?
                .1
                {
                    ManifestKind::Image(m) => m,
                    ManifestKind::Index(_) => return Err(Error::NestedStoredIndex(digest.clone())),
                }
            }
        };
        let config: ImageConfig = serde_json::from_slice(&self.read_blob(&manifest.config.digest)?)
            .map_err(|source| Error::ParseConfig {
                digest: manifest.config.digest.clone(),
                source,
            })?;
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
                    return Err(Error::AmbiguousId(what.to_string()));
                }
                return Ok(Found::Id(first));
            }
        }
        // `demo` names the built-in demo image (localhost/demo:latest) once it is made.
        if super::demo::is_demo(what) && what != super::demo::REFERENCE {
            return self.find(table, super::demo::REFERENCE);
        }
        Err(Error::NoSuchImage(what.to_string()))
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

/// A store with small synthetic images, for tests of the commands that work on images.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use super::*;
    use crate::oci::{media, Descriptor};
    use serde_json::json;

    /// Stores an image whose config has `created` and `labels`; returns its manifest
    /// descriptor (not yet named in index.json).
    pub fn put_image(
        store: &Store,
        created: &str,
        labels: serde_json::Value,
        layer: &[u8],
    ) -> Descriptor {
        store.init().unwrap();
        let layer_digest = Digest::of(layer);
        store.put_blob(&layer_digest, layer).unwrap();
        let config = serde_json::to_vec(&json!({
            "created": created,
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": labels, "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest.to_string()]},
            "history": [{"created": created, "created_by": "test"}]
        }))
        .unwrap();
        let config_digest = Digest::of(&config);
        store.put_blob(&config_digest, &config).unwrap();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest.to_string(), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest.to_string(), "size": layer.len()}]
        }))
        .unwrap();
        let digest = Digest::of(&manifest);
        store.put_blob(&digest, &manifest).unwrap();
        Descriptor {
            media_type: media::OCI_MANIFEST.to_string(),
            digest,
            size: manifest.len() as u64,
            platform: None,
            annotations: Default::default(),
            extra: Default::default(),
        }
    }

    /// Names `desc` with `tags` (and a repo digest for the first tag's repository).
    pub fn name_image(store: &Store, desc: &Descriptor, tags: &[&str]) {
        store
            .update(|t| {
                t.ensure(desc);
                for (i, tag) in tags.iter().enumerate() {
                    let r = Reference::parse(tag).unwrap();
                    if i == 0 {
                        t.ensure(desc)
                            .repo_digests
                            .insert(r.with_digest(&desc.digest).to_string());
                    }
                    t.set_tag(&desc.digest, &r);
                }
                Ok::<_, Error>(())
            })
            .unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_by_tag_digest_and_id_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let a = put_image(
            &store,
            "2024-01-01T00:00:00Z",
            json!({"x": "1"}),
            b"layer a",
        );
        let b = put_image(&store, "2024-02-01T00:00:00Z", json!(null), b"layer b");
        name_image(&store, &a, &["busybox", "busybox:1"]);
        name_image(&store, &b, &["other:2"]);
        let t = store.table().unwrap();
        let img_a = match store.find(&t, "busybox").unwrap() {
            Found::Tag(r, img) => {
                assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
                img
            }
            _ => panic!("not found as a tag"),
        };
        assert_eq!(img_a.manifest_digest, a.digest);
        assert_eq!(img_a.created_unix(), Some(1704067200));
        assert_eq!(img_a.config.labels()["x"], "1");
        assert_eq!(img_a.tags.len(), 2);
        assert!(!img_a.dangling());
        let by_digest = format!("busybox@{}", a.digest);
        assert!(matches!(
            store.find(&t, &by_digest).unwrap(),
            Found::Digest(..)
        ));
        let id = img_a.id.clone();
        for q in [&id.hex()[..4], id.as_str(), &id.hex()[..12]] {
            match store.find(&t, q).unwrap() {
                Found::Id(i) => assert_eq!(i.id, id),
                _ => panic!("{q} not found as an ID"),
            }
        }
        assert!(store.find(&t, "busybox:2").is_err());
        assert!(store.find(&t, "0000").is_err());
        assert_eq!(store.images().unwrap().len(), 2);
    }
}
