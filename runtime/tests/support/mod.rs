//! Test harness for strata-runtime: who a test runs as, a busybox rootfs, and running a
//! container to completion with its output captured.
//!
//! Tests that need root skip unless `STRATA_PRIVILEGED_TESTS=1`, which CI sets (as root);
//! with it set and root missing they fail. Rootless tests re-run an `#[ignore]`d test of
//! this binary as the unprivileged user `strata-test` through `setpriv`.

#![allow(dead_code)]

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use strata_runtime::{Container, ContainerSpec, ExitStatus, ProcessSpec, Running, Stdio};

/// The unprivileged account rootless tests run as.
pub const TEST_USER: &str = "strata-test";
/// Set in the environment of a test re-run as [`TEST_USER`].
pub const CHILD_ENV: &str = "STRATA_RUNTIME_TEST_CHILD";

fn required() -> bool {
    std::env::var_os("STRATA_PRIVILEGED_TESTS").is_some_and(|v| v == "1")
}

/// Whether a test that needs root runs: panics when CI asked for privileged tests and this
/// is not root.
pub fn have_root(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    match (root, required()) {
        (true, true) => true,
        (false, true) => panic!("{test}: STRATA_PRIVILEGED_TESTS=1 but not running as root"),
        (_, false) => {
            eprintln!("{test}: skipped, needs root and STRATA_PRIVILEGED_TESTS=1");
            false
        }
    }
}

/// Whether this process is a test re-run by [`run_test_as_user`].
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// The test user's uid and gid, created (`useradd`) when missing.
pub fn test_user() -> (u32, u32) {
    if nix::unistd::User::from_name(TEST_USER).unwrap().is_none() {
        let st = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home"])
            .arg(TEST_USER)
            .status()
            .unwrap();
        assert!(st.success() || st.code() == Some(9), "useradd: {st}");
    }
    let u = nix::unistd::User::from_name(TEST_USER).unwrap().unwrap();
    (u.uid.as_raw(), u.gid.as_raw())
}

/// Runs the `#[ignore]`d test `name` of this binary again as [`TEST_USER`] and fails unless
/// it ran and passed. `env` is added to its environment.
pub fn run_test_as_user(name: &str, env: &[(&str, &str)]) {
    let (uid, gid) = test_user();
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .args(["--clear-groups", "--inh-caps=-all"])
        .arg(&exe)
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .env("TMPDIR", "/tmp")
        .env("HOME", "/tmp")
        .envs(env.iter().copied())
        .current_dir("/")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} as {TEST_USER} failed: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
}

/// A root filesystem directory made of the host's static busybox: every applet linked in
/// /bin, /etc/passwd and /etc/group with root and `user` (1000), /tmp.
pub struct Rootfs {
    dir: tempfile::TempDir,
}

impl Rootfs {
    pub fn new() -> Rootfs {
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.exists(),
            "/bin/busybox missing: apt-get install busybox-static"
        );
        let dir = tempfile::Builder::new()
            .prefix("strata-rootfs-")
            .tempdir()
            .unwrap();
        let root = dir.path();
        std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        for d in ["bin", "etc", "tmp", "root", "proc", "sys", "dev"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::set_permissions(
            root.join("tmp"),
            std::os::unix::fs::PermissionsExt::from_mode(0o1777),
        )
        .unwrap();
        std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
        let list = Command::new(busybox).arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
            }
        }
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n\
             nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        )
        .unwrap();
        std::fs::write(
            root.join("etc/group"),
            "root:x:0:\ntty:x:5:\nwheel:x:10:user\nuser:x:1000:\nnogroup:x:65534:\n",
        )
        .unwrap();
        Rootfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A unique container id for this test process.
pub fn unique_id(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A spec running `sh -c script` in `rootfs`.
pub fn sh(rootfs: &Rootfs, script: &str) -> ContainerSpec {
    ContainerSpec {
        id: unique_id("rt"),
        rootfs: rootfs.path().to_path_buf(),
        process: ProcessSpec {
            args: vec!["sh".into(), "-c".into(), script.into()],
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Kills a container left running by a failing test (on drop): pid 1 if it is still this
/// process's unreaped child, then its cgroup.
pub struct Guard {
    pid: i32,
    cgroup: Option<strata_runtime::Cgroup>,
}

/// A [`Guard`] for `running`.
pub fn guard(running: &Running) -> Guard {
    Guard {
        pid: running.pid,
        cgroup: running.cgroup.clone(),
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Only a child not yet reaped: never a recycled pid.
        if let Ok(None) = strata_runtime::process::try_wait(self.pid) {
            let _ = strata_runtime::process::signal(self.pid, nix::sys::signal::Signal::SIGKILL);
            let _ = strata_runtime::process::wait(self.pid);
        }
        if let Some(cg) = &self.cgroup {
            cg.destroy();
        }
    }
}

/// A started container whose stdout and stderr are pipes read by threads.
pub struct Captured {
    pub running: Running,
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
    _guard: Guard,
}

fn reader(fd: OwnedFd) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::fs::File::from(fd).read_to_string(&mut s);
        s
    })
}

/// Stdio with /dev/null as stdin and two pipes; returns the read ends.
pub fn piped() -> (Stdio, OwnedFd, OwnedFd) {
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let stdin = std::fs::File::open("/dev/null").unwrap().into();
    let stdio = Stdio::Fds {
        stdin,
        stdout: out_w,
        stderr: err_w,
    };
    (stdio, out_r, err_r)
}

/// Starts `spec` with captured output.
pub fn start(spec: &ContainerSpec) -> strata_runtime::Result<Captured> {
    let (stdio, out_r, err_r) = piped();
    let running = Container::start(spec, stdio)?;
    Ok(Captured {
        _guard: guard(&running),
        running,
        out: reader(out_r),
        err: reader(err_r),
    })
}

impl Captured {
    /// Waits for pid 1, destroys the cgroup, returns status, stdout and stderr.
    pub fn finish(self) -> (ExitStatus, String, String) {
        let status = self.running.wait().unwrap();
        if let Some(cg) = &self.running.cgroup {
            cg.destroy();
        }
        (status, self.out.join().unwrap(), self.err.join().unwrap())
    }
}

/// Runs `spec` to completion.
pub fn run(spec: &ContainerSpec) -> (ExitStatus, String, String) {
    start(spec)
        .unwrap_or_else(|e| panic!("starting {:?}: {e}", spec.process.args))
        .finish()
}

/// Runs `spec` and returns its stdout, failing unless it exits 0.
pub fn output(spec: &ContainerSpec) -> String {
    let (status, out, err) = run(spec);
    assert_eq!(
        status,
        ExitStatus::Exited(0),
        "{:?}: stdout {out:?} stderr {err:?}",
        spec.process.args
    );
    out
}

/// Polls `f` until it is true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// utime + stime of `pid` in clock ticks, from /proc/PID/stat.
pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of stat; `after` starts at field 3.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// A host directory for volumes.
pub fn host_dir() -> PathBuf {
    let d = tempfile::Builder::new()
        .prefix("strata-vol-")
        .tempdir()
        .unwrap();
    d.keep()
}
