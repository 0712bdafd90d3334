//! Who a test runs as. Privileged tests say what they need: with `STRATA_PRIVILEGED_TESTS=1`
//! (as CI runs) a missing privilege fails the test; without it the test says it skipped.
//! Rootless paths run as an unprivileged user the harness creates, in a child process.

use std::ffi::OsStr;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use nix::unistd::{Gid, Uid, User};

/// The unprivileged account rootless tests run as.
pub const TEST_USER: &str = "strata-test";

/// Set in the environment of a test re-run as the unprivileged user (see [`run_test_as_user`]).
pub const CHILD_ENV: &str = "STRATA_E2E_CHILD";

fn privileged_required() -> bool {
    std::env::var_os("STRATA_PRIVILEGED_TESTS").is_some_and(|v| v == "1")
}

/// Whether a test that needs root (and `/dev/fuse`) should run. Panics when CI asked for
/// privileged tests and the machine cannot give them.
pub fn have_root(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    let fuse = std::path::Path::new("/dev/fuse").exists();
    if root && fuse {
        return true;
    }
    let why = if !root { "root" } else { "/dev/fuse" };
    if privileged_required() {
        panic!("{test}: STRATA_PRIVILEGED_TESTS=1 but {why} is missing");
    }
    eprintln!("{test}: skipped, needs {why} (set STRATA_PRIVILEGED_TESTS=1 to require it)");
    false
}

/// Whether this process is a test re-run by [`run_test_as_user`].
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// The unprivileged test user, created on first use (`useradd`, needs root).
pub fn test_user() -> Result<(Uid, Gid)> {
    static USER: OnceLock<std::result::Result<(Uid, Gid), String>> = OnceLock::new();
    USER.get_or_init(|| find_or_create_user().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn find_or_create_user() -> Result<(Uid, Gid)> {
    if let Some(user) = User::from_name(TEST_USER)? {
        return Ok((user.uid, user.gid));
    }
    let status = Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/bin/sh",
        ])
        .arg(TEST_USER)
        .status()
        .context("running useradd")?;
    // 9: created meanwhile by a concurrent test process.
    if !status.success() && status.code() != Some(9) {
        bail!("useradd {TEST_USER} failed: {status}");
    }
    let user = User::from_name(TEST_USER)?.context("test user missing after useradd")?;
    Ok((user.uid, user.gid))
}

/// How the re-run test is wrapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rootless {
    /// As the unprivileged user on the host (FUSE mounts go through fusermount3).
    Host,
    /// As the unprivileged user inside `unshare -Urm`: root of a fresh user+mount namespace.
    UserNamespace,
}

/// Runs the `#[ignore]`d test `name` of the current test binary again as [`TEST_USER`],
/// and fails unless it ran and passed. The child sees [`CHILD_ENV`] set.
pub fn run_test_as_user(name: &str, how: Rootless) -> Result<()> {
    let (uid, gid) = test_user()?;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg("--inh-caps=-all");
    if how == Rootless::UserNamespace {
        cmd.args(["unshare", "--user", "--map-root-user", "--mount"]);
    }
    cmd.arg(&exe)
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
        .current_dir("/");
    let out = cmd
        .output()
        .with_context(|| format!("running {} as {TEST_USER}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !stdout.contains("1 passed") {
        bail!(
            "{name} as {TEST_USER} ({how:?}) failed: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            out.status
        );
    }
    Ok(())
}

/// Runs a command and returns its stdout, failing with its stderr.
pub fn run(program: impl AsRef<OsStr>, args: &[&str]) -> Result<String> {
    let program = program.as_ref();
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {}", program.to_string_lossy()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed ({}): {}",
            program.to_string_lossy(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The first id and count of [`TEST_USER`]'s range in `/etc/subuid`-style `file`.
pub fn subordinate_range(file: &str) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let mut it = l.trim().split(':');
        if it.next()? != TEST_USER {
            return None;
        }
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    })
}

/// Gives [`TEST_USER`] 65536 subordinate uids and gids (`usermod --add-subuids`, needs
/// root) unless it has a range already, after every range other users hold: rootless
/// podman, and id maps of more than one id, need them. Returns the uid range.
pub fn give_subordinate_ids() -> Result<(u32, u32)> {
    test_user()?;
    if let (Some(u), Some(_)) = (
        subordinate_range("/etc/subuid"),
        subordinate_range("/etc/subgid"),
    ) {
        return Ok(u);
    }
    let end = |file: &str| -> u32 {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.trim().split(':').collect();
                Some(f.get(1)?.parse::<u32>().ok()? + f.get(2)?.parse::<u32>().ok()?)
            })
            .max()
            .unwrap_or(0)
    };
    let start = end("/etc/subuid").max(end("/etc/subgid")).max(100_000);
    let range = format!("{start}-{}", start + 65_535);
    run(
        "usermod",
        &["--add-subuids", &range, "--add-subgids", &range, TEST_USER],
    )?;
    subordinate_range("/etc/subuid").context("no /etc/subuid range after usermod")
}
