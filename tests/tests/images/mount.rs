//! `strata mount IMAGE DIR`: the image's layers, read through their indexes, show exactly
//! what `umoci unpack` extracts from the same image (content, owners, modes, times, xattrs,
//! device numbers, hard links); `--upper` makes the mount writable.

use std::process::Command;

use strata_tests::mounts::{is_mounted, unmount, Driver};
use strata_tests::tree::{diff, snapshot_with_times};
use strata_tests::users::have_root;

use strata_tests::oci::Compression;

use super::{env, layers_image};

#[test]
fn mount_shows_what_umoci_unpack_extracts() {
    if !have_root("mount_shows_what_umoci_unpack_extracts") {
        return;
    }
    let env = env();
    env.strata.run(&["pull", "-q", &env.layers]).ok();
    let mnt = env.tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    env.strata
        .run(&["mount", &env.layers, mnt.to_str().unwrap()])
        .ok();
    assert!(
        is_mounted(&mnt),
        "strata mount returned before the mount was ready"
    );
    // Debian's umoci reads no zstd layers: it unpacks the same layers (same diff-ids) with
    // the zstd one gzip'd instead.
    let layout = env.tmp.path().join("layout");
    let for_umoci = layers_image(Compression::Gzip)
        .write_layout(&layout, "layers-umoci")
        .unwrap();
    assert_eq!(for_umoci.diff_ids, env.layers_built.diff_ids);
    let bundle = env.tmp.path().join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:layers-umoci", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = snapshot_with_times(&bundle.join("rootfs")).unwrap();
    let actual = snapshot_with_times(&mnt).unwrap();
    let differences = diff(&expected, &actual);
    assert!(
        differences.is_empty(),
        "strata mount differs from umoci unpack (- umoci only, + strata only):\n{}",
        differences.join("\n")
    );
    // Read-only without --upper.
    let err = std::fs::write(mnt.join("new"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    env.strata.run(&["umount", mnt.to_str().unwrap()]).ok();
    assert!(!is_mounted(&mnt));
}

#[test]
fn mount_with_upper_is_writable_and_keeps_changes() {
    if !have_root("mount_with_upper_is_writable_and_keeps_changes") {
        return;
    }
    let env = env();
    env.strata.run(&["pull", "-q", &env.busybox]).ok();
    let mnt = env.tmp.path().join("mnt");
    let upper = env.tmp.path().join("changes");
    std::fs::create_dir_all(&mnt).unwrap();
    let args = [
        "mount",
        "--upper",
        upper.to_str().unwrap(),
        &env.busybox,
        mnt.to_str().unwrap(),
    ];
    env.strata.run(&args).ok();
    assert_eq!(
        std::fs::read_to_string(mnt.join("hello")).unwrap(),
        "world\n"
    );
    std::fs::write(mnt.join("hello"), "changed\n").unwrap();
    std::fs::remove_file(mnt.join("etc/group")).unwrap();
    env.strata.run(&["umount", mnt.to_str().unwrap()]).ok();
    env.strata.run(&args).ok();
    assert_eq!(
        std::fs::read_to_string(mnt.join("hello")).unwrap(),
        "changed\n"
    );
    assert!(!mnt.join("etc/group").exists());
    unmount(&mnt, Driver::Strata).unwrap();
}

/// The pids whose command line holds `__mount` (strata mount's server) and `dir`.
pub(super) fn mount_servers(dir: &std::path::Path) -> Vec<u32> {
    let dir = dir.as_os_str().as_encoded_bytes();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.contains(&&b"__mount"[..]) && args.contains(&dir) {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn the_mount_server_exits_after_umount() {
    if !have_root("the_mount_server_exits_after_umount") {
        return;
    }
    let env = env();
    env.strata.run(&["pull", "-q", &env.busybox]).ok();
    let mnt = env.tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    env.strata
        .run(&["mount", &env.busybox, mnt.to_str().unwrap()])
        .ok();
    assert_eq!(
        std::fs::read_to_string(mnt.join("hello")).unwrap(),
        "world\n"
    );
    assert_eq!(mount_servers(&mnt).len(), 1, "one server serves the mount");
    env.strata.run(&["umount", mnt.to_str().unwrap()]).ok();
    assert!(!is_mounted(&mnt));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !mount_servers(&mnt).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the mount server is still running after umount"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Rootless, owners and device numbers come from the index, not from files the user
/// would have had to create: they are exact.
#[test]
fn rootless_mount_keeps_owners_and_devices_exact() {
    if have_root("rootless_mount_keeps_owners_and_devices_exact") {
        strata_tests::users::run_test_as_user(
            "images::mount::rootless_mount_keeps_owners_and_devices_exact_child",
            strata_tests::users::Rootless::Host,
        )
        .unwrap();
    }
}

#[test]
#[ignore = "run by rootless_mount_keeps_owners_and_devices_exact"]
fn rootless_mount_keeps_owners_and_devices_exact_child() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert!(!nix::unistd::getuid().is_root());
    let env = env();
    env.strata.run(&["pull", "-q", &env.layers]).ok();
    let mnt = env.tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    env.strata
        .run(&["mount", &env.layers, mnt.to_str().unwrap()])
        .ok();
    let null = std::fs::symlink_metadata(mnt.join("data/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    let blk = std::fs::symlink_metadata(mnt.join("data/loop9")).unwrap();
    assert!(blk.file_type().is_block_device());
    assert_eq!(blk.rdev(), nix::sys::stat::makedev(7, 9));
    assert_eq!((blk.uid(), blk.gid(), blk.mode() & 0o7777), (6, 6, 0o600));
    let owned = std::fs::symlink_metadata(mnt.join("data/owned")).unwrap();
    assert_eq!((owned.uid(), owned.gid()), (1000, 1000));
    assert_eq!(
        std::fs::symlink_metadata(mnt.join("data/suid"))
            .unwrap()
            .mode()
            & 0o7777,
        0o4755
    );
    assert_eq!(
        std::fs::read_to_string(mnt.join("data/hard2")).unwrap(),
        "hard"
    );
    env.strata.run(&["umount", mnt.to_str().unwrap()]).ok();
    assert!(!is_mounted(&mnt));
}
