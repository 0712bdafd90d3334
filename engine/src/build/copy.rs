//! COPY and ADD: from the build context (or another stage's or image's tree) to a layer tar,
//! with docker's rules.
//!
//! - A source is a path of the context (cleaned; one climbing out with `..`, or through a
//!   symlink leading out, is refused), or a pattern (`*`, `?`, `[..]`) matched against the
//!   context's paths. Names `.dockerignore` excludes are not there.
//! - A directory source copies what it holds, not itself; a file goes to `DEST/NAME` when
//!   DEST ends with `/` or is a directory of the image, else to DEST. Several sources need a
//!   DEST ending with `/`. A relative DEST is below WORKDIR.
//! - Copied files and the directories made for them are owned by root, or `--chown`'s
//!   ids; modes and modification times are the source's. Parents that exist keep their
//!   metadata, written as the image has it; a parent that is a symlink in the image is
//!   followed (the layer writes where the image's path really leads).
//! - ADD extracts a local tar archive (plain, gzip or zstd) into DEST with its owners.
//!
//! A plan is made first ([`Plan`]); its digest (paths, kinds, modes, owners, contents; not
//! the times) is the cache key's part, and the tar is written only on a cache miss.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use strata_fs::attr::FileKind;
use strata_fs::inode::Ino;
use strata_image::digest::{Digest, Hasher};

use super::context::{decompressed, has_glob, inside, read_dir_sorted, Context};
use super::ignore::clean;
use super::tree::{Node, Tree};
use crate::{Error, Result};

/// Where an item's bytes come from.
#[derive(Clone, Debug)]
enum Data {
    Host(PathBuf),
    Tree(Ino, u64),
}

#[derive(Clone, Debug)]
enum Kind {
    Dir,
    File(Data),
    Symlink(Vec<u8>),
}

/// One entry of the layer: its absolute path in the image.
#[derive(Clone, Debug)]
struct Item {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

/// What a COPY or ADD writes: entries by absolute path, and archives ADD extracts.
#[derive(Debug, Default)]
pub struct Plan {
    items: BTreeMap<String, Item>,
    archives: Vec<(PathBuf, String)>,
    /// How many sources there were (docker names a COPY's history by it).
    pub sources: usize,
    /// Whether a single source was a directory.
    pub dir_source: bool,
}

/// The request of one COPY/ADD.
pub struct CopyRequest<'a> {
    pub srcs: &'a [String],
    /// The destination as written (expanded), absolute or relative to `workdir`.
    pub dest: &'a str,
    pub workdir: &'a str,
    /// `--chown` resolved.
    pub owner: Option<(u32, u32)>,
    /// ADD: local archives are extracted.
    pub extract: bool,
}

/// DEST made absolute (below WORKDIR) and whether it names a directory (trailing `/`).
fn destination(dest: &str, workdir: &str) -> (String, bool) {
    let as_dir = dest.ends_with('/') || dest == "." || dest.ends_with("/.");
    let joined = if dest.starts_with('/') {
        dest.to_string()
    } else {
        format!("{}/{dest}", workdir.trim_end_matches('/'))
    };
    let c = clean(&joined);
    (
        match c.as_str() {
            "." => "/".into(),
            c => format!("/{c}"),
        },
        as_dir,
    )
}

fn join(dir: &str, name: &str) -> String {
    match dir {
        "/" => format!("/{name}"),
        d => format!("{d}/{name}"),
    }
}

impl Plan {
    /// Plans a COPY/ADD from the context into the image `dest_tree`.
    pub fn from_context(ctx: &Context, req: &CopyRequest<'_>, dest_tree: &Tree) -> Result<Plan> {
        let mut sources = Vec::new();
        let mut globbed = false;
        for s in req.srcs {
            globbed |= has_glob(s);
            sources.extend(ctx.sources(s)?);
        }
        let mut plan = Plan {
            sources: sources.len(),
            ..Default::default()
        };
        let (dest, as_dir) = destination(req.dest, req.workdir);
        let dest = dest_tree.real_path(&dest)?;
        if (sources.len() > 1 || globbed && req.srcs.len() > 1) && !as_dir {
            return Err(Error::CopyDestination);
        }
        let dest_is_dir = as_dir
            || sources.len() > 1
            || dest_tree
                .resolve(&dest, true)?
                .is_some_and(|n| n.attr.kind == FileKind::Directory);
        let owner = req.owner.unwrap_or((0, 0));
        for (rel, host) in &sources {
            let meta = std::fs::metadata(host).map_err(|source| Error::BuildContext {
                path: host.clone(),
                source,
            })?;
            if meta.is_dir() {
                plan.dir_source = sources.len() == 1;
                plan.add_host_dir(ctx, rel, host, &dest, owner)?;
                continue;
            }
            let name = Path::new(rel)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let target = match dest_is_dir {
                true => join(&dest, &name),
                false => dest.clone(),
            };
            if req.extract && is_archive(host) {
                plan.items.insert(
                    dest.clone(),
                    Item {
                        kind: Kind::Dir,
                        mode: 0o755,
                        uid: owner.0,
                        gid: owner.1,
                        mtime: now(),
                    },
                );
                plan.archives.push((host.clone(), dest.clone()));
                continue;
            }
            plan.items.insert(target, host_item(host, &meta, owner)?);
        }
        plan.add_parents(dest_tree, &dest, owner)?;
        Ok(plan)
    }

    /// Plans a `COPY --from`: `srcs` are absolute paths of `src_tree`.
    pub fn from_tree(src_tree: &Tree, req: &CopyRequest<'_>, dest_tree: &Tree) -> Result<Plan> {
        let mut nodes = Vec::new();
        for s in req.srcs {
            let path = format!("/{}", clean(s));
            let node = src_tree
                .resolve(&path, true)?
                .ok_or_else(|| Error::CopyMissing(s.clone()))?;
            nodes.push((path, node));
        }
        let mut plan = Plan {
            sources: nodes.len(),
            ..Default::default()
        };
        let (dest, as_dir) = destination(req.dest, req.workdir);
        let dest = dest_tree.real_path(&dest)?;
        if nodes.len() > 1 && !as_dir {
            return Err(Error::CopyDestination);
        }
        let dest_is_dir = as_dir
            || dest_tree
                .resolve(&dest, true)?
                .is_some_and(|n| n.attr.kind == FileKind::Directory);
        let owner = req.owner;
        for (path, node) in &nodes {
            if node.attr.kind == FileKind::Directory {
                plan.dir_source = nodes.len() == 1;
                plan.add_tree_dir(src_tree, path, node, &dest, owner)?;
                continue;
            }
            let name = path.rsplit('/').next().unwrap_or_default();
            let target = match dest_is_dir {
                true => join(&dest, name),
                false => dest.clone(),
            };
            plan.items
                .insert(target, tree_item(src_tree, path, node, owner)?);
        }
        plan.add_parents(dest_tree, &dest, owner.unwrap_or((0, 0)))?;
        Ok(plan)
    }

    fn add_host_dir(
        &mut self,
        ctx: &Context,
        rel: &str,
        host: &Path,
        dest: &str,
        owner: (u32, u32),
    ) -> Result<()> {
        let meta = std::fs::metadata(host).map_err(|source| Error::BuildContext {
            path: host.to_path_buf(),
            source,
        })?;
        self.items
            .insert(dest.to_string(), host_item(host, &meta, owner)?);
        for (name, path) in read_dir_sorted(host)? {
            let child_rel = match rel {
                "." | "" => name.clone(),
                r => format!("{r}/{name}"),
            };
            let excluded = ctx.excluded(&child_rel);
            let meta = path
                .symlink_metadata()
                .map_err(|source| Error::BuildContext {
                    path: path.clone(),
                    source,
                })?;
            let target = join(dest, &name);
            if meta.is_dir() {
                if excluded && !ctx.ignore.has_exceptions() {
                    continue;
                }
                let before = self.items.len();
                self.add_host_dir(ctx, &child_rel, &path, &target, owner)?;
                // An excluded directory stays only for the exceptions found below it.
                if excluded && self.items.len() == before + 1 {
                    self.items.remove(&target);
                }
                continue;
            }
            if excluded {
                continue;
            }
            self.items.insert(target, host_item(&path, &meta, owner)?);
        }
        Ok(())
    }

    fn add_tree_dir(
        &mut self,
        tree: &Tree,
        path: &str,
        node: &Node,
        dest: &str,
        owner: Option<(u32, u32)>,
    ) -> Result<()> {
        self.items
            .insert(dest.to_string(), tree_item(tree, path, node, owner)?);
        for (name, child) in tree.list(node, path)? {
            let name = String::from_utf8_lossy(&name).into_owned();
            let child_path = join(path, &name);
            let target = join(dest, &name);
            if child.attr.kind == FileKind::Directory {
                self.add_tree_dir(tree, &child_path, &child, &target, owner)?;
            } else {
                self.items
                    .insert(target, tree_item(tree, &child_path, &child, owner)?);
            }
        }
        Ok(())
    }

    /// Entries for the parents of every item: as the image has them, or made (0755, the
    /// owner of the copy).
    fn add_parents(&mut self, tree: &Tree, dest: &str, owner: (u32, u32)) -> Result<()> {
        let mut parents = BTreeSet::new();
        for p in self
            .items
            .keys()
            .chain(self.archives.iter().map(|(_, d)| d))
        {
            let mut cur = p.as_str();
            while let Some(i) = cur.rfind('/') {
                cur = &cur[..i];
                if cur.is_empty() {
                    break;
                }
                parents.insert(cur.to_string());
            }
        }
        for p in parents {
            if self.items.contains_key(&p) {
                continue;
            }
            let item = match tree.resolve(&p, false)? {
                Some(n) if n.attr.kind == FileKind::Directory => Item {
                    kind: Kind::Dir,
                    mode: n.attr.perm,
                    uid: n.attr.uid,
                    gid: n.attr.gid,
                    mtime: n.attr.mtime.sec,
                },
                // Made for the copy: the copy's owner when it is DEST or below it.
                _ => {
                    let (uid, gid) = match p.starts_with(dest) {
                        true => owner,
                        false => (0, 0),
                    };
                    Item {
                        kind: Kind::Dir,
                        mode: 0o755,
                        uid,
                        gid,
                        mtime: now(),
                    }
                }
            };
            self.items.insert(p, item);
        }
        Ok(())
    }

    /// The digest of what the plan copies: paths, kinds, modes, owners and contents.
    pub fn digest(&self, src_tree: Option<&Tree>) -> Result<Digest> {
        let mut h = Hasher::default();
        for (path, item) in &self.items {
            h.update(path.as_bytes());
            h.update(format!("\0{:o}\0{}:{}\0", item.mode, item.uid, item.gid).as_bytes());
            match &item.kind {
                Kind::Dir => h.update(b"d"),
                Kind::Symlink(t) => {
                    h.update(b"l");
                    h.update(t);
                }
                Kind::File(data) => {
                    h.update(b"f");
                    let mut r = open_data(data, src_tree)?;
                    std::io::copy(&mut r, &mut HashWriter(&mut h)).map_err(|source| {
                        Error::BuildContext {
                            path: PathBuf::from(path),
                            source,
                        }
                    })?;
                }
            }
            h.update(b"\n");
        }
        for (archive, dest) in &self.archives {
            h.update(format!("archive\0{dest}\0").as_bytes());
            let mut f = File::open(archive).map_err(|source| Error::BuildContext {
                path: archive.clone(),
                source,
            })?;
            std::io::copy(&mut f, &mut HashWriter(&mut h)).map_err(|source| {
                Error::BuildContext {
                    path: archive.clone(),
                    source,
                }
            })?;
        }
        Ok(h.finish())
    }

    /// Writes the layer tar to `out`.
    pub fn write_tar<W: Write>(&self, src_tree: Option<&Tree>, out: W) -> Result<W> {
        let werr = |source| Error::WriteLayerTar { source };
        let mut b = tar::Builder::new(out);
        b.follow_symlinks(false);
        for (path, item) in &self.items {
            let name = path.trim_start_matches('/');
            if name.is_empty() {
                continue;
            }
            let mut h = tar::Header::new_gnu();
            h.set_mode(item.mode);
            h.set_uid(item.uid as u64);
            h.set_gid(item.gid as u64);
            h.set_mtime(item.mtime.max(0) as u64);
            match &item.kind {
                Kind::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, format!("{name}/"), std::io::empty())
                        .map_err(werr)?;
                }
                Kind::Symlink(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, name, std::ffi::OsStr::from_bytes(target))
                        .map_err(werr)?;
                }
                Kind::File(data) => {
                    let size = match data {
                        Data::Host(p) => std::fs::metadata(p)
                            .map_err(|source| Error::BuildContext {
                                path: p.clone(),
                                source,
                            })?
                            .len(),
                        Data::Tree(_, size) => *size,
                    };
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(size);
                    let r = open_data(data, src_tree)?;
                    b.append_data(&mut h, name, r.take(size)).map_err(werr)?;
                }
            }
        }
        for (archive, dest) in &self.archives {
            extract_into(&mut b, archive, dest)?;
        }
        b.into_inner().map_err(werr)
    }
}

/// Hashes what is written to it.
struct HashWriter<'a>(&'a mut Hasher);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn open_data(data: &Data, src_tree: Option<&Tree>) -> Result<Box<dyn Read>> {
    match data {
        Data::Host(p) => Ok(Box::new(File::open(p).map_err(|source| {
            Error::BuildContext {
                path: p.clone(),
                source,
            }
        })?)),
        Data::Tree(ino, size) => {
            let tree = src_tree.expect("a tree item comes with its tree");
            let node = Node {
                ino: *ino,
                attr: strata_fs::attr::Attr {
                    ino: *ino,
                    kind: FileKind::Regular,
                    perm: 0,
                    nlink: 1,
                    uid: 0,
                    gid: 0,
                    rdev: 0,
                    size: *size,
                    blocks: 0,
                    blksize: 0,
                    atime: Default::default(),
                    mtime: Default::default(),
                    ctime: Default::default(),
                },
            };
            Ok(Box::new(std::io::Cursor::new(tree.read(&node, "")?)))
        }
    }
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn host_item(path: &Path, meta: &std::fs::Metadata, owner: (u32, u32)) -> Result<Item> {
    let kind = if meta.file_type().is_symlink() {
        let t = std::fs::read_link(path).map_err(|source| Error::BuildContext {
            path: path.to_path_buf(),
            source,
        })?;
        Kind::Symlink(t.as_os_str().as_bytes().to_vec())
    } else if meta.is_dir() {
        Kind::Dir
    } else if meta.is_file() {
        Kind::File(Data::Host(path.to_path_buf()))
    } else {
        // Devices, fifos and sockets of a context are not copied (docker refuses them too).
        return Err(Error::BuildContext {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a file, directory or symlink",
            ),
        });
    };
    Ok(Item {
        kind,
        mode: meta.permissions().mode() & 0o7777,
        uid: owner.0,
        gid: owner.1,
        mtime: meta.mtime(),
    })
}

fn tree_item(tree: &Tree, path: &str, node: &Node, owner: Option<(u32, u32)>) -> Result<Item> {
    let kind = match node.attr.kind {
        FileKind::Directory => Kind::Dir,
        FileKind::Symlink => Kind::Symlink(tree.readlink(node, path)?),
        FileKind::Regular => Kind::File(Data::Tree(node.ino, node.attr.size)),
        // Devices and fifos of another stage: not copied (as docker's COPY --from).
        _ => return Err(Error::CopyMissing(path.to_string())),
    };
    let (uid, gid) = owner.unwrap_or((node.attr.uid, node.attr.gid));
    Ok(Item {
        kind,
        mode: node.attr.perm,
        uid,
        gid,
        mtime: node.attr.mtime.sec,
    })
}

/// Whether ADD would extract `path`: a tar, plain or gzip/zstd-compressed.
fn is_archive(path: &Path) -> bool {
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    let mut head = [0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let head = &head[..n];
    if head.starts_with(&[0x1f, 0x8b]) || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let _ = f.rewind();
        return decompressed(&mut f)
            .ok()
            .and_then(|mut r| {
                let mut b = vec![0u8; 512];
                r.read_exact(&mut b).ok().map(|_| &b[257..262] == b"ustar")
            })
            .unwrap_or(false);
    }
    n == 512 && &head[257..262] == b"ustar"
}

/// Copies the entries of archive `path` into `b` below `dest` (owners as the archive has
/// them, as docker's ADD). Names climbing out with `..` are refused.
fn extract_into<W: Write>(b: &mut tar::Builder<W>, path: &Path, dest: &str) -> Result<()> {
    let aerr = |source| Error::BuildContext {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(aerr)?;
    let mut archive = tar::Archive::new(decompressed(&mut f)?);
    let prefix = dest.trim_start_matches('/');
    let under = |name: &[u8]| -> Result<String> {
        let s = String::from_utf8_lossy(name);
        let rel = inside(&s).ok_or_else(|| Error::CopyOutside(s.to_string()))?;
        Ok(match (prefix, rel.as_str()) {
            ("", r) => r.to_string(),
            (p, ".") => p.to_string(),
            (p, r) => format!("{p}/{r}"),
        })
    };
    for entry in archive.entries().map_err(aerr)? {
        let mut e = entry.map_err(aerr)?;
        let name = under(&e.path_bytes())?;
        let mut h = e.header().clone();
        match h.entry_type() {
            tar::EntryType::Link => {
                let target = e.link_name_bytes().map(|t| t.to_vec()).unwrap_or_default();
                let target = under(&target)?;
                h.set_size(0);
                b.append_link(&mut h, &name, &target)
                    .map_err(|source| Error::WriteLayerTar { source })?;
            }
            tar::EntryType::Symlink => {
                let target = e.link_name_bytes().map(|t| t.to_vec()).unwrap_or_default();
                b.append_link(&mut h, &name, std::ffi::OsStr::from_bytes(&target))
                    .map_err(|source| Error::WriteLayerTar { source })?;
            }
            t if t.is_pax_global_extensions() || t.is_pax_local_extensions() => {}
            t if t.is_gnu_longname() || t.is_gnu_longlink() => {}
            _ => {
                let name = match h.entry_type() {
                    tar::EntryType::Directory => format!("{}/", name.trim_end_matches('/')),
                    _ => name,
                };
                b.append_data(&mut h, name, &mut e)
                    .map_err(|source| Error::WriteLayerTar { source })?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_climbing_out_are_refused() {
        assert_eq!(inside("a/../b").as_deref(), Some("b"));
        assert_eq!(inside("/a").as_deref(), Some("a"));
        assert_eq!(inside("."), Some(".".into()));
        assert_eq!(inside("../x"), None);
        assert_eq!(inside("a/../../x"), None);
    }

    #[test]
    fn destinations_as_docker() {
        assert_eq!(destination("/app/", "/"), ("/app".into(), true));
        assert_eq!(destination("x", "/srv"), ("/srv/x".into(), false));
        assert_eq!(destination(".", "/srv/"), ("/srv".into(), true));
        assert_eq!(destination("/", "/srv"), ("/".into(), true));
    }

    fn context() -> (tempfile::TempDir, Context) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("src/sub")).unwrap();
        std::fs::write(p.join("src/a.txt"), "a").unwrap();
        std::fs::write(p.join("src/sub/b.txt"), "b").unwrap();
        std::fs::write(p.join("src/skip.log"), "x").unwrap();
        std::fs::write(p.join("top.txt"), "top").unwrap();
        std::fs::write(p.join(".dockerignore"), "**/*.log\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", p.join("out")).unwrap();
        std::os::unix::fs::symlink("top.txt", p.join("in")).unwrap();
        let c = Context::open(p).unwrap();
        (d, c)
    }

    fn paths(p: &Plan) -> Vec<String> {
        p.items.keys().cloned().collect()
    }

    #[test]
    fn a_directory_copies_its_contents_and_ignored_names_stay_out() {
        let (_d, ctx) = context();
        let tree = Tree::open(Vec::new()).unwrap();
        let srcs = ["src".to_string()];
        let req = CopyRequest {
            srcs: &srcs,
            dest: "/app",
            workdir: "/",
            owner: Some((5, 6)),
            extract: false,
        };
        let plan = Plan::from_context(&ctx, &req, &tree).unwrap();
        assert_eq!(
            paths(&plan),
            ["/app", "/app/a.txt", "/app/sub", "/app/sub/b.txt"]
        );
        assert!(plan.items.values().all(|i| (i.uid, i.gid) == (5, 6)));
        let one = plan.digest(None).unwrap();
        std::fs::write(ctx.dir.join("src/a.txt"), "changed").unwrap();
        let plan2 = Plan::from_context(&ctx, &req, &tree).unwrap();
        assert_ne!(one, plan2.digest(None).unwrap());
        // An ignored file's change is no change.
        std::fs::write(ctx.dir.join("src/skip.log"), "changed").unwrap();
        let plan3 = Plan::from_context(&ctx, &req, &tree).unwrap();
        assert_eq!(plan2.digest(None).unwrap(), plan3.digest(None).unwrap());
        // The tar has every entry, parents first.
        let tar = plan.write_tar(None, Vec::new()).unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["app/", "app/a.txt", "app/sub/", "app/sub/b.txt"]);
    }

    #[test]
    fn files_patterns_and_bad_sources() {
        let (_d, ctx) = context();
        let tree = Tree::open(Vec::new()).unwrap();
        let req = |srcs: &[String], dest: &'static str| {
            let srcs = srcs.to_vec();
            move |ctx: &Context| {
                Plan::from_context(
                    ctx,
                    &CopyRequest {
                        srcs: &srcs,
                        dest,
                        workdir: "/w",
                        owner: None,
                        extract: false,
                    },
                    &Tree::open(Vec::new()).unwrap(),
                )
            }
        };
        let _ = &tree;
        let p = req(&["top.txt".into()], "x")(&ctx).unwrap();
        assert_eq!(paths(&p), ["/w", "/w/x"]);
        let p = req(&["src/*.txt".into(), "in".into()], "/d/")(&ctx).unwrap();
        assert_eq!(paths(&p), ["/d", "/d/a.txt", "/d/in"]);
        let e = req(&["a".into(), "top.txt".into()], "/d")(&ctx).unwrap_err();
        assert!(matches!(e, Error::CopyMissing(_)), "{e}");
        let e = req(&["src/a.txt".into(), "top.txt".into()], "/d")(&ctx).unwrap_err();
        assert!(matches!(e, Error::CopyDestination), "{e}");
        let e = req(&["../x".into()], "/d/")(&ctx).unwrap_err();
        assert!(matches!(e, Error::CopyOutside(_)), "{e}");
        let e = req(&["out".into()], "/d/")(&ctx).unwrap_err();
        assert!(matches!(e, Error::CopyOutside(_)), "{e}");
        let e = req(&["src/skip.log".into()], "/d/")(&ctx).unwrap_err();
        assert!(matches!(e, Error::CopyMissing(_)), "{e}");
    }

    #[test]
    fn add_extracts_a_local_tar() {
        let (_d, ctx) = context();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o600);
        h.set_uid(7);
        b.append_data(&mut h, "inner/f", &b"hi"[..]).unwrap();
        let raw = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        std::fs::write(ctx.dir.join("a.tar.gz"), gz.finish().unwrap()).unwrap();
        let srcs = ["a.tar.gz".to_string()];
        let req = CopyRequest {
            srcs: &srcs,
            dest: "/x",
            workdir: "/",
            owner: None,
            extract: true,
        };
        let plan = Plan::from_context(&ctx, &req, &Tree::open(Vec::new()).unwrap()).unwrap();
        let tar = plan.write_tar(None, Vec::new()).unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        let got: Vec<(String, u64)> = a
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().uid().unwrap(),
                )
            })
            .collect();
        assert_eq!(got, [("x/".to_string(), 0), ("x/inner/f".to_string(), 7)]);
        // COPY copies the archive as a file.
        let copy = CopyRequest {
            extract: false,
            ..req
        };
        let plan = Plan::from_context(&ctx, &copy, &Tree::open(Vec::new()).unwrap()).unwrap();
        assert_eq!(paths(&plan), ["/x"]);
    }
}
