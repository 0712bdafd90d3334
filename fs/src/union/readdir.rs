//! Merged directory listings: the upper first, then each lower, without whiteouts and
//! names already seen; a handle keeps its snapshot so offsets stay valid.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::sync::Arc;

use super::{DirEntry, Handle, Union};
use crate::attr::FileKind;
use crate::errno::{Errno, Result};
use crate::inode::{stable_ino, Ino, Node, ROOT};
use crate::layer::LayerDirEntry;
use crate::upper::{Upper, UpperDirEntry};

impl Union {
    /// The merged listing of a directory, upper first, without whiteouts and duplicates.
    pub(super) fn merged_listing(&self, ino: Ino, node: &Node) -> Result<Vec<DirEntry>> {
        if node.kind != FileKind::Directory {
            return Err(Errno::ENOTDIR);
        }
        let mut out = Vec::new();
        let mut seen: HashSet<OsString> = HashSet::new();
        let mut hidden: HashSet<OsString> = HashSet::new();
        let p = &node.place;
        if let (true, Some(upper)) = (p.upper, &self.upper) {
            let dir = self.upper_dir(ino)?;
            for e in Upper::read_dir(dir.as_fd(), ino == ROOT)? {
                match e {
                    UpperDirEntry::Whiteout(name) => {
                        hidden.insert(name);
                    }
                    UpperDirEntry::Entry {
                        name,
                        host_ino,
                        kind,
                    } => {
                        seen.insert(name.clone());
                        out.push(DirEntry {
                            ino: upper
                                .origin_ino(dir.as_fd(), &name)?
                                .unwrap_or(stable_ino(0, host_ino)),
                            kind,
                            name,
                        });
                    }
                }
            }
        }
        for r in p.lower_dirs.iter() {
            let entries = self.lowers[r.layer].read_dir(&r.path)?;
            let mut layer_whiteouts = Vec::new();
            for e in entries {
                match e {
                    LayerDirEntry::Whiteout(name) => layer_whiteouts.push(name),
                    LayerDirEntry::Entry {
                        name,
                        ino: host_ino,
                        kind,
                    } => {
                        if seen.contains(&name) || hidden.contains(&name) {
                            continue;
                        }
                        seen.insert(name.clone());
                        out.push(DirEntry {
                            ino: stable_ino(r.layer + 1, host_ino),
                            kind,
                            name,
                        });
                    }
                }
            }
            hidden.extend(layer_whiteouts);
        }
        // d_ino must equal st_ino: a live node may answer to its key under another number.
        let table = self.table.lock().expect("table");
        for e in &mut out {
            if let Some(ino) = table.by_key(e.ino) {
                e.ino = ino;
            }
        }
        Ok(out)
    }

    /// FUSE OPENDIR. The listing is taken at the first READDIR, not here: with the kernel's
    /// directory cache (FOPEN_CACHE_DIR) most opens are answered from it and never read.
    pub fn opendir(&self, ino: Ino) -> Result<u64> {
        let _ns = self.ns.read().expect("ns");
        if self.node(ino)?.kind != FileKind::Directory {
            return Err(Errno::ENOTDIR);
        }
        Ok(self.add_handle(Handle::Dir(None)))
    }

    /// FUSE READDIR(PLUS): the handle's snapshot of the merged listing, whose entry at index
    /// `i` has offset `i + 1`. Offsets stay valid for telldir/seekdir however the directory
    /// changes while it is read; offset 0 (a first read, or rewinddir) takes a new snapshot,
    /// as does a first read that continues where the kernel's cache of the listing ends.
    pub fn readdir(&self, fh: u64, ino: Ino, offset: u64) -> Result<Arc<Vec<DirEntry>>> {
        if offset != 0 {
            match self.handles.lock().expect("handles").get(&fh) {
                Some(Handle::Dir(Some(d))) => return Ok(d.clone()),
                Some(Handle::Dir(None)) => {}
                _ => return Err(Errno::EBADF),
            }
        }
        let _ns = self.ns.read().expect("ns");
        let node = self.node(ino)?;
        let mut entries = vec![
            DirEntry {
                ino,
                kind: FileKind::Directory,
                name: ".".into(),
            },
            DirEntry {
                ino: node.parent,
                kind: FileKind::Directory,
                name: "..".into(),
            },
        ];
        entries.extend(self.merged_listing(ino, &node)?);
        let entries = Arc::new(entries);
        match self.handles.lock().expect("handles").get_mut(&fh) {
            Some(Handle::Dir(d)) => *d = Some(entries.clone()),
            _ => return Err(Errno::EBADF),
        }
        Ok(entries)
    }

    pub fn release(&self, fh: u64) {
        self.handles.lock().expect("handles").remove(&fh);
    }
}
