//! Atomic file writes: a temp file in the store's `tmp/`, fsync, rename, fsync the directory.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh name in `dir`, unique across processes and threads.
pub fn temp_name(dir: &Path, stem: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    dir.join(format!(".{stem}.{}.{n}.{nanos:x}.tmp", std::process::id()))
}

/// Writes `bytes` to `dest` atomically: readers see the old file or the whole new one.
pub fn atomic_write(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    let stem = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = temp_name(tmp_dir, &stem);
    let result = (|| -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|source| Error::Create {
                path: tmp.clone(),
                source,
            })?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .map_err(|source| Error::Write {
                path: tmp.clone(),
                source,
            })?;
        commit_file(&tmp, dest)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Renames a complete, synced temp file or directory into place and syncs the directory.
pub fn commit_file(tmp: &Path, dest: &Path) -> Result<()> {
    fs::rename(tmp, dest).map_err(|source| Error::Rename {
        from: tmp.to_path_buf(),
        to: dest.to_path_buf(),
        source,
    })?;
    if let Some(parent) = dest.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::SyncDir {
            path: dir.to_path_buf(),
            source,
        })
}

/// fsyncs every regular file under `dir` and every directory, so a renamed-in tree survives
/// a crash whole.
pub fn sync_tree(dir: &Path) -> Result<()> {
    let read_err = |source| Error::Read {
        path: dir.to_path_buf(),
        source,
    };
    for entry in fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let ft = entry.file_type().map_err(read_err)?;
        if ft.is_dir() {
            sync_tree(&entry.path())?;
        } else if ft.is_file() {
            File::open(entry.path())
                .and_then(|f| f.sync_all())
                .map_err(|source| Error::Sync {
                    path: entry.path(),
                    source,
                })?;
        }
    }
    sync_dir(dir)
}

/// Size of everything under `path` (files' apparent sizes).
pub fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| tree_size(&e.path())).sum())
        .unwrap_or(0)
}
