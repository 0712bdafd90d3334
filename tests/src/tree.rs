//! A merged tree as data: every name with its type, mode, owner, size, content hash, link
//! target, device number, xattrs and hard-link group, so two mounts can be compared exactly.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::fixture::{xattr_get, xattr_list};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// `d`, `f`, `l`, `c`, `b`, `p`, `s`.
    pub kind: char,
    /// Permission bits with setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Size of regular files and symlinks (directory sizes differ by filesystem).
    pub size: u64,
    /// Leading hex digits of the content's sha256, for regular files.
    pub content: Option<String>,
    pub target: Option<PathBuf>,
    pub rdev: u64,
    /// xattrs except `security.*` set by the host, sorted by name.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// The first path (in sorted order) sharing this node's inode: hard links agree.
    pub link_group: Option<PathBuf>,
    /// Modification time (seconds), only from [`snapshot_with_times`].
    pub mtime: Option<i64>,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:o} {}:{} size={}",
            self.kind, self.mode, self.uid, self.gid, self.size
        )?;
        if let Some(c) = &self.content {
            write!(f, " sha={c}")?;
        }
        if let Some(t) = &self.target {
            write!(f, " -> {}", t.display())?;
        }
        if self.rdev != 0 {
            write!(f, " rdev={:x}", self.rdev)?;
        }
        for (name, value) in &self.xattrs {
            write!(f, " {name}={}", String::from_utf8_lossy(value))?;
        }
        if let Some(g) = &self.link_group {
            write!(f, " link={}", g.display())?;
        }
        if let Some(t) = self.mtime {
            write!(f, " mtime={t}")?;
        }
        Ok(())
    }
}

/// Paths relative to the root, in sorted order.
pub type Tree = BTreeMap<PathBuf, Node>;

fn kind_of(ft: fs::FileType) -> char {
    if ft.is_dir() {
        'd'
    } else if ft.is_file() {
        'f'
    } else if ft.is_symlink() {
        'l'
    } else if ft.is_char_device() {
        'c'
    } else if ft.is_block_device() {
        'b'
    } else if ft.is_fifo() {
        'p'
    } else {
        's'
    }
}

/// Reads the whole tree below `root` (not `root` itself).
pub fn snapshot(root: &Path) -> Result<Tree> {
    snapshot_inner(root, false)
}

/// [`snapshot`] with modification times (of every entry but symlinks' targets).
pub fn snapshot_with_times(root: &Path) -> Result<Tree> {
    snapshot_inner(root, true)
}

fn snapshot_inner(root: &Path, times: bool) -> Result<Tree> {
    let mut tree = Tree::new();
    let mut inodes: HashMap<u64, Vec<PathBuf>> = HashMap::new();
    walk(root, Path::new(""), &mut tree, &mut inodes, times)?;
    for paths in inodes.values().filter(|p| p.len() > 1) {
        let first = paths.iter().min().cloned();
        for path in paths {
            if let Some(node) = tree.get_mut(path) {
                node.link_group = first.clone();
            }
        }
    }
    Ok(tree)
}

fn walk(
    root: &Path,
    rel: &Path,
    tree: &mut Tree,
    inodes: &mut HashMap<u64, Vec<PathBuf>>,
    times: bool,
) -> Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    for name in names {
        let rel_path = rel.join(&name);
        let path = root.join(&rel_path);
        let meta =
            fs::symlink_metadata(&path).with_context(|| format!("lstat {}", path.display()))?;
        let kind = kind_of(meta.file_type());
        let content = if kind == 'f' {
            let data = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            Some(hex::short(&Sha256::digest(&data)))
        } else {
            None
        };
        let target = if kind == 'l' {
            Some(fs::read_link(&path)?)
        } else {
            None
        };
        let mut xattrs = BTreeMap::new();
        for xname in xattr_list(&path)? {
            if xname.starts_with("security.") {
                continue;
            }
            if let Some(value) = xattr_get(&path, &xname)? {
                xattrs.insert(xname, value);
            }
        }
        if kind != 'd' {
            inodes.entry(meta.ino()).or_default().push(rel_path.clone());
        }
        tree.insert(
            rel_path.clone(),
            Node {
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                size: if kind == 'f' || kind == 'l' {
                    meta.len()
                } else {
                    0
                },
                content,
                target,
                rdev: if kind == 'c' || kind == 'b' {
                    meta.rdev()
                } else {
                    0
                },
                xattrs,
                link_group: None,
                mtime: times.then(|| meta.mtime()),
            },
        );
        if kind == 'd' {
            walk(root, &rel_path, tree, inodes, times)?;
        }
    }
    Ok(())
}

/// A readable list of differences; empty when the trees are equal.
pub fn diff(expected: &Tree, actual: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (path, node) in expected {
        match actual.get(path) {
            None => out.push(format!("- {}  {node}", path.display())),
            Some(other) if other != node => out.push(format!(
                "~ {}\n    expected {node}\n    actual   {other}",
                path.display()
            )),
            Some(_) => {}
        }
    }
    for (path, node) in actual {
        if !expected.contains_key(path) {
            out.push(format!("+ {}  {node}", path.display()));
        }
    }
    out
}

mod hex {
    pub fn short(bytes: &[u8]) -> String {
        bytes[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}
