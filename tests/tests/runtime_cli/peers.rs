//! Peers driving `strata-runtime` as their OCI runtime: podman 4.3 (`--runtime`,
//! `--cgroup-manager cgroupfs`) on a private vfs store with the demo busybox imported, and
//! containerd 1.6 (a private daemon on its own socket and state directories; its runc v2
//! shim calls the runtime with `--root`, `--log`, `--log-format json`) through
//! `ctr run --runc-binary --rootfs`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use strata_tests::containerd::Containerd;
use strata_tests::mounts::wait_for;
use strata_tests::users::have_root;

use super::{run_to_files, runtime_bin, Out};

/// podman on a private store under `dir`, with strata-runtime as its runtime.
fn podman(dir: &Path, args: &[&str]) -> Out {
    let mut c = strata_tests::podman::command(dir, "vfs");
    // The last --runtime wins over the helper's runc.
    c.arg("--runtime").arg(runtime_bin()).args(args);
    run_to_files(c, dir)
}

fn podman_ok(dir: &Path, args: &[&str]) -> String {
    let out = podman(dir, args);
    assert_eq!(out.code, 0, "podman {args:?}: {}", out.stderr);
    out.stdout
}

/// The demo busybox image in podman's store as `localhost/bb` (`podman import`, offline).
fn import_busybox(dir: &Path) {
    let tar = dir.join("bb.tar");
    let layer = strata_tests::oci::busybox_layer().unwrap();
    std::fs::write(&tar, layer.tar_bytes(0).unwrap()).unwrap();
    podman_ok(dir, &["import", tar.to_str().unwrap(), "localhost/bb"]);
}

/// `podman run` arguments with the limits this host needs before the image.
fn run_args<'a>(head: &[&'a str], tail: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["run"];
    v.extend_from_slice(head);
    v.extend_from_slice(&strata_tests::podman::ULIMITS);
    v.push("localhost/bb");
    v.extend_from_slice(tail);
    v
}

#[test]
fn podman_runs_containers_through_strata_runtime() {
    if !have_root("podman_runs_containers_through_strata_runtime") {
        return;
    }
    podman_lifecycle();
}

/// `podman run --rm` (output, exit codes, a missing command), `-d`, `exec`, `stop`, `rm`,
/// with the container's state under the runtime's default root; as root, or rootless
/// (`runtime_cli::rootless`).
pub(super) fn podman_lifecycle() {
    let tmp = tempfile::Builder::new()
        .prefix("strata-rt-podman")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    let _cleanup = RemoveAll(dir);
    import_busybox(dir);
    let out = podman(dir, &run_args(&["--rm"], &["echo", "hello"]));
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "hello\n"),
        "{}",
        out.stderr
    );
    assert_eq!(
        podman(dir, &run_args(&["--rm"], &["sh", "-c", "exit 7"])).code,
        7
    );
    let out = podman(dir, &run_args(&["--rm"], &["no-such-command"]));
    assert_eq!(out.code, 127, "{}", out.stderr);
    assert!(
        out.stderr.contains("executable file not found in $PATH"),
        "{}",
        out.stderr
    );

    // Detached, exec into it, stop (sleep as pid 1 ignores SIGTERM: podman escalates), rm.
    podman_ok(dir, &run_args(&["-d", "--name", "d1"], &["sleep", "1000"]));
    let out = podman(dir, &["exec", "d1", "sh", "-c", "echo in-exec; exit 4"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (4, "in-exec\n"),
        "{}",
        out.stderr
    );
    assert_eq!(podman(dir, &["exec", "d1", "no-such-command"]).code, 127);
    let state = podman_ok(dir, &["inspect", "-f", "{{.State.Status}}", "d1"]);
    assert_eq!(state.trim(), "running");
    let id = podman_ok(dir, &["inspect", "-f", "{{.Id}}", "d1"]);
    let id = id.trim();
    let rt_state = runtime_state(id);
    assert_eq!(rt_state["status"], "running", "{rt_state}");
    podman_ok(dir, &["stop", "-t", "1", "d1"]);
    let state = podman_ok(
        dir,
        &[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}}",
            "d1",
        ],
    );
    assert_eq!(state.trim(), "exited 137");
    podman_ok(dir, &["rm", "d1"]);
    assert_eq!(podman_ok(dir, &["ps", "-aq"]).trim(), "");
    // podman deleted it through the runtime: nothing left under its default root.
    let out = run_to_files(
        {
            let mut c = Command::new(runtime_bin());
            c.args(["state", id]);
            c
        },
        dir,
    );
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
}

#[test]
fn podman_runs_user_namespaced_containers_through_strata_runtime() {
    if !have_root("podman_runs_user_namespaced_containers_through_strata_runtime") {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("strata-rt-podman-userns")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    let _cleanup = RemoveAll(dir);
    import_busybox(dir);
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let volume = format!("{}:/data", data.display());
    // The bundle asks for a new user namespace; root writes its map directly.
    let out = podman(
        dir,
        &run_args(
            &[
                "--rm",
                "--uidmap",
                "0:200000:65536",
                "--gidmap",
                "0:200000:65536",
                "-v",
                &volume,
            ],
            &["sh", "-c", "id -u; cat /proc/self/uid_map; touch /data/f"],
        ),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [vec!["0"], vec!["0", "200000", "65536"]],
        "{}",
        out.stdout
    );
    let meta = std::fs::metadata(data.join("f")).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        200000,
        "root of the container is host uid 200000"
    );
}

/// `strata-runtime state ID` under the default root, where podman keeps its containers.
fn runtime_state(id: &str) -> serde_json::Value {
    let out = Command::new(runtime_bin())
        .args(["state", id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Removes the test's podman containers even when the test failed half-way, so no
/// container outlives it (rootless, the store too).
struct RemoveAll<'a>(&'a Path);

impl Drop for RemoveAll<'_> {
    fn drop(&mut self) {
        let _ = podman(self.0, &["rm", "-af", "-t", "0"]);
        if !nix::unistd::geteuid().is_root() {
            // Rootless, the store holds files of subordinate ids the user cannot remove
            // (the test's temporary directory would stay): remove it from podman's
            // namespace.
            let (root, run) = (self.0.join("root"), self.0.join("run"));
            let _ = podman(
                self.0,
                &[
                    "unshare",
                    "rm",
                    "-rf",
                    root.to_str().unwrap(),
                    run.to_str().unwrap(),
                ],
            );
        }
    }
}

#[test]
fn containerd_runs_tasks_through_strata_runtime() {
    if !have_root("containerd_runs_tasks_through_strata_runtime") {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("strata-rt-ctd")
        .tempdir()
        .unwrap();
    let rootfs = tmp.path().join("rootfs");
    super::busybox_rootfs(&rootfs);
    let ctd = Containerd::start(tmp.path()).unwrap();
    let rt = runtime_bin();
    let out = ctd.run_rootfs(&rt, &rootfs, &["--rm"], "t1", &["echo", "hello"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "hello\n"),
        "{}",
        out.stderr
    );
    let out = ctd.run_rootfs(&rt, &rootfs, &["--rm"], "t2", &["sh", "-c", "exit 5"]);
    assert_eq!(out.code, 5, "{}", out.stderr);

    let out = ctd.run_rootfs(&rt, &rootfs, &["-d"], "t3", &["sleep", "1000"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(ctd.task_status("t3"), "RUNNING");
    // The shim drove strata-runtime, under its per-namespace root: the task is ours.
    let out = Command::new(runtime_bin())
        .args(["--root", "/run/containerd/runc/default", "state", "t3"])
        .output()
        .unwrap();
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(state["status"], "running", "{state}");
    let out = ctd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "t3",
        "sh",
        "-c",
        "echo in-exec; exit 4",
    ]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (4, "in-exec\n"),
        "{}",
        out.stderr
    );
    assert_eq!(ctd.ctr(&["task", "pause", "t3"]).code, 0);
    assert_eq!(ctd.task_status("t3"), "PAUSED");
    assert_eq!(ctd.ctr(&["task", "resume", "t3"]).code, 0);
    assert_eq!(ctd.task_status("t3"), "RUNNING");
    assert_eq!(ctd.ctr(&["task", "kill", "-s", "SIGKILL", "t3"]).code, 0);
    wait_for(Duration::from_secs(30), "t3 stopped", || {
        ctd.task_status("t3") == "STOPPED"
    })
    .unwrap();
    let out = ctd.ctr(&["task", "delete", "t3"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(ctd.ctr(&["container", "delete", "t3"]).code, 0);
    assert_eq!(ctd.task_status("t3"), "");
}
