//! The `strata-fs` command: options (fuse-overlayfs's syntax), read-only mounts, the mount(8)
//! helper form, foreground and debug modes, and what a killed daemon leaves behind.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use strata_tests::fixture::{LayerBuilder, WhiteoutFormat};
use strata_tests::mounts::{
    is_mounted, mount, mount_strata_foreground, mountinfo_line, strata_fs_bin, unmount, wait_for,
    Driver, UnionDirs,
};
use strata_tests::users::have_root;

use super::{errno, names, Fixture, ROOT_NAMES};

fn strata_fs(args: &[&str]) -> std::process::Output {
    Command::new(strata_fs_bin().unwrap())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn without_upperdir_the_mount_is_read_only() {
    if !have_root("without_upperdir_the_mount_is_read_only") {
        return;
    }
    let fx = Fixture::new(WhiteoutFormat::Oci).unwrap();
    let dirs = UnionDirs {
        upper: None,
        ..fx.dirs.clone()
    };
    let m = mount(Driver::Strata, &dirs, &[]).unwrap();
    let m = m.path();
    assert_eq!(names(m), ROOT_NAMES);
    assert_eq!(fs::read_to_string(m.join("a")).unwrap(), "top-a");
    assert_eq!(errno(fs::write(m.join("new"), "x")), libc::EROFS);
    assert_eq!(
        errno(OpenOptions::new().write(true).open(m.join("a"))),
        libc::EROFS
    );
    assert_eq!(errno(fs::create_dir(m.join("dir"))), libc::EROFS);
    assert_eq!(errno(fs::remove_file(m.join("a"))), libc::EROFS);
    assert_eq!(errno(fs::rename(m.join("a"), m.join("c"))), libc::EROFS);
}

#[test]
fn bad_options_are_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let lower = dir.path().display().to_string();
    for (opts, expected) in [
        (format!("lowerdir={lower},frobnicate"), "frobnicate"),
        (format!("lowerdir={lower},threads=0"), "threads"),
        (format!("lowerdir={lower},transport=pigeon"), "transport"),
        (format!("lowerdir={lower},upperdir={lower}"), "workdir"),
        ("upperdir=/x,workdir=/y".to_string(), "lowerdir"),
        (format!("lowerdir={lower}/missing"), "missing"),
    ] {
        let out = strata_fs(&["-o", &opts, &lower]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "-o {opts} was accepted");
        assert!(
            stderr.contains(expected),
            "-o {opts}: {stderr:?} does not name {expected}"
        );
        assert!(!is_mounted(dir.path()));
    }
    let out = strata_fs(&[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
}

/// containers/storage's `mount_program` call: empty items, `volatile`, the compat options.
#[test]
fn podman_style_options_mount() {
    if !have_root("podman_style_options_mount") {
        return;
    }
    let fx = Fixture::new(WhiteoutFormat::Oci).unwrap();
    let opts = format!("{},,volatile,fsync=0,noacl,userxattr", fx.dirs.options());
    let out = strata_fs(&["-o", &opts, fx.merged().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        is_mounted(fx.merged()),
        "strata-fs returned before the mount was ready"
    );
    fs::write(fx.merged().join("v"), "volatile").unwrap();
    assert_eq!(
        fs::read_to_string(fx.upper().join("v")).unwrap(),
        "volatile"
    );
    // fusermount3 -u ends it like any FUSE mount.
    let status = Command::new("fusermount3")
        .arg("-u")
        .arg(fx.merged())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(!is_mounted(fx.merged()));
}

/// mount(8): `mount -t fuse.strata-fs SRC MNT -o …` runs mount.fuse3, which runs
/// `strata-fs SRC MNT -o OPTS` with the generic options added. mount.fuse3 looks the
/// program up in a fixed PATH, so an installed strata-fs is found by its subtype; a build
/// tree's is named in the source (`PROGRAM#SRC`), the form mount.fuse3 documents for that.
#[test]
fn works_as_a_mount_helper() {
    if !have_root("works_as_a_mount_helper") {
        return;
    }
    let fx = Fixture::new(WhiteoutFormat::Oci).unwrap();
    let bin = strata_fs_bin().unwrap();
    let installed = Path::new("/usr/local/bin/strata-fs").exists();
    let (fstype, source) = if installed {
        ("fuse.strata-fs".to_string(), "strata".to_string())
    } else {
        ("fuse".to_string(), format!("{}#strata", bin.display()))
    };
    let out = Command::new("mount")
        .args(["-t", &fstype, &source])
        .arg(fx.merged())
        .arg("-o")
        .arg(format!(
            "rw,nodev,nosuid,noatime,exec,{}",
            fx.dirs.options()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(Duration::from_secs(30), "the mount", || {
        is_mounted(fx.merged())
    })
    .unwrap();
    let line = mountinfo_line(fx.merged()).unwrap();
    assert!(line.contains("fuse.strata-fs"), "{line}");
    assert!(line.contains("nodev") && line.contains("nosuid"), "{line}");
    assert_eq!(fs::read_to_string(fx.merged().join("a")).unwrap(), "top-a");
    assert!(Command::new("umount")
        .arg(fx.merged())
        .status()
        .unwrap()
        .success());
    assert!(!is_mounted(fx.merged()));
}

#[test]
fn foreground_debug_logs_each_request() {
    if !have_root("foreground_debug_logs_each_request") {
        return;
    }
    let text = debug_log(&[]).to_lowercase();
    assert!(
        text.contains("lookup"),
        "no LOOKUP in the debug log:\n{text}"
    );
}

/// The `-d` log of `strata-fs -f -d` with `extra` options, serving a stat of `d/x`.
fn debug_log(extra: &[&str]) -> String {
    let fx = Fixture::new(WhiteoutFormat::Oci).unwrap();
    let log = fx.tmp.path().join("debug.log");
    let mut opts = fx.dirs.options();
    for o in extra {
        opts.push(',');
        opts.push_str(o);
    }
    let mut child = Command::new(strata_fs_bin().unwrap())
        .args(["-f", "-d", "-o"])
        .arg(&opts)
        .arg(fx.merged())
        .stdin(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(10), "the mount", || {
        is_mounted(fx.merged())
    })
    .unwrap();
    let _ = fs::metadata(fx.merged().join("d/x")).unwrap();
    unmount(fx.merged(), Driver::Strata).unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "foreground strata-fs -o {opts} exited with {status}"
    );
    fs::read_to_string(&log).unwrap()
}

/// strata's own loop says in the `-d` log which transport serves it, and each request which
/// one brought it: io_uring queues where the kernel has FUSE over io_uring on
/// (`enable_uring=Y`), else /dev/fuse; `transport=dev` reads /dev/fuse anyway; and
/// `transport=uring` where the kernel has it off is refused before anything is mounted,
/// naming the switch.
#[test]
fn own_loop_transport_follows_the_kernel_and_the_option() {
    if !have_root("own_loop_transport_follows_the_kernel_and_the_option") {
        return;
    }
    let uring_on = fs::read_to_string("/sys/module/fuse/parameters/enable_uring")
        .is_ok_and(|v| v.trim() == "Y");
    for (transport, ring) in [("auto", uring_on), ("dev", false)] {
        let text = debug_log(&["server=strata", &format!("transport={transport}")]);
        let said = match ring {
            true => "FUSE transport: io_uring",
            false => "FUSE transport: /dev/fuse",
        };
        assert!(
            text.contains(said),
            "transport={transport}: no {said:?} in\n{text}"
        );
        assert_eq!(
            text.contains("LOOKUP ino 1 (2 bytes of arguments, io_uring queue"),
            ring,
            "transport={transport} (enable_uring {uring_on}): the LOOKUP came another way:\n{text}"
        );
    }
    let fx = Fixture::new(WhiteoutFormat::Oci).unwrap();
    let opts = format!("{},transport=uring", fx.dirs.options());
    let merged = fx.merged().display().to_string();
    let out = strata_fs(&["-o", &opts, &merged]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if uring_on {
        assert!(out.status.success(), "transport=uring: {stderr}");
        assert_eq!(fs::read_to_string(fx.merged().join("a")).unwrap(), "top-a");
        unmount(fx.merged(), Driver::Strata).unwrap();
    } else {
        assert!(
            !out.status.success(),
            "transport=uring mounted with enable_uring off"
        );
        assert!(
            stderr.contains("enable_uring"),
            "{stderr:?} does not name enable_uring"
        );
        assert!(!is_mounted(fx.merged()));
    }
}

/// Killing the daemon: every access answers ENOTCONN at once (no hang), and the next mount
/// of the same upper sees every write that completed before the kill.
#[test]
fn killed_daemon_gives_enotconn_and_keeps_completed_writes() {
    if !have_root("killed_daemon_gives_enotconn_and_keeps_completed_writes") {
        return;
    }
    let fx = Fixture::new(WhiteoutFormat::Oci).unwrap();
    let mut m = mount_strata_foreground(&fx.dirs, &[]).unwrap();
    let merged = m.path().to_path_buf();
    fs::write(merged.join("done"), "complete").unwrap();
    let mut f = OpenOptions::new()
        .append(true)
        .open(merged.join("a"))
        .unwrap();
    f.write_all(b"+appended").unwrap();
    drop(f);
    fs::rename(merged.join("ren"), merged.join("ren2")).unwrap();
    fs::remove_file(merged.join("b")).unwrap();
    m.kill_daemon().unwrap();
    // The answer must come promptly, from another thread so a hang fails the test.
    let probe = merged.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(errno(fs::metadata(probe.join("done"))));
    });
    let answer = rx.recv_timeout(Duration::from_secs(10)).expect("stat hung");
    // Over io_uring the kernel tears the dead server's queues down after its process is
    // gone (the ring's exit work holds /dev/fuse meanwhile): a request queued in between
    // is aborted with ECONNABORTED, and every one after with ENOTCONN.
    assert!(
        answer == libc::ENOTCONN || answer == libc::ECONNABORTED,
        "errno {answer} after the kill"
    );
    assert_eq!(errno(fs::metadata(merged.join("done"))), libc::ENOTCONN);
    drop(m); // unmounts the dead mount
    let m = mount(Driver::Strata, &fx.dirs, &[]).unwrap();
    let m = m.path();
    assert_eq!(fs::read_to_string(m.join("done")).unwrap(), "complete");
    assert_eq!(fs::read_to_string(m.join("a")).unwrap(), "top-a+appended");
    assert_eq!(fs::read_to_string(m.join("ren2/sub/f2")).unwrap(), "2");
    assert_eq!(errno(fs::metadata(m.join("ren"))), libc::ENOENT);
    assert_eq!(errno(fs::metadata(m.join("b"))), libc::ENOENT);
}

/// kill -9 in the middle of copying a large file up: the upper then has no `huge` or the
/// whole of it, never a prefix.
#[test]
fn kill_during_copy_up_leaves_no_half_file() {
    if !have_root("kill_during_copy_up_leaves_no_half_file") {
        return;
    }
    const HUGE: u64 = 256 << 20;
    let fx = Fixture::with_layers(WhiteoutFormat::Oci, |_| {
        let data: Vec<u8> = (0..HUGE).map(|i| (i >> 12) as u8).collect();
        [
            LayerBuilder::new().file("huge", data),
            LayerBuilder::new().dir("x"),
        ]
    })
    .unwrap();
    for delay_ms in [0u64, 20, 80] {
        let mut m = mount_strata_foreground(&fx.dirs, &["nopassthrough"]).unwrap();
        let target = m.path().join("huge");
        let writer = std::thread::spawn(move || {
            // Opening for write starts the copy-up; the result does not matter here.
            let _ = OpenOptions::new().append(true).open(target);
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        m.kill_daemon().unwrap();
        writer.join().unwrap();
        drop(m);
        match fs::metadata(fx.upper().join("huge")) {
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOENT)),
            Ok(meta) => assert_eq!(meta.len(), HUGE, "a partial copy is visible"),
        }
        // A later mount completes the job and shows the whole file.
        let m = mount(Driver::Strata, &fx.dirs, &[]).unwrap();
        let meta = fs::metadata(m.path().join("huge")).unwrap();
        assert_eq!(meta.len(), HUGE);
        drop(m);
        let _ = fs::remove_file(fx.upper().join("huge"));
    }
    assert!(names(&fx.dirs.upper.as_ref().unwrap().0).is_empty());
}

#[test]
fn uid_mapping_and_squash_options() {
    if !have_root("uid_mapping_and_squash_options") {
        return;
    }
    let fx = Fixture::new(WhiteoutFormat::Oci).unwrap();
    let owner = |opts: &[&str], file: &str| {
        let m = mount(Driver::Strata, &fx.dirs, opts).unwrap();
        let meta = fs::metadata(m.path().join(file)).unwrap();
        (meta.uid(), meta.gid())
    };
    assert_eq!(owner(&[], "b"), (1000, 1000));
    assert_eq!(
        owner(&["uidmapping=0:1000:10", "gidmapping=0:1000:10"], "b"),
        (0, 0)
    );
    assert_eq!(
        owner(&["uidmapping=0:1000:10", "gidmapping=0:1000:10"], "a"),
        (65534, 65534)
    );
    assert_eq!(owner(&["squash_to_root"], "b"), (0, 0));
    assert_eq!(
        owner(&["squash_to_uid=55", "squash_to_gid=66"], "b"),
        (55, 66)
    );
    // Through a mapping a new file is written with the host id.
    let m = mount(
        Driver::Strata,
        &fx.dirs,
        &["uidmapping=0:1000:10", "gidmapping=0:1000:10"],
    )
    .unwrap();
    fs::write(m.path().join("mapped"), "m").unwrap();
    assert_eq!(fs::metadata(m.path().join("mapped")).unwrap().uid(), 0);
    assert_eq!(fs::metadata(fx.upper().join("mapped")).unwrap().uid(), 1000);
}

/// SIGTERM (as `podman`, `systemd` or a shutdown sends it) unmounts and exits cleanly; the
/// mount shows as `fuse.strata-fs`, as fuse-overlayfs's shows as `fuse.fuse-overlayfs`.
#[test]
fn sigterm_unmounts_and_exits() {
    if !have_root("sigterm_unmounts_and_exits") {
        return;
    }
    let fx = Fixture::new(WhiteoutFormat::Oci).unwrap();
    let mut child = Command::new(strata_fs_bin().unwrap())
        .args(["-f", "-o"])
        .arg(fx.dirs.options())
        .arg(fx.merged())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(30), "the mount", || {
        is_mounted(fx.merged())
    })
    .unwrap();
    let line = mountinfo_line(fx.merged()).unwrap();
    assert!(line.contains(" - fuse.strata-fs "), "{line}");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "strata-fs exited with {status} on SIGTERM"
    );
    assert!(!is_mounted(fx.merged()));
}
