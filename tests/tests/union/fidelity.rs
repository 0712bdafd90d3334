//! Where strata-fs differed from fuse-overlayfs or kernel overlayfs (issue 9, point 5), each
//! test named after what broke: other users shut out of a root mount, renamed directories of
//! a lower upper lost, hard links the kernel saw split after a strata copy-up, a daemon that
//! outlived its unmount.

use std::fs;
use std::process::Command;

use strata_tests::fixture::WhiteoutFormat;
use strata_tests::mounts::{mount, Driver};
use strata_tests::users::{have_root, test_user};

use super::Fixture;

/// Runs `cat PATH` as the unprivileged test user: its stdout, or its stderr as the error.
fn cat_as_test_user(path: &std::path::Path) -> Result<String, String> {
    let (uid, gid) = test_user().unwrap();
    let out = Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .args(["--clear-groups", "cat"])
        .arg(path)
        .output()
        .unwrap();
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// Root mounted without options and other users got EACCES on everything: the kernel admits
/// only the mounting user unless `allow_other` (fuse-overlayfs adds it as root).
#[test]
fn other_users_were_shut_out_of_a_root_mount() {
    if !have_root("other_users_were_shut_out_of_a_root_mount") {
        return;
    }
    let fx = Fixture::new(WhiteoutFormat::Oci).unwrap();
    let m = mount(Driver::Strata, &fx.dirs, &[]).unwrap();
    let secret = m.path().join("secret");
    fs::write(&secret, "s").unwrap();
    fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    assert_eq!(cat_as_test_user(&m.path().join("a")).unwrap(), "top-a");
    assert_eq!(cat_as_test_user(&m.path().join("d/x")).unwrap(), "x");
    // The kernel still checks permissions (default_permissions).
    let err = cat_as_test_user(&secret).unwrap_err();
    assert!(err.contains("Permission denied"), "{err}");
}
