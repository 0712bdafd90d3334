//! The operations of the differential test: what they are, how they run on a mount, and
//! how a seeded generator draws them.

use std::fmt;
use std::os::fd::OwnedFd;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, XattrFlags, CWD};
use strata_tests::tree::Tree;

/// Parent directories of the path pool: lower ones, a whited-out one (`wd`), one hidden by
/// an opaque directory (`o/sub`), an opaque one in a merged directory (`d/sub`), and ones
/// that exist only once created (`n`, `n/q`).
const DIRS: &[&str] = &[
    "", "d", "d/sub", "o", "o/sub", "r", "r/s", "m", "m/sub", "e", "wd", "n", "n/q",
];
/// Names of the pool: lower names, whited-out ones (`gone`, `y`, `c`), hidden ones (`old`,
/// `deep`), directory names (so files and directories replace each other) and fresh ones.
const NAMES: &[&str] = &[
    "a", "b", "c", "x", "y", "z", "f", "new", "old", "gone", "deep", "hl1", "hl2", "sym", "big",
    "fifo", "sub", "s", "d", "r", "m", "n", "q", "t",
];
/// Symlink targets, all relative and inside the mount (chmod and truncate follow them).
const TARGETS: &[&str] = &["a", "x", "sub", "sub/x", "nowhere", "sym", "f", "s/f"];
const XATTR_NAMES: &[&str] = &["user.a", "user.b", "user.k"];
const IDS: &[u32] = &[0, 1000, 1001, 65534];
const MODES: &[u32] = &[
    0o644, 0o600, 0o755, 0o700, 0o640, 0o444, 0o000, 0o4755, 0o2755, 0o1777, 0o6711,
];

/// One change, with paths relative to the mount root.
#[derive(Clone, Debug)]
pub enum Op {
    Create {
        path: String,
        mode: u32,
        excl: bool,
        trunc: bool,
    },
    Write {
        path: String,
        offset: u64,
        len: usize,
        fill: u8,
    },
    Truncate {
        path: String,
        len: u64,
    },
    Rename {
        from: String,
        to: String,
        flags: RenameFlags,
    },
    Unlink {
        path: String,
    },
    Rmdir {
        path: String,
    },
    Mkdir {
        path: String,
        mode: u32,
    },
    Chmod {
        path: String,
        mode: u32,
    },
    Chown {
        path: String,
        uid: Option<u32>,
        gid: Option<u32>,
    },
    Symlink {
        target: String,
        path: String,
    },
    Link {
        from: String,
        to: String,
    },
    SetXattr {
        path: String,
        name: String,
        value: String,
        flags: XattrFlags,
    },
    RemoveXattr {
        path: String,
        name: String,
    },
    /// Not a change: the comparison of the two trees after a batch. Kept in a failing
    /// sequence because reading the trees (lookups, caches) is part of what happened.
    Compare,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Create {
                path,
                mode,
                excl,
                trunc,
            } => write!(
                f,
                "open({path:?}, O_CREAT{}{}, {mode:o})",
                if *excl { "|O_EXCL" } else { "" },
                if *trunc { "|O_TRUNC" } else { "" }
            ),
            Op::Write {
                path,
                offset,
                len,
                fill,
            } => write!(f, "pwrite({path:?}, {len} bytes of {fill}.., at {offset})"),
            Op::Truncate { path, len } => write!(f, "truncate({path:?}, {len})"),
            Op::Rename { from, to, flags } => write!(f, "rename({from:?}, {to:?}, {flags:?})"),
            Op::Unlink { path } => write!(f, "unlink({path:?})"),
            Op::Rmdir { path } => write!(f, "rmdir({path:?})"),
            Op::Mkdir { path, mode } => write!(f, "mkdir({path:?}, {mode:o})"),
            Op::Chmod { path, mode } => write!(f, "chmod({path:?}, {mode:o})"),
            Op::Chown { path, uid, gid } => write!(f, "lchown({path:?}, {uid:?}, {gid:?})"),
            Op::Symlink { target, path } => write!(f, "symlink({target:?}, {path:?})"),
            Op::Link { from, to } => write!(f, "link({from:?}, {to:?})"),
            Op::SetXattr {
                path,
                name,
                value,
                flags,
            } => write!(f, "lsetxattr({path:?}, {name}, {value:?}, {flags:?})"),
            Op::RemoveXattr { path, name } => write!(f, "lremovexattr({path:?}, {name})"),
            Op::Compare => write!(f, "(compare the trees)"),
        }
    }
}

/// What a call returned: `Ok` or its errno.
pub type Outcome = std::result::Result<(), i32>;

pub fn show(o: &Outcome) -> String {
    match o {
        Ok(()) => "ok".into(),
        Err(e) => format!("{} ({e})", nix::errno::Errno::from_raw(*e)),
    }
}

/// The bytes a write puts: a pattern that differs per offset and per `fill`.
fn pattern(offset: u64, len: usize, fill: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (offset as usize + i).wrapping_mul(31) as u8 ^ fill)
        .collect()
}

/// Runs `op` on the union mounted at `root`.
pub fn apply(root: &Path, op: &Op) -> Outcome {
    let p = |rel: &str| root.join(rel);
    let r: rustix::io::Result<()> = match op {
        Op::Create {
            path,
            mode,
            excl,
            trunc,
        } => {
            let mut flags = OFlags::CREATE | OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
            if *excl {
                flags |= OFlags::EXCL;
            }
            if *trunc {
                flags |= OFlags::TRUNC;
            }
            rustix::fs::open(p(path), flags, Mode::from_raw_mode(*mode)).map(drop)
        }
        Op::Write {
            path,
            offset,
            len,
            fill,
        } => {
            // O_NONBLOCK: a FIFO without a reader answers ENXIO instead of blocking.
            rustix::fs::open(
                p(path),
                OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .and_then(|fd: OwnedFd| {
                let data = pattern(*offset, *len, *fill);
                let mut done = 0;
                while done < data.len() {
                    done += rustix::io::pwrite(&fd, &data[done..], offset + done as u64)?;
                }
                Ok(())
            })
        }
        Op::Truncate { path, len } => nix::unistd::truncate(&p(path), *len as i64)
            .map_err(|e| rustix::io::Errno::from_raw_os_error(e as i32)),
        Op::Rename { from, to, flags } => {
            rustix::fs::renameat_with(CWD, p(from), CWD, p(to), *flags)
        }
        Op::Unlink { path } => rustix::fs::unlink(p(path)),
        Op::Rmdir { path } => rustix::fs::rmdir(p(path)),
        Op::Mkdir { path, mode } => rustix::fs::mkdir(p(path), Mode::from_raw_mode(*mode)),
        Op::Chmod { path, mode } => rustix::fs::chmod(p(path), Mode::from_raw_mode(*mode)),
        Op::Chown { path, uid, gid } => rustix::fs::chownat(
            CWD,
            p(path),
            uid.map(rustix::fs::Uid::from_raw),
            gid.map(rustix::fs::Gid::from_raw),
            AtFlags::SYMLINK_NOFOLLOW,
        ),
        Op::Symlink { target, path } => rustix::fs::symlink(target.as_str(), p(path)),
        Op::Link { from, to } => rustix::fs::linkat(CWD, p(from), CWD, p(to), AtFlags::empty()),
        Op::SetXattr {
            path,
            name,
            value,
            flags,
        } => rustix::fs::lsetxattr(p(path), name.as_str(), value.as_bytes(), *flags),
        Op::RemoveXattr { path, name } => rustix::fs::lremovexattr(p(path), name.as_str()),
        Op::Compare => Ok(()),
    };
    r.map_err(|e| e.raw_os_error())
}

/// Draws operations: paths from the pool or from the reference tree of the batch start.
pub struct Gen {
    rng: StdRng,
    /// Paths of the reference tree: all of them, the directories (with the root, ""), the
    /// non-directories, the empty directories, and (path, name) of each xattr.
    paths: Vec<String>,
    dirs: Vec<String>,
    files: Vec<String>,
    empty_dirs: Vec<String>,
    xattrs: Vec<(String, String)>,
}

impl Gen {
    pub fn new(seed: u64) -> Gen {
        Gen {
            rng: StdRng::seed_from_u64(seed),
            paths: Vec::new(),
            dirs: Vec::new(),
            files: Vec::new(),
            empty_dirs: Vec::new(),
            xattrs: Vec::new(),
        }
    }

    pub fn refresh(&mut self, tree: &Tree) {
        let text = |p: &Path| p.display().to_string();
        self.paths = tree.keys().map(|p| text(p)).collect();
        self.dirs = vec![String::new()];
        self.files.clear();
        self.empty_dirs.clear();
        self.xattrs.clear();
        for (path, node) in tree {
            if node.kind == 'd' {
                self.dirs.push(text(path));
                let child = tree.range(path.clone()..).nth(1);
                if !child.is_some_and(|(c, _)| c.starts_with(path)) {
                    self.empty_dirs.push(text(path));
                }
            } else {
                self.files.push(text(path));
            }
            for name in node.xattrs.keys() {
                self.xattrs.push((text(path), name.clone()));
            }
        }
    }

    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.rng.gen_range(0..from.len())]
    }

    /// One of `list` with probability `p` (when it is not empty), else `None`.
    fn maybe(&mut self, p: f64, list: fn(&Gen) -> &Vec<String>) -> Option<String> {
        let len = list(self).len();
        if len == 0 || !self.rng.gen_bool(p) {
            return None;
        }
        let i = self.rng.gen_range(0..len);
        Some(list(self)[i].clone())
    }

    fn join(dir: &str, name: &str) -> String {
        if dir.is_empty() {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        }
    }

    /// A path that may well be free: a pool name in an existing or a pool directory.
    fn fresh(&mut self) -> String {
        let dir = self
            .maybe(0.7, |g| &g.dirs)
            .unwrap_or_else(|| self.pick(DIRS).to_string());
        let name = self.pick(NAMES);
        Self::join(&dir, name)
    }

    /// A path that probably exists.
    fn existing(&mut self) -> String {
        self.maybe(0.7, |g| &g.paths)
            .unwrap_or_else(|| self.fresh())
    }

    /// A path that probably is a non-directory.
    fn file(&mut self) -> String {
        self.maybe(0.6, |g| &g.files)
            .unwrap_or_else(|| self.existing())
    }

    fn any(&mut self) -> String {
        if self.rng.gen_bool(0.5) {
            self.existing()
        } else {
            self.fresh()
        }
    }

    fn mode(&mut self) -> u32 {
        *self.pick(MODES)
    }

    fn id(&mut self) -> Option<u32> {
        if self.rng.gen_bool(0.15) {
            None
        } else {
            Some(*self.pick(IDS))
        }
    }

    pub fn op(&mut self) -> Op {
        match self.rng.gen_range(0..100) {
            0..=9 => Op::Create {
                path: self.any(),
                mode: self.mode() & 0o777,
                excl: self.rng.gen_bool(0.3),
                trunc: self.rng.gen_bool(0.2),
            },
            10..=21 => Op::Write {
                path: self.file(),
                offset: if self.rng.gen_bool(0.3) {
                    0
                } else {
                    self.rng.gen_range(0..70_000)
                },
                len: self.rng.gen_range(1..6000),
                fill: self.rng.gen(),
            },
            22..=27 => Op::Truncate {
                path: self.file(),
                len: self.rng.gen_range(0..20_000),
            },
            28..=39 => Op::Rename {
                from: self.existing(),
                to: self.any(),
                flags: match self.rng.gen_range(0..6) {
                    0 => RenameFlags::NOREPLACE,
                    1 => RenameFlags::EXCHANGE,
                    _ => RenameFlags::empty(),
                },
            },
            40..=46 => Op::Unlink { path: self.file() },
            47..=51 => Op::Rmdir {
                path: self
                    .maybe(0.5, |g| &g.empty_dirs)
                    .unwrap_or_else(|| self.existing()),
            },
            52..=59 => Op::Mkdir {
                path: self.any(),
                mode: self.mode(),
            },
            60..=66 => Op::Chmod {
                path: self.existing(),
                mode: self.mode(),
            },
            67..=73 => Op::Chown {
                path: self.existing(),
                uid: self.id(),
                gid: self.id(),
            },
            74..=78 => Op::Symlink {
                target: self.pick(TARGETS).to_string(),
                path: self.any(),
            },
            79..=84 => Op::Link {
                from: self.file(),
                to: self.any(),
            },
            85..=93 => Op::SetXattr {
                path: self.existing(),
                name: self.pick(XATTR_NAMES).to_string(),
                value: format!("v{}", self.rng.gen_range(0..1000)),
                flags: match self.rng.gen_range(0..4) {
                    0 => XattrFlags::CREATE,
                    1 => XattrFlags::REPLACE,
                    _ => XattrFlags::empty(),
                },
            },
            _ if !self.xattrs.is_empty() && self.rng.gen_bool(0.5) => {
                let i = self.rng.gen_range(0..self.xattrs.len());
                let (path, name) = self.xattrs[i].clone();
                Op::RemoveXattr { path, name }
            }
            _ => Op::RemoveXattr {
                path: self.existing(),
                name: self.pick(XATTR_NAMES).to_string(),
            },
        }
    }
}
