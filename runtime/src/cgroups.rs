//! cgroup limits, the freezer and OOM accounting, under `strata/<id>`:
//!
//! - cgroup v1 (this host: hierarchies under `/sys/fs/cgroup/<controller>`, plus a v2
//!   `unified` mount without controllers): one directory per controller among memory,
//!   pids, cpu and freezer, `/sys/fs/cgroup/<controller>/strata/<id>`;
//! - cgroup v2 (/sys/fs/cgroup is cgroup2): `/sys/fs/cgroup/strata/<id>` as root, or, in a
//!   user namespace / as a user, under the systemd-delegated
//!   `user.slice/user-UID.slice/user@UID.service` when this process may write it.
//!
//! Devices (v1): a container that is not privileged may open only docker's default
//! devices ([`Cgroup::restrict_devices`]): root in it keeps CAP_MKNOD, and a node it makes
//! for a host disk must not open. (cgroup v2 needs an eBPF program for this: not done.)
//!
//! Limits map as docker's: `--memory` to memory.limit_in_bytes and memsw (or memory.max
//! and memory.swap.max = 0) so going over OOM-kills rather than swaps; `--pids-limit` to
//! pids.max; `--cpus` to a CFS quota per 100 ms period.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::{Error, Resources, Result};

const ROOT: &str = "/sys/fs/cgroup";
const V1_CONTROLLERS: [&str; 5] = ["memory", "pids", "cpu", "freezer", "devices"];

/// docker's default device rules: any node may be created (mknod), only these opened.
const ALLOWED_DEVICES: [&str; 12] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",    // null
    "c 1:5 rwm",    // zero
    "c 1:7 rwm",    // full
    "c 1:8 rwm",    // random
    "c 1:9 rwm",    // urandom
    "c 5:0 rwm",    // tty
    "c 5:1 rwm",    // console
    "c 5:2 rwm",    // ptmx
    "c 136:* rwm",  // pts/*
    "c 10:200 rwm", // net/tun
];

/// A container's cgroup (v1: one directory per controller; v2: one directory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    dirs: Vec<(String, PathBuf)>,
    v2: bool,
}

/// Whether /sys/fs/cgroup is a cgroup v2 mount.
pub fn is_v2() -> bool {
    Path::new(ROOT).join("cgroup.controllers").exists()
}

/// Whether this process may make containers' cgroups: as root in the initial user
/// namespace, or on cgroup v2 with a delegated user service.
pub fn usable() -> bool {
    match is_v2() {
        true => v2_base().is_some(),
        false => !crate::idmap::in_user_namespace() && nix::unistd::geteuid().is_root(),
    }
}

fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(Error::io(path))
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_default()
}

/// The v2 directory strata's cgroups live under: the root when this process is real root,
/// else the user's delegated systemd service cgroup when it is writable.
fn v2_base() -> Option<PathBuf> {
    if !crate::idmap::in_user_namespace() && nix::unistd::geteuid().is_root() {
        return Some(PathBuf::from(ROOT));
    }
    let uid = crate::idmap::host_uid();
    let dir = Path::new(ROOT).join(format!("user.slice/user-{uid}.slice/user@{uid}.service"));
    let writable = nix::unistd::access(
        &dir.join("cgroup.subtree_control"),
        nix::unistd::AccessFlags::W_OK,
    )
    .is_ok();
    writable.then_some(dir)
}

impl Cgroup {
    /// The cgroup of container `id` as [`Cgroup::create`] would make it (it need not
    /// exist): for `rm`, crash cleanup and `pause` from another process.
    pub fn of(id: &str) -> Cgroup {
        Cgroup::at(&format!("strata/{id}"))
    }

    /// The cgroup at `path` under each hierarchy's root (an OCI `cgroupsPath`; a leading
    /// `/` changes nothing), as [`Cgroup::of`] for a path the caller chose.
    pub fn at(path: &str) -> Cgroup {
        let root = match is_v2() {
            true => v2_base().unwrap_or_else(|| PathBuf::from(ROOT)),
            false => PathBuf::from(ROOT),
        };
        Cgroup::layout(&root, path)
    }

    /// `rel` under `root`: a cgroup v2 directory when `root` has `cgroup.controllers`, else
    /// v1 hierarchies `root/<controller>/rel`.
    fn layout(root: &Path, rel: &str) -> Cgroup {
        let rel = rel.trim_start_matches('/');
        if root.join("cgroup.controllers").exists() {
            return Cgroup {
                dirs: vec![(String::new(), root.join(rel))],
                v2: true,
            };
        }
        let dirs = V1_CONTROLLERS
            .iter()
            .filter(|c| root.join(c).is_dir())
            .map(|c| (c.to_string(), root.join(c).join(rel)))
            .collect();
        Cgroup { dirs, v2: false }
    }

    /// Whether the cgroup's directories exist.
    pub fn exists(&self) -> bool {
        !self.dirs.is_empty() && self.dirs.iter().all(|(_, d)| d.is_dir())
    }

    /// Creates the cgroup of container `id` with `res` applied. `Ok(None)` when this process
    /// may not manage cgroups and no limit was asked for; [`Error::CgroupsUnavailable`]
    /// naming the flags when limits were asked.
    pub fn create(id: &str, res: &Resources) -> Result<Option<Cgroup>> {
        Cgroup::create_at(&format!("strata/{id}"), res)
    }

    /// Like [`Cgroup::create`], at `path` ([`Cgroup::at`]).
    pub fn create_at(path: &str, res: &Resources) -> Result<Option<Cgroup>> {
        if is_v2() && v2_base().is_none() {
            return match res.any() {
                true => Err(Error::CgroupsUnavailable { flag: res.flags() }),
                false => Ok(None),
            };
        }
        Cgroup::make(Cgroup::at(path), res)
    }

    /// Like [`Cgroup::create`], under another cgroup mount or delegated directory `root`
    /// (`root/strata/<id>`, v2 when `root` has `cgroup.controllers`).
    pub fn create_under(root: &Path, id: &str, res: &Resources) -> Result<Option<Cgroup>> {
        Cgroup::make(Cgroup::layout(root, &format!("strata/{id}")), res)
    }

    fn make(cg: Cgroup, res: &Resources) -> Result<Option<Cgroup>> {
        let unavailable = || match res.any() {
            true => Err(Error::CgroupsUnavailable { flag: res.flags() }),
            false => Ok(None),
        };
        if cg.dirs.is_empty() {
            return unavailable();
        }
        for (_, d) in &cg.dirs {
            if cg.v2 {
                // Controllers must be enabled in every ancestor's subtree_control.
                if let Some(parent) = d.parent() {
                    let base = parent.parent().unwrap_or(parent);
                    if let Err(e) = std::fs::create_dir_all(parent) {
                        return match e.kind() {
                            std::io::ErrorKind::PermissionDenied
                            | std::io::ErrorKind::ReadOnlyFilesystem => unavailable(),
                            _ => Err(Error::Io {
                                path: parent.to_path_buf(),
                                source: e,
                            }),
                        };
                    }
                    for dir in [base, parent] {
                        for c in ["+memory", "+pids", "+cpu"] {
                            let _ = write(dir, "cgroup.subtree_control", c);
                        }
                    }
                }
            }
            if let Err(e) = std::fs::create_dir_all(d) {
                return match e.kind() {
                    std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::ReadOnlyFilesystem => unavailable(),
                    _ => Err(Error::Io {
                        path: d.clone(),
                        source: e,
                    }),
                };
            }
            // One of the same name made by another user (a stale root one, seen rootless)
            // exists but is not ours to write: as if there were none.
            if nix::unistd::access(d.as_path(), nix::unistd::AccessFlags::W_OK).is_err() {
                return unavailable();
            }
        }
        // A stale cgroup of the same name left frozen would freeze the new container.
        if cg.is_frozen() {
            cg.thaw()?;
        }
        if let Err(e) = cg.apply(res) {
            cg.destroy();
            return Err(e);
        }
        Ok(Some(cg))
    }

    /// The cgroup directories process `pid` is in (every hierarchy, found through
    /// /proc/self/mountinfo), for `exec` to join. Best effort: hierarchies not mounted here
    /// are left out.
    pub fn of_process(pid: i32) -> Cgroup {
        let mounts = cgroup_mounts();
        let mut dirs = Vec::new();
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        for line in text.lines() {
            let mut it = line.splitn(3, ':');
            let (Some(_), Some(ctrls), Some(path)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let found = mounts.iter().find(|(opts, _, _)| match ctrls.is_empty() {
                true => opts.is_none(),
                false => opts
                    .as_ref()
                    .is_some_and(|o| ctrls.split(',').all(|c| o.iter().any(|x| x == c))),
            });
            if let Some((_, root, mnt)) = found {
                let rel = path.strip_prefix(root.as_str()).unwrap_or(path);
                dirs.push((ctrls.to_string(), mnt.join(rel.trim_start_matches('/'))));
            }
        }
        Cgroup { dirs, v2: is_v2() }
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| self.v2 || c.split(',').any(|c| c == controller))
            .map(|(_, d)| d.as_path())
    }

    /// Sets the limits `res` asks for (`strata-runtime update`); those it leaves `None`
    /// keep their value.
    pub fn update(&self, res: &Resources) -> Result<()> {
        self.apply(res)
    }

    fn apply(&self, res: &Resources) -> Result<()> {
        if let Some(bytes) = res.memory {
            let d = self.need("memory", "--memory")?;
            if self.v2 {
                write(d, "memory.max", &bytes.to_string())?;
                let _ = write(d, "memory.swap.max", "0");
            } else {
                // Swap limited to the same total: over the limit the OOM killer acts. The
                // kernel wants memsw >= limit at every step: lift memsw, set, lower it.
                let memsw = d.join("memory.memsw.limit_in_bytes").exists();
                if memsw {
                    write(d, "memory.memsw.limit_in_bytes", "-1")?;
                }
                write(d, "memory.limit_in_bytes", &bytes.to_string())?;
                if memsw {
                    write(d, "memory.memsw.limit_in_bytes", &bytes.to_string())?;
                }
                let _ = write(d, "memory.swappiness", "0");
            }
        }
        if let Some(n) = res.pids_limit {
            let d = self.need("pids", "--pids-limit")?;
            let v = if n <= 0 { "max".into() } else { n.to_string() };
            write(d, "pids.max", &v)?;
        }
        if let Some(cpus) = res.cpus {
            let d = self.need("cpu", "--cpus")?;
            let quota = (cpus * 100_000.0).round().max(1000.0) as u64;
            if self.v2 {
                write(d, "cpu.max", &format!("{quota} 100000"))?;
            } else {
                write(d, "cpu.cfs_period_us", "100000")?;
                write(d, "cpu.cfs_quota_us", &quota.to_string())?;
            }
        }
        if res.cpu_quota.is_some() || res.cpu_period.is_some() {
            let d = self.need("cpu", "cpu quota and period")?;
            if self.v2 {
                let (old_quota, old_period) = read(d, "cpu.max")
                    .split_once(' ')
                    .map(|(q, p)| (q.trim().to_string(), p.trim().to_string()))
                    .unwrap_or_else(|| ("max".into(), "100000".into()));
                let quota = match res.cpu_quota {
                    Some(q) if q < 0 => "max".to_string(),
                    Some(q) => q.to_string(),
                    None => old_quota,
                };
                let period = res.cpu_period.map(|p| p.to_string()).unwrap_or(old_period);
                write(d, "cpu.max", &format!("{quota} {period}"))?;
            } else {
                // The period first: the kernel checks the quota against it.
                if let Some(p) = res.cpu_period {
                    write(d, "cpu.cfs_period_us", &p.to_string())?;
                }
                if let Some(q) = res.cpu_quota {
                    write(d, "cpu.cfs_quota_us", &q.to_string())?;
                }
            }
        }
        if let Some(shares) = res.cpu_shares {
            let d = self.need("cpu", "cpu shares")?;
            match self.v2 {
                // runc's conversion of shares [2, 262144] to weight [1, 10000].
                true => {
                    let weight = 1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142;
                    write(d, "cpu.weight", &weight.to_string())?;
                }
                false => write(d, "cpu.shares", &shares.to_string())?,
            }
        }
        Ok(())
    }

    /// The directory limiting `controller`; for v2, only when the parent enabled it.
    fn need(&self, controller: &str, flag: &str) -> Result<&Path> {
        let unavailable = || Error::CgroupsUnavailable { flag: flag.into() };
        let d = self.dir(controller).ok_or_else(unavailable)?;
        if self.v2 {
            let enabled = read(d, "cgroup.controllers");
            if !enabled.split_whitespace().any(|c| c == controller) {
                return Err(unavailable());
            }
        }
        Ok(d)
    }

    /// Lets the cgroup's processes open only docker's default devices (null, zero, full,
    /// random, urandom, tty, console, ptmx, pts, tun) while creating any node; v1 devices
    /// controller. A no-op on cgroup v2 (which needs an eBPF program) and where the
    /// controller is not mounted.
    ///
    /// `rules` (a bundle's `linux.resources.devices`) come right after the deny-all, and
    /// `allow` (rules for a bundle's own devices) last, as runc orders them.
    pub fn restrict_devices(
        &self,
        rules: &[crate::spec::DeviceRule],
        allow: &[String],
    ) -> Result<()> {
        if self.v2 {
            return Ok(());
        }
        let Some(d) = self
            .dirs
            .iter()
            .find(|(c, _)| c == "devices")
            .map(|(_, d)| d)
        else {
            return Ok(());
        };
        write(d, "devices.deny", "a")?;
        for r in rules {
            let file = match r.allow {
                true => "devices.allow",
                false => "devices.deny",
            };
            write(d, file, &r.rule)?;
        }
        for rule in ALLOWED_DEVICES
            .iter()
            .copied()
            .chain(allow.iter().map(String::as_str))
        {
            write(d, "devices.allow", rule)?;
        }
        Ok(())
    }

    /// Moves process `pid` (a host pid) into the cgroup, every hierarchy.
    pub fn add(&self, pid: i32) -> Result<()> {
        for (_, d) in &self.dirs {
            write(d, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// Stops every process of the cgroup (the freezer), returning once all are frozen.
    pub fn freeze(&self) -> Result<()> {
        self.set_frozen(true)
    }

    /// Resumes a frozen cgroup, returning once it has thawed.
    pub fn thaw(&self) -> Result<()> {
        self.set_frozen(false)
    }

    /// Whether the freezer says frozen.
    pub fn is_frozen(&self) -> bool {
        match (self.v2, self.dir("freezer")) {
            (true, Some(d)) => read(d, "cgroup.events").contains("frozen 1"),
            (false, Some(d)) => read(d, "freezer.state").trim() == "FROZEN",
            _ => false,
        }
    }

    fn set_frozen(&self, frozen: bool) -> Result<()> {
        let d = self
            .dir("freezer")
            .ok_or_else(|| Error::Other("no freezer cgroup for this container".into()))?;
        let (file, value) = match (self.v2, frozen) {
            (true, true) => ("cgroup.freeze", "1"),
            (true, false) => ("cgroup.freeze", "0"),
            (false, true) => ("freezer.state", "FROZEN"),
            (false, false) => ("freezer.state", "THAWED"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // v1 may stay FREEZING when a task was busy in the kernel: writing again retries.
            write(d, file, value)?;
            if self.is_frozen() == frozen {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Other(format!(
                    "the cgroup {} did not settle as {value}",
                    d.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Whether the OOM killer killed a process of this cgroup (v1 memory.oom_control's
    /// `oom_kill`, v2 memory.events).
    pub fn oom_killed(&self) -> bool {
        let Some(d) = self.dir("memory") else {
            return false;
        };
        let text = match self.v2 {
            true => read(d, "memory.events"),
            false => read(d, "memory.oom_control"),
        };
        text.lines().any(|l| {
            let mut it = l.split_whitespace();
            it.next() == Some("oom_kill") && it.next().is_some_and(|n| n != "0")
        })
    }

    /// The processes in the cgroup (host pids).
    pub fn pids(&self) -> Vec<i32> {
        let Some((_, d)) = self.dirs.first() else {
            return Vec::new();
        };
        read(d, "cgroup.procs")
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Sends `signal` to every process of the cgroup.
    pub fn kill_all(&self, signal: Signal) {
        for p in self.pids() {
            let _ = nix::sys::signal::kill(Pid::from_raw(p), signal);
        }
    }

    /// Kills every process (SIGKILL, thawing a frozen cgroup so they die), waits for the
    /// cgroup to empty (at most 5 s) and removes the directories. Idempotent; for `rm -f`
    /// and crash cleanup.
    pub fn destroy(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.pids().is_empty() && Instant::now() < deadline {
            self.kill_all(Signal::SIGKILL);
            if self.is_frozen() {
                let _ = self.thaw();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for (_, d) in &self.dirs {
            // A just-killed process may still be leaving: EBUSY for a moment.
            for _ in 0..200 {
                match std::fs::remove_dir(d) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    _ => break,
                }
            }
        }
    }
}

/// cgroup mounts from /proc/self/mountinfo: (v1 super options or `None` for cgroup2, root
/// of the mount in its hierarchy, mount point).
fn cgroup_mounts() -> Vec<(Option<Vec<String>>, String, PathBuf)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let (root, mnt) = (pre[3].to_string(), PathBuf::from(pre[4]));
        match post[0] {
            "cgroup2" => out.push((None, root, mnt)),
            "cgroup" => {
                let opts = post[2].split(',').map(str::to_string).collect();
                out.push((Some(opts), root, mnt));
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_names_the_container() {
        let cg = Cgroup::of("abc");
        assert!(cg.dirs.iter().all(|(_, d)| d.ends_with("strata/abc")));
        // This process's own cgroups are found in every mounted hierarchy.
        let me = Cgroup::of_process(std::process::id() as i32);
        assert!(!me.dirs.is_empty());
        assert!(me.dirs.iter().all(|(_, d)| d.is_dir()), "{me:?}");
    }
}
