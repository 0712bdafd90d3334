//! podman as a peer on a store of the caller's own (`DIR/root`, `DIR/run`): runc and the
//! cgroupfs manager, as this host needs (crun fails on its hybrid cgroups), no event log;
//! and the limits its containers must be given here (DESIGN.md: the bounding set lacks
//! CAP_SYS_RESOURCE).

use std::path::Path;
use std::process::Command;

/// `--ulimit` flags a podman container needs on this host.
pub const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=1000:1000",
];

/// `podman` with its store under `dir` and `driver` (`overlay`, or `vfs` to leave nothing
/// mounted).
pub fn command(dir: &Path, driver: &str) -> Command {
    let mut c = Command::new("podman");
    c.arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .args([
            "--runtime",
            "runc",
            "--cgroup-manager",
            "cgroupfs",
            "--storage-driver",
            driver,
            "--events-backend",
            "none",
        ]);
    c
}

/// skopeo's name for an image in that store.
pub fn storage_ref(dir: &Path, driver: &str, image: &str) -> String {
    format!(
        "containers-storage:[{driver}@{}+{}]{image}",
        dir.join("root").display(),
        dir.join("run").display()
    )
}
