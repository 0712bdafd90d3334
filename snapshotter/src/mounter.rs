//! Mounting and unmounting the strata-fs unions the snapshotter holds: the seam between the
//! table's rules and the system, so the rules are unit-tested without FUSE.
//!
//! Each union is served by a `strata-fs` process of its own (or, with lazy layers, by
//! `strata-snapshotter serve-union`, [`serve_union`]), which daemonizes (setsid, its parent
//! exits once the mount is ready): it is nobody's child here, so the mount outlives a
//! snapshotter that is killed or restarted.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::lazy::Remote;
use crate::{Error, Result};

/// One lower layer of a union.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Lower {
    /// A committed snapshot's directory.
    Dir(PathBuf),
    /// A lazy layer: its index directory and where its data is.
    Lazy(PathBuf, Remote),
}

/// What to mount: a union over `lowers` (nearest first), with `upper` and `work` for an
/// active snapshot, read-only for a view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Union {
    pub lowers: Vec<Lower>,
    pub upper: Option<(PathBuf, PathBuf)>,
}

impl Union {
    /// Whether a lower is lazy (then strata-fs cannot serve it: it has no registry client).
    pub fn is_lazy(&self) -> bool {
        self.lowers.iter().any(|l| matches!(l, Lower::Lazy(..)))
    }

    /// strata-fs's `-o` value (for unions of directories).
    pub fn options(&self) -> String {
        let lowers: Vec<String> = self
            .lowers
            .iter()
            .map(|l| match l {
                Lower::Dir(p) | Lower::Lazy(p, _) => p.display().to_string(),
            })
            .collect();
        let mut o = format!("lowerdir={}", lowers.join(":"));
        match &self.upper {
            Some((upper, work)) => o.push_str(&format!(
                ",upperdir={},workdir={}",
                upper.display(),
                work.display()
            )),
            None => o.push_str(",ro"),
        }
        // Containers run as any user; the kernel lets only the mounter into a FUSE mount
        // without it.
        o.push_str(",allow_other");
        o
    }
}

/// Mounts unions and takes them down.
pub trait Mounter: Send + Sync {
    fn mount(&self, union: &Union, at: &Path) -> Result<()>;
    /// Unmounts `at` if something is mounted there.
    fn unmount(&self, at: &Path) -> Result<()>;
    /// Whether a live union is mounted at `at` (a mount whose server died is not).
    fn is_mounted(&self, at: &Path) -> bool;
}

/// The real one: runs `strata-fs` (or, for a union with lazy layers, this program's
/// `serve-union`), unmounts with umount2(2).
pub struct StrataFs {
    pub program: PathBuf,
    /// The chunk cache a lazy union reads through.
    pub cache: PathBuf,
}

impl StrataFs {
    /// `$STRATA_FS_BIN`, else `strata-fs` beside this executable, else from PATH.
    pub fn locate(cache: PathBuf) -> StrataFs {
        let program = std::env::var_os("STRATA_FS_BIN")
            .map(PathBuf::from)
            .or_else(|| {
                let exe = std::env::current_exe().ok()?;
                let beside = exe.parent()?.join("strata-fs");
                beside.is_file().then_some(beside)
            })
            .unwrap_or_else(|| PathBuf::from("strata-fs"));
        StrataFs { program, cache }
    }
}

impl Mounter for StrataFs {
    fn mount(&self, union: &Union, at: &Path) -> Result<()> {
        let mut cmd;
        if union.is_lazy() {
            let exe = std::env::current_exe().map_err(|source| Error::Io {
                step: "locating",
                path: "/proc/self/exe".into(),
                source,
            })?;
            cmd = Command::new(exe);
            cmd.arg("serve-union")
                .arg("--cache")
                .arg(&self.cache)
                .arg(serde_json::to_string(union).expect("a union serializes"))
                .arg(at);
        } else {
            cmd = Command::new(&self.program);
            cmd.arg("-o")
                .arg(union.options())
                .arg("strata-snapshotter")
                .arg(at);
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|source| Error::Io {
                step: "running",
                path: self.program.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(Error::Mount {
                at: at.to_path_buf(),
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }

    fn unmount(&self, at: &Path) -> Result<()> {
        use nix::mount::{umount2, MntFlags};
        match umount2(at, MntFlags::empty()) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            // Still in use (a container's copy of it is in another namespace and goes on
            // with the server; ours goes).
            Err(nix::errno::Errno::EBUSY) => {
                umount2(at, MntFlags::MNT_DETACH).map_err(|e| Error::Unmount {
                    at: at.to_path_buf(),
                    source: e.into(),
                })
            }
            Err(e) => Err(Error::Unmount {
                at: at.to_path_buf(),
                source: e.into(),
            }),
        }
    }

    fn is_mounted(&self, at: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let (Ok(md), Some(Ok(parent))) =
            (std::fs::metadata(at), at.parent().map(std::fs::metadata))
        else {
            return false;
        };
        md.dev() != parent.dev()
    }
}

/// Serves `union` at `at` in this process until it is unmounted (`serve-union`): what
/// strata-fs does, with lazy layers too. `ready` runs once the mount is up.
pub fn serve_union(
    union: &Union,
    at: &Path,
    cache: &Path,
    ready: impl FnOnce(),
) -> std::result::Result<(), String> {
    use std::sync::Arc;
    use strata_fs::layer::{DirLayer, Layer};
    use strata_fs::mount;
    use strata_fs::options::MountOptions;

    // Modes in the upper are the container's, not reduced by ours.
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let signals = mount::block_end_signals().map_err(|e| format!("blocking signals: {e}"))?;
    // The store's cache, bounded as strata bounds it (STRATA_LAZY_CACHE_SIZE, else a share of
    // the store's filesystem): `cache` is the store's chunks directory.
    let root = cache
        .parent()
        .ok_or_else(|| format!("chunk cache {} is not in a store", cache.display()))?;
    let chunks = strata_image::store::Store::new(root)
        .chunk_cache()
        .map_err(|e| format!("chunk cache {}: {e}", cache.display()))?;
    let mut lowers: Vec<Arc<dyn Layer>> = Vec::new();
    for l in &union.lowers {
        lowers.push(match l {
            Lower::Dir(p) => {
                Arc::new(DirLayer::open(p, 64).map_err(|e| format!("lower {}: {e}", p.display()))?)
            }
            Lower::Lazy(dir, remote) => {
                crate::lazy::open(remote, dir, &chunks).map_err(|e| e.to_string())?
            }
        });
    }
    let mut opts = MountOptions::default();
    match &union.upper {
        Some((upper, work)) => {
            opts.upperdir = Some(upper.clone());
            opts.workdir = Some(work.clone());
        }
        None => opts.read_only = true,
    }
    opts.allow_other = true;
    let built = mount::build_union(lowers, &opts).map_err(|e| e.to_string())?;
    let mounted =
        mount::mount(built, &opts, Some("strata-snapshotter"), at).map_err(|e| e.to_string())?;
    mounted.serve(signals, ready).map_err(|e| e.to_string())
}
