//! An image's merged file tree, read in-process (no mount): strata-fs's union over the
//! image's layer indexes, read-only. The builder asks it where a COPY lands (does the
//! destination exist, is it a directory, which parents must be made), whose names
//! `--chown=user:group` means (`/etc/passwd`, `/etc/group`), and reads the files of
//! `COPY --from=STAGE|IMAGE`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use strata_fs::attr::{Attr, FileKind};
use strata_fs::inode::{Ino, ROOT};
use strata_fs::layer::Layer;
use strata_fs::Union;

use crate::{Error, Result};

/// One image's tree; `None` inside for `FROM scratch` (an empty tree).
pub struct Tree {
    union: Option<Union>,
}

/// A path of the tree with its attributes.
pub struct Node {
    pub ino: Ino,
    pub attr: Attr,
}

/// How many symlinks a path may go through (as the kernel's ELOOP limit).
const MAX_LINKS: usize = 40;

impl Tree {
    /// The tree of `lowers` (an image's layers, top first), read-only.
    pub fn open(lowers: Vec<Arc<dyn Layer>>) -> Result<Tree> {
        if lowers.is_empty() {
            return Ok(Tree { union: None });
        }
        let mut opts = strata_fs::options::MountOptions::default();
        opts.validate_upper()?;
        let union = strata_fs::mount::build_union(lowers, &opts)?;
        Ok(Tree { union: Some(union) })
    }

    fn fail(path: &str, e: strata_fs::Errno) -> Error {
        Error::ImageTree {
            path: path.to_string(),
            source: std::io::Error::from_raw_os_error(e.code()),
        }
    }

    /// The node at absolute `path`, symlinks followed inside the tree (the last one too
    /// when `follow`); `None` when a component is missing.
    pub fn resolve(&self, path: &str, follow: bool) -> Result<Option<Node>> {
        let (mut stack, rest) = self.walk(path, follow)?;
        Ok(match rest.is_empty() {
            true => stack.pop().map(|(_, n)| n),
            false => None,
        })
    }

    /// `path` with the symlinks of its existing parents resolved (`/bin/x` is `/usr/bin/x`
    /// where `/bin` links to `usr/bin`): where a file written at `path` really goes.
    pub fn real_path(&self, path: &str) -> Result<String> {
        let (stack, rest) = self.walk(path, false)?;
        let mut out = String::new();
        for name in stack.iter().skip(1).map(|(n, _)| n).chain(rest.iter()) {
            out.push('/');
            out.push_str(&String::from_utf8_lossy(name));
        }
        if out.is_empty() {
            out.push('/');
        }
        Ok(out)
    }

    /// Resolves what exists of `path`: the nodes from the root down, and the names below
    /// the last one found (empty when all of `path` exists).
    #[allow(clippy::type_complexity)]
    fn walk(&self, path: &str, follow: bool) -> Result<(Vec<(Vec<u8>, Node)>, Vec<Vec<u8>>)> {
        let mut todo: Vec<Vec<u8>> = components(path.as_bytes());
        todo.reverse();
        let Some(u) = &self.union else {
            todo.reverse();
            return Ok((Vec::new(), todo));
        };
        let root = u.getattr(ROOT, None).map_err(|e| Self::fail("/", e))?;
        let mut stack = vec![(
            Vec::new(),
            Node {
                ino: ROOT,
                attr: root,
            },
        )];
        let mut links = 0;
        while let Some(name) = todo.pop() {
            if name == b".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let parent = &stack.last().expect("root stays").1;
            let missing = |mut todo: Vec<Vec<u8>>, name| {
                todo.push(name);
                todo.reverse();
                todo
            };
            if parent.attr.kind != FileKind::Directory {
                return Ok((stack, missing(todo, name)));
            }
            let entry = match u.lookup(parent.ino, OsStr::from_bytes(&name)) {
                Ok(e) => e,
                Err(e) if e == strata_fs::Errno::ENOENT => return Ok((stack, missing(todo, name))),
                Err(e) => return Err(Self::fail(path, e)),
            };
            let last = todo.is_empty();
            if entry.attr.kind == FileKind::Symlink && (!last || follow) {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Self::fail(path, strata_fs::Errno::ELOOP));
                }
                let target = u
                    .readlink(entry.attr.ino)
                    .map_err(|e| Self::fail(path, e))?;
                if target.starts_with(b"/") {
                    stack.truncate(1);
                }
                let mut more = components(&target);
                more.reverse();
                todo.extend(more);
                continue;
            }
            stack.push((
                name,
                Node {
                    ino: entry.attr.ino,
                    attr: entry.attr,
                },
            ));
        }
        Ok((stack, Vec::new()))
    }

    /// The entries of directory `dir` (names and nodes), `.` and `..` left out.
    pub fn list(&self, dir: &Node, path: &str) -> Result<Vec<(Vec<u8>, Node)>> {
        let u = self.union.as_ref().expect("a node comes from a union");
        let fh = u.opendir(dir.ino).map_err(|e| Self::fail(path, e))?;
        let listed = u.readdir(fh, dir.ino, 0);
        u.release(fh);
        let mut out = Vec::new();
        for e in listed.map_err(|e| Self::fail(path, e))?.iter() {
            let name = e.name.as_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let entry = u
                .lookup(dir.ino, &e.name)
                .map_err(|e| Self::fail(path, e))?;
            out.push((
                name.to_vec(),
                Node {
                    ino: entry.attr.ino,
                    attr: entry.attr,
                },
            ));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// A symlink's target.
    pub fn readlink(&self, node: &Node, path: &str) -> Result<Vec<u8>> {
        let u = self.union.as_ref().expect("a node comes from a union");
        u.readlink(node.ino).map_err(|e| Self::fail(path, e))
    }

    /// A regular file's bytes.
    pub fn read(&self, node: &Node, path: &str) -> Result<Vec<u8>> {
        let u = self.union.as_ref().expect("a node comes from a union");
        let (fh, _) = u
            .open(node.ino, libc::O_RDONLY)
            .map_err(|e| Self::fail(path, e))?;
        let mut out = Vec::with_capacity(node.attr.size as usize);
        let result = (|| {
            let mut buf = Vec::new();
            loop {
                buf.clear();
                u.read(fh, out.len() as u64, 1 << 20, &mut buf)?;
                if buf.is_empty() {
                    return Ok(());
                }
                out.extend_from_slice(&buf);
            }
        })();
        u.release(fh);
        result.map_err(|e| Self::fail(path, e))?;
        Ok(out)
    }

    /// A file of the tree as text, `None` when it is missing (`/etc/passwd` of a scratch
    /// image).
    pub fn read_text(&self, path: &str) -> Result<Option<String>> {
        match self.resolve(path, true)? {
            Some(n) if n.attr.kind == FileKind::Regular => Ok(Some(
                String::from_utf8_lossy(&self.read(&n, path)?).into_owned(),
            )),
            _ => Ok(None),
        }
    }

    /// `--chown=USER[:GROUP]` as ids: numbers as they are, names through the tree's
    /// `/etc/passwd` and `/etc/group`; without a group the gid is the uid, as docker says.
    pub fn owner(&self, spec: &str) -> std::result::Result<(u32, u32), String> {
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let passwd = self
            .read_text("/etc/passwd")
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        // The id (third field) of the line naming `name`.
        let find = |text: &str, name: &str| -> Option<u32> {
            text.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.first() == Some(&name)).then(|| f.get(2).and_then(|s| s.parse().ok()))?
            })
        };
        let uid = match user.parse::<u32>() {
            Ok(n) => n,
            Err(_) => match find(&passwd, user) {
                Some(uid) => uid,
                None => {
                    return Err(format!(
                        "unable to find user {user}: no matching entries in passwd file"
                    ))
                }
            },
        };
        let gid = match group {
            None => uid,
            Some(g) => match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => {
                    let groups = self
                        .read_text("/etc/group")
                        .map_err(|e| e.to_string())?
                        .unwrap_or_default();
                    match find(&groups, g) {
                        Some(gid) => gid,
                        None => {
                            return Err(format!(
                                "unable to find group {g}: no matching entries in group file"
                            ))
                        }
                    }
                }
            },
        };
        Ok((uid, gid))
    }
}

/// The names of a `/` path, empty ones and `.` left out.
fn components(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
        .collect()
}
