//! The image table: `index.json` seen as images and their names.
//!
//! `index.json` holds one descriptor per (image, tag) — the tag, a full normalized reference,
//! in `org.opencontainers.image.ref.name`, so `skopeo copy oci:ROOT:REF` finds it — and one
//! unnamed descriptor for an image without tags (dangling, or known only by digest). Repo
//! digests (`repo@sha256:…`, what the image was pulled as) ride on the first descriptor of the
//! image in `io.strata.image.repo-digests`, comma-separated. Reading groups descriptors by
//! manifest digest; writing emits them again in the same order.

use std::collections::BTreeSet;

use crate::digest::Digest;
use crate::oci::{Descriptor, Index, ANNOTATION_REF_NAME};
use crate::reference::Reference;

pub const ANNOTATION_REPO_DIGESTS: &str = "io.strata.image.repo-digests";

#[derive(Clone, Debug, PartialEq)]
pub struct ImageEntry {
    /// The manifest's descriptor, without the name annotations.
    pub descriptor: Descriptor,
    /// Tag references as stored (normally full normalized references), in insertion order.
    pub tags: Vec<String>,
    pub repo_digests: BTreeSet<String>,
}

impl ImageEntry {
    pub fn digest(&self) -> &Digest {
        &self.descriptor.digest
    }
}

#[derive(Clone, Debug, Default)]
pub struct ImageTable {
    pub images: Vec<ImageEntry>,
    /// index.json's own fields other than `manifests`, kept as they were.
    base: Index,
}

/// The normalized form of a stored name, for comparisons (foreign names stay as they are).
pub fn normalize_name(raw: &str) -> String {
    Reference::parse(raw)
        .map(|r| r.to_string())
        .unwrap_or_else(|_| raw.to_string())
}

impl ImageTable {
    pub fn from_index(index: &Index) -> ImageTable {
        let mut images: Vec<ImageEntry> = Vec::new();
        for d in &index.manifests {
            let mut plain = d.clone();
            let name = plain.annotations.remove(ANNOTATION_REF_NAME);
            let digests = plain.annotations.remove(ANNOTATION_REPO_DIGESTS);
            let pos = match images.iter().position(|e| e.descriptor.digest == d.digest) {
                Some(p) => p,
                None => {
                    images.push(ImageEntry {
                        descriptor: plain,
                        tags: Vec::new(),
                        repo_digests: BTreeSet::new(),
                    });
                    images.len() - 1
                }
            };
            let entry = &mut images[pos];
            if let Some(name) = name {
                if !entry.tags.contains(&name) {
                    entry.tags.push(name);
                }
            }
            for rd in digests
                .iter()
                .flat_map(|s| s.split(','))
                .filter(|s| !s.is_empty())
            {
                entry.repo_digests.insert(rd.to_string());
            }
        }
        let mut base = index.clone();
        base.manifests.clear();
        ImageTable { images, base }
    }

    pub fn to_index(&self) -> Index {
        let mut index = self.base.clone();
        for e in &self.images {
            let mut first = e.descriptor.clone();
            if !e.repo_digests.is_empty() {
                let joined: Vec<&str> = e.repo_digests.iter().map(String::as_str).collect();
                first
                    .annotations
                    .insert(ANNOTATION_REPO_DIGESTS.to_string(), joined.join(","));
            }
            if e.tags.is_empty() {
                index.manifests.push(first);
                continue;
            }
            for (i, tag) in e.tags.iter().enumerate() {
                let mut d = if i == 0 {
                    first.clone()
                } else {
                    e.descriptor.clone()
                };
                d.annotations
                    .insert(ANNOTATION_REF_NAME.to_string(), tag.clone());
                index.manifests.push(d);
            }
        }
        index
    }

    pub fn get(&self, digest: &Digest) -> Option<&ImageEntry> {
        self.images.iter().find(|e| e.digest() == digest)
    }

    /// The image a tag reference names.
    pub fn by_tag(&self, reference: &str) -> Option<&ImageEntry> {
        let want = normalize_name(reference);
        self.images
            .iter()
            .find(|e| e.tags.iter().any(|t| normalize_name(t) == want))
    }

    /// Adds the image if new (with the descriptor's annotations other than names kept).
    pub fn ensure(&mut self, descriptor: &Descriptor) -> &mut ImageEntry {
        let pos = match self
            .images
            .iter()
            .position(|e| e.digest() == &descriptor.digest)
        {
            Some(p) => p,
            None => {
                let mut d = descriptor.clone();
                d.annotations.remove(ANNOTATION_REF_NAME);
                d.annotations.remove(ANNOTATION_REPO_DIGESTS);
                self.images.push(ImageEntry {
                    descriptor: d,
                    tags: Vec::new(),
                    repo_digests: BTreeSet::new(),
                });
                self.images.len() - 1
            }
        };
        &mut self.images[pos]
    }

    /// Points tag `reference` (normalized) at `digest`, taking it off any other image. An
    /// image that loses its last tag this way also loses its repo digests of that repository
    /// (docker's behaviour: it becomes dangling). Returns the image the tag left, if any.
    pub fn set_tag(&mut self, digest: &Digest, reference: &Reference) -> Option<Digest> {
        let name = reference.to_string();
        let mut moved_from = None;
        for e in self.images.iter_mut().filter(|e| e.digest() != digest) {
            let before = e.tags.len();
            e.tags.retain(|t| normalize_name(t) != name);
            if e.tags.len() != before {
                moved_from = Some(e.digest().clone());
                drop_repo_digests_if_untagged(e, reference);
            }
        }
        if let Some(e) = self.images.iter_mut().find(|e| e.digest() == digest) {
            if !e.tags.iter().any(|t| normalize_name(t) == name) {
                e.tags.push(name);
            }
        }
        moved_from
    }

    /// Removes tag `reference`; returns the image it named and the repo digests removed
    /// with it: those of the same repository go too when no other tag of that repository
    /// remains (docker's rmi rule).
    pub fn untag(&mut self, reference: &Reference) -> Option<(Digest, Vec<String>)> {
        let name = reference.to_string();
        let e = self
            .images
            .iter_mut()
            .find(|e| e.tags.iter().any(|t| normalize_name(t) == name))?;
        e.tags.retain(|t| normalize_name(t) != name);
        let removed = drop_repo_digests_if_untagged(e, reference);
        Some((e.digest().clone(), removed))
    }

    /// Removes a repo digest reference; returns the image it named.
    pub fn remove_repo_digest(&mut self, reference: &Reference) -> Option<Digest> {
        let name = reference.to_string();
        let e = self
            .images
            .iter_mut()
            .find(|e| e.repo_digests.contains(&name))?;
        e.repo_digests.remove(&name);
        Some(e.digest().clone())
    }

    pub fn remove(&mut self, digest: &Digest) -> Option<ImageEntry> {
        let pos = self.images.iter().position(|e| e.digest() == digest)?;
        Some(self.images.remove(pos))
    }
}

fn drop_repo_digests_if_untagged(e: &mut ImageEntry, reference: &Reference) -> Vec<String> {
    let repo = reference.name();
    let same_repo = |n: &String| Reference::parse(n).is_ok_and(|r| r.name() == repo);
    if e.tags.iter().any(same_repo) {
        return Vec::new();
    }
    let (gone, kept) = std::mem::take(&mut e.repo_digests)
        .into_iter()
        .partition(same_repo);
    e.repo_digests = kept;
    gone.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn desc(n: u8) -> Descriptor {
        Descriptor {
            media_type: crate::oci::media::OCI_MANIFEST.to_string(),
            digest: Digest::of(&[n]),
            size: 100,
            platform: None,
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    #[test]
    fn round_trips_through_index_json() {
        let mut t = ImageTable::default();
        t.ensure(&desc(1));
        t.set_tag(&desc(1).digest, &r("busybox"));
        t.set_tag(&desc(1).digest, &r("busybox:1"));
        t.ensure(&desc(1))
            .repo_digests
            .insert(r("busybox").with_digest(&desc(9).digest).to_string());
        t.ensure(&desc(2));
        let index = t.to_index();
        assert_eq!(index.manifests.len(), 3);
        assert_eq!(
            index.manifests[0].annotations[ANNOTATION_REF_NAME],
            "docker.io/library/busybox:latest"
        );
        assert!(!index.manifests[1]
            .annotations
            .contains_key(ANNOTATION_REPO_DIGESTS));
        assert!(index.manifests[2].annotations.is_empty());
        let back = ImageTable::from_index(&index);
        assert_eq!(back.images, t.images);
    }

    #[test]
    fn moving_a_tag_leaves_a_dangling_image() {
        let mut t = ImageTable::default();
        t.ensure(&desc(1))
            .repo_digests
            .insert(r("busybox").with_digest(&desc(1).digest).to_string());
        t.set_tag(&desc(1).digest, &r("busybox"));
        t.ensure(&desc(2));
        let moved = t.set_tag(&desc(2).digest, &r("busybox:latest"));
        assert_eq!(moved, Some(desc(1).digest));
        let old = t.get(&desc(1).digest).unwrap();
        assert!(old.tags.is_empty() && old.repo_digests.is_empty());
        assert_eq!(t.by_tag("busybox").unwrap().digest(), &desc(2).digest);
        assert_eq!(t.untag(&r("busybox")), Some((desc(2).digest, Vec::new())));
        assert!(t.by_tag("busybox").is_none());
        assert_eq!(t.untag(&r("busybox")), None);
    }
}
