//! Containers through the `strata` binary: `run` and the docker container commands on the
//! demo image (made from the host's busybox-static, no network), as root and as the
//! unprivileged `strata-test` user. Each test has a store of its own.
//!
//! Waits poll a condition against a deadline; no test passes or fails on a timing.

mod bundle;
mod detach;
mod ending;
mod files;
mod fsrestart;
mod info;
mod isolation;
mod lifecycle;
mod load;
mod network;
mod ports;
mod rootless;
mod seccomp;
mod volume;
mod volume_options;

use std::path::{Path, PathBuf};
use std::time::Duration;

use strata_tests::mounts::wait_for;
use strata_tests::strata::{Run, Strata};
use tempfile::TempDir;

/// A store of the test's own and the binary to drive it.
pub struct Env {
    pub strata: Strata,
    pub tmp: TempDir,
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::Builder::new()
            .prefix("strata-ctr")
            .tempdir()
            .unwrap();
        let strata = Strata::new(&tmp.path().join("root")).unwrap();
        Env { strata, tmp }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.strata.run(args)
    }

    /// `run -d …`: the new container's full id.
    pub fn detach(&self, args: &[&str]) -> String {
        let mut a = vec!["run", "-d"];
        a.extend_from_slice(args);
        let id = self.run(&a).ok().trim().to_string();
        assert!(
            id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "run -d printed {id:?}, not a full id"
        );
        id
    }

    pub fn containers_dir(&self) -> PathBuf {
        self.strata.root().join("containers")
    }

    /// The directories of the stored containers.
    pub fn container_dirs(&self) -> Vec<String> {
        std::fs::read_dir(self.containers_dir())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.len() == 64)
            .collect()
    }

    /// A field of state.json.
    pub fn state(&self, id: &str) -> serde_json::Value {
        let p = self.containers_dir().join(id).join("state.json");
        serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
    }

    /// `inspect -f TEMPLATE NAME`, trimmed.
    pub fn inspect(&self, name: &str, template: &str) -> String {
        self.run(&["inspect", "-f", template, name])
            .ok()
            .trim()
            .to_string()
    }

    /// Polls `ps -a` until `name`'s state is `state`.
    pub fn wait_state(&self, name: &str, state: &str) {
        wait_for(Duration::from_secs(30), &format!("{name} {state}"), || {
            self.inspect(name, "{{.State.Status}}") == state
        })
        .unwrap();
    }

    /// Polls `exec NAME sh -c SCRIPT` until its output contains `want`; returns it.
    pub fn exec_until(&self, name: &str, script: &str, want: &str) -> String {
        let mut last = String::new();
        let r = wait_for(Duration::from_secs(30), want, || {
            last = self.run(&["exec", name, "sh", "-c", script]).stdout;
            last.contains(want)
        });
        assert!(r.is_ok(), "{script}: never printed {want:?}; last: {last}");
        last
    }
}

/// `strata ARGS` with `input` on its stdin (then closed).
pub fn run_input(strata: &Strata, args: &[&str], input: &[u8]) -> Run {
    use std::io::Write;
    let mut child = strata
        .command(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `strata ARGS` under a terminal (script(1)) of 33 rows and 101 columns: `first` is typed
/// at once, then each stage's keys once its text has shown (keys that only a raw terminal
/// passes must come after strata made it raw). The status and everything shown.
pub fn terminal_session(
    env: &Env,
    args: &str,
    first: &[u8],
    stages: &[(&str, &[u8])],
) -> (Option<i32>, String) {
    use std::io::{Read, Write};
    let bin = strata_tests::mounts::workspace_bin("strata", "STRATA_BIN").unwrap();
    let cmd = format!(
        "stty rows 33 cols 101; {} --root {} {args}",
        bin.display(),
        env.strata.root().display()
    );
    let mut child = std::process::Command::new("timeout")
        .args(["60", "script", "-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    stdin.write_all(first).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    for (after, then) in stages {
        while !String::from_utf8_lossy(&seen).contains(after) {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        stdin.write_all(then).unwrap();
    }
    let mut rest = Vec::new();
    let _ = stdout.read_to_end(&mut rest);
    seen.extend(rest);
    let status = child.wait().unwrap();
    drop(stdin);
    (status.code(), String::from_utf8_lossy(&seen).into_owned())
}

impl Drop for Env {
    /// A failed test must not leave containers running after its store is gone.
    fn drop(&mut self) {
        let ids = self.run(&["ps", "-aq", "--no-trunc"]).stdout;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids);
            let _ = self.run(&args);
        }
    }
}

/// Whether /sys/fs/cgroup is cgroup v2 (this host: v1 hierarchies).
pub fn cgroup_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The cgroup directory of container `id` for `controller` (v1), or its one directory (v2).
pub fn cgroup_dir(controller: &str, id: &str) -> PathBuf {
    match cgroup_v2() {
        true => Path::new("/sys/fs/cgroup/strata").join(id),
        false => Path::new("/sys/fs/cgroup")
            .join(controller)
            .join("strata")
            .join(id),
    }
}

/// A limit as the cgroup holds it, by the v1 file name (the v2 equivalent is read and
/// translated on a v2 host).
pub fn cgroup_value(id: &str, v1_controller: &str, v1_file: &str) -> String {
    let read = |c: &str, f: &str| {
        std::fs::read_to_string(cgroup_dir(c, id).join(f))
            .unwrap_or_else(|e| panic!("{c}/{f} of {id}: {e}"))
            .trim()
            .to_string()
    };
    if !cgroup_v2() {
        return read(v1_controller, v1_file);
    }
    match v1_file {
        "memory.limit_in_bytes" => read("", "memory.max"),
        "cpu.cfs_quota_us" => read("", "cpu.max").split(' ').next().unwrap().to_string(),
        "cpu.cfs_period_us" => read("", "cpu.max").split(' ').nth(1).unwrap().to_string(),
        "freezer.state" => match read("", "cgroup.events").contains("frozen 1") {
            true => "FROZEN".into(),
            false => "THAWED".into(),
        },
        f => read("", f),
    }
}

/// Whether any mount of this namespace is under `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let d = dir.to_string_lossy().into_owned();
    info.lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&d)))
        .map(str::to_string)
        .collect()
}

/// Processes whose command line contains `needle`.
pub fn processes_with(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}
