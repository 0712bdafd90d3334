//! Rootless: the suite as an unprivileged user, inside `unshare -Urm` and on the host
//! through fusermount3, and ownership the host refuses kept in the override xattr.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

use strata_tests::fixture::{xattr_get, WhiteoutFormat};
use strata_tests::mounts::{is_mounted, strata_fs_bin, unmount, wait_for, Driver};
use strata_tests::users::{have_root, is_child, run_test_as_user, test_user, Rootless};

use super::suite::{self, Variant};
use super::Fixture;

#[test]
fn strata_passes_the_suite_rootless_in_a_user_namespace() {
    if have_root("strata_passes_the_suite_rootless_in_a_user_namespace") {
        run_test_as_user(
            "union::rootless::suite_in_user_namespace_child",
            Rootless::UserNamespace,
        )
        .unwrap();
    }
}

#[test]
#[ignore = "run by strata_passes_the_suite_rootless_in_a_user_namespace"]
fn suite_in_user_namespace_child() {
    assert!(is_child(), "runs only as the unprivileged test user");
    assert!(!nix::unistd::getuid().is_root() || in_user_namespace());
    suite::run(Variant {
        driver: Driver::Strata,
        format: WhiteoutFormat::Oci,
        host_root: false,
        ns_root: true,
        options: &[],
    });
}

#[test]
fn strata_passes_the_suite_rootless_on_the_host() {
    if have_root("strata_passes_the_suite_rootless_on_the_host") {
        run_test_as_user("union::rootless::suite_on_host_child", Rootless::Host).unwrap();
    }
}

#[test]
#[ignore = "run by strata_passes_the_suite_rootless_on_the_host"]
fn suite_on_host_child() {
    assert!(is_child(), "runs only as the unprivileged test user");
    assert!(!nix::unistd::getuid().is_root());
    suite::run(Variant {
        driver: Driver::Strata,
        format: WhiteoutFormat::Oci,
        host_root: false,
        ns_root: false,
        options: &[],
    });
}

fn in_user_namespace() -> bool {
    fs::read_to_string("/proc/self/uid_map")
        .map(|m| !m.split_whitespace().eq(["0", "0", "4294967295"]))
        .unwrap_or(false)
}

/// `user_allow_other` lets an unprivileged mount admit root, as a rootless container
/// engine's helper processes need; the test enables it (idempotently) as its setup.
fn allow_user_allow_other() {
    let conf = fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
    if !conf.lines().any(|l| l.trim() == "user_allow_other") {
        fs::write("/etc/fuse.conf", format!("{conf}\nuser_allow_other\n")).unwrap();
    }
}

/// Root (as a container's root would) chowns files on a mount an unprivileged user owns:
/// the host refuses the chown, so the owner lives in `user.containers.override_stat`.
#[test]
fn chown_the_host_refuses_is_kept_in_override_stat() {
    if !have_root("chown_the_host_refuses_is_kept_in_override_stat") {
        return;
    }
    allow_user_allow_other();
    let (uid, gid) = test_user().unwrap();
    let fx = Fixture::new(WhiteoutFormat::Oci).unwrap();
    let chown_tree = |path: &std::path::Path| {
        Command::new("chown")
            .args(["-R", &format!("{uid}:{gid}")])
            .arg(path)
            .status()
            .unwrap()
    };
    assert!(chown_tree(fx.tmp.path()).success());
    fs::set_permissions(
        fx.tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // The user mounts (through fusermount3), admitting root with allow_other.
    let mount_as_user = || {
        let status = Command::new("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .args(["--clear-groups"])
            .arg(strata_fs_bin().unwrap())
            .arg("-o")
            .arg(format!("{},allow_other", fx.dirs.options()))
            .arg(fx.merged())
            .stdin(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "rootless strata-fs failed to mount");
    };
    mount_as_user();
    let merged = fx.merged().to_path_buf();
    let _unmount = scopeguard(|| {
        if is_mounted(&merged) {
            unmount(&merged, Driver::Strata).unwrap();
        }
    });
    let m = fx.merged();
    std::os::unix::fs::chown(m.join("a"), Some(1234), Some(4321)).unwrap();
    let a = fs::metadata(m.join("a")).unwrap();
    assert_eq!(
        (a.uid(), a.gid()),
        (1234, 4321),
        "merged view shows the new owner"
    );
    let up = fs::metadata(fx.upper().join("a")).unwrap();
    assert_eq!(
        (up.uid(), up.gid()),
        (uid.as_raw(), gid.as_raw()),
        "host owner unchanged"
    );
    assert_eq!(
        xattr_get(&fx.upper().join("a"), "user.containers.override_stat").unwrap(),
        Some(b"1234:4321:0644".to_vec())
    );
    // A new file created by root is root's in the merged view, the user's on the host.
    fs::write(m.join("byroot"), "r").unwrap();
    assert_eq!(fs::metadata(m.join("byroot")).unwrap().uid(), 0);
    assert_eq!(
        fs::metadata(fx.upper().join("byroot")).unwrap().uid(),
        uid.as_raw()
    );
    // And after a remount (as the user again) the override is still what stat shows.
    unmount(&merged, Driver::Strata).unwrap();
    mount_as_user();
    wait_for(std::time::Duration::from_secs(5), "the remount", || {
        is_mounted(&merged)
    })
    .unwrap();
    let a = fs::metadata(m.join("a")).unwrap();
    assert_eq!((a.uid(), a.gid()), (1234, 4321), "override lost on remount");
}

/// Runs `f` on drop.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
