//! `mount IMAGE DIR [--upper DIR]` and `umount DIR`: the image's layers under a strata-fs
//! union mount, read-only, or writable with `--upper DIR` (changes go to `DIR/upper`,
//! scratch space is `DIR/work`), served by `strata __mount` ([`image_mount`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::images::find_image;
use crate::store::Store;
use crate::Global;
use strata_engine::image_mount;
use strata_fs::mount::MountError;

#[derive(Args)]
pub struct MountArgs {
    /// Image (name or ID)
    pub image: String,
    /// Mount point
    pub dir: PathBuf,
    /// Make the mount writable: changes in DIR/upper, scratch in DIR/work
    #[arg(long, value_name = "DIR")]
    pub upper: Option<PathBuf>,
}

/// The arguments of the mount server (internal): as `mount`'s, with the image's ID.
#[derive(Args)]
pub struct ServeArgs {
    pub image: String,
    pub dir: PathBuf,
    #[arg(long)]
    pub upper: Option<PathBuf>,
}

#[derive(Args)]
pub struct UmountArgs {
    /// Mount point
    pub dir: PathBuf,
}

pub fn mount(global: &Global, args: MountArgs) -> Result<()> {
    let store = Store::new(&global.root);
    let (_, img) = find_image(&store, &args.image)?;
    if !args.dir.is_dir() {
        bail!("mount point {} is not a directory", args.dir.display());
    }
    if img.layers().next().is_none() {
        bail!("image {} has no layers", args.image);
    }
    match image_mount::start(&store, &img, &args.dir, args.upper.as_deref()) {
        // The server said why on the stderr it shares with us: one message, its status.
        Err(strata_engine::Error::Mount(MountError::Server { status, .. })) => {
            std::process::exit(status.code().unwrap_or(1))
        }
        r => Ok(r?),
    }
}

/// `strata __mount ID DIR [--upper DIR]`: the server `mount` starts.
pub fn serve(global: &Global, args: ServeArgs) -> Result<()> {
    let store = Store::new(&global.root);
    image_mount::serve(&store, &args.image, &args.dir, args.upper.as_deref())?;
    Ok(())
}

/// The filesystem type mounted at `dir`, from /proc/self/mountinfo (the last mount wins).
fn mounted_type(dir: &Path) -> Result<Option<String>> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let want = dir.to_string_lossy().into_owned();
    let mut found = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.get(4).map(|m| unescape(m)) == Some(want.clone()) {
            found = fields.get(sep + 1).map(|s| s.to_string());
        }
    }
    Ok(found)
}

/// mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn umount(_global: &Global, args: UmountArgs) -> Result<()> {
    let dir =
        std::fs::canonicalize(&args.dir).with_context(|| format!("{}", args.dir.display()))?;
    match mounted_type(&dir)? {
        None => bail!("{} is not mounted", dir.display()),
        Some(t) if t.starts_with("fuse") => {}
        Some(t) => bail!("{} is a {t} mount, not one of strata's", dir.display()),
    }
    match nix::mount::umount2(&dir, nix::mount::MntFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(nix::errno::Errno::EPERM) => {}
        Err(e) => return Err(e).with_context(|| format!("unmounting {}", dir.display())),
    }
    let status = Command::new("fusermount3")
        .arg("-u")
        .arg(&dir)
        .status()
        .context("running fusermount3 -u (apt-get install fuse3)")?;
    if !status.success() {
        bail!("fusermount3 -u {} failed ({status})", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/end\\04"), "/end\\04");
    }
}
