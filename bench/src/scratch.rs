//! The benchmark's disk: a fresh ext4 image on a loop device, so every run starts from the
//! same empty filesystem with a journal (the host's `/` here has none, and creating files
//! right after a mass delete on it stalls for half a minute). Removed on drop.
//!
//! Also the two steps every cold measurement takes: a fresh union mount over the layers with
//! an empty upper directory, and `sync` + `drop_caches`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::mount::{umount2, MntFlags, MsFlags};
use strata_tests::mounts::{self, Driver, MountGuard, UnionDirs};

/// A loop-mounted ext4 image holding the layers, the native copies and the upper directories.
pub struct Scratch {
    dir: PathBuf,
    image: PathBuf,
    loopdev: Option<String>,
    root: PathBuf,
    mnt: PathBuf,
}

impl Scratch {
    /// Creates `dir/strata-bench.PID/` with an image of `bytes` (sparse), formats it and mounts
    /// it. Inode tables are initialised now, not by a background thread during measurements.
    pub fn create(parent: &Path, bytes: u64) -> Result<Scratch> {
        let dir = parent.join(format!("strata-bench.{}", std::process::id()));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut scratch = Scratch {
            image: dir.join("ext4.img"),
            root: dir.join("fs"),
            mnt: dir.join("mnt"),
            loopdev: None,
            dir,
        };
        fs::create_dir(&scratch.root)?;
        fs::create_dir(&scratch.mnt)?;
        fs::File::create(&scratch.image)?.set_len(bytes)?;
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
            .arg(&scratch.image))?;
        // Direct I/O on the loop device: the image's pages are not cached twice.
        let losetup = |direct: bool| {
            let mut cmd = Command::new("losetup");
            cmd.args(["--find", "--show"]);
            if direct {
                cmd.arg("--direct-io=on");
            }
            output(cmd.arg(&scratch.image))
        };
        let dev = losetup(true).or_else(|_| losetup(false))?;
        scratch.loopdev = Some(dev.trim().to_string());
        nix::mount::mount(
            Some(dev.trim()),
            &scratch.root,
            Some("ext4"),
            MsFlags::empty(),
            None::<&str>,
        )
        .with_context(|| format!("mounting {} on {}", dev.trim(), scratch.root.display()))?;
        Ok(scratch)
    }

    /// The loop device's name (`loop3`), as `/proc/diskstats` names it.
    pub fn device(&self) -> Option<&str> {
        self.loopdev
            .as_deref()
            .map(|d| d.trim_start_matches("/dev/"))
    }

    /// The mounted filesystem.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Mounts `driver` over `lowers` (top first) with a fresh, empty upper directory and
    /// `extra` options.
    pub fn mount_union(
        &self,
        driver: Driver,
        extra: &[&str],
        lowers: &[PathBuf],
    ) -> Result<UnionMount> {
        let run = self.root.join("run");
        if run.exists() {
            fs::remove_dir_all(&run).with_context(|| format!("removing {}", run.display()))?;
        }
        let (upper, work) = (run.join("upper"), run.join("work"));
        fs::create_dir_all(&upper)?;
        fs::create_dir_all(&work)?;
        let dirs = UnionDirs {
            lowers: lowers.to_vec(),
            upper: Some((upper, work)),
            merged: self.mnt.clone(),
        };
        let guard = mounts::mount(driver, &dirs, extra)?;
        // The FUSE daemons go to the background: their pid, to wait for their exit.
        let daemon = match driver {
            Driver::Kernel => None,
            _ => Some(crate::procfs::daemon_pid(driver.name(), &self.mnt)?),
        };
        Ok(UnionMount {
            guard: Some(guard),
            daemon,
            run,
        })
    }

    /// Mounts `lowers` read-only with kernel overlayfs (no upper): the reference view that
    /// the native copies are taken from.
    pub fn mount_lowers(&self, lowers: &[PathBuf]) -> Result<MountGuard> {
        let dirs = UnionDirs {
            lowers: lowers.to_vec(),
            upper: None,
            merged: self.mnt.clone(),
        };
        mounts::mount(Driver::Kernel, &dirs, &[])
    }

    fn teardown(&mut self) -> Result<()> {
        for point in [&self.mnt, &self.root] {
            if mounts::is_mounted(point) {
                umount2(point.as_path(), MntFlags::empty())
                    .or_else(|_| umount2(point.as_path(), MntFlags::MNT_DETACH))
                    .with_context(|| format!("unmounting {}", point.display()))?;
                mounts::wait_for(Duration::from_secs(30), "the unmount", || {
                    !mounts::is_mounted(point)
                })?;
            }
        }
        if let Some(dev) = self.loopdev.take() {
            run(Command::new("losetup").arg("-d").arg(&dev))?;
        }
        fs::remove_dir_all(&self.dir).with_context(|| format!("removing {}", self.dir.display()))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(err) = self.teardown() {
            eprintln!(
                "strata-bench: cleaning up {} failed: {err:#}; remove it by hand",
                self.dir.display()
            );
        }
    }
}

/// A union mounted for one measurement; unmounted, and its upper directory removed, on drop.
pub struct UnionMount {
    guard: Option<MountGuard>,
    /// The background FUSE daemon serving it.
    daemon: Option<u32>,
    run: PathBuf,
}

impl UnionMount {
    pub fn path(&self) -> &Path {
        self.guard.as_ref().expect("mounted until dropped").path()
    }

    /// The FUSE daemon serving it; `None` for kernel overlayfs.
    pub fn daemon(&self) -> Option<u32> {
        self.daemon
    }
}

impl Drop for UnionMount {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            if let Err(err) = guard.unmount() {
                eprintln!("strata-bench: {err:#}");
                return;
            }
        }
        // A daemon still flushing after its unmount would overlap the next round (and name
        // the same mount point as the next daemon).
        if let Some(pid) = self.daemon {
            let proc_dir = PathBuf::from(format!("/proc/{pid}"));
            if let Err(err) =
                mounts::wait_for(Duration::from_secs(30), "the FUSE daemon's exit", || {
                    !proc_dir.exists()
                })
            {
                eprintln!("strata-bench: daemon {pid}: {err:#}");
            }
        }
        if let Err(err) = fs::remove_dir_all(&self.run) {
            eprintln!("strata-bench: removing {}: {err}", self.run.display());
        }
    }
}

/// Writes back dirty data and empties the page, dentry and inode caches: what a "cold"
/// measurement starts from.
pub fn drop_caches() -> Result<()> {
    nix::unistd::sync();
    fs::write("/proc/sys/vm/drop_caches", "3").context("writing /proc/sys/vm/drop_caches")
}

/// Runs `cmd`, failing with its stderr when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    output(cmd).map(drop)
}

/// Runs `cmd` and returns its stdout, failing with its stderr when it fails.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
