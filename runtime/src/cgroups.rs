//! cgroup limits, the freezer and OOM accounting: cgroup v1 hierarchies (this host's
//! layout) or a cgroup v2 tree, under `strata/<id>`.

use std::path::{Path, PathBuf};

use crate::{Error, Resources, Result};

const ROOT: &str = "/sys/fs/cgroup";
const V1_CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "freezer"];

/// A container's cgroup(s).
#[derive(Clone, Debug)]
pub struct Cgroup {
    /// v1: one directory per controller; v2: one directory.
    dirs: Vec<(String, PathBuf)>,
    v2: bool,
}

fn is_v2() -> bool {
    Path::new(ROOT).join("cgroup.controllers").exists()
}

fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(Error::io(path))
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_default()
}

impl Cgroup {
    /// The cgroup of container `id` (it need not exist).
    pub fn of(id: &str) -> Cgroup {
        let v2 = is_v2();
        let dirs = match v2 {
            true => vec![("".to_string(), Path::new(ROOT).join("strata").join(id))],
            false => V1_CONTROLLERS
                .iter()
                .map(|c| {
                    (
                        c.to_string(),
                        Path::new(ROOT).join(c).join("strata").join(id),
                    )
                })
                .filter(|(c, _)| Path::new(ROOT).join(c).is_dir())
                .collect(),
        };
        Cgroup { dirs, v2 }
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| self.v2 || c == controller)
            .map(|(_, d)| d.as_path())
    }

    /// Creates the cgroup with `res` applied. `Ok(None)` when this process may not manage
    /// cgroups and no limit was asked for.
    pub fn create(id: &str, res: &Resources) -> Result<Option<Cgroup>> {
        let cg = Cgroup::of(id);
        for (_, d) in &cg.dirs {
            if let Err(e) = std::fs::create_dir_all(d) {
                if !res.any() {
                    return Ok(None);
                }
                return match e.kind() {
                    std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::ReadOnlyFilesystem => Err(Error::CgroupsUnavailable {
                        flag: flag_names(res),
                    }),
                    _ => Err(Error::Io {
                        path: d.clone(),
                        source: e,
                    }),
                };
            }
        }
        cg.apply(res)?;
        Ok(Some(cg))
    }

    fn apply(&self, res: &Resources) -> Result<()> {
        if let (Some(bytes), Some(d)) = (res.memory, self.dir("memory")) {
            if self.v2 {
                write(d, "memory.max", &bytes.to_string())?;
                let _ = write(d, "memory.swap.max", "0");
            } else {
                write(d, "memory.limit_in_bytes", &bytes.to_string())?;
                // No swap beyond the limit: over it, the OOM killer acts (as docker does
                // with --memory alone on a host without swap accounting... and with it).
                if d.join("memory.memsw.limit_in_bytes").exists() {
                    let _ = write(d, "memory.memsw.limit_in_bytes", &bytes.to_string());
                }
                let _ = write(d, "memory.swappiness", "0");
            }
        }
        if let (Some(n), Some(d)) = (res.pids_limit, self.dir("pids")) {
            let v = if n <= 0 { "max".into() } else { n.to_string() };
            write(d, "pids.max", &v)?;
        }
        if let (Some(cpus), Some(d)) = (res.cpus, self.dir("cpu")) {
            let quota = (cpus * 100_000.0).round() as u64;
            if self.v2 {
                write(d, "cpu.max", &format!("{quota} 100000"))?;
            } else {
                write(d, "cpu.cfs_period_us", "100000")?;
                write(d, "cpu.cfs_quota_us", &quota.to_string())?;
            }
        }
        Ok(())
    }

    /// Moves process `pid` into the cgroup.
    pub fn add(&self, pid: i32) -> Result<()> {
        for (_, d) in &self.dirs {
            write(d, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// Stops every process of the cgroup (the freezer), waiting until it is frozen.
    pub fn freeze(&self) -> Result<()> {
        self.set_frozen(true)
    }

    pub fn thaw(&self) -> Result<()> {
        self.set_frozen(false)
    }

    fn set_frozen(&self, frozen: bool) -> Result<()> {
        let d = self
            .dir("freezer")
            .ok_or_else(|| Error::Other("no freezer cgroup for this container".into()))?;
        let (file, value, done) = match (self.v2, frozen) {
            (true, true) => ("cgroup.freeze", "1", "frozen 1"),
            (true, false) => ("cgroup.freeze", "0", "frozen 0"),
            (false, true) => ("freezer.state", "FROZEN", "FROZEN"),
            (false, false) => ("freezer.state", "THAWED", "THAWED"),
        };
        write(d, file, value)?;
        for _ in 0..1000 {
            let state = match self.v2 {
                true => read(d, "cgroup.events"),
                false => read(d, "freezer.state"),
            };
            if state.contains(done) {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Err(Error::Other(format!(
            "the cgroup {} did not settle as {value}",
            d.display()
        )))
    }

    /// Whether the OOM killer killed a process of this cgroup.
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
        let d = match self.dirs.first() {
            Some((_, d)) => d,
            None => return Vec::new(),
        };
        read(d, "cgroup.procs")
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Kills every process, thaws, and removes the directories. Idempotent: for `rm -f` and
    /// crash cleanup.
    pub fn destroy(&self) {
        for _ in 0..100 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for p in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = self.thaw();
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for (_, d) in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn flag_names(res: &Resources) -> String {
    let mut v = Vec::new();
    if res.memory.is_some() {
        v.push("--memory");
    }
    if res.pids_limit.is_some() {
        v.push("--pids-limit");
    }
    if res.cpus.is_some() {
        v.push("--cpus");
    }
    v.join(", ")
}
