//! A container's files: `diff` from its upper, `cp` both ways (running and stopped), and a
//! pulled image's config (Env, Cmd, WorkingDir) applied at run.

use strata_tests::users::have_root;

use super::Env;

/// As docker: a whiteout is `D`; a directory deleted and made again (opaque) is `D` then
/// its new contents; a metadata change (chmod) is `C`.
#[test]
fn diff_lists_added_changed_and_deleted_paths() {
    if !have_root("diff_lists_added_changed_and_deleted_paths") {
        return;
    }
    let env = Env::new();
    env.run(&[
        "run",
        "--name",
        "changes",
        "demo",
        "sh",
        "-c",
        "mkdir -p /tmp/new/deep && echo x > /tmp/new/deep/f && echo y >> /etc/passwd && rm /bin/ls && rm -r /home && mkdir /home && touch /home/fresh && chmod 600 /etc/group",
    ])
    .ok();
    let diff = env.run(&["diff", "changes"]).ok();
    assert_eq!(
        diff,
        "C /bin\nD /bin/ls\nC /etc\nC /etc/group\nC /etc/passwd\nD /home\nA /home/fresh\n\
         C /tmp\nA /tmp/new\nA /tmp/new/deep\nA /tmp/new/deep/f\n"
    );
    env.run(&["rm", "changes"]).ok();
}

/// Regression: after `mv /etc /etc2` (a renamed image directory: a redirect in the upper),
/// `diff` listed `A /etc2` and none of its children. As docker: the new path and every child
/// added, the old path deleted, and nothing else.
#[test]
fn diff_of_a_renamed_image_directory_lists_every_child() {
    if !have_root("diff_of_a_renamed_image_directory_lists_every_child") {
        return;
    }
    let env = Env::new();
    let found = env
        .run(&[
            "run",
            "--name",
            "moved",
            "demo",
            "sh",
            "-c",
            "mv /etc /etc2 && find /etc2",
        ])
        .ok();
    // The network files are the init layer's (mounted over, never the container's own):
    // moved along with the directory they are not changes of the container.
    let network_file =
        |p: &str| ["/etc2/hosts", "/etc2/hostname", "/etc2/resolv.conf"].contains(&p);
    let mut want: Vec<String> = found
        .lines()
        .filter(|p| !network_file(p))
        .map(|p| format!("A {p}"))
        .collect();
    assert!(
        want.contains(&"A /etc2/passwd".to_string()),
        "the image's /etc has no passwd: {found}"
    );
    want.push("D /etc".to_string());
    // By path, as diff sorts.
    want.sort_by(|a, b| a[2..].cmp(&b[2..]));
    let diff = env.run(&["diff", "moved"]).ok();
    assert_eq!(diff.lines().collect::<Vec<_>>(), want);
    env.run(&["rm", "moved"]).ok();
}

#[test]
fn cp_both_ways_running_and_stopped() {
    if !have_root("cp_both_ways_running_and_stopped") {
        return;
    }
    let env = Env::new();
    let host = env.tmp.path();
    std::fs::write(host.join("in.txt"), "into the container\n").unwrap();
    std::fs::create_dir_all(host.join("tree/sub")).unwrap();
    std::fs::write(host.join("tree/sub/leaf"), "leaf\n").unwrap();
    let p = |n: &str| host.join(n).to_string_lossy().into_owned();
    // Stopped (created): through the helper's own mount.
    env.run(&[
        "create",
        "--name",
        "box",
        "demo",
        "sh",
        "-c",
        "cat /tmp/in.txt /opt/sub/leaf; echo made > /made",
    ])
    .ok();
    env.run(&["cp", &p("in.txt"), "box:/tmp/"]).ok();
    env.run(&["cp", &p("tree"), "box:/opt/"]).fails(1);
    env.run(&["cp", &p("tree"), "box:/opt"]).ok();
    assert_eq!(
        env.run(&["start", "-a", "box"]).ok(),
        "into the container\nleaf\n"
    );
    env.run(&["cp", "box:/made", &p("made.txt")]).ok();
    assert_eq!(
        std::fs::read_to_string(host.join("made.txt")).unwrap(),
        "made\n"
    );
    env.run(&["cp", "box:/etc", &p("etc-copy")]).ok();
    assert!(std::fs::read_to_string(host.join("etc-copy/passwd"))
        .unwrap()
        .starts_with("root:"));
    // Running: through its pid 1's root.
    env.detach(&[
        "--name",
        "live",
        "demo",
        "sh",
        "-c",
        "echo alive > /tmp/alive; sleep 100",
    ]);
    env.exec_until("live", "cat /tmp/alive", "alive");
    env.run(&["cp", "live:/tmp/alive", &p("alive")]).ok();
    assert_eq!(
        std::fs::read_to_string(host.join("alive")).unwrap(),
        "alive\n"
    );
    env.run(&["cp", &p("in.txt"), "live:/in"]).ok();
    assert_eq!(
        env.run(&["exec", "live", "cat", "/in"]).ok(),
        "into the container\n"
    );
    // A symlink out of the container's root resolves inside it.
    env.run(&["exec", "live", "ln", "-s", "/etc", "/escape"])
        .ok();
    env.run(&["cp", "live:/escape/passwd", &p("their-passwd")])
        .ok();
    let theirs = std::fs::read_to_string(host.join("their-passwd")).unwrap();
    assert!(theirs.contains("nobody:x:65534"), "{theirs}");
    let err = env.run(&["cp", "live:/nonexistent", &p("x")]).fails(1);
    assert!(
        err.contains("Could not find the file /nonexistent"),
        "{err}"
    );
    env.run(&["rm", "-f", "box", "live"]).ok();
}

#[test]
fn a_pulled_image_config_applies_as_docker() {
    if !have_root("a_pulled_image_config_applies_as_docker") {
        return;
    }
    let images = crate::images::env();
    let s = &images.strata;
    // Not pulled yet: run pulls it (from the loopback registry).
    let out = s
        .run(&[
            "run",
            "--rm",
            &images.busybox,
            "sh",
            "-c",
            "echo $GREETING $PATH; cat /hello",
        ])
        .ok();
    assert_eq!(out, "hi /bin\nworld\n");
    // The image's Cmd (/bin/sh) with -i, reading a script.
    let out = super::run_input(
        s,
        &["run", "--rm", "-i", "-e", "GREETING=over", &images.busybox],
        b"echo $GREETING\n",
    );
    assert_eq!(out.ok(), "over\n");
    // The image's labels and Cmd are the container's.
    let id = s
        .run(&["create", "--name", "fromreg", &images.busybox])
        .ok();
    assert_eq!(id.trim().len(), 64);
    let labels = s
        .run(&[
            "inspect",
            "-f",
            "{{.Config.Labels.suite}} {{json .Config.Cmd}}",
            "fromreg",
        ])
        .ok();
    assert_eq!(labels.trim(), r#"strata ["/bin/sh"]"#);
    s.run(&["rm", "fromreg"]).ok();
}

#[test]
fn image_entrypoint_cmd_workdir_user_volumes_and_ports_apply_as_docker() {
    if !have_root("image_entrypoint_cmd_workdir_user_volumes_and_ports_apply_as_docker") {
        return;
    }
    use strata_tests::oci::{busybox_layer, ImageBuilder};
    let registry = strata_tests::registry::Registry::start().unwrap();
    let env = Env::new();
    let layout = env.tmp.path().join("layout");
    ImageBuilder::new()
        .layer(&busybox_layer().unwrap())
        .unwrap()
        .config("Entrypoint", serde_json::json!(["/bin/sh", "-c"]))
        .config(
            "Cmd",
            serde_json::json!(["echo $GREET from $(pwd) as $(id -u); ls -d /data"]),
        )
        .config("WorkingDir", serde_json::json!("/work"))
        .config("User", serde_json::json!("app"))
        .config("Env", serde_json::json!(["PATH=/bin", "GREET=hey"]))
        .config("Volumes", serde_json::json!({"/data": {}}))
        .config("ExposedPorts", serde_json::json!({"80/tcp": {}}))
        .write_layout(&layout, "app")
        .unwrap();
    let image = registry.push(&layout, "app", "test/app:1").unwrap();
    env.run(&["pull", "-q", &image]).ok();
    assert_eq!(
        env.run(&["run", "--rm", &image]).ok(),
        "hey from /work as 1000\n/data\n"
    );
    // A command replaces Cmd, not Entrypoint; --entrypoint drops Cmd; flags beat the config.
    assert_eq!(
        env.run(&["run", "--rm", &image, "echo override"]).ok(),
        "override\n"
    );
    assert_eq!(
        env.run(&["run", "--rm", "--entrypoint", "pwd", &image])
            .ok(),
        "/work\n"
    );
    assert_eq!(
        env.run(&["run", "--rm", "-u", "0", "-w", "/", "-e", "GREET=hi", &image])
            .ok(),
        "hi from / as 0\n/data\n"
    );
    // Volumes: an anonymous volume per path, listed in inspect, removed by rm -v.
    // (The image has no /data: as under docker, the new volume is root's.)
    env.run(&[
        "run",
        "--name",
        "withvol",
        "-u",
        "root",
        &image,
        "touch /data/x",
    ])
    .ok();
    let vols = env.inspect("withvol", "{{json .Config.Volumes}}");
    assert_eq!(vols, r#"{"/data":{}}"#);
    let source = env.inspect("withvol", "{{range .Mounts}}{{.Source}}{{end}}");
    assert!(std::path::Path::new(&source).join("x").exists(), "{source}");
    let ports = env.run(&["ps", "-a", "--format", "{{.Ports}}"]).ok();
    assert_eq!(ports, "80/tcp\n");
    env.run(&["rm", "-v", "withvol"]).ok();
    assert!(
        !std::path::Path::new(&source).exists(),
        "rm -v kept the anonymous volume"
    );
    // --ulimit and start -ai.
    assert_eq!(
        env.run(&[
            "run",
            "--rm",
            "--ulimit",
            "nofile=100:200",
            "demo",
            "sh",
            "-c",
            "ulimit -n; ulimit -Hn"
        ])
        .ok(),
        "100\n200\n"
    );
    env.run(&["create", "-i", "--name", "reader", "demo", "cat"])
        .ok();
    let out = super::run_input(&env.strata, &["start", "-ai", "reader"], b"typed\n");
    assert_eq!(out.ok(), "typed\n");
    env.run(&["rm", "reader"]).ok();
}

/// A container's layers are opened from the store: one removed behind strata's back is
/// named (its diff-id and image) by `diff` and by `start`, which fail.
#[test]
fn a_container_whose_image_layer_is_gone_names_the_layer() {
    if !have_root("a_container_whose_image_layer_is_gone_names_the_layer") {
        return;
    }
    let env = Env::new();
    env.run(&["create", "--name", "orphan", "demo", "true"])
        .ok();
    let layers = env.strata.root().join("layers");
    let mut removed = 0;
    for e in std::fs::read_dir(&layers).unwrap().flatten() {
        if e.path().is_dir() {
            std::fs::remove_dir_all(e.path()).unwrap();
            removed += 1;
        }
    }
    assert!(
        removed > 0,
        "the demo image has no layer in {}",
        layers.display()
    );
    for args in [&["diff", "orphan"][..], &["start", "orphan"]] {
        let r = env.run(args);
        assert_ne!(r.code, 0, "{args:?} succeeded without the image's layers");
        assert!(
            r.stderr.contains("is not in the store") && r.stderr.contains("demo"),
            "{args:?} should name the missing layer and the image: {}",
            r.stderr
        );
    }
    env.run(&["rm", "orphan"]).ok();
}
