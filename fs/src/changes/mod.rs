//! What an upper changed over its lowers, and the OCI layer tar that carries the change.
//!
//! [`changes`] walks the upper the way the union resolves it (`union/`): each upper
//! directory is merged with the lower directories the union would merge into it (its own
//! path's, a redirect's, or none when opaque), so the result is the difference between the
//! merged view and the lowers alone:
//! - an upper entry is *added* where the lowers have nothing at its path, else *changed*;
//! - a whiteout (0/0 device, or rootless `.wh.NAME`) that hides a lower name is *deleted*;
//! - a directory whose lower content is not its own path's any more (opaque, or renamed
//!   here with a redirect) is *changed* and *opaque* when the lowers had an entry there, and
//!   everything it shows is *added*: a renamed lower directory's children come from the
//!   lower the redirect names, as kernel overlayfs's `redirect_dir` shows them;
//! - a metadata-only copy-up (chmod of a lower file) is *changed* and keeps its data in the
//!   lower ([`Source::Upper`] names it);
//! - every name of a file has the union's inode number, so hard links stay one group; lower
//!   names of a copied-up hard-linked file (the union serves them from `WORK/index`) are
//!   *changed* too when the copy is in the upper or differs from the lower, and every merged
//!   name of a lower inode the result holds is listed.
//!
//! Lower layers are read through [`Layer::lookup`] and [`Layer::read_dir`] (their whiteouts
//! and opaque markers decoded there), the upper through [`crate::upper::read_entry`].
//! [`ChangeSet::write_tar`] (`writer.rs`) turns the list into an OCI layer: `.wh.NAME` for a
//! deletion (named by [`crate::upper::whiteout_file_name`], the rootless upper's encoder;
//! [`crate::layer::oci_whiteout_target`] and the index builder decode it), `.wh..wh..opq`
//! for an opaque directory. [`export_tar`] (`export.rs`) writes a union's whole merged view
//! with the same entry encoding.

mod export;
mod writer;

#[cfg(test)]
mod tests;

pub use export::export_tar;
pub use writer::TarOptions;

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::attr::{Attr, FileKind};
use crate::errno::Errno;
use crate::host;
use crate::inode::stable_ino;
use crate::layer::{Layer, LayerDirEntry, LayerPath, Lookup};
use crate::upper::{self, UpperRecord};

/// How a path changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeKind {
    Added,
    Changed,
    Deleted,
}

impl ChangeKind {
    /// docker's letter.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Changed => 'C',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// A lower entry: the layer (index into the lowers, top first) and its path there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LowerEntry {
    pub layer: usize,
    pub path: LayerPath,
}

/// Where a changed entry's metadata and contents are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The upper entry at the change's path. `data`: a metadata-only copy-up's contents,
    /// still in this lower file.
    Upper { data: Option<LowerEntry> },
    /// `WORK/index/NAME`: a lower name of a hard-linked file copied up under another name.
    Index(OsString),
    /// A lower entry shown at a new path (inside a renamed directory), or a lower name of a
    /// hard-link group the change set holds.
    Lower(LowerEntry),
}

/// One changed path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Inside the root, without a leading `/`.
    pub path: LayerPath,
    pub kind: ChangeKind,
    /// A directory that hides what the lowers hold below it.
    pub opaque: bool,
    /// `None` for a deletion.
    pub source: Option<Source>,
    /// The union's inode number of a non-directory: names sharing one are hard links.
    pub ino: Option<u64>,
}

impl Change {
    /// The path as docker prints it: `/etc/passwd`.
    pub fn absolute(&self) -> Vec<u8> {
        let mut v = b"/".to_vec();
        v.extend_from_slice(self.path.as_bytes());
        v
    }
}

/// Why the changes could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ChangesError {
    #[error("opening the upper directory {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading upper entry /{path}: {source}")]
    Upper {
        path: String,
        #[source]
        source: Errno,
    },
    #[error("reading /{path} in lower layer {layer}: {source}")]
    Lower {
        layer: usize,
        path: String,
        #[source]
        source: Errno,
    },
    #[error("reading /{path} in the merged view: {source}")]
    Merged {
        path: String,
        #[source]
        source: Errno,
    },
    #[error("writing /{path} to the layer tar: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("/{path}: xattr name {name:?} is not UTF-8 (PAX records need UTF-8 keys)")]
    XattrName { path: String, name: String },
}

type Result<T> = std::result::Result<T, ChangesError>;

fn lossy(p: &LayerPath) -> String {
    String::from_utf8_lossy(p.as_bytes()).into_owned()
}

/// An upper over its lowers and what changed in it.
pub struct ChangeSet {
    upper: OwnedFd,
    index: Option<OwnedFd>,
    lowers: Vec<Arc<dyn Layer>>,
    /// Sorted by path.
    pub changes: Vec<Change>,
}

impl std::fmt::Debug for ChangeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeSet")
            .field("changes", &self.changes.len())
            .finish()
    }
}

/// The changes of `upper` over `lowers` (top first). `work` is the mount's work directory,
/// whose `index/` holds copied-up hard-linked files; `None` when there is none.
pub fn changes(upper: &Path, work: Option<&Path>, lowers: &[Arc<dyn Layer>]) -> Result<ChangeSet> {
    let open = |p: &Path| {
        rustix::fs::open(
            p,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| ChangesError::Open {
            path: p.to_path_buf(),
            source: e.into(),
        })
    };
    let upper_fd = open(upper)?;
    // Strata's index, or where a strata before it kept it (moved when the upper is next
    // mounted; the kernel's own entries there are named by file handles, not inode numbers).
    let index_dir = work.and_then(|w| {
        [crate::upper::INDEX_DIR, "index"]
            .into_iter()
            .map(|d| w.join(d))
            .find(|p| p.is_dir())
    });
    let index = match &index_dir {
        Some(p) => Some(open(p)?),
        None => None,
    };
    let mut indexed = HashSet::new();
    if let Some(fd) = &index {
        let entries = host::read_dir(fd.as_fd()).map_err(|source| ChangesError::Upper {
            path: "(work index)".into(),
            source,
        })?;
        for e in entries {
            if let Some(key) = std::str::from_utf8(e.name.as_bytes())
                .ok()
                .filter(|s| s.len() <= 16)
                .and_then(|s| u64::from_str_radix(s, 16).ok())
            {
                indexed.insert(key);
            }
        }
    }
    let mut w = Walker {
        lowers,
        index: index.as_ref().map(|fd| fd.as_fd()),
        indexed,
        linked: HashSet::new(),
        stale: HashSet::new(),
        scan: false,
        out: Vec::new(),
    };
    let root_stack: Vec<LowerEntry> = (0..lowers.len())
        .map(|layer| LowerEntry {
            layer,
            path: LayerPath::root(),
        })
        .collect();
    w.dir(
        Some(upper_fd.as_fd()),
        &LayerPath::root(),
        &root_stack,
        true,
    )?;
    // Lower inodes with several names that the change set holds: every merged name of
    // each must go with them, or the layer would split the group. Another walk finds the
    // names the first passed over as unchanged, and index copies that changed with no
    // upper name left (written, then that name removed); those need one more.
    if !w.linked.is_empty() || !w.indexed.is_empty() {
        w.scan = true;
        loop {
            w.out.clear();
            w.dir(
                Some(upper_fd.as_fd()),
                &LayerPath::root(),
                &root_stack,
                true,
            )?;
            if w.stale.is_empty() {
                break;
            }
            let stale = std::mem::take(&mut w.stale);
            w.linked.extend(stale);
        }
    }
    let mut out = w.out;
    out.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    out.dedup_by(|a, b| a.path == b.path);
    Ok(ChangeSet {
        upper: upper_fd,
        index,
        lowers: lowers.to_vec(),
        changes: out,
    })
}

/// A name looked up in a stack of lower directories (as `Union::lower_lookup`).
enum Hit {
    Missing,
    Found {
        attr: Attr,
        top: LowerEntry,
        /// For a directory: the lower directories merged into it, top first.
        dirs: Vec<LowerEntry>,
    },
}

struct Walker<'a> {
    lowers: &'a [Arc<dyn Layer>],
    /// `WORK/index`.
    index: Option<BorrowedFd<'a>>,
    /// Union inode numbers of the files in `WORK/index`.
    indexed: HashSet<u64>,
    /// Union inode numbers of lower files with several names that changes hold.
    linked: HashSet<u64>,
    /// Indexed files not in `linked` whose index copy differs from the lower file.
    stale: HashSet<u64>,
    /// The second walk: lower-only directories are entered to find names of `linked`.
    scan: bool,
    out: Vec<Change>,
}

impl Walker<'_> {
    fn lower_err(&self, layer: usize, path: &LayerPath) -> impl FnOnce(Errno) -> ChangesError {
        let path = lossy(path);
        move |source| ChangesError::Lower {
            layer,
            path,
            source,
        }
    }

    fn lookup(&self, stack: &[LowerEntry], name: &OsStr) -> Result<Hit> {
        let mut top: Option<(Attr, LowerEntry)> = None;
        let mut dirs = Vec::new();
        for r in stack {
            let found = self.lowers[r.layer]
                .lookup(&r.path, name)
                .map_err(self.lower_err(r.layer, &r.path.join(name)))?;
            match found {
                Lookup::Missing => continue,
                Lookup::Whiteout => break,
                Lookup::Found { attr, opaque } => {
                    let here = LowerEntry {
                        layer: r.layer,
                        path: r.path.join(name),
                    };
                    let is_dir = attr.kind == FileKind::Directory;
                    match &top {
                        None => top = Some((attr, here.clone())),
                        Some(_) if !is_dir => break,
                        Some(_) => {}
                    }
                    if !is_dir {
                        break;
                    }
                    dirs.push(here);
                    if opaque {
                        break;
                    }
                }
            }
        }
        Ok(match top {
            Some((attr, top)) => Hit::Found { attr, top, dirs },
            None => Hit::Missing,
        })
    }

    /// The lower directories a redirect leads to: an absolute lower path, or (as the
    /// kernel writes for a rename inside one directory) a name in the parent's lowers.
    fn redirect(&self, value: &[u8], parent: &[LowerEntry]) -> Result<Vec<LowerEntry>> {
        let (mut stack, path) = match value.first() {
            Some(b'/') => (
                (0..self.lowers.len())
                    .map(|layer| LowerEntry {
                        layer,
                        path: LayerPath::root(),
                    })
                    .collect(),
                LayerPath::from_bytes(value),
            ),
            _ => (parent.to_vec(), LayerPath::from_bytes(value)),
        };
        for name in path.components() {
            match self.lookup(&stack, name)? {
                Hit::Found { attr, dirs, .. } if attr.kind == FileKind::Directory => stack = dirs,
                _ => return Ok(Vec::new()),
            }
        }
        Ok(stack)
    }

    /// The names a stack of lower directories shows, without whiteouts, sorted.
    fn lower_names(&self, stack: &[LowerEntry]) -> Result<Vec<OsString>> {
        let mut seen: BTreeMap<OsString, ()> = BTreeMap::new();
        let mut hidden: HashSet<OsString> = HashSet::new();
        for r in stack {
            let entries = self.lowers[r.layer]
                .read_dir(&r.path)
                .map_err(self.lower_err(r.layer, &r.path))?;
            let mut whiteouts = Vec::new();
            for e in entries {
                match e {
                    LayerDirEntry::Whiteout(name) => whiteouts.push(name),
                    LayerDirEntry::Entry { name, .. } => {
                        if !hidden.contains(&name) {
                            seen.insert(name, ());
                        }
                    }
                }
            }
            hidden.extend(whiteouts);
        }
        Ok(seen.into_keys().collect())
    }

    fn push(
        &mut self,
        path: LayerPath,
        kind: ChangeKind,
        source: Option<Source>,
        ino: Option<u64>,
    ) {
        self.out.push(Change {
            path,
            kind,
            opaque: false,
            source,
            ino,
        });
    }

    /// Walks the merged directory `at`: its upper directory (if any) over the lower
    /// directories `stack`. `compare`: the lowers alone have this directory with the same
    /// lower content, so entries are weighed against `stack`; otherwise everything the
    /// directory shows is added.
    fn dir(
        &mut self,
        upper: Option<BorrowedFd<'_>>,
        at: &LayerPath,
        stack: &[LowerEntry],
        compare: bool,
    ) -> Result<()> {
        let mut in_upper: HashSet<OsString> = HashSet::new();
        let mut whiteouts: Vec<OsString> = Vec::new();
        let mut entries: Vec<(OsString, upper::UpperEntry)> = Vec::new();
        if let Some(fd) = upper {
            let upper_err = |source| ChangesError::Upper {
                path: lossy(at),
                source,
            };
            let mut names: Vec<OsString> = host::read_dir(fd)
                .map_err(upper_err)?
                .into_iter()
                .map(|e| e.name)
                .collect();
            names.sort();
            for name in names {
                let rec = upper::read_entry(fd, &name).map_err(|source| ChangesError::Upper {
                    path: lossy(&at.join(&name)),
                    source,
                })?;
                match rec {
                    None | Some(UpperRecord::Hidden) => {}
                    Some(UpperRecord::Whiteout(target)) => whiteouts.push(target),
                    Some(UpperRecord::Entry(e)) => {
                        in_upper.insert(name.clone());
                        entries.push((name, e));
                    }
                }
            }
        }
        let hidden: HashSet<&OsStr> = whiteouts.iter().map(OsString::as_os_str).collect();
        if compare {
            for name in &whiteouts {
                if !name.is_empty()
                    && !in_upper.contains(name)
                    && matches!(self.lookup(stack, name)?, Hit::Found { .. })
                {
                    self.push(at.join(name), ChangeKind::Deleted, None, None);
                }
            }
        }
        for (name, e) in &entries {
            self.upper_entry(
                upper.expect("entries come from the upper"),
                at,
                stack,
                compare,
                name,
                e,
            )?;
        }
        // What only the lowers show here: added when the directory is, and looked at for
        // names of hard-link groups the changes hold.
        if compare && !self.scan {
            return Ok(());
        }
        for name in self.lower_names(stack)? {
            if in_upper.contains(&name) || hidden.contains(name.as_os_str()) {
                continue;
            }
            let Hit::Found { attr, top, dirs } = self.lookup(stack, &name)? else {
                continue;
            };
            let path = at.join(&name);
            if attr.kind == FileKind::Directory {
                let before = self.out.len();
                self.dir(None, &path, &dirs, compare)?;
                // A directory that holds a change goes with it: a layer without it would
                // get a default one (0755, root) over the lower's.
                if !compare || self.out.len() > before {
                    let kind = match compare {
                        true => ChangeKind::Changed,
                        false => ChangeKind::Added,
                    };
                    self.push(path, kind, Some(Source::Lower(top)), None);
                }
                continue;
            }
            let ino = stable_ino(top.layer + 1, attr.ino);
            let several = attr.nlink > 1;
            let source = if several && self.indexed.contains(&ino) {
                Source::Index(OsString::from(format!("{ino:x}")))
            } else {
                Source::Lower(top)
            };
            if !compare {
                if several {
                    self.linked.insert(ino);
                }
                self.push(path, ChangeKind::Added, Some(source), Some(ino));
            } else if several && self.linked.contains(&ino) {
                self.push(path, ChangeKind::Changed, Some(source), Some(ino));
            } else if several && self.indexed.contains(&ino) && self.index_differs(ino, &attr)? {
                self.stale.insert(ino);
            }
        }
        Ok(())
    }

    /// Whether the index copy of lower file `ino` changed: a copy-up keeps size, times,
    /// mode and owner, so a write, truncate, chmod, chown or touch shows.
    fn index_differs(&self, ino: u64, lower: &Attr) -> Result<bool> {
        let Some(index) = self.index else {
            return Ok(false);
        };
        let name = OsString::from(format!("{ino:x}"));
        let copy = host::stat_at(index, &name).map_err(|source| ChangesError::Upper {
            path: format!("(work/index/{ino:x})"),
            source,
        })?;
        Ok(copy.is_some_and(|c| {
            (c.size, c.mtime, c.perm, c.uid, c.gid)
                != (lower.size, lower.mtime, lower.perm, lower.uid, lower.gid)
        }))
    }

    fn upper_entry(
        &mut self,
        dir: BorrowedFd<'_>,
        at: &LayerPath,
        stack: &[LowerEntry],
        compare: bool,
        name: &OsStr,
        e: &upper::UpperEntry,
    ) -> Result<()> {
        let path = at.join(name);
        let hit = self.lookup(stack, name)?;
        let existed = compare && matches!(hit, Hit::Found { .. });
        let kind = if existed {
            ChangeKind::Changed
        } else {
            ChangeKind::Added
        };
        if e.attr.kind != FileKind::Directory {
            let data = match &hit {
                Hit::Found { attr, top, .. } if e.metacopy && attr.kind == FileKind::Regular => {
                    Some(top.clone())
                }
                _ => None,
            };
            let ino = e.ino.unwrap_or(stable_ino(0, e.attr.ino));
            // A copy-up of a lower hard link puts every name of the group in the upper,
            // linked to the index copy: a name whose copy is still the lower file's is no
            // change (unless another name of the group changed and takes it along).
            if let Hit::Found { attr, top, .. } = &hit {
                let same_group = e.ino.is_some()
                    && attr.kind == FileKind::Regular
                    && attr.nlink > 1
                    && stable_ino(top.layer + 1, attr.ino) == ino;
                if existed
                    && same_group
                    && !e.metacopy
                    && self.indexed.contains(&ino)
                    && !self.linked.contains(&ino)
                    && !self.index_differs(ino, attr)?
                {
                    return Ok(());
                }
            }
            if e.ino.is_some() && (e.lower_links || self.indexed.contains(&ino)) {
                self.linked.insert(ino);
            }
            self.push(path, kind, Some(Source::Upper { data }), Some(ino));
            return Ok(());
        }
        let natural: &[LowerEntry] = match &hit {
            Hit::Found { attr, dirs, .. } if attr.kind == FileKind::Directory => dirs,
            _ => &[],
        };
        let merged = if e.opaque {
            Vec::new()
        } else if let Some(r) = &e.redirect {
            self.redirect(r, stack)?
        } else {
            natural.to_vec()
        };
        // The lowers' own content stays under this directory only when it is still what
        // the union merges here; otherwise the layer hides it and lists all it shows.
        let same = existed && !natural.is_empty() && merged == natural;
        self.out.push(Change {
            path: path.clone(),
            kind,
            opaque: existed && !same && !natural.is_empty(),
            source: Some(Source::Upper { data: None }),
            ino: None,
        });
        let fd = host::open_dir_path(dir, name).map_err(|source| ChangesError::Upper {
            path: lossy(&path),
            source,
        })?;
        self.dir(Some(fd.as_fd()), &path, &merged, same)
    }
}
