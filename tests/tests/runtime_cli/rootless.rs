//! `strata-runtime` as the unprivileged `strata-test` user: a `spec --rootless` bundle (a
//! user namespace mapping the user to root, state under `$XDG_RUNTIME_DIR/strata-runtime`),
//! a bundle whose map takes the user's /etc/subuid range (through newuidmap), and rootless
//! podman driving the runtime from its own user namespace. Each test re-runs its `_child`
//! as that user, who is given subordinate ids first.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use strata_tests::mounts::wait_for;
use strata_tests::users::{
    give_subordinate_ids, have_root, is_child, run_test_as_user, subordinate_range, Rootless,
};

use super::bundle::Bundle;

fn as_user(name: &str) {
    if !have_root(name) {
        return;
    }
    give_subordinate_ids().unwrap();
    run_test_as_user(
        &format!("runtime_cli::rootless::{name}_child"),
        Rootless::Host,
    )
    .unwrap();
}

#[test]
fn rootless_bundle_lifecycle() {
    as_user("rootless_bundle_lifecycle");
}

#[test]
#[ignore = "run by rootless_bundle_lifecycle"]
fn rootless_bundle_lifecycle_child() {
    assert!(is_child());
    let me = nix::unistd::getuid().as_raw();
    let b = Bundle::rootless(&[
        "sh",
        "-c",
        "id -u > /id; cat /proc/self/uid_map > /map; echo $$ > /started; exec sleep 1000",
    ]);
    let bundle = b.dir();
    b.ok(&["create", "--bundle", bundle.to_str().unwrap(), "c1"]);
    let state = b.state("c1");
    assert_eq!(state["status"], "created", "{state}");
    assert_eq!(state["owner"], strata_tests::users::TEST_USER, "{state}");
    assert!(
        b.root().join("c1/state.json").is_file(),
        "no state under $XDG_RUNTIME_DIR/strata-runtime"
    );
    b.ok(&["start", "c1"]);
    // Written, not only created: the shell creates the file before echo writes to it.
    wait_for(Duration::from_secs(30), "/started", || {
        std::fs::read_to_string(b.rootfs("started")).is_ok_and(|s| s.ends_with('\n'))
    })
    .unwrap();
    assert_eq!(std::fs::read_to_string(b.rootfs("started")).unwrap(), "1\n");
    // Root inside, the user outside.
    assert_eq!(std::fs::read_to_string(b.rootfs("id")).unwrap(), "0\n");
    let map = std::fs::read_to_string(b.rootfs("map")).unwrap();
    let fields: Vec<&str> = map.split_whitespace().collect();
    assert_eq!(fields, ["0", &me.to_string(), "1"], "{map}");
    assert_eq!(std::fs::metadata(b.rootfs("id")).unwrap().uid(), me);
    let out = b.rt(&["exec", "c1", "sh", "-c", "id -u; exit 3"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (3, "0\n"),
        "{}",
        out.stderr
    );
    b.fails(&["delete", "c1"], "not stopped");
    b.ok(&["kill", "c1", "KILL"]);
    b.wait_status("c1", "stopped");
    b.fails(&["kill", "c1", "TERM"], "container not running");
    b.ok(&["delete", "c1"]);
    b.fails(&["state", "c1"], "does not exist");
    assert!(!b.root().join("c1").exists(), "delete left the state");
}

#[test]
fn rootless_bundle_maps_subordinate_ids() {
    as_user("rootless_bundle_maps_subordinate_ids");
}

#[test]
#[ignore = "run by rootless_bundle_maps_subordinate_ids"]
fn rootless_bundle_maps_subordinate_ids_child() {
    assert!(is_child());
    let (me, my_gid) = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    let (sub_uid, _) = subordinate_range("/etc/subuid").expect("the user's subuid range");
    let (sub_gid, _) = subordinate_range("/etc/subgid").expect("the user's subgid range");
    let b = Bundle::rootless(&["sh", "-c", "touch /tmp/by-app; id > /tmp/id; sleep 1000"]);
    let path = b.dir().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    // Root is the user, 1..=1000 are the first subordinate ids; the process runs as 1000.
    config["linux"]["uidMappings"] = serde_json::json!([
        {"containerID": 0, "hostID": me, "size": 1},
        {"containerID": 1, "hostID": sub_uid, "size": 1000},
    ]);
    config["linux"]["gidMappings"] = serde_json::json!([
        {"containerID": 0, "hostID": my_gid, "size": 1},
        {"containerID": 1, "hostID": sub_gid, "size": 1000},
    ]);
    config["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000});
    std::fs::write(&path, config.to_string()).unwrap();
    let bundle = b.dir();
    b.ok(&["create", "--bundle", bundle.to_str().unwrap(), "c2"]);
    b.ok(&["start", "c2"]);
    wait_for(Duration::from_secs(30), "/tmp/id", || {
        std::fs::read_to_string(b.rootfs("tmp/id")).is_ok_and(|s| s.ends_with('\n'))
    })
    .unwrap();
    let id = std::fs::read_to_string(b.rootfs("tmp/id")).unwrap();
    assert!(id.starts_with("uid=1000(app) gid=1000(app)"), "{id}");
    // Container id 1000 is the 1000th subordinate id on the host.
    let meta = std::fs::metadata(b.rootfs("tmp/by-app")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (sub_uid + 999, sub_gid + 999));
    let out = b.rt(&["exec", "--user", "1000:1000", "c2", "id", "-u"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "1000\n"),
        "{}",
        out.stderr
    );
    b.ok(&["delete", "--force", "c2"]);
    b.fails(&["state", "c2"], "does not exist");
}

#[test]
fn rootless_podman_runs_containers_through_strata_runtime() {
    as_user("rootless_podman_runs_containers_through_strata_runtime");
}

#[test]
#[ignore = "run by rootless_podman_runs_containers_through_strata_runtime"]
fn rootless_podman_runs_containers_through_strata_runtime_child() {
    assert!(is_child());
    // podman and the runtime it calls find their state here (the runtime under
    // strata-runtime/). This process runs this one test alone, so the variable is set once
    // before any thread needs it.
    let xdg = tempfile::Builder::new()
        .prefix("strata-rt-xdg")
        .tempdir()
        .unwrap();
    std::env::set_var("XDG_RUNTIME_DIR", xdg.path());
    let _pause = PausePodman(xdg.path().join("libpod/tmp/pause.pid"));
    super::peers::podman_lifecycle();
}

/// Rootless podman keeps its user namespace alive with a pause process that outlives it;
/// stopped on drop, so no test leaves one behind.
struct PausePodman(std::path::PathBuf);

impl Drop for PausePodman {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(&self.0).ok();
        if let Some(pid) = pid.and_then(|p| p.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
