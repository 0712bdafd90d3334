//! `image prune` and `system df`: what the store holds and what can go.
//!
//! Sizes are docker's: an image's size is the sum of its layers' uncompressed sizes (the
//! tar each `layers/<diffid>/data` holds); a layer shared by several images counts once in
//! totals and is "shared size" for each of them. A container's size is the bytes of the
//! regular files in its upper directory (the number `ps -s` and `container prune` give); a
//! volume's, the same count over its `_data`. The store's compressed layer blobs (kept for
//! `skopeo copy oci:`) are not counted: SIZE is what docker's own store shows, the
//! uncompressed layers.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;

use super::confirm;
use super::ps::status_text;
use crate::digest::Digest;
use crate::format::{self, human_size, Format};
use crate::store::image::Image;
use crate::store::in_use::images_in_use;
use crate::store::Store;
use crate::Global;
use strata_engine::containers::dir_size;
use strata_engine::containers::Containers;
use strata_engine::volumes::Volumes;

#[derive(Args)]
pub struct PruneArgs {
    /// Remove all images not used by a container, not just dangling ones
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
}

pub fn image_prune(global: &Global, args: PruneArgs) -> Result<()> {
    if !args.force {
        let what = match args.all {
            true => "all images without at least one container associated to them",
            false => "all dangling images",
        };
        if !confirm(&format!(
            "WARNING! This will remove {what}.\nAre you sure you want to continue?"
        ))? {
            return Ok(());
        }
    }
    let store = Store::new(&global.root);
    let (lines, bytes) = prune_images(&store, args.all)?;
    let mut out = section("Deleted Images:", &lines);
    out.push_str(&format!("Total reclaimed space: {}\n", human_size(bytes)));
    super::print(out.as_bytes())
}

/// Removes the dangling images (with `all`, every image) no container uses, then what only
/// they held. Returns docker's `untagged:`/`deleted:` lines and the bytes freed.
fn prune_images(store: &Store, all: bool) -> Result<(Vec<String>, u64)> {
    let used = images_in_use(store)?;
    let mut lines = Vec::new();
    store.update(|t| {
        let images = store.images()?;
        for img in images {
            if used.contains_key(&img.id) || !(all || img.dangling()) {
                continue;
            }
            for tag in img.tags.iter().chain(img.repo_digests.iter()) {
                lines.push(format!("untagged: {}", tag.familiar()));
            }
            t.remove(&img.manifest_digest);
            lines.push(format!("deleted: {}", img.id));
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let report = store.gc()?;
    for layer in &report.layers {
        lines.push(format!("deleted: {layer}"));
    }
    Ok((lines, report.bytes))
}

/// `HEADER` and one line each, then a blank line; nothing when there are no lines.
pub fn section(header: &str, lines: &[String]) -> String {
    let mut out = String::new();
    if !lines.is_empty() {
        out.push_str(header);
        out.push('\n');
        for l in lines {
            out.push_str(l);
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

#[derive(Args)]
pub struct SystemPruneArgs {
    /// Remove all unused images not just dangling ones
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
    /// Prune anonymous volumes
    #[arg(long)]
    pub volumes: bool,
}

/// `system prune`: stopped containers, then (with `--volumes`) anonymous volumes no
/// container uses, then images as `image prune` (`-a`: every unused one). strata has no
/// user-defined networks and no build cache, so nothing is said about them.
pub fn system_prune(global: &Global, args: SystemPruneArgs) -> Result<()> {
    if !args.force {
        let mut warnings = vec![
            "all stopped containers",
            "all networks not used by at least one container",
        ];
        if args.volumes {
            warnings.push("all anonymous volumes not used by at least one container");
        }
        warnings.push(match args.all {
            true => "all images without at least one container associated to them",
            false => "all dangling images",
        });
        warnings.push(match args.all {
            true => "all build cache",
            false => "unused build cache",
        });
        let mut question = String::from("WARNING! This will remove:\n");
        for w in warnings {
            question.push_str(&format!("  - {w}\n"));
        }
        question.push_str("\nAre you sure you want to continue?");
        if !confirm(&question)? {
            return Ok(());
        }
    }
    let store = Store::new(&global.root);
    let containers = Containers::new(&store);
    let mut reclaimed = 0;
    let mut deleted = Vec::new();
    for rec in containers.records()? {
        if containers.state(&rec.id)?.status.is_active() {
            continue;
        }
        reclaimed += dir_size(&containers.dir(&rec.id).join("upper"));
        strata_engine::lifecycle::remove(&store, &containers, &rec, false, false)?;
        deleted.push(rec.id);
    }
    let mut out = section("Deleted Containers:", &deleted);
    if args.volumes {
        let (names, bytes) = Volumes::new(&store).prune(&containers, false)?;
        reclaimed += bytes;
        out.push_str(&section("Deleted Volumes:", &names));
    }
    let (lines, bytes) = prune_images(&store, args.all)?;
    reclaimed += bytes;
    out.push_str(&section("Deleted Images:", &lines));
    out.push_str(&format!(
        "Total reclaimed space: {}\n",
        human_size(reclaimed)
    ));
    super::print(out.as_bytes())
}

#[derive(Args)]
pub struct DfArgs {
    /// Show detailed information on space usage
    #[arg(short, long)]
    pub verbose: bool,
    /// Format output using a template, or json
    #[arg(long)]
    pub format: Option<String>,
}

/// Space used by images: per layer, and which images use each.
struct ImageUsage {
    images: Vec<Image>,
    /// Uncompressed size of each layer.
    layer_size: HashMap<Digest, u64>,
    /// How many images use each layer.
    layer_users: HashMap<Digest, usize>,
}

impl ImageUsage {
    fn of(store: &Store) -> Result<ImageUsage> {
        let images = store.images()?;
        let mut layer_size = HashMap::new();
        let mut layer_users: HashMap<Digest, usize> = HashMap::new();
        for img in &images {
            let mut seen = BTreeSet::new();
            for (blob, diff_id) in img.layers() {
                if !seen.insert(diff_id.clone()) {
                    continue;
                }
                let size = store
                    .layer_meta(diff_id)
                    .map(|m| m.size)
                    .unwrap_or(blob.size);
                layer_size.insert(diff_id.clone(), size);
                *layer_users.entry(diff_id.clone()).or_default() += 1;
            }
        }
        Ok(ImageUsage {
            images,
            layer_size,
            layer_users,
        })
    }

    fn layers_of(img: &Image) -> BTreeSet<Digest> {
        img.layers().map(|(_, d)| d.clone()).collect()
    }

    /// (size, shared size, unique size) of one image.
    fn sizes(&self, img: &Image) -> (u64, u64, u64) {
        let (mut shared, mut unique) = (0, 0);
        for d in Self::layers_of(img) {
            let s = self.layer_size.get(&d).copied().unwrap_or(0);
            match self.layer_users.get(&d).copied().unwrap_or(0) > 1 {
                true => shared += s,
                false => unique += s,
            }
        }
        (shared + unique, shared, unique)
    }

    /// Bytes of all layers, each once.
    fn total(&self) -> u64 {
        self.layer_size.values().sum()
    }

    /// Bytes of the layers no image in `active` uses.
    fn reclaimable(&self, active: &BTreeSet<Digest>) -> u64 {
        let mut kept: BTreeSet<Digest> = BTreeSet::new();
        for img in self.images.iter().filter(|i| active.contains(&i.id)) {
            kept.extend(Self::layers_of(img));
        }
        self.layer_size
            .iter()
            .filter(|(d, _)| !kept.contains(*d))
            .map(|(_, s)| s)
            .sum()
    }
}

/// docker's `RECLAIMABLE` cell: `SIZE (PCT%)`, just `SIZE` when there is nothing at all.
fn reclaimable(bytes: u64, of: u64) -> String {
    match of {
        0 => human_size(bytes),
        _ => format!("{} ({}%)", human_size(bytes), bytes * 100 / of),
    }
}

/// `df -v`'s section on lazily pulled layers (none: nothing, as docker prints): each layer,
/// how much of it is local, and the chunk cache against its bound.
fn lazy_usage(store: &Store, images: &[crate::store::image::Image]) -> Result<String> {
    let mut seen = std::collections::BTreeSet::new();
    let layers: Vec<_> = images
        .iter()
        .flat_map(|img| img.config.rootfs.diff_ids.iter())
        .filter(|d| seen.insert((*d).clone()))
        .filter_map(|d| store.lazy_progress(d))
        .collect();
    if layers.is_empty() {
        return Ok(String::new());
    }
    let used: u64 = layers.iter().map(|l| l.local).sum();
    let mut out = format!(
        "\n\nLazy layers space usage (chunk cache {} of {}):\n\n",
        human_size(used),
        human_size(store.chunk_cache_limit()?)
    );
    let mut lines = vec!["LAYER\tFORMAT\tLOCAL\tSIZE".to_string()];
    for l in &layers {
        lines.push(format!(
            "{}\t{}\t{}\t{}",
            l.blob.short(),
            l.format.name(),
            human_size(l.local),
            human_size(l.data_len)
        ));
    }
    out.push_str(&format::tabwrite(&lines.join("\n")));
    Ok(out)
}

pub fn df(global: &Global, args: DfArgs) -> Result<()> {
    let store = Store::new(&global.root);
    let usage = ImageUsage::of(&store)?;
    let containers = Containers::new(&store);
    let records = containers.records()?;
    let mut active_images = BTreeSet::new();
    let mut image_containers: HashMap<String, usize> = HashMap::new();
    let mut rows_c = Vec::new();
    let (mut c_size, mut c_reclaim, mut c_running) = (0u64, 0u64, 0usize);
    for r in &records {
        if let Ok(id) = Digest::parse(&r.image_id) {
            active_images.insert(id);
        }
        *image_containers.entry(r.image_id.clone()).or_default() += 1;
        let st = containers.state(&r.id)?;
        let size = dir_size(&containers.dir(&r.id).join("upper"));
        c_size += size;
        if st.status.is_active() {
            c_running += 1;
        } else {
            c_reclaim += size;
        }
        rows_c.push((r, st, size));
    }
    let volume_links: BTreeMap<String, usize> = Volumes::users(&records)
        .into_iter()
        .map(|(name, ids)| (name, ids.len()))
        .collect();
    let volumes: Vec<(String, u64)> = Volumes::new(&store)
        .list()?
        .into_iter()
        .map(|v| (v.name, dir_size(&v.mountpoint)))
        .collect();
    let v_size: u64 = volumes.iter().map(|(_, s)| s).sum();
    let v_active = volumes
        .iter()
        .filter(|(n, _)| volume_links.contains_key(n))
        .count();
    let v_reclaim: u64 = volumes
        .iter()
        .filter(|(n, _)| !volume_links.contains_key(n))
        .map(|(_, s)| s)
        .sum();
    let i_total = usage.total();
    let i_active = usage
        .images
        .iter()
        .filter(|i| active_images.contains(&i.id))
        .count();

    if !args.verbose {
        let rows = vec![
            json!({"Type": "Images", "TotalCount": usage.images.len().to_string(),
                   "Active": i_active.to_string(), "Size": human_size(i_total),
                   "Reclaimable": reclaimable(usage.reclaimable(&active_images), i_total)}),
            json!({"Type": "Containers", "TotalCount": records.len().to_string(),
                   "Active": c_running.to_string(), "Size": human_size(c_size),
                   "Reclaimable": reclaimable(c_reclaim, c_size)}),
            json!({"Type": "Local Volumes", "TotalCount": volumes.len().to_string(),
                   "Active": v_active.to_string(), "Size": human_size(v_size),
                   "Reclaimable": reclaimable(v_reclaim, v_size)}),
            json!({"Type": "Build Cache", "TotalCount": "0", "Active": "0",
                   "Size": "0B", "Reclaimable": "0B"}),
        ];
        let headers = json!({"Type": "TYPE", "TotalCount": "TOTAL", "Active": "ACTIVE",
                             "Size": "SIZE", "Reclaimable": "RECLAIMABLE"});
        let f = Format::parse(
            args.format.as_deref(),
            "{{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}",
        )?;
        let mut out = Vec::new();
        f.print(&mut out, &headers, &rows)?;
        return super::print(&out);
    }
    if args.format.is_some() {
        bail!("--format with -v is not supported");
    }
    let mut out = String::from("Images space usage:\n\n");
    let mut lines = vec![
        "REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE\tSHARED SIZE\tUNIQUE SIZE\tCONTAINERS"
            .to_string(),
    ];
    for img in &usage.images {
        let (size, shared, unique) = usage.sizes(img);
        let users = image_containers.get(img.id.as_str()).copied().unwrap_or(0);
        // One row per image, named by its first tag (docker's rule).
        let (repo, tag) = match img.tags.first() {
            Some(t) => (
                t.familiar_name(),
                t.tag.clone().unwrap_or_else(|| "<none>".into()),
            ),
            None => ("<none>".into(), "<none>".into()),
        };
        lines.push(format!(
            "{repo}\t{tag}\t{}\t{}\t{}\t{}\t{}\t{users}",
            img.id.short(),
            format::since(img.created_unix()),
            human_size(size),
            human_size(shared),
            human_size(unique)
        ));
    }
    out.push_str(&format::tabwrite(&lines.join("\n")));
    out.push_str(&lazy_usage(&store, &usage.images)?);
    out.push_str("\n\nContainers space usage:\n\n");
    let mut lines = vec![
        "CONTAINER ID\tIMAGE\tCOMMAND\tLOCAL VOLUMES\tSIZE\tCREATED\tSTATUS\tNAMES".to_string(),
    ];
    for (r, st, size) in &rows_c {
        let command = super::ps::command_text(r, true);
        let vols = r.volumes.iter().filter(|v| v.kind == "volume").count();
        lines.push(format!(
            "{}\t{}\t{command}\t{vols}\t{}\t{}\t{}\t{}",
            &r.id[..12.min(r.id.len())],
            r.image,
            human_size(*size),
            format::since(format::parse_time(&r.created)),
            status_text(st),
            r.name
        ));
    }
    out.push_str(&format::tabwrite(&lines.join("\n")));
    out.push_str("\n\nLocal Volumes space usage:\n\n");
    let mut lines = vec!["VOLUME NAME\tLINKS\tSIZE".to_string()];
    for (name, size) in &volumes {
        let links = volume_links.get(name).copied().unwrap_or(0);
        lines.push(format!("{name}\t{links}\t{}", human_size(*size)));
    }
    out.push_str(&format::tabwrite(&lines.join("\n")));
    out.push_str("\n\nBuild cache usage: 0B\n\n");
    out.push_str(&format::tabwrite(
        "CACHE ID\tCACHE TYPE\tSIZE\tCREATED\tLAST USED\tUSAGE\tSHARED",
    ));
    out.push('\n');
    super::print(out.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::image::testing::{name_image, put_image};
    use serde_json::json;

    #[test]
    fn reclaimable_cell_as_docker() {
        assert_eq!(reclaimable(0, 0), "0B");
        assert_eq!(reclaimable(5, 5), "5B (100%)");
        assert_eq!(reclaimable(1, 3), "1B (33%)");
        assert_eq!(section("H:", &[]), "");
        assert_eq!(section("H:", &["a".into(), "b".into()]), "H:\na\nb\n\n");
    }

    #[test]
    fn a_shared_layer_counts_once_and_as_shared() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let a = put_image(&store, "2024-01-01T00:00:00Z", json!(null), b"abc");
        let b = put_image(&store, "2024-01-02T00:00:00Z", json!(null), b"abc");
        let c = put_image(&store, "2024-01-03T00:00:00Z", json!(null), b"12345");
        name_image(&store, &a, &["a"]);
        name_image(&store, &b, &["b"]);
        name_image(&store, &c, &["c"]);
        let usage = ImageUsage::of(&store).unwrap();
        let by_tag = |t: &str| {
            usage
                .images
                .iter()
                .find(|i| i.tags.iter().any(|r| r.familiar() == format!("{t}:latest")))
                .unwrap()
        };
        assert_eq!(usage.sizes(by_tag("a")), (3, 3, 0));
        assert_eq!(usage.sizes(by_tag("b")), (3, 3, 0));
        assert_eq!(usage.sizes(by_tag("c")), (5, 0, 5));
        assert_eq!(usage.total(), 8);
        assert_eq!(usage.reclaimable(&BTreeSet::new()), 8);
        // While a uses the shared layer, only c's is reclaimable.
        let active = BTreeSet::from([by_tag("a").id.clone()]);
        assert_eq!(usage.reclaimable(&active), 5);
    }

    #[test]
    fn prune_takes_dangling_then_unused_and_spares_a_containers_image() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let named = put_image(&store, "2024-01-01T00:00:00Z", json!(null), b"n");
        let dangling = put_image(&store, "2024-01-02T00:00:00Z", json!(null), b"d");
        let used = put_image(&store, "2024-01-03T00:00:00Z", json!(null), b"u");
        name_image(&store, &named, &["named"]);
        name_image(&store, &dangling, &[]);
        name_image(&store, &used, &[]);
        let id_of = |d: &crate::oci::Descriptor| {
            store
                .images()
                .unwrap()
                .into_iter()
                .find(|i| i.manifest_digest == d.digest)
                .unwrap()
                .id
        };
        let (dangling_id, used_id) = (id_of(&dangling), id_of(&used));
        let ctr = dir.path().join("containers").join("c1");
        std::fs::create_dir_all(&ctr).unwrap();
        std::fs::write(
            ctr.join("container.json"),
            json!({"id": "c1", "image_id": used_id.to_string()}).to_string(),
        )
        .unwrap();

        let (lines, bytes) = prune_images(&store, false).unwrap();
        assert_eq!(lines[0], format!("deleted: {dangling_id}"));
        assert!(bytes > 0);
        assert_eq!(store.images().unwrap().len(), 2);
        let (lines, _) = prune_images(&store, true).unwrap();
        assert_eq!(lines[0], "untagged: named:latest");
        let left: Vec<Digest> = store.images().unwrap().into_iter().map(|i| i.id).collect();
        assert_eq!(left, [used_id]);
    }
}
