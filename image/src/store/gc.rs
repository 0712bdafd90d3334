//! Garbage collection: blobs and layer indexes that no image in index.json reaches are
//! deleted. Runs under the exclusive GC lock, so no pull is between storing its blobs and
//! naming them. `rmi` runs it after removing images; `image prune` and `system df` build on
//! [`Store::reachable`].

use std::collections::BTreeSet;
use std::fs;

use crate::{Error, Result};

use super::{fsutil, Store};
use crate::digest::Digest;
use crate::oci::{ImageConfig, ManifestKind};

/// What a GC removed.
#[derive(Debug, Default)]
pub struct GcReport {
    pub blobs: Vec<Digest>,
    /// Diff-ids of removed layer indexes.
    pub layers: Vec<Digest>,
    pub bytes: u64,
}

/// Everything the images in index.json use.
#[derive(Debug, Default)]
pub struct Reachable {
    pub blobs: BTreeSet<Digest>,
    pub diff_ids: BTreeSet<Digest>,
}

impl Store {
    /// Walks index.json: manifests (through nested indexes), configs, layers, diff-ids.
    /// A manifest that cannot be read or parsed reaches only itself.
    pub fn reachable(&self) -> Result<Reachable> {
        let mut r = Reachable::default();
        let mut todo: Vec<(Digest, String)> = self
            .read_index()?
            .manifests
            .into_iter()
            .map(|d| (d.digest, d.media_type))
            .collect();
        while let Some((digest, media_type)) = todo.pop() {
            if !r.blobs.insert(digest.clone()) {
                continue;
            }
            let Ok(bytes) = self.read_blob(&digest) else {
                continue;
            };
            match crate::oci::parse_manifest(Some(&media_type), &bytes) {
                Ok((_, ManifestKind::Index(idx))) => {
                    todo.extend(idx.manifests.into_iter().map(|d| (d.digest, d.media_type)))
                }
                Ok((_, ManifestKind::Image(m))) => {
                    r.blobs.insert(m.config.digest.clone());
                    r.blobs.extend(m.layers.iter().map(|l| l.digest.clone()));
                    let config = self.read_blob(&m.config.digest).ok();
                    if let Some(cfg) =
                        config.and_then(|b| serde_json::from_slice::<ImageConfig>(&b).ok())
                    {
                        r.diff_ids.extend(cfg.rootfs.diff_ids);
                    }
                }
                Err(_) => {}
            }
        }
        Ok(r)
    }

    /// Deletes unreachable blobs and layer indexes, and stale temp files (partial downloads
    /// are kept for resuming).
    pub fn gc(&self) -> Result<GcReport> {
        let _gc = self.lock_gc_exclusive()?;
        self.gc_locked()
    }

    /// [`Store::gc`] unless a pull is under way (then its blobs are left for a later GC).
    pub fn gc_if_idle(&self) -> Result<Option<GcReport>> {
        match self.try_lock_gc_exclusive()? {
            Some(_gc) => self.gc_locked().map(Some),
            None => Ok(None),
        }
    }

    fn gc_locked(&self) -> Result<GcReport> {
        let reachable = self.reachable()?;
        let mut report = GcReport::default();
        if let Ok(rd) = fs::read_dir(self.blobs_dir()) {
            for entry in rd.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Ok(d) = Digest::parse(&format!("sha256:{name}")) else {
                    continue;
                };
                if reachable.blobs.contains(&d) {
                    continue;
                }
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(entry.path()).map_err(|source| Error::RemoveBlob {
                    digest: d.clone(),
                    source,
                })?;
                report.bytes += size;
                report.blobs.push(d);
            }
        }
        if let Ok(rd) = fs::read_dir(self.layers_dir()) {
            for entry in rd.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = entry.path();
                let stale_tmp = name.starts_with('.');
                let diff_id = Digest::parse(&format!("sha256:{name}")).ok();
                if !stale_tmp
                    && diff_id
                        .as_ref()
                        .is_none_or(|d| reachable.diff_ids.contains(d))
                {
                    continue;
                }
                report.bytes += fsutil::tree_size(&path);
                fs::remove_dir_all(&path).map_err(|source| Error::RemoveLayer {
                    path: path.clone(),
                    source,
                })?;
                report.layers.extend(diff_id);
            }
        }
        // Chunks of lazy layers no image uses any more (a mount that has them open keeps
        // reading its open files).
        if let Ok(rd) = fs::read_dir(self.chunks_dir()) {
            for entry in rd.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let used = Digest::parse(&format!("sha256:{name}"))
                    .is_ok_and(|d| reachable.blobs.contains(&d));
                if !used {
                    report.bytes += fsutil::tree_size(&entry.path());
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        if let Ok(rd) = fs::read_dir(self.tmp_dir()) {
            for entry in rd.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".tmp") {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        fsutil::sync_dir(&self.blobs_dir()).ok();
        Ok(report)
    }
}
