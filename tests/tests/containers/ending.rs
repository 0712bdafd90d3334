//! How a container's end goes when something around it fails: a disk that fills up under
//! a running container (the exit is still recorded and the monitor returns; a build whose
//! RUN fills it fails with a clear error and leaves nothing), and a root file system still
//! held open once the container ended (the monitor aborts the FUSE connection, says so and
//! returns, rather than wait for ever).

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use strata_tests::mounts::{wait_for, Tmpfs};
use strata_tests::strata::{store_state, Strata};
use strata_tests::users::{have_root, is_child, run_test_as_user, test_user, Rootless};

use super::Env;

/// Longer than anything here takes on a busy machine: a command still running then hangs.
const HANG: Duration = Duration::from_secs(120);

/// The store of the rootless full-disk test: a tmpfs the root parent mounts for the child.
const ROOTLESS_FULL_STORE: &str = "/tmp/strata-e2e-full-disk-rootless";

/// 9 MB of incompressible data into the container's upper: more than the 12 MiB tmpfs has
/// left beside the demo image.
const FILL: &str = "head -c 9000000 /dev/urandom > /big";

/// A run that fills the store's disk ends with the command's status, recorded as docker's
/// `exited`; a build whose RUN fills it fails naming the full disk, tags nothing and leaves
/// no container and nothing in the store.
fn disk_fills_under_a_container(root: &Path) {
    let strata = Strata::new(root).unwrap();
    let r = strata.run_bounded(&["run", "--name", "full", "demo", "sh", "-c", FILL], HANG);
    assert_eq!(r.code, 1, "{r:?}");
    let inspect = |f: &str| {
        strata
            .run(&["inspect", "-f", f, "full"])
            .ok()
            .trim()
            .to_string()
    };
    assert_eq!(inspect("{{.State.Status}}"), "exited");
    assert_eq!(inspect("{{.State.ExitCode}}"), "1");
    strata.run(&["rm", "full"]).ok();

    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM demo\nRUN {FILL}\n"),
    )
    .unwrap();
    let before = store_state(root);
    let r = strata.run_bounded(&["build", "-t", "full", ctx.path().to_str().unwrap()], HANG);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("returned a non-zero code: 1")
            && r.stderr.contains("No space left on device"),
        "{r:?}"
    );
    assert_eq!(strata.run(&["images", "-q", "full"]).ok(), "");
    assert_eq!(
        strata.run(&["ps", "-aq"]).ok(),
        "",
        "a build container is left"
    );
    assert_eq!(store_state(root), before);
}

#[test]
fn a_full_disk_records_the_exit_and_fails_a_build_cleanly() {
    if !have_root("a_full_disk_records_the_exit_and_fails_a_build_cleanly") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("strata-full")
        .tempdir()
        .unwrap();
    let root = dir.path().join("root");
    let _disk = Tmpfs::mount(&root, "size=12m").unwrap();
    disk_fills_under_a_container(&root);
}

#[test]
fn rootless_a_full_disk_records_the_exit_and_fails_a_build_cleanly() {
    if !have_root("rootless_a_full_disk_records_the_exit_and_fails_a_build_cleanly") {
        return;
    }
    let (uid, gid) = test_user().unwrap();
    let root = Path::new(ROOTLESS_FULL_STORE);
    let disk = Tmpfs::mount(root, &format!("size=12m,mode=0700,uid={uid},gid={gid}")).unwrap();
    let result = run_test_as_user(
        "containers::ending::rootless_a_full_disk_records_the_exit_and_fails_a_build_cleanly_child",
        Rootless::Host,
    );
    drop(disk);
    let _ = std::fs::remove_dir(root);
    result.unwrap();
}

#[test]
#[ignore = "run by rootless_a_full_disk_records_the_exit_and_fails_a_build_cleanly"]
fn rootless_a_full_disk_records_the_exit_and_fails_a_build_cleanly_child() {
    assert!(is_child());
    disk_fills_under_a_container(Path::new(ROOTLESS_FULL_STORE));
}

/// A file of the container's root held open from outside (through its monitor's
/// `/proc/PID/root`) past the container's end keeps the FUSE connection after the lazy
/// unmount: the foreground `run` still returns the status, saying it aborted the
/// connection, and the holder's next read fails. Root only: the unprivileged user may not
/// open a file through the monitor's `/proc/PID/root`, and a user namespace may not mount
/// fusectl to abort a connection (there the monitor's exit ends it).
#[test]
fn a_root_file_system_held_open_is_let_go() {
    if !have_root("a_root_file_system_held_open_is_let_go") {
        return;
    }
    let env = Env::new();
    // The demo image made first, so the container below exists as soon as it is polled.
    env.run(&["run", "--rm", "demo", "true"]).ok();
    std::thread::scope(|s| {
        let run = s.spawn(|| {
            env.strata.run_bounded(
                &[
                    "run",
                    "--name",
                    "held",
                    "demo",
                    "sh",
                    "-c",
                    "while [ ! -e /go ]; do sleep 0.1; done; exit 7",
                ],
                HANG,
            )
        });
        wait_for(HANG, "held running", || {
            env.run(&["inspect", "-f", "{{.State.Status}}", "held"])
                .stdout
                .trim()
                == "running"
        })
        .unwrap();
        let id = env.inspect("held", "{{.Id}}");
        let monitor = env.state(&id)["monitor_pid"].as_i64().unwrap();
        let rootfs = format!(
            "/proc/{monitor}/root{}/{id}/rootfs",
            env.containers_dir().display()
        );
        // The root directory, held: after an abort, a name never looked up (nothing the
        // kernel could have cached) cannot be asked for any more.
        let held = std::fs::File::open(&rootfs).unwrap();
        std::fs::write(format!("{rootfs}/go"), "").unwrap();
        let r = run.join().unwrap();
        assert_eq!(r.code, 7, "{r:?}");
        assert!(r.stderr.contains("aborted its FUSE connection"), "{r:?}");
        let asked = nix::fcntl::openat(
            Some(held.as_raw_fd()),
            "never-looked-up",
            nix::fcntl::OFlag::O_RDONLY,
            nix::sys::stat::Mode::empty(),
        );
        assert_eq!(
            asked,
            Err(nix::errno::Errno::ENOTCONN),
            "the connection lives on"
        );
    });
    assert_eq!(env.inspect("held", "{{.State.Status}}"), "exited");
    assert_eq!(env.inspect("held", "{{.State.ExitCode}}"), "7");
}
