//! Mounting and unmounting the strata-fs unions the snapshotter holds: the seam between the
//! table's rules and the system, so the rules are unit-tested without FUSE.
//!
//! Each union is served by a `strata-fs` process of its own, which daemonizes (setsid, its
//! parent exits once the mount is ready): it is nobody's child here, so the mount outlives
//! a snapshotter that is killed or restarted.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{Error, Result};

/// What to mount: strata-fs over `lowers` (nearest first), with `upper` and `work` for an
/// active snapshot, read-only for a view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Union {
    pub lowers: Vec<PathBuf>,
    pub upper: Option<(PathBuf, PathBuf)>,
}

impl Union {
    /// strata-fs's `-o` value.
    pub fn options(&self) -> String {
        let lowers: Vec<String> = self
            .lowers
            .iter()
            .map(|l| l.display().to_string())
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

/// The real one: runs `strata-fs`, unmounts with umount2(2).
pub struct StrataFs {
    pub program: PathBuf,
}

impl StrataFs {
    /// `$STRATA_FS_BIN`, else `strata-fs` beside this executable, else from PATH.
    pub fn locate() -> StrataFs {
        let program = std::env::var_os("STRATA_FS_BIN")
            .map(PathBuf::from)
            .or_else(|| {
                let exe = std::env::current_exe().ok()?;
                let beside = exe.parent()?.join("strata-fs");
                beside.is_file().then_some(beside)
            })
            .unwrap_or_else(|| PathBuf::from("strata-fs"));
        StrataFs { program }
    }
}

impl Mounter for StrataFs {
    fn mount(&self, union: &Union, at: &Path) -> Result<()> {
        let out = Command::new(&self.program)
            .arg("-o")
            .arg(union.options())
            .arg("strata-snapshotter")
            .arg(at)
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
