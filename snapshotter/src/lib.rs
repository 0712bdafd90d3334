//! strata-snapshotter: a containerd remote snapshotter whose snapshots are strata-fs unions.
//!
//! ```text
//!  containerd ── gRPC (snapshots API, unix socket) ──▶ service.rs (tonic, containerd-snapshots)
//!                                                          │
//!                                                          ▼
//!                                                    Snapshots (this file): the table, dirs,
//!                                                    mounts; sync, one lock
//!                                                          │ mounter.rs (the seam)
//!                                                          ▼
//!       <root>/snapshotter/{metadata.json, lock, snapshots/<id>/{fs,work,mnt}}
//!       snapshots/<id>/mnt: a strata-fs union, served by a strata-fs process of its own
//!
//!  containerd (or its shim) gets `bind snapshots/<id>/mnt` and bind-mounts it: a plain
//!  mount(2), no helper process.
//! ```
//!
//! Why the snapshotter mounts the unions itself rather than answer `fuse3.strata-fs` for
//! containerd to mount through `mount.fuse3`: containerd's runc shim reaps every child
//! process, which races with its own wait for the mount helper; the helper's exit then
//! reads as ECHILD, and after ten retries the container fails to start (a bench round here
//! failed so at its 7th start). A bind mount is one syscall. The unions stay out of this process:
//! each `strata-fs` daemonizes, so a killed or restarted snapshotter breaks no running
//! container; a union found dead (after a reboot, or its server killed) is mounted again
//! when containerd next asks for the snapshot's mounts.
//!
//! Snapshots are directories. An active snapshot is an upper (`fs`) and a work directory
//! over its parents' `fs` directories; containerd applies a layer tar into that union, so the
//! upper ends up holding exactly the layer, in the kernel overlay format strata-fs writes
//! (whiteouts as 0/0 character devices, `trusted.overlay.opaque`). **Commit keeps that
//! directory as the layer** and strata-fs serves it as a lower (`lowerdir=`, its `DirLayer`,
//! which reads that format). We do not index it into a strata layer (`layers/<diffid>/`):
//! that would read and write every byte of the layer a second time on each pull, for no
//! gain in what the container sees; a directory lower's files are whole host files, which
//! FUSE passthrough serves at host speed. The directories live under the strata store's
//! root, beside `layers/`, where strata's GC (which only walks `blobs/` and `layers/`)
//! never removes them.
//!
//! A snapshot without parents is a plain bind mount of its `fs` directory, as containerd's
//! own snapshotters do for a base layer (strata-fs needs at least one lower).
//!
//! Lazy layers ([`lazy`]): a Prepare carrying stargz-snapshotter's remote labels commits
//! the target layer from its eStargz TOC (an index in `snapshots/<id>/lazy`, the data left
//! in the registry) and answers ALREADY_EXISTS; unions over such layers are served by this
//! program's `serve-union`. Walk filters ([`filter`]) are what containerd then uses to find
//! the target.
//!
//! Errors carry the gRPC codes containerd's errdefs expect (see [`Error::code`]).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use strata_image::store::fsutil;
use strata_image::store::lock::Lock;

pub mod filter;
pub mod lazy;
pub mod mounter;
pub mod service;

use mounter::{Lower, Mounter, StrataFs, Union};

/// What went wrong, one variant per refusal containerd distinguishes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("snapshot {0:?} does not exist")]
    NotFound(String),
    #[error("snapshot {0:?} already exists")]
    AlreadyExists(String),
    #[error("parent {parent:?} of snapshot {key:?} does not exist")]
    ParentNotFound { key: String, parent: String },
    #[error("parent {0:?} is not a committed snapshot")]
    ParentNotCommitted(String),
    #[error("snapshot {0:?} is not active: only active snapshots can be committed")]
    NotActive(String),
    #[error("snapshot {0:?} is committed: mounts exist for active snapshots and views only")]
    NoMounts(String),
    #[error("snapshot {0:?} has children: remove them first")]
    HasChildren(String),
    #[error("snapshot field {0:?} cannot be updated: only labels can")]
    Immutable(String),
    #[error("a snapshot key must not be empty")]
    EmptyKey,
    #[error("bad walk filter: {0}")]
    Filters(String),
    #[error("root {0:?} cannot be a snapshotter root: its path holds ',' or ':', which mount options cannot carry")]
    BadRoot(PathBuf),
    #[error("lazy layer: {0}")]
    Lazy(String),
    #[error("mounting strata-fs at {at:?}: {message}")]
    Mount { at: PathBuf, message: String },
    #[error("unmounting {at:?}: {source}")]
    Unmount {
        at: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("another strata-snapshotter serves {0:?}")]
    Busy(PathBuf),
    #[error("{step} {path:?}: {source}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("metadata {path:?}: {source}")]
    Metadata {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Store(#[from] strata_image::Error),
}

/// The gRPC status codes containerd's `errdefs.FromGRPC` maps to its error kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    Unavailable,
    Internal,
}

impl Error {
    /// The code containerd expects for this error (as its own snapshotters' storage answers).
    pub fn code(&self) -> Code {
        match self {
            Error::NotFound(_) | Error::ParentNotFound { .. } => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::NotActive(_) | Error::NoMounts(_) | Error::HasChildren(_) => {
                Code::FailedPrecondition
            }
            Error::ParentNotCommitted(_)
            | Error::Immutable(_)
            | Error::EmptyKey
            | Error::Filters(_)
            | Error::BadRoot(_) => Code::InvalidArgument,
            Error::Busy(_) => Code::Unavailable,
            Error::Io { .. }
            | Error::Metadata { .. }
            | Error::Store(_)
            | Error::Mount { .. }
            | Error::Lazy(_)
            | Error::Unmount { .. } => Code::Internal,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(step: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { step, path, source }
}

/// A snapshot's kind, as the snapshots API numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    View,
    Active,
    Committed,
}

/// One snapshot as the table keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// Names its directory, `snapshots/<id>`.
    pub id: u64,
    pub kind: Kind,
    /// Empty: no parent.
    pub parent: String,
    pub labels: BTreeMap<String, String>,
    pub created: SystemTime,
    pub updated: SystemTime,
    /// A committed snapshot's usage, measured once at commit (it no longer changes).
    #[serde(default)]
    pub usage: Option<Usage>,
    /// A lazy layer's origin: its index is in `lazy/`, its data in the registry.
    #[serde(default)]
    pub remote: Option<lazy::Remote>,
}

/// Disk use: bytes allocated and inodes (hard links counted once), as containerd's
/// `fs.DiskUsage`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub size: i64,
    pub inodes: i64,
}

/// One mount as the API returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// The table on disk: every key with its record, and the next directory id.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Table {
    next_id: u64,
    snapshots: BTreeMap<String, Record>,
}

/// The snapshotter's state: the table (one lock; every change is written through before the
/// call returns) and the directories under `<root>/snapshotter`.
pub struct Snapshots {
    dir: PathBuf,
    table: Mutex<Table>,
    mounter: Box<dyn Mounter>,
    _lock: Lock,
}

/// How a label update names its fields (`labels` or `labels.KEY`).
const LABELS: &str = "labels";

impl Snapshots {
    /// Opens (creating) the snapshotter's state under the strata store root `root`, with
    /// unions served by `strata-fs` ([`StrataFs::locate`]). One snapshotter per root: a
    /// second one is refused.
    pub fn open(root: &Path) -> Result<Snapshots> {
        Snapshots::open_with(root, Box::new(StrataFs::locate(lazy::cache_dir(root))))
    }

    /// [`Snapshots::open`] with the unions mounted by `mounter`.
    pub fn open_with(root: &Path, mounter: Box<dyn Mounter>) -> Result<Snapshots> {
        let text = root.to_string_lossy();
        if text.contains(',') || text.contains(':') {
            return Err(Error::BadRoot(root.to_path_buf()));
        }
        let dir = root.join("snapshotter");
        fs::create_dir_all(dir.join("snapshots")).map_err(io_err("creating", &dir))?;
        let lock = Lock::try_exclusive(&dir.join("lock"))?.ok_or(Error::Busy(dir.clone()))?;
        let meta = dir.join("metadata.json");
        let table = match fs::read(&meta) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| Error::Metadata {
                path: meta.clone(),
                source,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Table::default(),
            Err(e) => return Err(io_err("reading", &meta)(e)),
        };
        Ok(Snapshots {
            dir,
            table: Mutex::new(table),
            mounter,
            _lock: lock,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic mid-call left the table as it was written last: go on with it.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, table: &Table) -> Result<()> {
        let meta = self.dir.join("metadata.json");
        let bytes = serde_json::to_vec_pretty(table).map_err(|source| Error::Metadata {
            path: meta.clone(),
            source,
        })?;
        fsutil::atomic_write(&self.dir, &meta, &bytes)?;
        Ok(())
    }

    pub(crate) fn snapshot_dir(&self, id: u64) -> PathBuf {
        self.dir.join("snapshots").join(id.to_string())
    }

    /// `snapshots/<id>/lazy`: a lazy layer's index.
    fn lazy_dir(&self, id: u64) -> PathBuf {
        self.snapshot_dir(id).join("lazy")
    }

    /// `snapshots/<id>/fs`: an active snapshot's upper, a committed one's layer.
    pub fn fs_dir(&self, id: u64) -> PathBuf {
        self.snapshot_dir(id).join("fs")
    }

    /// A new active snapshot (`Kind::Active`) or read-only view (`Kind::View`) over `parent`.
    pub fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>> {
        if key.is_empty() {
            return Err(Error::EmptyKey);
        }
        if kind == Kind::Active {
            if let Some(req) = lazy::Request::from_labels(&labels) {
                let parent_ok = parent.is_empty()
                    || self
                        .lock()
                        .snapshots
                        .get(parent)
                        .is_some_and(|p| p.kind == Kind::Committed);
                if parent_ok {
                    match self.create_lazy(&req, parent, &labels) {
                        Ok(()) => return Err(Error::AlreadyExists(req.target)),
                        // containerd downloads it then, as it would without us.
                        Err(e) => log::warn!("layer {} stays eager: {e}", req.digest),
                    }
                }
            }
        }
        let mut table = self.lock();
        if table.snapshots.contains_key(key) {
            return Err(Error::AlreadyExists(key.to_string()));
        }
        if !parent.is_empty() {
            match table.snapshots.get(parent) {
                None => {
                    return Err(Error::ParentNotFound {
                        key: key.to_string(),
                        parent: parent.to_string(),
                    })
                }
                Some(p) if p.kind != Kind::Committed => {
                    return Err(Error::ParentNotCommitted(parent.to_string()))
                }
                Some(_) => {}
            }
        }
        table.next_id += 1;
        let id = table.next_id;
        let dir = self.snapshot_dir(id);
        // A directory left by a crash between mkdir and the table write is stale.
        let _ = fs::remove_dir_all(&dir);
        for sub in ["fs", "work", "mnt"] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).map_err(io_err("creating", &d))?;
        }
        let now = SystemTime::now();
        table.snapshots.insert(
            key.to_string(),
            Record {
                id,
                kind,
                parent: parent.to_string(),
                labels,
                created: now,
                updated: now,
                usage: None,
                remote: None,
            },
        );
        let mounts = self.save(&table).and_then(|()| self.mounts_of(&table, key));
        if mounts.is_err() {
            table.snapshots.remove(key);
            let _ = self.save(&table);
            let _ = self.mounter.unmount(&dir.join("mnt"));
            let _ = fs::remove_dir_all(&dir);
        }
        mounts
    }

    /// Builds the lazy layer `req` asks for and commits it as `req.target` over `parent`.
    /// The registry is read without the table's lock (layers are prepared in parallel, and
    /// running containers' Mounts must not wait on the network); the lock guards the id
    /// taken before and the insert after.
    fn create_lazy(
        &self,
        req: &lazy::Request,
        parent: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<()> {
        let id = {
            let mut table = self.lock();
            if table.snapshots.contains_key(&req.target) {
                return Ok(());
            }
            table.next_id += 1;
            // Written now so that no later snapshot takes this id after a crash.
            self.save(&table)?;
            table.next_id
        };
        let dir = self.snapshot_dir(id);
        let _ = fs::remove_dir_all(&dir);
        let built = (|| {
            fs::create_dir_all(self.fs_dir(id)).map_err(io_err("creating", &dir))?;
            lazy::build(req, &self.lazy_dir(id)).map_err(|e| Error::Lazy(e.to_string()))
        })();
        let remote = match built {
            Ok(r) => r,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let mut table = self.lock();
        // Made meanwhile by another Prepare of the same layer, or its parent removed.
        let parent_gone = !parent.is_empty() && !table.snapshots.contains_key(parent);
        if table.snapshots.contains_key(&req.target) || parent_gone {
            let _ = fs::remove_dir_all(&dir);
            return match parent_gone {
                true => Err(Error::ParentNotFound {
                    key: req.target.clone(),
                    parent: parent.to_string(),
                }),
                false => Ok(()),
            };
        }
        let now = SystemTime::now();
        table.snapshots.insert(
            req.target.clone(),
            Record {
                id,
                kind: Kind::Committed,
                parent: parent.to_string(),
                labels: labels.clone(),
                created: now,
                updated: now,
                usage: Some(Usage::default()),
                remote: Some(remote),
            },
        );
        if let Err(e) = self.save(&table) {
            table.snapshots.remove(&req.target);
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        log::info!("layer {} is lazy, as {}", req.digest, req.target);
        Ok(())
    }

    /// The mounts of an active snapshot or view.
    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let table = self.lock();
        let rec = table
            .snapshots
            .get(key)
            .ok_or_else(|| Error::NotFound(key.to_string()))?;
        if rec.kind == Kind::Committed {
            return Err(Error::NoMounts(key.to_string()));
        }
        self.mounts_of(&table, key)
    }

    /// The layers of `key`'s ancestors, nearest first.
    fn lowers(&self, table: &Table, key: &str) -> Vec<Lower> {
        let mut out = Vec::new();
        let mut next = table.snapshots.get(key).map(|r| r.parent.as_str());
        while let Some(p) = next.filter(|p| !p.is_empty()) {
            let Some(rec) = table.snapshots.get(p) else {
                break;
            };
            out.push(match &rec.remote {
                Some(remote) => Lower::Lazy(self.lazy_dir(rec.id), remote.clone()),
                None => Lower::Dir(self.fs_dir(rec.id)),
            });
            next = Some(rec.parent.as_str());
        }
        out
    }

    /// The union a snapshot with parents is (`None` for one without).
    fn union_of(&self, table: &Table, key: &str) -> Option<Union> {
        let rec = &table.snapshots[key];
        let lowers = self.lowers(table, key);
        if lowers.is_empty() {
            return None;
        }
        let upper = (rec.kind == Kind::Active)
            .then(|| (self.fs_dir(rec.id), self.snapshot_dir(rec.id).join("work")));
        Some(Union { lowers, upper })
    }

    /// The snapshot's union mount point (mounted if it is not, or no longer, live) or, for
    /// one without parents, its `fs` directory, as a bind mount.
    fn mounts_of(&self, table: &Table, key: &str) -> Result<Vec<Mount>> {
        let rec = &table.snapshots[key];
        let rw = rec.kind == Kind::Active;
        let source = match self.union_of(table, key) {
            None => self.fs_dir(rec.id),
            Some(union) => {
                let mnt = self.snapshot_dir(rec.id).join("mnt");
                if !self.mounter.is_mounted(&mnt) {
                    // A dead server's mount may still be there: take it away first.
                    let _ = self.mounter.unmount(&mnt);
                    self.mounter.mount(&union, &mnt)?;
                }
                mnt
            }
        };
        Ok(vec![Mount {
            kind: "bind".into(),
            source: source.display().to_string(),
            options: vec!["rbind".into(), if rw { "rw" } else { "ro" }.into()],
        }])
    }

    /// Commits active snapshot `key` as `name`: its upper becomes a layer, as it is.
    pub fn commit(&self, name: &str, key: &str, labels: BTreeMap<String, String>) -> Result<()> {
        if name.is_empty() {
            return Err(Error::EmptyKey);
        }
        let mut table = self.lock();
        let rec = table
            .snapshots
            .get(key)
            .ok_or_else(|| Error::NotFound(key.to_string()))?;
        if rec.kind != Kind::Active {
            return Err(Error::NotActive(key.to_string()));
        }
        if table.snapshots.contains_key(name) {
            return Err(Error::AlreadyExists(name.to_string()));
        }
        // The layer is final: nothing writes into the upper any more.
        self.mounter
            .unmount(&self.snapshot_dir(rec.id).join("mnt"))?;
        let usage = disk_usage(&self.fs_dir(rec.id))?;
        let mut rec = table.snapshots.remove(key).expect("looked up above");
        let old = rec.clone();
        rec.kind = Kind::Committed;
        rec.labels = labels;
        rec.updated = SystemTime::now();
        rec.usage = Some(usage);
        let id = rec.id;
        table.snapshots.insert(name.to_string(), rec);
        if let Err(e) = self.save(&table) {
            table.snapshots.remove(name);
            table.snapshots.insert(key.to_string(), old);
            return Err(e);
        }
        // The work directory and mount point only mattered to the union that wrote the upper.
        let _ = fs::remove_dir_all(self.snapshot_dir(id).join("work"));
        let _ = fs::remove_dir(self.snapshot_dir(id).join("mnt"));
        Ok(())
    }

    /// Removes `key` and its directory; a snapshot with children stays.
    pub fn remove(&self, key: &str) -> Result<()> {
        let mut table = self.lock();
        let id = table
            .snapshots
            .get(key)
            .ok_or_else(|| Error::NotFound(key.to_string()))?
            .id;
        if table.snapshots.values().any(|r| r.parent == key) {
            return Err(Error::HasChildren(key.to_string()));
        }
        let dir = self.snapshot_dir(id);
        self.mounter.unmount(&dir.join("mnt"))?;
        let rec = table.snapshots.remove(key).expect("looked up above");
        if let Err(e) = self.save(&table) {
            table.snapshots.insert(key.to_string(), rec);
            return Err(e);
        }
        // After the table: a crash here leaves a directory nobody names, which cleanup
        // removes.
        fs::remove_dir_all(&dir)
            .or_else(ignore_missing)
            .map_err(io_err("removing", &dir))
    }

    /// The record of `key`.
    pub fn stat(&self, key: &str) -> Result<Record> {
        self.lock()
            .snapshots
            .get(key)
            .cloned()
            .ok_or_else(|| Error::NotFound(key.to_string()))
    }

    /// Updates `key`'s labels: `fields` empty or `labels` replaces them all, `labels.K`
    /// sets (or, absent from `labels`, deletes) one. Anything else is immutable.
    pub fn update_labels(
        &self,
        key: &str,
        labels: BTreeMap<String, String>,
        fields: &[String],
    ) -> Result<Record> {
        let mut table = self.lock();
        let rec = table
            .snapshots
            .get(key)
            .ok_or_else(|| Error::NotFound(key.to_string()))?;
        let mut new = rec.labels.clone();
        if fields.is_empty() {
            new = labels;
        } else {
            for f in fields {
                if f == LABELS {
                    new = labels.clone();
                } else if let Some(k) = f.strip_prefix("labels.") {
                    match labels.get(k) {
                        Some(v) => new.insert(k.to_string(), v.clone()),
                        None => new.remove(k),
                    };
                } else {
                    return Err(Error::Immutable(f.clone()));
                }
            }
        }
        let rec = table.snapshots.get_mut(key).expect("looked up above");
        let old = std::mem::replace(&mut rec.labels, new);
        let old_updated = std::mem::replace(&mut rec.updated, SystemTime::now());
        let out = rec.clone();
        if let Err(e) = self.save(&table) {
            let rec = table.snapshots.get_mut(key).expect("looked up above");
            rec.labels = old;
            rec.updated = old_updated;
            return Err(e);
        }
        Ok(out)
    }

    /// What `key` uses on disk: a committed snapshot's measure from its commit, an active
    /// one's upper now, nothing for a view (it writes nothing).
    pub fn usage(&self, key: &str) -> Result<Usage> {
        let (kind, id, usage) = {
            let table = self.lock();
            let rec = table
                .snapshots
                .get(key)
                .ok_or_else(|| Error::NotFound(key.to_string()))?;
            (rec.kind, rec.id, rec.usage)
        };
        match (kind, usage) {
            (Kind::Committed, Some(u)) => Ok(u),
            (Kind::View, _) => Ok(Usage::default()),
            _ => disk_usage(&self.fs_dir(id)),
        }
    }

    /// Every snapshot `filters` (containerd's syntax, see [`filter`]) let through, by key.
    pub fn list(&self, filters: &[String]) -> Result<Vec<(String, Record)>> {
        let filters = filter::Filters::parse(filters).map_err(Error::Filters)?;
        Ok(self
            .lock()
            .snapshots
            .iter()
            .filter(|(k, r)| filters.matches(k, r))
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect())
    }

    /// Removes directories no snapshot names (left by a crash or by an interrupted remove);
    /// returns how many.
    pub fn cleanup(&self) -> Result<usize> {
        let table = self.lock();
        let known: std::collections::BTreeSet<String> =
            table.snapshots.values().map(|r| r.id.to_string()).collect();
        let dir = self.dir.join("snapshots");
        let mut removed = 0;
        for entry in fs::read_dir(&dir).map_err(io_err("reading", &dir))? {
            let entry = entry.map_err(io_err("reading", &dir))?;
            if known.contains(entry.file_name().to_string_lossy().as_ref()) {
                continue;
            }
            let path = entry.path();
            // Never delete through a live union (it would write whiteouts into the upper).
            self.mounter.unmount(&path.join("mnt"))?;
            fs::remove_dir_all(&path)
                .or_else(ignore_missing)
                .map_err(io_err("removing", &path))?;
            removed += 1;
        }
        Ok(removed)
    }
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// Bytes allocated and inodes under `dir` (itself included), each inode once.
pub fn disk_usage(dir: &Path) -> Result<Usage> {
    let mut seen = std::collections::HashSet::new();
    let mut usage = Usage::default();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        let md = fs::symlink_metadata(&path).map_err(io_err("measuring", &path))?;
        if !seen.insert((md.dev(), md.ino())) {
            continue;
        }
        usage.inodes += 1;
        usage.size += (md.blocks() * 512) as i64;
        if md.is_dir() {
            for entry in fs::read_dir(&path).map_err(io_err("reading", &path))? {
                todo.push(entry.map_err(io_err("reading", &path))?.path());
            }
        }
    }
    Ok(usage)
}

#[cfg(test)]
mod tests;
