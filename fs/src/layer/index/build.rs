//! Building an index: the tar is parsed once into a tree in memory (applying the rules of
//! the module docs), then written breadth-first in the layout of `format.rs`.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::format::{
    encode_xattrs, EntryRec, Header, InodeRec, Xattr, ENTRY_LEN, FLAG_OPAQUE, FLAG_WHITEOUT,
    HEADER_LEN, INODE_LEN, NO_INODE,
};
use super::tar::{Parser, Source, TarEntry, TarKind};
use super::{IndexError, IndexLimits, IndexSummary, DATA_FILE, INDEX_FILE};
use crate::attr::Timestamp;
use crate::layer::{oci_whiteout_target, OPAQUE_MARKER, WHITEOUT_PREFIX};

/// One file as the archive describes it; shared by the names hard-linked to it.
struct Inode {
    /// `st_mode` with the type bits.
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Timestamp,
    size: u64,
    /// Regular file: offset in `data`; device: `rdev`.
    data: u64,
    link: Vec<u8>,
    xattrs: Vec<Xattr>,
}

enum Kind {
    Dir(BTreeMap<Box<[u8]>, usize>),
    /// Anything but a directory; `symlink` to refuse entries below it.
    Other {
        symlink: bool,
    },
    Whiteout,
}

struct Node {
    kind: Kind,
    inode: usize,
    opaque: bool,
}

struct Tree {
    nodes: Vec<Node>,
    inodes: Vec<Inode>,
}

const ROOT: usize = 0;
const NONE: usize = usize::MAX;

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The components of an archive name after lexical cleaning; `..` past the top is an error.
fn clean(name: &[u8], entry: &[u8]) -> Result<Vec<Vec<u8>>, IndexError> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    for c in name.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() {
                    return Err(IndexError::PathEscape {
                        entry: lossy(entry),
                    });
                }
            }
            c => {
                if c.len() > 255 {
                    return Err(IndexError::BadName {
                        entry: lossy(entry),
                        reason: "a name is longer than 255 bytes",
                    });
                }
                if c.contains(&0) {
                    return Err(IndexError::BadName {
                        entry: lossy(entry),
                        reason: "a name holds a NUL byte",
                    });
                }
                parts.push(c.to_vec());
            }
        }
    }
    Ok(parts)
}

impl Tree {
    fn new() -> Tree {
        Tree {
            nodes: vec![Node {
                kind: Kind::Dir(BTreeMap::new()),
                inode: 0,
                opaque: false,
            }],
            inodes: vec![implicit_dir(Timestamp::default())],
        }
    }

    fn child(&self, dir: usize, name: &[u8]) -> Option<usize> {
        match &self.nodes[dir].kind {
            Kind::Dir(children) => children.get(name).copied(),
            _ => None,
        }
    }

    fn children_mut(&mut self, dir: usize) -> &mut BTreeMap<Box<[u8]>, usize> {
        match &mut self.nodes[dir].kind {
            Kind::Dir(c) => c,
            _ => unreachable!("parent checked to be a directory"),
        }
    }

    fn add_node(&mut self, parent: usize, name: &[u8], node: Node) -> usize {
        let id = self.nodes.len();
        self.nodes.push(node);
        self.children_mut(parent).insert(name.into(), id);
        id
    }

    /// The directory `parts` names, creating missing ones (and replacing whiteouts of this
    /// layer) with `mtime`. Walking through a symlink or a file is an error.
    fn parent_dir(
        &mut self,
        parts: &[Vec<u8>],
        entry: &[u8],
        mtime: Timestamp,
    ) -> Result<usize, IndexError> {
        let mut dir = ROOT;
        for (i, name) in parts.iter().enumerate() {
            let here = || lossy(&parts[..=i].join(&b'/'));
            dir = match self.child(dir, name) {
                Some(n) => match &self.nodes[n].kind {
                    Kind::Dir(_) => n,
                    Kind::Other { symlink: true } => {
                        return Err(IndexError::ThroughSymlink {
                            entry: lossy(entry),
                            symlink: here(),
                        })
                    }
                    Kind::Other { symlink: false } => {
                        return Err(IndexError::ParentNotDirectory {
                            entry: lossy(entry),
                            parent: here(),
                        })
                    }
                    Kind::Whiteout => {
                        let inode = self.push_inode(implicit_dir(mtime));
                        self.nodes[n] = Node {
                            kind: Kind::Dir(BTreeMap::new()),
                            inode,
                            opaque: true,
                        };
                        n
                    }
                },
                None => {
                    let inode = self.push_inode(implicit_dir(mtime));
                    let node = Node {
                        kind: Kind::Dir(BTreeMap::new()),
                        inode,
                        opaque: false,
                    };
                    self.add_node(dir, name, node)
                }
            };
        }
        Ok(dir)
    }

    fn push_inode(&mut self, inode: Inode) -> usize {
        self.inodes.push(inode);
        self.inodes.len() - 1
    }

    /// The node at `parts` without creating anything; `None` when absent or below a
    /// non-directory.
    fn find(&self, parts: &[Vec<u8>]) -> Option<usize> {
        let mut n = ROOT;
        for name in parts {
            n = self.child(n, name)?;
        }
        Some(n)
    }

    fn add(&mut self, e: TarEntry) -> Result<(), IndexError> {
        let parts = clean(&e.path, &e.path)?;
        let Some((name, parents)) = parts.split_last() else {
            // The root itself (`./`): its metadata, if it is a directory.
            if e.kind != TarKind::Directory {
                return Err(IndexError::BadName {
                    entry: lossy(&e.path),
                    reason: "the layer root is not a directory",
                });
            }
            self.inodes[self.nodes[ROOT].inode] = inode_of(&e, 0, 0);
            return Ok(());
        };
        let parent = self.parent_dir(parents, &e.path, e.mtime)?;
        if let Some(hidden) = oci_whiteout_target(OsStr::from_bytes(name)) {
            return self.add_whiteout(parent, name, hidden.as_bytes(), &e);
        }
        let inode = match e.kind {
            TarKind::HardLink => self.link_target(&e)?,
            _ => {
                let data = match e.kind {
                    TarKind::Regular => e.offset,
                    TarKind::Char | TarKind::Block => libc::makedev(e.dev_major, e.dev_minor),
                    _ => 0,
                };
                let size = match e.kind {
                    TarKind::Regular => e.size,
                    TarKind::Symlink => e.link.len() as u64,
                    _ => 0,
                };
                self.push_inode(inode_of(&e, size, data))
            }
        };
        let kind = match e.kind {
            TarKind::Directory => Kind::Dir(BTreeMap::new()),
            TarKind::Symlink => Kind::Other { symlink: true },
            TarKind::HardLink => Kind::Other {
                symlink: self.inodes[inode].mode & libc::S_IFMT == libc::S_IFLNK,
            },
            _ => Kind::Other { symlink: false },
        };
        match self.child(parent, name) {
            None => {
                self.add_node(
                    parent,
                    name,
                    Node {
                        kind,
                        inode,
                        opaque: false,
                    },
                );
            }
            Some(old) => {
                let was_whiteout = matches!(self.nodes[old].kind, Kind::Whiteout);
                match (&self.nodes[old].kind, kind) {
                    // A directory again: new metadata, same children.
                    (Kind::Dir(_), Kind::Dir(_)) => self.nodes[old].inode = inode,
                    (_, kind) => {
                        // A directory that replaces a whiteout of this layer hides the lower
                        // directory of that name: it is opaque.
                        let opaque = was_whiteout && matches!(kind, Kind::Dir(_));
                        self.nodes[old] = Node {
                            kind,
                            inode,
                            opaque,
                        };
                    }
                }
            }
        }
        Ok(())
    }

    fn add_whiteout(
        &mut self,
        parent: usize,
        name: &[u8],
        hidden: &[u8],
        e: &TarEntry,
    ) -> Result<(), IndexError> {
        if name == OPAQUE_MARKER {
            self.nodes[parent].opaque = true;
            return Ok(());
        }
        if hidden.starts_with(WHITEOUT_PREFIX) {
            // Other `.wh..wh.` names are aufs bookkeeping (hard-link dirs): not content.
            return Ok(());
        }
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(IndexError::BadName {
                entry: lossy(&e.path),
                reason: "a whiteout names no file",
            });
        }
        match self.child(parent, hidden) {
            None => {
                self.add_node(
                    parent,
                    hidden,
                    Node {
                        kind: Kind::Whiteout,
                        inode: NONE,
                        opaque: false,
                    },
                );
            }
            // The same layer's own file stays; a directory of this layer now also hides
            // the lower one.
            Some(n) => {
                if matches!(self.nodes[n].kind, Kind::Dir(_)) {
                    self.nodes[n].opaque = true;
                }
            }
        }
        Ok(())
    }

    /// The inode a hard link entry shares.
    fn link_target(&self, e: &TarEntry) -> Result<usize, IndexError> {
        let bad = |reason| IndexError::BadHardLink {
            entry: lossy(&e.path),
            target: lossy(&e.link),
            reason,
        };
        let parts = clean(&e.link, &e.path).map_err(|err| match err {
            IndexError::PathEscape { .. } => bad("the target is outside the layer"),
            other => other,
        })?;
        let n = self
            .find(&parts)
            .ok_or(bad("the target is not an earlier entry of the layer"))?;
        match self.nodes[n].kind {
            Kind::Dir(_) => Err(bad("the target is a directory")),
            Kind::Whiteout => Err(bad("the target is a whiteout")),
            Kind::Other { .. } => Ok(self.nodes[n].inode),
        }
    }
}

fn implicit_dir(mtime: Timestamp) -> Inode {
    Inode {
        mode: libc::S_IFDIR | 0o755,
        uid: 0,
        gid: 0,
        mtime,
        size: 0,
        data: 0,
        link: Vec::new(),
        xattrs: Vec::new(),
    }
}

fn inode_of(e: &TarEntry, size: u64, data: u64) -> Inode {
    let kind = match e.kind {
        TarKind::Regular | TarKind::HardLink => libc::S_IFREG,
        TarKind::Symlink => libc::S_IFLNK,
        TarKind::Char => libc::S_IFCHR,
        TarKind::Block => libc::S_IFBLK,
        TarKind::Directory => libc::S_IFDIR,
        TarKind::Fifo => libc::S_IFIFO,
    };
    let mut xattrs = e.xattrs.clone();
    xattrs.sort();
    Inode {
        mode: kind | e.perm,
        uid: e.uid,
        gid: e.gid,
        mtime: e.mtime,
        size,
        data,
        link: match e.kind {
            TarKind::Symlink => e.link.clone(),
            _ => Vec::new(),
        },
        xattrs,
    }
}

/// Reads the layer tar `tar` to its end, writing `dir/data` (the tar, byte for byte) and
/// `dir/index`. Each is written under a temporary name, synced and renamed, the index last:
/// a directory with an `index` holds a complete layer. `dir` must exist.
pub fn build_index(
    tar: &mut dyn Read,
    dir: &Path,
    limits: &IndexLimits,
) -> Result<IndexSummary, IndexError> {
    let data_tmp = dir.join(format!("{DATA_FILE}.tmp"));
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IndexError::Io { path, source }
    };
    let data_file = File::create(&data_tmp).map_err(io_err(&data_tmp))?;
    let mut out = BufWriter::with_capacity(1 << 20, data_file);
    let mut tree = Tree::new();
    let mut entries = 0u64;
    let tar_bytes = {
        let mut parser = Parser::new(Source::new(tar, &mut out, limits.max_bytes), &data_tmp);
        while let Some(e) = parser.next()? {
            entries += 1;
            if entries > limits.max_entries {
                return Err(IndexError::TooManyEntries {
                    max_entries: limits.max_entries,
                });
            }
            if limits.hides(&e.path) {
                continue;
            }
            tree.add(e)?;
        }
        parser.finish()?;
        parser.src.consumed
    };
    let write_err = |source| IndexError::Write {
        path: data_tmp.clone(),
        source,
    };
    let data_file = out.into_inner().map_err(|e| write_err(e.into_error()))?;
    data_file.sync_all().map_err(write_err)?;
    drop(data_file);
    let data_path = dir.join(DATA_FILE);
    std::fs::rename(&data_tmp, &data_path).map_err(io_err(&data_path))?;
    write_index(&tree, tar_bytes, dir)
}

/// Writes `dir/index` for entries that come from elsewhere than a tar stream (an eStargz
/// table of contents): each regular file's `offset` is where its bytes are in the data
/// source the layer will be opened with, `data_len` that source's length. The same rules
/// apply as to a tar; no `data` file is written.
pub fn build_index_from_entries(
    entries: impl IntoIterator<Item = TarEntry>,
    data_len: u64,
    dir: &Path,
    limits: &IndexLimits,
) -> Result<IndexSummary, IndexError> {
    let mut tree = Tree::new();
    let mut count = 0u64;
    for e in entries {
        count += 1;
        if count > limits.max_entries {
            return Err(IndexError::TooManyEntries {
                max_entries: limits.max_entries,
            });
        }
        if e.offset.saturating_add(e.size) > limits.max_bytes {
            return Err(IndexError::TooLarge {
                entry: lossy(&e.path),
                max_bytes: limits.max_bytes,
            });
        }
        tree.add(e)?;
    }
    write_index(&tree, data_len, dir)
}

/// Encodes `tree` and writes it to `dir/index` (temporary name, sync, rename).
fn write_index(tree: &Tree, data_len: u64, dir: &Path) -> Result<IndexSummary, IndexError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IndexError::Io { path, source }
    };
    let index = tree.encode(data_len)?;
    let index_tmp = dir.join(format!("{INDEX_FILE}.tmp"));
    let mut f = File::create(&index_tmp).map_err(io_err(&index_tmp))?;
    f.write_all(&index)
        .and_then(|_| f.sync_all())
        .map_err(io_err(&index_tmp))?;
    let index_path = dir.join(INDEX_FILE);
    std::fs::rename(&index_tmp, &index_path).map_err(io_err(&index_path))?;
    Ok(IndexSummary {
        entries: tree.live_names(),
        inodes: index_inodes(&index),
        tar_bytes: data_len,
        index_bytes: index.len() as u64,
    })
}

fn index_inodes(index: &[u8]) -> u64 {
    Header::decode(index).map(|h| h.inodes).unwrap_or(0)
}

impl Tree {
    fn live_names(&self) -> u64 {
        let mut n = 0;
        let mut queue = vec![ROOT];
        while let Some(d) = queue.pop() {
            if let Kind::Dir(c) = &self.nodes[d].kind {
                n += c.len() as u64;
                queue.extend(c.values().copied());
            }
        }
        n
    }

    /// The index bytes: entries breadth-first (each directory's children one sorted run),
    /// inodes numbered in that order of first use.
    fn encode(&self, data_len: u64) -> Result<Vec<u8>, IndexError> {
        let too_big = |what: &str| IndexError::BadIndex {
            path: INDEX_FILE.into(),
            reason: format!("the layer's {what} exceed the index format's 4 GiB"),
        };
        // Breadth-first order of nodes, and each entry's parent position.
        let mut order: Vec<(usize, u32, &[u8])> = vec![(ROOT, 0, &b""[..])];
        let mut queue = VecDeque::from([0usize]);
        let mut first_child = vec![0u32; 1];
        let mut child_count = vec![0u32; 1];
        while let Some(pos) = queue.pop_front() {
            let node = order[pos].0;
            if let Kind::Dir(children) = &self.nodes[node].kind {
                first_child[pos] = order.len() as u32;
                child_count[pos] = children.len() as u32;
                for (name, &child) in children {
                    queue.push_back(order.len());
                    order.push((child, pos as u32, name));
                    first_child.push(0);
                    child_count.push(0);
                }
            }
            if order.len() > u32::MAX as usize {
                return Err(too_big("entries"));
            }
        }
        // Inode numbers in first-use order; link counts from the live names.
        let mut number = vec![NO_INODE; self.inodes.len()];
        let mut used: Vec<usize> = Vec::new();
        let mut nlink: Vec<u32> = Vec::new();
        for &(node, _, _) in &order {
            let n = &self.nodes[node];
            if matches!(n.kind, Kind::Whiteout) {
                continue;
            }
            if number[n.inode] == NO_INODE {
                number[n.inode] = used.len() as u32;
                used.push(n.inode);
                nlink.push(0);
            }
            let num = number[n.inode] as usize;
            nlink[num] += match &n.kind {
                Kind::Dir(children) => {
                    2 + children
                        .values()
                        .filter(|c| matches!(self.nodes[**c].kind, Kind::Dir(_)))
                        .count() as u32
                }
                _ => 1,
            };
        }

        let mut names: Vec<u8> = Vec::new();
        let mut entries: Vec<u8> = Vec::with_capacity(order.len() * ENTRY_LEN);
        for (pos, &(node, parent, name)) in order.iter().enumerate() {
            let n = &self.nodes[node];
            let mut flags = 0;
            if matches!(n.kind, Kind::Whiteout) {
                flags |= FLAG_WHITEOUT;
            }
            if n.opaque {
                flags |= FLAG_OPAQUE;
            }
            let name_off = u32::try_from(names.len()).map_err(|_| too_big("names"))?;
            names.extend_from_slice(name);
            EntryRec {
                name_off,
                name_len: name.len() as u8,
                flags,
                inode: match n.kind {
                    Kind::Whiteout => NO_INODE,
                    _ => number[n.inode],
                },
                first_child: first_child[pos],
                child_count: child_count[pos],
                parent,
            }
            .encode(&mut entries);
        }
        let mut extra: Vec<u8> = Vec::new();
        let mut inodes: Vec<u8> = Vec::with_capacity(used.len() * INODE_LEN);
        for (num, &i) in used.iter().enumerate() {
            let ino = &self.inodes[i];
            let data = if ino.mode & libc::S_IFMT == libc::S_IFLNK {
                let off = extra.len() as u64;
                extra.extend_from_slice(&ino.link);
                off
            } else {
                ino.data
            };
            let (xattrs_off, xattrs_len) = if ino.xattrs.is_empty() {
                (0, 0)
            } else {
                let off = extra.len();
                encode_xattrs(&ino.xattrs, &mut extra);
                let len = u32::try_from(extra.len() - off).map_err(|_| too_big("xattrs"))?;
                (off as u64, len)
            };
            InodeRec {
                mode: ino.mode,
                uid: ino.uid,
                gid: ino.gid,
                nlink: nlink[num],
                mtime_nsec: ino.mtime.nsec,
                xattrs_len,
                size: ino.size,
                data,
                mtime: ino.mtime.sec,
                xattrs_off,
            }
            .encode(&mut inodes);
        }
        let entries_off = HEADER_LEN as u64;
        let inodes_off = entries_off + entries.len() as u64;
        let names_off = inodes_off + inodes.len() as u64;
        let extra_off = names_off + names.len() as u64;
        let header = Header {
            entries: order.len() as u64,
            inodes: used.len() as u64,
            names_len: names.len() as u64,
            extra_len: extra.len() as u64,
            data_len,
            entries_off,
            inodes_off,
            names_off,
            extra_off,
        };
        let mut out = Vec::with_capacity(extra_off as usize + extra.len());
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(&entries);
        out.extend_from_slice(&inodes);
        out.extend_from_slice(&names);
        out.extend_from_slice(&extra);
        Ok(out)
    }
}
