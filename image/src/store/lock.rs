//! `flock(2)` locks on files in the store. Writers of `index.json` hold the index lock
//! exclusively for the read-modify-write; pulls hold the GC lock shared while their blobs are
//! not yet referenced, and garbage collection takes it exclusively. Per-blob ingest locks make
//! a blob that two processes want be fetched by one of them.
//!
//! Lock order: GC lock, then blob locks, then the index lock.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::{Error, Result};

/// A held lock; released on drop.
pub struct Lock {
    _flock: Flock<File>,
    path: PathBuf,
    remove_on_drop: bool,
}

impl Lock {
    pub fn exclusive(path: &Path) -> Result<Lock> {
        Lock::take(path, FlockArg::LockExclusive, false)
    }

    pub fn shared(path: &Path) -> Result<Lock> {
        Lock::take(path, FlockArg::LockShared, false)
    }

    /// An exclusive lock if nobody holds the file locked now.
    pub fn try_exclusive(path: &Path) -> Result<Option<Lock>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|source| Error::OpenLock {
                path: path.to_path_buf(),
                source,
            })?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(flock) => Ok(Some(Lock {
                _flock: flock,
                path: path.to_path_buf(),
                remove_on_drop: false,
            })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(Error::Lock {
                path: path.to_path_buf(),
                source: e.into(),
            }),
        }
    }

    /// An exclusive lock on a lock file that is deleted when released. Waiters that locked
    /// the deleted file notice (its inode is no longer the path's) and retry.
    pub fn exclusive_ephemeral(path: &Path) -> Result<Lock> {
        Lock::take(path, FlockArg::LockExclusive, true)
    }

    fn take(path: &Path, how: FlockArg, ephemeral: bool) -> Result<Lock> {
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|source| Error::OpenLock {
                    path: path.to_path_buf(),
                    source,
                })?;
            let lock_err = |source| Error::Lock {
                path: path.to_path_buf(),
                source,
            };
            let flock = Flock::lock(file, how).map_err(|(_, e)| lock_err(e.into()))?;
            if ephemeral {
                let held = flock.metadata().map_err(lock_err)?;
                match fs::metadata(path) {
                    Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {}
                    _ => continue,
                }
            }
            return Ok(Lock {
                _flock: flock,
                path: path.to_path_buf(),
                remove_on_drop: ephemeral,
            });
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if self.remove_on_drop {
            // Still locked here: waiters re-check the inode after they get it.
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ephemeral_lock_is_removed_and_retaken() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        {
            let _l = Lock::exclusive_ephemeral(&p).unwrap();
            assert!(p.exists());
        }
        assert!(!p.exists());
        let _a = Lock::shared(&dir.path().join("gc")).unwrap();
        let _b = Lock::shared(&dir.path().join("gc")).unwrap();
    }
}
