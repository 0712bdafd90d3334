//! The inode table: union inode numbers, lookup counts, generations.
//!
//! A node's number is its `st_ino` too (FUSE uses `attr.ino` as the node id). It is derived
//! from where the file comes from, so it is the same after a remount of the same layers and
//! upper: `(slot + 1) << 48 | host inode`, slot 0 being the upper and slot `i + 1` lower `i`
//! (overlayfs's "xino" idea). A copied-up file keeps its lower number (kept in an xattr).
//! When that number is still held by a node whose file is gone (an unlinked file the kernel
//! still references, whose host inode number was recycled), the new file gets a number from
//! a reserved range instead, so an old node is never revived.

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::Arc;

use crate::attr::FileKind;
use crate::host::SharedFd;

/// A union inode number.
pub type Ino = u64;
/// The root directory's number, fixed by FUSE.
pub const ROOT: Ino = 1;

const SLOT_SHIFT: u32 = 48;
const HOST_MASK: u64 = (1 << SLOT_SHIFT) - 1;
/// Numbers handed out when the stable one is taken by a stale node.
const FALLBACK_BASE: u64 = 0xffff << SLOT_SHIFT;

/// The stable number of host inode `host_ino` in layer slot `slot` (0 = upper).
pub fn stable_ino(slot: usize, host_ino: u64) -> Ino {
    let host = if host_ino > HOST_MASK {
        // Rare (64-bit inode filesystems): fold the high bits in rather than truncate.
        (host_ino ^ (host_ino >> SLOT_SHIFT)) & HOST_MASK
    } else {
        host_ino
    };
    ((slot as u64 + 1) << SLOT_SHIFT) | host
}

pub use crate::layer::stack::LowerRef;

/// Where a node's file lives: the part of the node that lookups refresh.
#[derive(Clone, Debug, Default)]
pub struct Placement {
    /// The file exists in the upper, at the node's (parent, name).
    pub upper: bool,
    /// The upper file carries metadata only; its data is still `origin`'s.
    pub metacopy: bool,
    /// For a non-directory: the lower file it comes from (its data while not copied up).
    pub origin: Option<LowerRef>,
    /// `origin` is known to have one name, so no other name can have copied it up into the
    /// hard-link index: lookups skip probing the index.
    pub single_link: bool,
    /// For a directory: the lower directories merged into it, top first.
    pub lower_dirs: Arc<[LowerRef]>,
    /// The node's last name was removed: its nlink is 0 and names no longer lead to it.
    pub unlinked: bool,
    /// An `O_PATH` handle on the upper inode, kept once its name may no longer lead to it
    /// (unlinked, or replaced by a rename) while the kernel still uses the node.
    pub detached: Option<SharedFd>,
}

/// One union inode.
#[derive(Clone, Debug)]
pub struct Node {
    pub parent: Ino,
    pub name: OsString,
    pub kind: FileKind,
    pub generation: u64,
    pub lookups: u64,
    /// The stable number this node answers to (differs from its number after a collision).
    pub key: Ino,
    /// Whether lookups of `key` lead here (no longer once unlinked or replaced).
    answers: bool,
    /// Nodes whose `parent` this is. A directory stays in the table while one names it,
    /// even once the kernel forgot it: the node of a hard link names the directory of its
    /// last looked-up name, which the kernel need not hold for the link's other names.
    children: u32,
    pub place: Placement,
}

/// All live inodes. One lock guards it (see `Union` for the lock order).
#[derive(Debug, Default)]
pub struct InodeTable {
    nodes: HashMap<Ino, Node>,
    /// Keys answered by a node numbered otherwise (after a collision): rare, so the common
    /// case (number == key) costs no second map entry per node.
    renumbered: HashMap<Ino, Ino>,
    next_generation: u64,
    next_fallback: u64,
    /// Nodes removed since the last [`InodeTable::take_dropped`].
    dropped: Vec<Ino>,
}

impl InodeTable {
    /// A table holding the root directory.
    pub fn new(root: Placement) -> InodeTable {
        let mut t = InodeTable {
            next_generation: 1,
            ..Default::default()
        };
        t.nodes.insert(
            ROOT,
            Node {
                parent: ROOT,
                name: OsString::new(),
                kind: FileKind::Directory,
                generation: 0,
                lookups: 1,
                key: ROOT,
                answers: true,
                children: 0,
                place: root,
            },
        );
        t
    }

    pub fn get(&self, ino: Ino) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    pub fn get_mut(&mut self, ino: Ino) -> Option<&mut Node> {
        self.nodes.get_mut(&ino)
    }

    /// The live node for stable number `key`, if one answers to it.
    pub fn by_key(&self, key: Ino) -> Option<Ino> {
        if let Some(&ino) = self.renumbered.get(&key) {
            return Some(ino);
        }
        match self.nodes.get(&key) {
            Some(n) if n.key == key && n.answers => Some(key),
            _ => None,
        }
    }

    /// Makes `ino` the node lookups of `key` lead to.
    fn answer(&mut self, key: Ino, ino: Ino) {
        if let Some(prev) = self.by_key(key).filter(|&p| p != ino) {
            if let Some(n) = self.nodes.get_mut(&prev) {
                n.answers = false;
            }
        }
        self.renumbered.remove(&key);
        if ino != key {
            self.renumbered.insert(key, ino);
        }
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.answers = true;
        }
    }

    /// Lookups of `key` no longer lead to `ino`.
    fn unanswer(&mut self, key: Ino, ino: Ino) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.answers = false;
        }
        if self.renumbered.get(&key) == Some(&ino) {
            self.renumbered.remove(&key);
        }
    }

    /// Records a lookup of `(parent, name)` that found a file of `kind` with stable number
    /// `key`: reuses the node answering to `key` unless it is stale, counts the lookup, and
    /// returns the node number and generation.
    pub fn intern(
        &mut self,
        parent: Ino,
        name: OsString,
        kind: FileKind,
        key: Ino,
        place: Placement,
        count: bool,
    ) -> (Ino, u64) {
        if let Some(ino) = self.by_key(key) {
            let reuse = self
                .nodes
                .get(&ino)
                .is_some_and(|n| n.kind == kind && !n.place.unlinked);
            if reuse {
                self.set_name(ino, parent, name);
                let node = self.nodes.get_mut(&ino).expect("reused node");
                node.place = place;
                if count {
                    node.lookups += 1;
                }
                return (ino, node.generation);
            }
        }
        let ino = if self.nodes.contains_key(&key) || key >= FALLBACK_BASE {
            self.next_fallback += 1;
            FALLBACK_BASE + self.next_fallback
        } else {
            key
        };
        let generation = self.next_generation;
        self.next_generation += 1;
        self.nodes.insert(
            ino,
            Node {
                parent,
                name,
                kind,
                generation,
                lookups: u64::from(count),
                key,
                answers: false,
                children: 0,
                place,
            },
        );
        if let Some(p) = self.nodes.get_mut(&parent) {
            p.children += 1;
        }
        self.answer(key, ino);
        (ino, generation)
    }

    /// Gives node `ino` the name `name` in directory `parent` (a rename, or a lookup of
    /// another name of a hard link).
    pub fn set_name(&mut self, ino: Ino, parent: Ino, name: OsString) {
        if ino == ROOT {
            return;
        }
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        let old = std::mem::replace(&mut node.parent, parent);
        node.name = name;
        if old != parent {
            if let Some(p) = self.nodes.get_mut(&parent) {
                p.children += 1;
            }
            if let Some(p) = self.nodes.get_mut(&old) {
                p.children = p.children.saturating_sub(1);
            }
            self.remove_if_unused(old);
        }
    }

    /// Removes `ino` when neither the kernel nor a child uses it, then its parent likewise.
    fn remove_if_unused(&mut self, mut ino: Ino) {
        while ino != ROOT {
            let Some(node) = self.nodes.get(&ino) else {
                return;
            };
            if node.lookups > 0 || node.children > 0 {
                return;
            }
            let (key, parent) = (node.key, node.parent);
            self.unanswer(key, ino);
            self.nodes.remove(&ino);
            self.dropped.push(ino);
            if let Some(p) = self.nodes.get_mut(&parent) {
                p.children = p.children.saturating_sub(1);
            }
            ino = parent;
        }
    }

    /// The nodes removed since the last call, for the caches keyed by node.
    pub fn take_dropped(&mut self) -> Vec<Ino> {
        std::mem::take(&mut self.dropped)
    }

    /// Drops `n` lookups of `ino`; removes the node when none are left and no child names
    /// it (and so its parents, see [`InodeTable::take_dropped`]). Returns whether it was
    /// removed.
    pub fn forget(&mut self, ino: Ino, n: u64) -> bool {
        if ino == ROOT {
            return false;
        }
        let Some(node) = self.nodes.get_mut(&ino) else {
            return false;
        };
        node.lookups = node.lookups.saturating_sub(n);
        self.remove_if_unused(ino);
        !self.nodes.contains_key(&ino)
    }

    /// Marks a node whose last name went away: it keeps answering its open descriptors but
    /// no lookup will reach it again.
    pub fn mark_unlinked(&mut self, ino: Ino, detached: Option<SharedFd>) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.place.unlinked = true;
            if detached.is_some() {
                node.place.detached = detached;
            }
            let key = node.key;
            self.unanswer(key, ino);
        }
    }

    /// A node with no name (an `O_TMPFILE` file) got one: lookups of its key lead to it.
    pub fn relink(&mut self, ino: Ino) {
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        node.place.unlinked = false;
        let key = node.key;
        self.answer(key, ino);
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_numbers_separate_layers() {
        assert_ne!(stable_ino(0, 5), stable_ino(1, 5));
        assert_ne!(stable_ino(0, 1), ROOT);
        assert!(stable_ino(3, u64::MAX) < FALLBACK_BASE);
    }

    #[test]
    fn stale_node_is_not_revived_by_a_recycled_number() {
        let mut t = InodeTable::new(Placement::default());
        let key = stable_ino(0, 42);
        let (a, gen_a) = t.intern(
            ROOT,
            "f".into(),
            FileKind::Regular,
            key,
            Placement::default(),
            true,
        );
        assert_eq!(a, key);
        t.mark_unlinked(a, None);
        // A new file that got the same host inode number.
        let (b, gen_b) = t.intern(
            ROOT,
            "f".into(),
            FileKind::Regular,
            key,
            Placement::default(),
            true,
        );
        assert_ne!(a, b);
        assert_ne!(gen_a, gen_b);
        // Forgetting the stale node does not unmap the new one.
        assert!(t.forget(a, 1));
        assert_eq!(t.by_key(key), Some(b));
    }

    #[test]
    fn directory_named_by_a_child_stays_after_its_forget() {
        let mut t = InodeTable::new(Placement::default());
        let (d, _) = t.intern(
            ROOT,
            "d".into(),
            FileKind::Directory,
            stable_ino(1, 2),
            Placement::default(),
            true,
        );
        let (f, _) = t.intern(
            d,
            "f".into(),
            FileKind::Regular,
            stable_ino(1, 3),
            Placement::default(),
            true,
        );
        assert!(!t.forget(d, 1), "f still names d");
        assert!(t.get(d).is_some());
        // Another name of the hard link f is looked up: d goes.
        t.intern(
            ROOT,
            "g".into(),
            FileKind::Regular,
            stable_ino(1, 3),
            Placement::default(),
            true,
        );
        assert!(t.get(d).is_none());
        assert_eq!(t.take_dropped(), [d]);
        assert!(t.forget(f, 2));
    }

    #[test]
    fn lookups_are_counted_until_forget() {
        let mut t = InodeTable::new(Placement::default());
        let key = stable_ino(1, 7);
        t.intern(
            ROOT,
            "d".into(),
            FileKind::Directory,
            key,
            Placement::default(),
            true,
        );
        t.intern(
            ROOT,
            "d".into(),
            FileKind::Directory,
            key,
            Placement::default(),
            true,
        );
        assert!(!t.forget(key, 1));
        assert!(t.forget(key, 1));
        assert!(t.get(key).is_none());
    }
}
