//! `images` / `image ls`, `tag`, `rmi` / `image rm`.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use clap::Args;
use serde_json::{json, Value};

use crate::digest::Digest;
use crate::filter::Filters;
use crate::format::{self, Format};
use crate::reference::Reference;
use crate::store::image::{Found, Image};
use crate::store::table::ImageTable;
use crate::store::Store;
use crate::Global;
use strata_engine::containers::Containers;

#[derive(Args)]
pub struct ListArgs {
    /// Only images of this repository, or repository:tag (a reference filter)
    pub repository: Option<String>,
    /// Show all images (there are no intermediate images to hide yet)
    #[arg(short, long)]
    pub all: bool,
    /// Only show image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Show digests
    #[arg(long)]
    pub digests: bool,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Filter: dangling=, reference=, before=, since=, label=
    #[arg(short, long = "filter", value_name = "FILTER")]
    pub filters: Vec<String>,
    /// Format: table, json, or a Go template ({{.Repository}} {{.Tag}} {{.ID}} {{.Digest}}
    /// {{.CreatedSince}} {{.CreatedAt}} {{.Size}})
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args)]
pub struct TagArgs {
    /// Source image: a name, name:tag or image ID
    pub source: String,
    /// New name: name or name:tag
    pub target: String,
}

#[derive(Args)]
pub struct RmiArgs {
    /// Images (names or IDs)
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Remove an image referenced in several repositories, with all its names
    #[arg(short, long)]
    pub force: bool,
    /// Accepted for compatibility
    #[arg(long)]
    pub no_prune: bool,
}

const HEADERS: [(&str, &str); 11] = [
    ("Repository", "REPOSITORY"),
    ("Tag", "TAG"),
    ("ID", "IMAGE ID"),
    ("Digest", "DIGEST"),
    ("CreatedSince", "CREATED"),
    ("CreatedAt", "CREATED AT"),
    ("Size", "SIZE"),
    ("VirtualSize", "VIRTUAL SIZE"),
    ("SharedSize", "SHARED SIZE"),
    ("UniqueSize", "UNIQUE SIZE"),
    ("Containers", "CONTAINERS"),
];

pub fn headers() -> Value {
    Value::Object(
        HEADERS
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect(),
    )
}

pub fn list(global: &Global, args: ListArgs) -> Result<()> {
    let store = Store::new(&global.root);
    let mut filter_args = args.filters.clone();
    if let Some(repo) = &args.repository {
        filter_args.push(format!("reference={repo}"));
    }
    let filters = Filters::parse(&filter_args)?;
    let table = store.table()?;
    let mut images = filters.apply(store.images()?, |name| {
        Ok(store.find(&table, name)?.image().created_unix())
    })?;
    // Newest first, as docker lists them.
    images.sort_by_key(|i| std::cmp::Reverse(i.created_unix()));

    let default = if args.digests {
        "{{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    } else {
        "{{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    };
    let format = if args.quiet && args.format.is_none() {
        Format::Raw(format::Template::parse("{{.ID}}")?)
    } else {
        Format::parse(args.format.as_deref(), default)?
    };
    let trunc = !args.no_trunc;
    let mut rows = Vec::new();
    for img in &images {
        for (repo, tag, digest) in image_rows(img, args.digests) {
            rows.push(row(img, &repo, &tag, &digest, trunc));
        }
    }
    let mut out = Vec::new();
    format.print(&mut out, &headers(), &rows)?;
    super::print(&out)
}

/// docker's imageFormatTaggedAndDigest: (repository, tag, digest) rows of one image.
fn image_rows(img: &Image, show_digests: bool) -> Vec<(String, String, String)> {
    if img.dangling() {
        return vec![("<none>".into(), "<none>".into(), "<none>".into())];
    }
    let mut tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in &img.tags {
        tags.entry(t.familiar_name())
            .or_default()
            .push(t.tag.clone().unwrap_or_else(|| "<none>".into()));
    }
    let mut digests: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in &img.repo_digests {
        if let Some(dg) = &d.digest {
            digests
                .entry(d.familiar_name())
                .or_default()
                .push(dg.to_string());
        }
    }
    let mut rows = Vec::new();
    for (repo, tags) in &mut tags {
        tags.sort();
        let ds = digests.remove(repo).unwrap_or_default();
        for tag in tags {
            if !show_digests || ds.is_empty() {
                rows.push((repo.clone(), tag.clone(), "<none>".to_string()));
            } else {
                for d in &ds {
                    rows.push((repo.clone(), tag.clone(), d.clone()));
                }
            }
        }
    }
    for (repo, ds) in digests {
        if show_digests {
            for d in ds {
                rows.push((repo.clone(), "<none>".into(), d));
            }
        } else {
            rows.push((repo, "<none>".into(), "<none>".into()));
        }
    }
    rows
}

fn row(img: &Image, repo: &str, tag: &str, digest: &str, trunc: bool) -> Value {
    let created = img.created_unix();
    let size = format::human_size(img.size);
    json!({
        "Containers": "N/A",
        "CreatedAt": created.map(format::go_time).unwrap_or_else(|| "N/A".into()),
        "CreatedSince": format::since(created),
        "Digest": digest,
        "ID": show_id(&img.id, trunc),
        "Repository": repo,
        "SharedSize": "N/A",
        "Size": size,
        "Tag": tag,
        "UniqueSize": "N/A",
        "VirtualSize": size,
    })
}

pub fn show_id(id: &Digest, trunc: bool) -> String {
    if trunc {
        id.short().to_string()
    } else {
        id.to_string()
    }
}

pub fn tag(global: &Global, args: TagArgs) -> Result<()> {
    let target = Reference::parse(&args.target)?;
    if target.digest.is_some() {
        bail!("refusing to create a tag with a digest reference");
    }
    let store = Store::new(&global.root);
    store.update(|t| {
        let found = store.find(t, &args.source)?;
        let descriptor = t
            .get(&found.image().manifest_digest)
            .expect("found in this table")
            .descriptor
            .clone();
        t.ensure(&descriptor);
        t.set_tag(&descriptor.digest, &target);
        Ok(())
    })
}

pub fn rmi(global: &Global, args: RmiArgs) -> Result<()> {
    let store = Store::new(&global.root);
    let mut failures = Vec::new();
    for name in &args.images {
        match remove(&store, name, args.force) {
            Ok(lines) => super::print(lines.join("").as_bytes())?,
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    match failures.len() {
        0 => Ok(()),
        1 => bail!("{}", failures[0]),
        _ => {
            for f in &failures[..failures.len() - 1] {
                eprintln!("Error: {f}");
            }
            bail!("{}", failures[failures.len() - 1])
        }
    }
}

/// Removes one name or image with docker's rules; returns the output lines.
fn remove(store: &Store, name: &str, force: bool) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    let users = crate::store::in_use::images_in_use(store)?;
    let deleted = store.update(|t| {
        let found = match store.find(t, name) {
            Ok(f) => f,
            Err(_) => bail!("No such image: {}", Store::familiar(name)),
        };
        let digest = found.image().manifest_digest.clone();
        match &found {
            Found::Tag(r, _) => {
                lines.push(format!("Untagged: {}\n", r.familiar()));
                for gone in t.untag(r).map(|(_, g)| g).unwrap_or_default() {
                    lines.push(format!("Untagged: {}\n", Store::familiar(&gone)));
                }
            }
            Found::Digest(r, _) => {
                t.remove_repo_digest(r);
                lines.push(format!("Untagged: {}\n", r.familiar()));
            }
            Found::Id(img) => {
                let entry = t.get(&digest).expect("found in this table");
                let names = names_of(entry);
                if !names.is_empty() && !single_reference(&names) && !force {
                    bail!(
                        "conflict: unable to delete {} (must be forced) - image is referenced \
                         in multiple repositories",
                        img.id.short()
                    );
                }
                for r in &names {
                    lines.push(format!("Untagged: {}\n", r.familiar()));
                }
            }
        }
        let entry = t.get(&digest).expect("still in the table");
        if matches!(found, Found::Id(_)) || (entry.tags.is_empty() && entry.repo_digests.is_empty())
        {
            let id = &found.image().id;
            if let Some(ids) = users.get(id) {
                // A container's image stays (its layers are the container's root): -f only
                // takes the names away, and not even that while a container runs (docker
                // names a running one first, else the oldest).
                let containers = Containers::new(store);
                let is_running =
                    |c: &&String| containers.state(c).is_ok_and(|st| st.status.is_active());
                let running = ids.iter().find(is_running);
                let container = running.unwrap_or(&ids[0]);
                let short = &container[..container.len().min(12)];
                let running = running.is_some();
                match &found {
                    Found::Id(_) if running => bail!(
                        "conflict: unable to delete {} (cannot be forced) - image is being used \
                         by running container {short}",
                        id.short()
                    ),
                    Found::Id(_) if !force => bail!(
                        "conflict: unable to delete {} (must be forced) - image is being used \
                         by stopped container {short}",
                        id.short()
                    ),
                    Found::Id(_) => {
                        if let Some(e) = t.images.iter_mut().find(|e| e.digest() == &digest) {
                            e.tags.clear();
                            e.repo_digests.clear();
                        }
                    }
                    _ if force => {}
                    _ => bail!(
                        "conflict: unable to remove repository reference \"{name}\" (must \
                         force) - container {short} is using its referenced image {}",
                        id.short()
                    ),
                }
                return Ok(false);
            }
            t.remove(&digest);
            lines.push(format!("Deleted: {}\n", found.image().id));
            return Ok(true);
        }
        Ok(false)
    })?;
    if deleted {
        let report = store.gc()?;
        for layer in report.layers {
            lines.push(format!("Deleted: {layer}\n"));
        }
    }
    Ok(lines)
}

/// Tags then repo digests of a table entry, parsed.
fn names_of(entry: &crate::store::table::ImageEntry) -> Vec<Reference> {
    entry
        .tags
        .iter()
        .chain(entry.repo_digests.iter())
        .filter_map(|n| Reference::parse(n).ok())
        .collect()
}

/// docker's isSingleReference: at most one tag, and every digest reference in its repository.
fn single_reference(names: &[Reference]) -> bool {
    let tags: Vec<&Reference> = names.iter().filter(|r| r.digest.is_none()).collect();
    let repos: std::collections::BTreeSet<String> = names.iter().map(Reference::name).collect();
    tags.len() <= 1 && repos.len() == 1
}

/// For callers that need the table and an image together (inspect, history, mount).
pub fn find_image(store: &Store, name: &str) -> Result<(ImageTable, Image)> {
    let table = store.table()?;
    match store.find(&table, name) {
        Ok(f) => {
            let img = f.image().clone();
            Ok((table, img))
        }
        Err(_) => bail!("No such image: {}", Store::familiar(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    #[test]
    fn single_reference_rule() {
        let d = "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4";
        assert!(single_reference(&[r("busybox")]));
        assert!(single_reference(&[
            r("busybox"),
            r(&format!("busybox@{d}"))
        ]));
        assert!(!single_reference(&[r("busybox"), r("busybox:1")]));
        assert!(!single_reference(&[r("busybox"), r("other")]));
        assert!(!single_reference(&[r("busybox"), r(&format!("other@{d}"))]));
    }
}

#[cfg(test)]
mod rmi_tests {
    use super::*;
    use crate::store::image::testing::{name_image, put_image};
    use serde_json::json;

    #[test]
    fn untag_versus_delete_like_docker() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let a = put_image(&store, "2024-01-01T00:00:00Z", json!(null), b"a");
        name_image(&store, &a, &["busybox", "busybox:1", "other:x"]);
        let id = store.images().unwrap()[0].id.clone();

        // An ID with names in several repositories needs -f.
        let e = remove(&store, id.short(), false).unwrap_err().to_string();
        assert!(e.contains("must be forced"), "{e}");

        // Removing one of several tags only untags.
        assert_eq!(
            remove(&store, "busybox:1", false).unwrap(),
            vec!["Untagged: busybox:1\n"]
        );
        assert_eq!(
            remove(&store, "other:x", false).unwrap(),
            vec!["Untagged: other:x\n"]
        );
        // The last tag of the repository takes its repo digest along, then the image goes.
        let lines = remove(&store, "busybox", false).unwrap();
        assert_eq!(lines[0], "Untagged: busybox:latest\n");
        assert_eq!(lines[1], format!("Untagged: busybox@{}\n", a.digest));
        assert_eq!(lines[2], format!("Deleted: {id}\n"));
        assert!(store.images().unwrap().is_empty());
        assert!(!store.has_blob(&a.digest));
        assert!(remove(&store, "busybox", false)
            .unwrap_err()
            .to_string()
            .contains("No such image: busybox:latest"));

        // One tag plus its digest: the ID removes both without -f; -f removes anything.
        let b = put_image(&store, "2024-01-01T00:00:00Z", json!(null), b"b");
        name_image(&store, &b, &["solo"]);
        let id_b = store.images().unwrap()[0].id.clone();
        let lines = remove(&store, id_b.hex(), false).unwrap();
        assert_eq!(lines.len(), 3, "{lines:?}");
        let c = put_image(&store, "2024-01-01T00:00:00Z", json!(null), b"c");
        name_image(&store, &c, &["c1", "c2"]);
        let id_c = store.images().unwrap()[0].id.clone();
        assert!(remove(&store, id_c.short(), true).is_ok());
        assert!(store.images().unwrap().is_empty());
    }

    #[test]
    fn rows_per_tag_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let a = put_image(&store, "2024-01-01T00:00:00Z", json!(null), b"a");
        name_image(
            &store,
            &a,
            &["busybox", "busybox:1", "127.0.0.1:5000/x/y:z"],
        );
        let img = &store.images().unwrap()[0];
        let rows = image_rows(img, false);
        assert_eq!(
            rows,
            vec![
                (
                    "127.0.0.1:5000/x/y".to_string(),
                    "z".to_string(),
                    "<none>".to_string()
                ),
                ("busybox".into(), "1".into(), "<none>".into()),
                ("busybox".into(), "latest".into(), "<none>".into()),
            ]
        );
        let rows = image_rows(img, true);
        assert_eq!(rows[1].2, a.digest.to_string());
        let r = row(img, "busybox", "1", "<none>", true);
        assert_eq!(r["ID"], img.id.short());
        assert_eq!(r["Size"], "1B");
    }
}
