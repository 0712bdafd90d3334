//! Mounting the union three ways (strata-fs, fuse-overlayfs, kernel overlayfs) over the same
//! directories, and unmounting on drop without sleeping: readiness and teardown are read from
//! `/proc/self/mountinfo` against a deadline.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Which implementation serves a mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    Strata,
    FuseOverlayfs,
    Kernel,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::Strata => "strata-fs",
            Driver::FuseOverlayfs => "fuse-overlayfs",
            Driver::Kernel => "overlay",
        }
    }
}

/// The directories of one union mount. `lowers[0]` is the top layer.
#[derive(Clone, Debug)]
pub struct UnionDirs {
    pub lowers: Vec<PathBuf>,
    pub upper: Option<(PathBuf, PathBuf)>,
    pub merged: PathBuf,
}

impl UnionDirs {
    /// `lowerdir=…,upperdir=…,workdir=…` as every driver spells it (no `lowerdir=` when
    /// `lowers` is empty).
    pub fn options(&self) -> String {
        let lowers: Vec<String> = self
            .lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        // No lower directories: the layers come as other options (strata-fs `layers=`).
        let mut opts = Vec::new();
        if !lowers.is_empty() {
            opts.push(format!("lowerdir={}", lowers.join(":")));
        }
        if let Some((upper, work)) = &self.upper {
            opts.push(format!(
                "upperdir={},workdir={}",
                upper.display(),
                work.display()
            ));
        }
        opts.join(",")
    }
}

/// A binary built by this workspace: `$STRATA_FS_BIN`-style override `env`, else the target
/// directory the running test or bench binary lives in (or its parent, for `deps/`).
pub fn workspace_bin(name: &str, env: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("locating the running binary")?;
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "{name} not found beside {}; run `cargo build --workspace` or set {env}",
        exe.display()
    )
}

pub fn strata_fs_bin() -> Result<PathBuf> {
    workspace_bin("strata-fs", "STRATA_FS_BIN")
}

/// Whether `path` is a mount point in this mount namespace.
pub fn is_mounted(path: &Path) -> bool {
    mountinfo_line(path).is_some()
}

/// The `/proc/self/mountinfo` line of the mount at `path`, if mounted.
pub fn mountinfo_line(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let wanted = path.to_string_lossy();
    info.lines()
        .find(|line| line.split(' ').nth(4).map(unescape_mountinfo).as_deref() == Some(&*wanted))
        .map(str::to_string)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(u8::is_ascii_digit)
        {
            let code = u8::from_str_radix(&field[i + 1..i + 4], 8).unwrap_or(b'?');
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How long a mount may take to appear: generous, as CI machines are busy.
const MOUNT_WAIT: Duration = Duration::from_secs(30);

/// Polls `done` every few milliseconds until it holds or `limit` passes.
pub fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// A mounted union; unmounted (with a bounded wait) on drop.
pub struct MountGuard {
    path: PathBuf,
    driver: Driver,
    /// The daemon, when it was started in the foreground (`-f`) so a test can signal it.
    daemon: Option<Child>,
}

impl MountGuard {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn driver(&self) -> Driver {
        self.driver
    }

    /// The foreground daemon's pid, for tests that kill it.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// SIGKILLs a foreground daemon and reaps it: its /dev/fuse is closed on return.
    pub fn kill_daemon(&mut self) -> Result<()> {
        let child = self.daemon.as_mut().context("the daemon is not a child")?;
        child.kill()?;
        child.wait()?;
        self.daemon = None;
        Ok(())
    }

    /// Unmounts and waits until the mount is gone and a foreground daemon has exited.
    pub fn unmount(mut self) -> Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<()> {
        if is_mounted(&self.path) {
            unmount(&self.path, self.driver)?;
        }
        if let Some(mut child) = self.daemon.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if child.try_wait()?.is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("{} did not exit after unmount", self.driver.name());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(())
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Err(err) = self.teardown() {
            eprintln!("unmounting {}: {err:#}", self.path.display());
        }
    }
}

/// Unmounts `path`: umount(2) when we may (root, or root of a user namespace that owns the
/// mount), else `fusermount3 -u`. A dead FUSE daemon's mount still unmounts this way.
pub fn unmount(path: &Path, driver: Driver) -> Result<()> {
    use nix::mount::{umount2, MntFlags};
    let direct = umount2(path, MntFlags::empty());
    if direct.is_err() && driver != Driver::Kernel {
        let out = Command::new("fusermount3")
            .arg("-u")
            .arg(path)
            .stderr(Stdio::piped())
            .output()
            .context("running fusermount3")?;
        if !out.status.success() && is_mounted(path) {
            // Busy: detach so the test cannot hang; the daemon exits when the last user goes.
            umount2(path, MntFlags::MNT_DETACH)
                .or_else(|_| {
                    Command::new("fusermount3")
                        .args(["-u", "-z"])
                        .arg(path)
                        .status()
                        .map(|_| ())
                        .map_err(|_| nix::errno::Errno::EIO)
                })
                .with_context(|| format!("unmounting {}", path.display()))?;
        }
    } else if let Err(err) = direct {
        umount2(path, MntFlags::MNT_DETACH)
            .with_context(|| format!("unmounting {} ({err})", path.display()))?;
    }
    wait_for(Duration::from_secs(10), "the unmount", || !is_mounted(path))
}

/// Mounts `dirs` with `driver`; `extra` options are appended (`name` or `name=value`).
pub fn mount(driver: Driver, dirs: &UnionDirs, extra: &[&str]) -> Result<MountGuard> {
    let mut opts = dirs.options();
    for option in extra {
        opts.push(',');
        opts.push_str(option);
    }
    match driver {
        Driver::Kernel => {
            use nix::mount::MsFlags;
            // A process that unshared its mount namespace while an earlier overlay over the
            // same upper was mounted (a container started by a test running in parallel, or
            // the rootless suite's `unshare -Urm` child, which lives for its whole suite)
            // holds a copy of that mount, and with it the upper's "in use" lock, until it
            // exits or pivots away: EBUSY then is transient, if for as long as that suite.
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                let mounted = nix::mount::mount(
                    Some("overlay"),
                    &dirs.merged,
                    Some("overlay"),
                    MsFlags::empty(),
                    Some(opts.as_str()),
                );
                match mounted {
                    Err(nix::errno::Errno::EBUSY) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    other => {
                        other.with_context(|| format!("mounting kernel overlayfs with {opts}"))?;
                        break;
                    }
                }
            }
        }
        Driver::Strata | Driver::FuseOverlayfs => {
            let program = match driver {
                Driver::Strata => strata_fs_bin()?,
                _ => PathBuf::from("fuse-overlayfs"),
            };
            let out = Command::new(&program)
                .arg("-o")
                .arg(&opts)
                .arg(&dirs.merged)
                .stdin(Stdio::null())
                .output()
                .with_context(|| format!("starting {}", program.display()))?;
            if !out.status.success() {
                bail!(
                    "{} -o {opts} failed ({}): {}",
                    program.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
    }
    wait_for(MOUNT_WAIT, "the mount", || is_mounted(&dirs.merged))?;
    Ok(MountGuard {
        path: dirs.merged.clone(),
        driver,
        daemon: None,
    })
}

/// Starts `strata-fs -f` as a child (so its pid is known) and waits for the mount.
pub fn mount_strata_foreground(dirs: &UnionDirs, extra: &[&str]) -> Result<MountGuard> {
    let mut opts = dirs.options();
    for option in extra {
        opts.push(',');
        opts.push_str(option);
    }
    let mut child = Command::new(strata_fs_bin()?)
        .arg("-f")
        .arg("-o")
        .arg(&opts)
        .arg(&dirs.merged)
        .stdin(Stdio::null())
        .spawn()
        .context("starting strata-fs -f")?;
    let ready = wait_for(MOUNT_WAIT, "the mount", || {
        is_mounted(&dirs.merged) || matches!(child.try_wait(), Ok(Some(_)))
    });
    if let Ok(Some(status)) = child.try_wait() {
        bail!("strata-fs -f -o {opts} exited early: {status}");
    }
    ready?;
    Ok(MountGuard {
        path: dirs.merged.clone(),
        driver: Driver::Strata,
        daemon: Some(child),
    })
}

/// A tmpfs the test mounted (a small disk to fill); detached on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs with `options` (`size=12m`, `uid=…`) at `path`, made if missing.
    pub fn mount(path: &Path, options: &str) -> Result<Tmpfs> {
        std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        nix::mount::mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(options),
        )
        .with_context(|| format!("mounting a tmpfs at {}", path.display()))?;
        Ok(Tmpfs(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo(r"/x\134y"), r"/x\y");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
