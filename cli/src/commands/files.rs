//! A container's files: `diff` (what its upper changed against the image: `A`, `C`, `D`
//! lines) and `cp` (both ways). A running container's root is reached through its pid 1
//! (`/proc/PID/root`); a stopped one's through a short-lived helper (`strata __rootfs`) that
//! mounts its union in a mount namespace of its own, as the monitor does.

use std::collections::hash_map::{Entry, HashMap};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use strata_fs::changes::ChangeKind;

use super::{open, report, Prefix};
use crate::store::Store;
use crate::Global;
use strata_engine::containers::{Containers, Record};

#[derive(Args)]
pub struct DiffArgs {
    pub container: String,
}

#[derive(Args)]
pub struct CpArgs {
    /// Always follow symbol link in SRC_PATH
    #[arg(short = 'L', long = "follow-link")]
    pub follow_link: bool,
    /// Archive mode (copy all uid/gid information)
    #[arg(short, long)]
    pub archive: bool,
    /// CONTAINER:SRC_PATH or a host path
    pub src: String,
    /// CONTAINER:DEST_PATH or a host path
    pub dst: String,
}

/// The diff lines of a container's upper against its image, sorted by path: docker's
/// `A`, `C`, `D`, where a directory deleted and made again (opaque over one of the image) is
/// `D`, then what it holds now (docker's overlay rule). The walk is strata-fs's
/// [`strata_fs::changes`], the one that a commit's layer tar comes from.
pub fn diff_lines(store: &Store, rec: &Record) -> Result<Vec<u8>> {
    let dir = Containers::new(store).dir(&rec.id);
    let lowers = strata_engine::rootfs::layers(store, rec)?;
    let set = strata_fs::changes::changes(&dir.join("upper"), Some(&dir.join("work")), &lowers)?;
    let mut out = Vec::new();
    for c in &set.changes {
        let letter = match (c.kind, c.opaque) {
            (ChangeKind::Changed, true) => 'D',
            (kind, _) => kind.letter(),
        };
        out.push(letter as u8);
        out.push(b' ');
        out.extend_from_slice(&c.absolute());
        out.push(b'\n');
    }
    Ok(out)
}

pub fn diff(global: &Global, args: DiffArgs) -> i32 {
    let r = (|| -> Result<()> {
        let (store, c) = open(global);
        let rec = c.find(&args.container)?;
        super::print(&diff_lines(&store, &rec)?)
    })();
    report(r, Prefix::Daemon)
}

/// `path` inside `root`, following the container's symlinks as if `root` were `/` (an
/// absolute link target or `..` never leaves it). The last component is followed only when
/// `follow_last`.
pub fn resolve_in(root: &Path, path: &str, follow_last: bool) -> Result<PathBuf> {
    let mut todo: Vec<std::ffi::OsString> = Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .rev()
        .collect();
    let mut cur = PathBuf::new();
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            cur.pop();
            continue;
        }
        let candidate = cur.join(&name);
        let full = root.join(&candidate);
        let last = todo.is_empty();
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() && (!last || follow_last) => {
                links += 1;
                if links > 40 {
                    bail!("{path}: too many levels of symbolic links");
                }
                let target = std::fs::read_link(&full)?;
                if target.is_absolute() {
                    cur = PathBuf::new();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => todo.push(n.to_os_string()),
                        Component::ParentDir => todo.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => cur = candidate,
        }
    }
    Ok(root.join(cur))
}

/// Copies `src` (file, directory, symlink) to `dst`, which must not exist; the copy keeps
/// modes and times, and owners when `owners`.
fn copy_tree(src: &Path, dst: &Path, owners: bool) -> Result<()> {
    let meta = std::fs::symlink_metadata(src).with_context(|| format!("{}", src.display()))?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let t = std::fs::read_link(src)?;
        std::os::unix::fs::symlink(&t, dst).with_context(|| format!("{}", dst.display()))?;
    } else if ft.is_dir() {
        std::fs::create_dir(dst).with_context(|| format!("creating {}", dst.display()))?;
        for e in std::fs::read_dir(src)? {
            let e = e?;
            copy_tree(&e.path(), &dst.join(e.file_name()), owners)?;
        }
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    } else if ft.is_file() {
        std::fs::copy(src, dst)
            .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    } else {
        bail!(
            "{}: only files, directories and symlinks are copied",
            src.display()
        );
    }
    if owners {
        let _ = std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()));
    }
    Ok(())
}

/// docker cp's rules: into an existing directory as its base name; `SRC/.` copies a
/// directory's contents.
fn copy_into(src: &Path, src_contents: bool, dst: &Path, owners: bool) -> Result<()> {
    let src_meta = std::fs::symlink_metadata(src)
        .with_context(|| format!("Could not find the file {}", src.display()))?;
    if src_contents && src_meta.is_dir() {
        if !dst.exists() {
            std::fs::create_dir_all(dst)?;
        }
        for e in std::fs::read_dir(src)? {
            let e = e?;
            let target = dst.join(e.file_name());
            if target.is_dir() && e.file_type()?.is_dir() {
                copy_into(&e.path(), true, &target, owners)?;
            } else {
                let _ = std::fs::remove_file(&target);
                copy_tree(&e.path(), &target, owners)?;
            }
        }
        return Ok(());
    }
    let target = if dst.is_dir() {
        dst.join(src.file_name().context("source has no name")?)
    } else {
        if !dst.parent().is_some_and(|p| p.is_dir()) {
            bail!(
                "no such directory: {}",
                dst.parent().unwrap_or(dst).display()
            );
        }
        dst.to_path_buf()
    };
    if target.exists() && !target.is_dir() {
        std::fs::remove_file(&target)?;
    }
    if target.is_dir() && src_meta.is_dir() {
        return copy_into(src, true, &target, owners);
    }
    copy_tree(src, &target, owners)
}

/// `cp CONTAINER:SRC -`: a tar of `src` on stdout, as docker writes it: its entries named
/// from its base name (a directory's contents with `SRC/.`), owners kept.
fn tar_out(src: &Path, contents: bool) -> Result<()> {
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
    }
    let mut b = tar::Builder::new(std::io::BufWriter::new(std::io::stdout().lock()));
    b.follow_symlinks(false);
    let name = match contents {
        true => PathBuf::from("."),
        false => PathBuf::from(src.file_name().unwrap_or(std::ffi::OsStr::new("."))),
    };
    let r = append_tree(&mut b, src, &name, &mut HashMap::new());
    match r.and_then(|()| b.into_inner().map(drop)) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r.with_context(|| format!("writing the tar of {}", src.display()))?),
    }
}

/// Appends `path` as `name` and, for a directory, what is under it (sorted by name). A file
/// with several names goes in once; its other names become hard link entries naming the
/// first, as tar writes them (`seen`: the first name of each (device, inode) met so far).
fn append_tree<W: std::io::Write>(
    b: &mut tar::Builder<W>,
    path: &Path,
    name: &Path,
    seen: &mut HashMap<(u64, u64), PathBuf>,
) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        b.append_dir(name, path)?;
        let mut entries = std::fs::read_dir(path)?.collect::<std::io::Result<Vec<_>>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            append_tree(b, &e.path(), &name.join(e.file_name()), seen)?;
        }
        return Ok(());
    }
    if meta.nlink() > 1 {
        match seen.entry((meta.dev(), meta.ino())) {
            Entry::Occupied(first) => {
                let mut h = tar::Header::new_gnu();
                h.set_metadata(&meta);
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                return b.append_link(&mut h, name, first.get());
            }
            Entry::Vacant(v) => {
                v.insert(name.to_path_buf());
            }
        }
    }
    b.append_path_with_name(path, name)
}

/// `cp - CONTAINER:DEST`: extracts the tar on stdin into the directory `dest`. Each entry
/// is resolved inside the container's root as `cp` resolves paths (a symlink of the
/// container never leads out of it, `..` stops at its root); owners only with `-a`.
fn tar_in(root: &Path, ctr_dest: &str, dest: &Path, owners: bool) -> Result<()> {
    if !dest.is_dir() {
        bail!("extraction point is not a directory: {ctr_dest}");
    }
    let mut ar = tar::Archive::new(std::io::stdin().lock());
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(owners);
    ar.set_unpack_xattrs(true);
    let inside = |p: &Path| resolve_in(root, &format!("{ctr_dest}/{}", p.display()), false);
    for entry in ar.entries().context("reading the tar on stdin")? {
        let mut entry = entry.context("reading the tar on stdin")?;
        let path = entry.path()?.into_owned();
        if path.components().all(|c| matches!(c, Component::CurDir)) {
            continue;
        }
        let target = inside(&path)?;
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if entry.header().entry_type().is_hard_link() {
            let link = entry.link_name()?.context("a hard link without a target")?;
            let _ = std::fs::remove_file(&target);
            std::fs::hard_link(inside(&link)?, &target)
                .with_context(|| format!("linking {}", path.display()))?;
            continue;
        }
        if target.is_dir() && entry.header().entry_type().is_dir() {
            entry.unpack(&target).map(drop).ok();
            continue;
        }
        let _ = std::fs::remove_file(&target);
        entry
            .unpack(&target)
            .with_context(|| format!("extracting {}", path.display()))?;
    }
    Ok(())
}

/// `CONTAINER:PATH` → (container, path).
fn split_container(arg: &str) -> Option<(&str, &str)> {
    if arg.starts_with('/') || arg.starts_with('.') {
        return None;
    }
    arg.split_once(':')
}

/// Which way a copy goes, with the container's path.
pub enum Direction {
    FromContainer { ctr_path: String, host: PathBuf },
    ToContainer { host: PathBuf, ctr_path: String },
}

/// Does the copy with the container's root at `root` (mounted or /proc/PID/root).
pub fn copy_with_root(root: &Path, dir: &Direction, follow: bool, owners: bool) -> Result<()> {
    match dir {
        Direction::FromContainer { ctr_path, host } => {
            let contents = ctr_path.ends_with("/.");
            let src = resolve_in(root, ctr_path.trim_end_matches("/."), follow)?;
            if !src.exists() && std::fs::symlink_metadata(&src).is_err() {
                bail!("Could not find the file {ctr_path} in container");
            }
            if host.as_os_str() == "-" {
                return tar_out(&src, contents);
            }
            if host.to_string_lossy().ends_with('/') && !host.is_dir() {
                bail!("no such directory: {}", host.display());
            }
            copy_into(&src, contents, host, owners)
        }
        Direction::ToContainer { host, ctr_path } => {
            let contents = host.to_string_lossy().ends_with("/.");
            let dst = resolve_in(root, ctr_path, true)?;
            if ctr_path.ends_with('/') && !dst.is_dir() {
                bail!("no such directory: {ctr_path}");
            }
            if host.as_os_str() == "-" {
                return tar_in(root, ctr_path, &dst, owners);
            }
            let src = if follow {
                std::fs::canonicalize(host).unwrap_or_else(|_| host.clone())
            } else {
                host.clone()
            };
            copy_into(&src, contents, &dst, owners)
        }
    }
}

pub fn cp(global: &Global, args: CpArgs) -> i32 {
    let r = (|| -> Result<()> {
        let (store, c) = open(global);
        let (name, direction) = match (split_container(&args.src), split_container(&args.dst)) {
            (Some(_), Some(_)) => bail!("copying between containers is not supported"),
            (None, None) => bail!("must specify at least one container source"),
            (Some((n, p)), None) => (
                n,
                Direction::FromContainer {
                    ctr_path: p.to_string(),
                    host: PathBuf::from(&args.dst),
                },
            ),
            (None, Some((n, p))) => (
                n,
                Direction::ToContainer {
                    host: PathBuf::from(&args.src),
                    ctr_path: p.to_string(),
                },
            ),
        };
        if let Direction::ToContainer { host, .. } = &direction {
            if host.as_os_str() != "-" && std::fs::symlink_metadata(host).is_err() {
                bail!("could not find the file {}", host.display());
            }
        }
        let rec = c.find(name)?;
        let st = c.state(&rec.id)?;
        if st.status.is_active() {
            let root = PathBuf::from(format!("/proc/{}/root", st.pid));
            return copy_with_root(&root, &direction, args.follow_link, args.archive);
        }
        // `-` (a tar on stdin or stdout) goes to the helper as it is.
        let absolute = |h: &PathBuf| match h.as_os_str() == "-" {
            true => Ok(h.clone()),
            false => std::path::absolute(h),
        };
        let (way, a, b) = match &direction {
            Direction::FromContainer { ctr_path, host } => {
                ("from", ctr_path.clone(), absolute(host)?)
            }
            Direction::ToContainer { host, ctr_path } => ("to", ctr_path.clone(), absolute(host)?),
        };
        let exe = std::env::current_exe()?;
        let status = std::process::Command::new(exe)
            .arg("--root")
            .arg(store.root())
            .args(["__rootfs", &rec.id, way, &a])
            .arg(&b)
            .args(args.follow_link.then_some("--follow"))
            .args(args.archive.then_some("--archive"))
            .status()
            .context("starting the copy helper")?;
        if !status.success() {
            bail!("copy failed");
        }
        Ok(())
    })();
    report(r, Prefix::Daemon)
}

#[derive(Args)]
pub struct RootfsArgs {
    pub id: String,
    /// `from` or `to` the container
    pub way: String,
    pub ctr_path: String,
    pub host: PathBuf,
    #[arg(long)]
    pub follow: bool,
    #[arg(long)]
    pub archive: bool,
}

/// `strata __rootfs ID from|to CTR_PATH HOST_PATH`: copies with a stopped container's
/// union mounted in a namespace of this process.
pub fn rootfs_helper(global: &Global, args: RootfsArgs) -> i32 {
    let r = (|| -> Result<()> {
        let store = Store::new(&global.root);
        let c = Containers::new(&store);
        let rec = c.record(&args.id)?;
        let root = crate::monitor::mount_private(&store, &rec)?;
        let direction = match args.way.as_str() {
            "from" => Direction::FromContainer {
                ctr_path: args.ctr_path.clone(),
                host: args.host.clone(),
            },
            _ => Direction::ToContainer {
                host: args.host.clone(),
                ctr_path: args.ctr_path.clone(),
            },
        };
        let r = copy_with_root(&root.path, &direction, args.follow, args.archive);
        drop(root);
        r
    })();
    report(r, Prefix::Daemon)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../..", root.join("up")).unwrap();
        assert_eq!(
            resolve_in(root, "/abs/x", true).unwrap(),
            root.join("etc/x")
        );
        assert_eq!(resolve_in(root, "/up/etc", true).unwrap(), root.join("etc"));
        assert_eq!(
            resolve_in(root, "/../../etc", true).unwrap(),
            root.join("etc")
        );
        assert_eq!(resolve_in(root, "/abs", false).unwrap(), root.join("abs"));
        assert_eq!(split_container("c1:/x"), Some(("c1", "/x")));
        assert_eq!(split_container("/a:b"), None);
    }
}
