//! A bundle's `linux` settings through `strata-runtime`: `cgroupsPath` with resources and
//! `update --resources`, devices and device cgroup rules (cgroup v1 devices controller),
//! sysctl, maskedPaths/readonlyPaths, oomScoreAdj, namespaces joined by path, `--no-pivot`.

use std::path::Path;
use std::time::Duration;

use strata_tests::mounts::wait_for;
use strata_tests::users::have_root;

use super::bundle::Bundle;

/// Waits for the process to have written `/done` in its root.
fn wait_done(b: &Bundle) {
    wait_for(Duration::from_secs(30), "/done", || {
        b.rootfs("done").exists()
    })
    .unwrap();
}

fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

#[test]
fn bundle_linux_settings_apply() {
    if !have_root("bundle_linux_settings_apply") {
        return;
    }
    let b = Bundle::new(&[
        "sh",
        "-c",
        "cat /proc/sys/kernel/shmmax > /shmmax; cat /proc/self/oom_score_adj > /oom; \
         cat /secret > /masked 2>&1; touch /ro/x 2>/ro-err; ls -ln /dev/fuse > /fuse; \
         mknod /tmp/mem c 1 1 && head -c1 /tmp/mem > /dev/null 2> /mem-err; \
         head -c1 /dev/zero | wc -c > /zero; touch /done; exec sleep 1000",
    ]);
    std::fs::write(b.rootfs("secret"), "hidden").unwrap();
    std::fs::create_dir(b.rootfs("ro")).unwrap();
    let cgroup = format!("strata-rt-test-{}/c1", std::process::id());
    let cg = cgroup.clone();
    b.config(|c| {
        let linux = &mut c["linux"];
        linux["cgroupsPath"] = serde_json::json!(format!("/{cg}"));
        linux["resources"]["memory"] = serde_json::json!({"limit": 64 << 20});
        linux["resources"]["pids"] = serde_json::json!({"limit": 50});
        linux["resources"]["cpu"] = serde_json::json!({"quota": 50000, "period": 100000});
        linux["sysctl"] = serde_json::json!({"kernel.shmmax": "123456789"});
        linux["maskedPaths"] = serde_json::json!(["/secret"]);
        linux["readonlyPaths"] = serde_json::json!(["/ro"]);
        linux["devices"] = serde_json::json!([
            {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o600,
             "uid": 0, "gid": 0}
        ]);
        c["process"]["oomScoreAdj"] = serde_json::json!(123);
        // CAP_MKNOD: the device cgroup, not the capability, must refuse /dev/mem's node.
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set] =
                serde_json::json!(["CAP_MKNOD", "CAP_KILL", "CAP_AUDIT_WRITE"]);
        }
    });
    b.create("c1", &[]);
    b.ok(&["start", "c1"]);
    wait_done(&b);
    assert_eq!(read(b.rootfs("shmmax")), "123456789");
    assert_eq!(read(b.rootfs("oom")), "123");
    assert_eq!(read(b.rootfs("masked")), "", "a masked file reads empty");
    assert!(
        read(b.rootfs("ro-err")).contains("Read-only"),
        "{}",
        read(b.rootfs("ro-err"))
    );
    let fuse = read(b.rootfs("fuse"));
    assert!(
        fuse.starts_with("crw-------") && fuse.contains("10,") && fuse.contains("229"),
        "{fuse}"
    );
    assert!(
        read(b.rootfs("mem-err")).contains("not permitted"),
        "the device cgroup let /dev/mem open: {}",
        read(b.rootfs("mem-err"))
    );
    assert_eq!(read(b.rootfs("zero")), "1", "a default device is allowed");

    // The cgroup is where cgroupsPath says, with the limits.
    let v1 = |ctrl: &str, file: &str| {
        read(
            Path::new("/sys/fs/cgroup")
                .join(ctrl)
                .join(&cgroup)
                .join(file),
        )
    };
    let pid = b.state("c1")["pid"].to_string();
    assert!(
        v1("memory", "cgroup.procs").lines().any(|l| l == pid),
        "pid 1 not in the cgroup"
    );
    assert_eq!(
        v1("memory", "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(v1("pids", "pids.max"), "50");
    assert_eq!(v1("cpu", "cpu.cfs_quota_us"), "50000");

    // update, from stdin and from a file; what it leaves out keeps its value.
    let out = b.rt_stdin(
        &["update", "--resources", "-", "c1"],
        r#"{"pids":{"limit":20}}"#,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(v1("pids", "pids.max"), "20");
    assert_eq!(
        v1("memory", "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    let file = b.tmp.path().join("res.json");
    std::fs::write(
        &file,
        r#"{"memory":{"limit":33554432},"cpu":{"quota":20000}}"#,
    )
    .unwrap();
    b.ok(&["update", "--resources", file.to_str().unwrap(), "c1"]);
    assert_eq!(v1("memory", "memory.limit_in_bytes"), "33554432");
    assert_eq!(v1("cpu", "cpu.cfs_quota_us"), "20000");
    std::fs::write(&file, "{not json").unwrap();
    b.fails(
        &["update", "--resources", file.to_str().unwrap(), "c1"],
        "res.json",
    );

    b.ok(&["delete", "--force", "c1"]);
    assert!(
        !Path::new("/sys/fs/cgroup/memory").join(&cgroup).exists(),
        "delete left the cgroup"
    );
    let _ = std::fs::remove_dir(
        Path::new("/sys/fs/cgroup/memory").join(cgroup.split('/').next().unwrap()),
    );
    for ctrl in ["pids", "cpu", "freezer", "devices"] {
        let _ = std::fs::remove_dir(
            Path::new("/sys/fs/cgroup")
                .join(ctrl)
                .join(cgroup.split('/').next().unwrap()),
        );
    }
    b.fails(&["update", "--resources", "-", "c1"], "does not exist");
}

#[test]
fn bundle_joins_namespaces_by_path_and_no_pivot() {
    if !have_root("bundle_joins_namespaces_by_path_and_no_pivot") {
        return;
    }
    let one = Bundle::new(&["sh", "-c", "touch /done; exec sleep 1000"]);
    one.config(|c| c["hostname"] = serde_json::json!("one"));
    one.create("one", &[]);
    one.ok(&["start", "one"]);
    wait_done(&one);
    let pid = one.state("one")["pid"].as_i64().unwrap();

    let two = Bundle::new(&[
        "sh",
        "-c",
        "hostname > /host; echo $$ > /pid; ls /proc | grep -c '^[0-9]' > /procs; \
         touch /done; exec sleep 1000",
    ]);
    two.config(|c| {
        c["hostname"] = serde_json::Value::Null;
        let mut ns = vec![serde_json::json!({"type": "mount"})];
        for (kind, name) in [
            ("uts", "uts"),
            ("ipc", "ipc"),
            ("network", "net"),
            ("pid", "pid"),
        ] {
            ns.push(serde_json::json!({"type": kind, "path": format!("/proc/{pid}/ns/{name}")}));
        }
        c["linux"]["namespaces"] = serde_json::json!(ns);
    });
    two.create("two", &["--no-pivot"]);
    let pid2 = two.state("two")["pid"].as_i64().unwrap();
    for name in ["uts", "ipc", "net", "pid"] {
        // pid: pid 1 of `two` was forked after joining, so it is in `one`'s namespace.
        let link = |p: i64| std::fs::read_link(format!("/proc/{p}/ns/{name}")).unwrap();
        assert_eq!(link(pid), link(pid2), "{name} not joined");
    }
    let mnt = |p: i64| std::fs::read_link(format!("/proc/{p}/ns/mnt")).unwrap();
    assert_ne!(mnt(pid), mnt(pid2), "a new mount namespace was asked for");
    two.ok(&["start", "two"]);
    wait_done(&two);
    assert_eq!(read(two.rootfs("host")), "one");
    assert_ne!(
        read(two.rootfs("pid")),
        "1",
        "not pid 1 in a joined pid namespace"
    );
    // Its /proc is the joined pid namespace's: `one`'s sleep is there too.
    assert!(read(two.rootfs("procs")).parse::<u32>().unwrap() >= 2);
    two.ok(&["delete", "--force", "two"]);
    one.ok(&["delete", "--force", "one"]);
}
