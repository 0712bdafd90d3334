//! FUSE passthrough bookkeeping shared by both request loops (fuser's in `fuse.rs`, strata's
//! own in `wire/`): which backing file the kernel was given for each inode.
//!
//! The kernel refuses two different backing files for one inode, so every open of an inode
//! shares one registration, dropped (and so closed with the kernel) at its last release.
//! The first registration the kernel refuses (not root, passthrough not negotiated) turns
//! passthrough off for the mount: the files are then served through the loop.

use std::collections::HashMap;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::union::OpenFile;

/// One backing registration, shared by every open of one inode.
struct Backing<Id> {
    id: Arc<Id>,
    upper: bool,
    opens: usize,
}

/// The registrations by inode, and the inode of each file handle passed through.
type Table<Id> = (HashMap<u64, Backing<Id>>, HashMap<u64, u64>);

/// The backing registrations of a mount; `Id` is the loop's handle on one (its drop closes
/// the registration).
pub struct Backings<Id> {
    enabled: AtomicBool,
    table: Mutex<Table<Id>>,
}

impl<Id> Backings<Id> {
    pub fn new(enabled: bool) -> Backings<Id> {
        Backings {
            enabled: AtomicBool::new(enabled),
            table: Mutex::new((HashMap::new(), HashMap::new())),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Passthrough is off from now on (not negotiated at INIT).
    pub fn disable(&self) {
        self.enabled.store(false, Ordering::Relaxed);
    }

    /// The backing of open file `of` (handle `fh`), registered with `register` unless its
    /// inode has one; `None` means serve its reads and writes in the daemon.
    pub fn open(
        &self,
        fh: u64,
        of: &OpenFile,
        register: impl FnOnce(BorrowedFd<'_>) -> std::io::Result<Id>,
    ) -> Option<Arc<Id>> {
        // Only a whole host file can be passed through (not a byte range of a layer tar).
        let fd = of.host_fd()?;
        if !self.enabled() {
            return None;
        }
        let mut guard = self.table.lock().expect("backing");
        let (by_ino, by_fh) = &mut *guard;
        if let Some(b) = by_ino.get_mut(&of.ino) {
            // A copied-up inode's lower backing cannot serve its writes.
            if b.upper != of.upper {
                return None;
            }
            b.opens += 1;
            by_fh.insert(fh, of.ino);
            return Some(b.id.clone());
        }
        match register(fd) {
            Ok(id) => {
                let id = Arc::new(id);
                by_ino.insert(
                    of.ino,
                    Backing {
                        id: id.clone(),
                        upper: of.upper,
                        opens: 1,
                    },
                );
                by_fh.insert(fh, of.ino);
                Some(id)
            }
            Err(e) => {
                log::info!("FUSE passthrough unavailable ({e}); serving file I/O in the daemon");
                self.disable();
                None
            }
        }
    }

    /// Handle `fh` was released: its inode's backing goes with its last open.
    pub fn release(&self, fh: u64) {
        let mut guard = self.table.lock().expect("backing");
        let (by_ino, by_fh) = &mut *guard;
        if let Some(ino) = by_fh.remove(&fh) {
            if let Some(b) = by_ino.get_mut(&ino) {
                b.opens -= 1;
                if b.opens == 0 {
                    by_ino.remove(&ino);
                }
            }
        }
    }
}
