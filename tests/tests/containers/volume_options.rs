//! Volumes with driver options, mounted as docker's `local` driver does: a tmpfs (its
//! options applied, shared by the containers using it while one runs, gone once the last
//! stops), a bind of a host directory (read-write and read-only), a file system on a block
//! device (root; rootless it is refused naming the type), and bad options refused naming
//! the option. As root and as the unprivileged user.

use std::process::Command;

use strata_tests::users::{have_root, is_child, run_test_as_user, Rootless, TEST_USER};

use super::Env;

fn volume_options(env: &Env) {
    let rootless = !nix::unistd::geteuid().is_root();
    // uid 1000 exists in a rootless container only through the user's /etc/subuid range.
    let subuids = std::fs::read_to_string("/etc/subuid")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with(&format!("{TEST_USER}:")));
    let uid = if rootless && !subuids { "0" } else { "1000" };
    // tmpfs: what one container writes another sees while the first runs.
    env.run(&[
        "volume",
        "create",
        "-o",
        "type=tmpfs",
        "-o",
        "device=tmpfs",
        "-o",
        &format!("o=size=64m,uid={uid}"),
        "tv",
    ])
    .ok();
    env.detach(&[
        "--name",
        "first",
        "-v",
        "tv:/data",
        "demo",
        "sh",
        "-c",
        "echo one > /data/f; sleep 1000",
    ]);
    env.exec_until("first", "cat /data/f", "one");
    let out = env
        .run(&[
            "run",
            "--rm",
            "-v",
            "tv:/data",
            "demo",
            "sh",
            "-c",
            "cat /data/f; stat -c %u /data; grep ' /data ' /proc/mounts",
        ])
        .ok();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..2], ["one", uid], "{out}");
    assert!(
        lines[2].starts_with("tmpfs /data tmpfs ") && lines[2].contains("size=65536k"),
        "{out}"
    );
    // The mount lives in the containers' namespaces, not on the host.
    let data = env.strata.root().join("volumes/tv/_data");
    assert!(!data.join("f").exists());
    // The last user stopped: the tmpfs went, and its files with it.
    env.run(&["stop", "-t", "1", "first"]).ok();
    assert_eq!(
        env.run(&["run", "--rm", "-v", "tv:/data", "demo", "ls", "-A", "/data"])
            .ok(),
        ""
    );
    env.run(&["rm", "first"]).ok();

    // A bind of a host directory, read-write and read-only.
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("h"), "host\n").unwrap();
    let device = format!("device={}", host.path().display());
    for (name, o) in [("bv", "o=bind"), ("bro", "o=bind,ro")] {
        env.run(&[
            "volume",
            "create",
            "-o",
            "type=none",
            "-o",
            o,
            "-o",
            &device,
            name,
        ])
        .ok();
    }
    assert_eq!(
        env.run(&[
            "run",
            "--rm",
            "-v",
            "bv:/b",
            "demo",
            "sh",
            "-c",
            "cat /b/h; echo ctr > /b/c",
        ])
        .ok(),
        "host\n"
    );
    assert_eq!(
        std::fs::read_to_string(host.path().join("c")).unwrap(),
        "ctr\n"
    );
    let r = env.run(&[
        "run",
        "--rm",
        "-v",
        "bro:/b",
        "demo",
        "sh",
        "-c",
        "cat /b/h; echo x > /b/y",
    ]);
    assert_eq!(r.stdout, "host\n");
    assert_ne!(r.code, 0, "{r:?}");
    assert!(!host.path().join("y").exists());

    // Bad options: refused naming the option, at create or when a container mounts them.
    let err = env
        .run(&[
            "volume",
            "create",
            "-o",
            "type=none",
            "-o",
            "device=/x",
            "nb",
        ])
        .fails(1);
    assert!(err.contains("\"type=none\" needs \"o=bind\""), "{err}");
    let err = env
        .run(&["volume", "create", "-o", "o=size=1m", "nt"])
        .fails(1);
    assert!(err.contains("missing required option: \"type\""), "{err}");
    env.run(&[
        "volume",
        "create",
        "-o",
        "type=tmpfs",
        "-o",
        "o=size=banana",
        "badsize",
    ])
    .ok();
    let err = env
        .run(&["run", "--rm", "-v", "badsize:/x", "demo", "true"])
        .fails(125);
    assert!(
        err.contains("mounting volume badsize (o=size=banana,type=tmpfs)"),
        "{err}"
    );
    env.run(&[
        "volume",
        "create",
        "-o",
        "type=none",
        "-o",
        "o=bind",
        "-o",
        "device=/nonexistent/dir",
        "gone",
    ])
    .ok();
    let err = env
        .run(&["run", "--rm", "-v", "gone:/x", "demo", "true"])
        .fails(125);
    assert!(
        err.contains("device=/nonexistent/dir") && err.contains("No such file or directory"),
        "{err}"
    );
    if rootless {
        env.run(&[
            "volume",
            "create",
            "-o",
            "type=ext4",
            "-o",
            "device=/dev/null",
            "ev",
        ])
        .ok();
        let err = env
            .run(&["run", "--rm", "-v", "ev:/e", "demo", "true"])
            .fails(125);
        assert!(
            err.contains("volume ev: option \"type=ext4\" mounts a device, which only root may do"),
            "{err}"
        );
    }
    assert_eq!(
        env.run(&["ps", "-aq"]).ok(),
        "",
        "a refused container is left"
    );
}

/// Root: an ext4 file system on a loop device, shared as the tmpfs is.
fn block_device_volume(env: &Env) {
    let img = env.tmp.path().join("ext4.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let ok = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{cmd:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    ok(Command::new("mkfs.ext4").arg("-q").arg(&img));
    let loop_dev = ok(Command::new("losetup").args(["-f", "--show"]).arg(&img));
    let result = std::panic::catch_unwind(|| {
        env.run(&[
            "volume",
            "create",
            "-o",
            "type=ext4",
            "-o",
            &format!("device={loop_dev}"),
            "-o",
            "o=noatime",
            "ev",
        ])
        .ok();
        env.detach(&[
            "--name",
            "writer",
            "-v",
            "ev:/e",
            "demo",
            "sh",
            "-c",
            "echo on-ext4 > /e/f; sleep 1000",
        ]);
        env.exec_until("writer", "cat /e/f", "on-ext4");
        let out = env
            .run(&[
                "run",
                "--rm",
                "-v",
                "ev:/e",
                "demo",
                "sh",
                "-c",
                "cat /e/f; grep ' /e ' /proc/mounts",
            ])
            .ok();
        assert!(out.starts_with("on-ext4\n"), "{out}");
        assert!(
            out.contains(" /e ext4 ") && out.contains("noatime"),
            "{out}"
        );
        env.run(&["rm", "-f", "writer"]).ok();
        // Unmounted with its last user: the data is on the device, read back by a new one.
        assert_eq!(
            env.run(&["run", "--rm", "-v", "ev:/e", "demo", "cat", "/e/f"])
                .ok(),
            "on-ext4\n"
        );
    });
    let _ = Command::new("losetup").args(["-d", &loop_dev]).status();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn volume_options_mount_as_docker_local_driver() {
    if !have_root("volume_options_mount_as_docker_local_driver") {
        return;
    }
    let env = Env::new();
    volume_options(&env);
    block_device_volume(&env);
}

#[test]
fn rootless_volume_options_mount_as_docker_local_driver() {
    if !have_root("rootless_volume_options_mount_as_docker_local_driver") {
        return;
    }
    run_test_as_user(
        "containers::volume_options::rootless_volume_options_mount_as_docker_local_driver_child",
        Rootless::Host,
    )
    .unwrap();
}

#[test]
#[ignore = "run by rootless_volume_options_mount_as_docker_local_driver"]
fn rootless_volume_options_mount_as_docker_local_driver_child() {
    assert!(is_child());
    volume_options(&Env::new());
}
