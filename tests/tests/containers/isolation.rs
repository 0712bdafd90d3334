//! What a container sees and may do: its own hostname, pids, mounts and network; the
//! docker default capabilities; users from the image; volumes; limits in the cgroup; the
//! freezer; `--init`; a pty; the image config applied as docker applies it.

use std::time::Duration;

use strata_tests::mounts::wait_for;
use strata_tests::users::have_root;

use super::{cgroup_dir, cgroup_value, Env};

/// docker's default capability set (CapEff of a container's root process).
pub const DOCKER_CAPS: &str = "00000000a80425fb";

fn status_field(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn own_hostname_pids_mounts_and_devices() {
    if !have_root("own_hostname_pids_mounts_and_devices") {
        return;
    }
    let env = Env::new();
    assert_eq!(
        env.run(&["run", "--rm", "-h", "box1", "demo", "hostname"])
            .ok(),
        "box1\n"
    );
    // pid 1 is the command itself; no host process is visible.
    let ps = env
        .run(&[
            "run",
            "--rm",
            "demo",
            "sh",
            "-c",
            "echo $$; ls /proc | grep -c '^[0-9]'",
        ])
        .ok();
    let lines: Vec<&str> = ps.lines().collect();
    assert_eq!(lines[0], "1");
    let visible: usize = lines[1].parse().unwrap();
    assert!(visible <= 3, "the container sees {visible} processes");
    let mounts = env
        .run(&["run", "--rm", "demo", "sh", "-c", "cat /proc/self/mounts"])
        .ok();
    for want in [
        " /proc proc ",
        " /dev tmpfs ",
        " /dev/pts devpts ",
        " /dev/shm tmpfs ",
        " /dev/mqueue mqueue ",
    ] {
        assert!(mounts.contains(want), "no{want}in\n{mounts}");
    }
    let sys = mounts.lines().find(|l| l.contains(" /sys ")).unwrap();
    assert!(sys.contains(" ro,") || sys.contains(" ro "), "{sys}");
    let root = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some("/"))
        .unwrap();
    assert!(
        root.contains("fuse"),
        "the root is not the FUSE union: {root}"
    );
    let devs = env.run(&["run", "--rm", "demo", "ls", "/dev"]).ok();
    let devs: Vec<&str> = devs.split_whitespace().collect();
    for want in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue", "ptmx",
    ] {
        assert!(devs.contains(&want), "no /dev/{want}: {devs:?}");
    }
    assert!(
        !devs
            .iter()
            .any(|d| d.starts_with("sd") || d.starts_with("vd") || *d == "mem"),
        "{devs:?}"
    );
    // runc's masked and read-only paths (those this kernel has).
    let file = ["/proc/kcore", "/proc/keys", "/proc/timer_list"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap();
    let script = format!("wc -c < {file}; echo 1 > /proc/sys/kernel/hostname; echo $?");
    let masked = env.run(&["run", "--rm", "demo", "sh", "-c", &script]).ok();
    assert_eq!(
        masked.lines().next(),
        Some("0"),
        "{file} is not masked: {masked}"
    );
    assert_eq!(
        masked.lines().last(),
        Some("1"),
        "/proc/sys is writable: {masked}"
    );
    let acpi = env
        .run(&[
            "run",
            "--rm",
            "demo",
            "sh",
            "-c",
            "ls -A /proc/acpi | wc -l; grep ' /proc/acpi ' /proc/mounts",
        ])
        .ok();
    assert!(
        acpi.starts_with("0\n") && acpi.contains("tmpfs ro"),
        "{acpi}"
    );
    // IPC: its own namespace.
    let ipc = env
        .run(&["run", "--rm", "demo", "readlink", "/proc/self/ns/ipc"])
        .ok();
    assert_ne!(
        ipc.trim(),
        std::fs::read_link("/proc/self/ns/ipc")
            .unwrap()
            .to_string_lossy()
    );
}

#[test]
fn capabilities_and_no_new_privileges() {
    if !have_root("capabilities_and_no_new_privileges") {
        return;
    }
    let env = Env::new();
    let status = |extra: &[&str]| {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["demo", "cat", "/proc/self/status"]);
        env.run(&a).ok()
    };
    let s = status(&[]);
    assert_eq!(status_field(&s, "CapEff"), DOCKER_CAPS);
    assert_eq!(status_field(&s, "CapBnd"), DOCKER_CAPS);
    assert_eq!(status_field(&s, "NoNewPrivs"), "0");
    let s = status(&["--cap-drop", "ALL", "--cap-add", "NET_ADMIN"]);
    assert_eq!(status_field(&s, "CapEff"), "0000000000001000");
    let s = status(&["--cap-drop", "chown"]);
    assert_eq!(status_field(&s, "CapEff"), "00000000a80425fa");
    let s = status(&["--security-opt", "no-new-privileges"]);
    assert_eq!(status_field(&s, "NoNewPrivs"), "1");
    let s = status(&["--privileged"]);
    let host = std::fs::read_to_string("/proc/self/status").unwrap();
    assert_eq!(status_field(&s, "CapEff"), status_field(&host, "CapBnd"));
    // A non-root user has no effective capabilities.
    let s = env
        .run(&[
            "run",
            "--rm",
            "-u",
            "nobody",
            "demo",
            "cat",
            "/proc/self/status",
        ])
        .ok();
    assert_eq!(status_field(&s, "CapEff"), "0000000000000000");
}

#[test]
fn users_workdir_env_and_entrypoint_apply_as_docker() {
    if !have_root("users_workdir_env_and_entrypoint_apply_as_docker") {
        return;
    }
    let env = Env::new();
    let id = |u: &str| env.run(&["run", "--rm", "-u", u, "demo", "id"]).ok();
    assert_eq!(
        id("nobody"),
        "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)\n"
    );
    assert_eq!(
        id("nobody:root").trim(),
        "uid=65534(nobody) gid=0(root) groups=0(root)"
    );
    assert_eq!(id("1234:5678").trim(), "uid=1234 gid=5678 groups=5678");
    let err = env
        .run(&["run", "--rm", "-u", "nosuchuser", "demo", "id"])
        .fails(125);
    assert!(err.contains("unable to find user nosuchuser"), "{err}");
    assert_eq!(
        env.run(&["run", "--rm", "-w", "/made/here", "demo", "pwd"])
            .ok(),
        "/made/here\n"
    );
    let envfile = env.tmp.path().join("env");
    std::fs::write(&envfile, "# comment\nFROM_FILE=yes\nB=file\n").unwrap();
    let out = env
        .run(&[
            "run",
            "--rm",
            "-e",
            "A=1",
            "-e",
            "B=flag",
            "--env-file",
            envfile.to_str().unwrap(),
            "demo",
            "sh",
            "-c",
            "echo $A $B $FROM_FILE $PATH $HOME",
        ])
        .ok();
    assert_eq!(
        out,
        "1 flag yes /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /root\n"
    );
    assert_eq!(
        env.run(&["run", "--rm", "--entrypoint", "echo", "demo", "a", "b"])
            .ok(),
        "a b\n"
    );
    // The image's Cmd (sh) reads the script from stdin with -i.
    let out = super::run_input(
        &env.strata,
        &["run", "--rm", "-i", "demo"],
        b"echo from-stdin\nexit 6\n",
    );
    assert_eq!(out.stdout, "from-stdin\n");
    assert_eq!(out.code, 6);
}

#[test]
fn read_only_root_tmpfs_and_volumes() {
    if !have_root("read_only_root_tmpfs_and_volumes") {
        return;
    }
    let env = Env::new();
    let err = env
        .run(&["run", "--rm", "--read-only", "demo", "touch", "/x"])
        .fails(1);
    assert!(err.contains("Read-only file system"), "{err}");
    env.run(&[
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/scratch:size=1m",
        "demo",
        "sh",
        "-c",
        "touch /scratch/x && grep /scratch /proc/mounts | grep -q size=1024k",
    ])
    .ok();
    // Bind mounts: read-write and read-only.
    let host = env.tmp.path().join("host");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("in"), "from host\n").unwrap();
    let rw = format!("{}:/data", host.display());
    let ro = format!("{}:/ro:ro", host.display());
    let out = env
        .run(&[
            "run",
            "--rm",
            "-v",
            &rw,
            "-v",
            &ro,
            "demo",
            "sh",
            "-c",
            "cat /data/in; echo out > /data/out; touch /ro/x 2>&1; true",
        ])
        .ok();
    assert_eq!(out.lines().next(), Some("from host"));
    assert!(out.contains("Read-only file system"), "{out}");
    assert_eq!(std::fs::read_to_string(host.join("out")).unwrap(), "out\n");
    // A named volume: made on demand, survives rm, shared with the next container.
    env.run(&[
        "run",
        "--name",
        "writer",
        "-v",
        "shared:/v",
        "demo",
        "sh",
        "-c",
        "echo kept > /v/f",
    ])
    .ok();
    let data = env.strata.root().join("volumes/shared/_data");
    assert_eq!(std::fs::read_to_string(data.join("f")).unwrap(), "kept\n");
    env.run(&["rm", "-v", "writer"]).ok();
    assert!(data.join("f").exists(), "rm -v removed a named volume");
    assert_eq!(
        env.run(&["run", "--rm", "-v", "shared:/w", "demo", "cat", "/w/f"])
            .ok(),
        "kept\n"
    );
    // An anonymous volume: kept by rm, removed by rm -v.
    let vols = || -> Vec<String> {
        std::fs::read_dir(env.strata.root().join("volumes"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.len() == 64)
            .collect()
    };
    env.run(&[
        "run", "--name", "anon1", "-v", "/anon", "demo", "touch", "/anon/x",
    ])
    .ok();
    assert_eq!(vols().len(), 1);
    let m = env.inspect(
        "anon1",
        "{{range .Mounts}}{{.Type}} {{.Destination}}{{end}}",
    );
    assert_eq!(m, "volume /anon");
    env.run(&["rm", "anon1"]).ok();
    assert_eq!(
        vols().len(),
        1,
        "rm without -v removed the anonymous volume"
    );
    env.run(&["run", "--name", "anon2", "-v", "/anon", "demo", "true"])
        .ok();
    env.run(&["rm", "-v", "anon2"]).ok();
    assert_eq!(vols().len(), 1, "rm -v kept its anonymous volume");
}

#[test]
fn networks_none_private_and_host() {
    if !have_root("networks_none_private_and_host") {
        return;
    }
    let env = Env::new();
    let links = |net: Option<&str>| {
        let mut a = vec!["run", "--rm"];
        if let Some(n) = net {
            a.extend_from_slice(&["--network", n]);
        }
        a.extend_from_slice(&["demo", "ip", "-o", "link"]);
        env.run(&a).ok()
    };
    // none: loopback only, up (as docker's).
    let none = links(Some("none"));
    assert_eq!(none.lines().count(), 1, "{none}");
    assert!(none.contains("lo:") && none.contains(",UP"), "{none}");
    // The default (the bridge as root): loopback and eth0, both up.
    let private = links(None);
    assert_eq!(private.lines().count(), 2, "{private}");
    assert!(
        private.contains("lo:") && private.contains("eth0@") && private.contains("UP"),
        "{private}"
    );
    let host = links(Some("host"));
    let host_links = std::fs::read_dir("/sys/class/net").unwrap().count();
    assert_eq!(host.lines().count(), host_links, "{host}");
}

#[test]
fn cgroup_limits_are_set_and_oom_is_reported() {
    if !have_root("cgroup_limits_are_set_and_oom_is_reported") {
        return;
    }
    let env = Env::new();
    let id = env.detach(&[
        "--name",
        "lim",
        "--memory",
        "64m",
        "--pids-limit",
        "7",
        "--cpus",
        "0.5",
        "demo",
        "sleep",
        "100",
    ]);
    let read = |c: &str, f: &str| cgroup_value(&id, c, f);
    assert_eq!(
        read("memory", "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(read("pids", "pids.max"), "7");
    assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");
    let pid1 = env.inspect("lim", "{{.State.Pid}}");
    assert!(
        read("memory", "cgroup.procs").lines().any(|p| p == pid1),
        "pid 1 is not in the cgroup"
    );
    // pids.max: forks beyond it fail inside.
    let out = env.run(&[
        "exec",
        "lim",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8 9; do sleep 5 & done 2>&1; wait",
    ]);
    assert!(
        out.stdout.contains("can't fork") || out.stderr.contains("can't fork"),
        "{out:?}"
    );
    env.run(&["rm", "-f", "lim"]).ok();
    // Over --memory: OOM-killed, and inspect says so.
    let code = env
        .run(&[
            "run",
            "--name",
            "hog",
            "--memory",
            "16m",
            "demo",
            "sh",
            "-c",
            "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done",
        ])
        .code;
    assert_eq!(code, 137);
    assert_eq!(
        env.inspect("hog", "{{.State.OOMKilled}} {{.State.ExitCode}}"),
        "true 137"
    );
    env.run(&["rm", "hog"]).ok();
}

#[test]
fn pause_freezes_a_busy_loop() {
    if !have_root("pause_freezes_a_busy_loop") {
        return;
    }
    let env = Env::new();
    let id = env.detach(&[
        "--name",
        "spin",
        "demo",
        "sh",
        "-c",
        "while true; do :; done",
    ]);
    let pid1 = env.inspect("spin", "{{.State.Pid}}");
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid1}/stat")).unwrap();
        let f: Vec<String> = stat[stat.rfind(')').unwrap() + 2..]
            .split(' ')
            .map(str::to_string)
            .collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    env.run(&["pause", "spin"]).ok();
    assert_eq!(cgroup_value(&id, "freezer", "freezer.state"), "FROZEN");
    let ps = env.run(&["ps", "--format", "{{.State}} {{.Status}}"]).ok();
    assert!(
        ps.starts_with("paused Up ") && ps.trim_end().ends_with("(Paused)"),
        "{ps}"
    );
    let before = cpu();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(cpu(), before, "a paused container used CPU");
    let err = env.run(&["exec", "spin", "true"]).fails(1);
    assert!(err.contains("paused"), "{err}");
    let err = env.run(&["pause", "spin"]).fails(1);
    assert!(err.contains("already paused"), "{err}");
    env.run(&["unpause", "spin"]).ok();
    assert_eq!(env.inspect("spin", "{{.State.Status}}"), "running");
    wait_for(Duration::from_secs(30), "the loop to run again", || {
        cpu() > before
    })
    .unwrap();
    // rm -f of a paused container works too.
    env.run(&["pause", "spin"]).ok();
    env.run(&["rm", "-f", "spin"]).ok();
    assert!(!cgroup_dir("freezer", &id).exists());
}

#[test]
fn init_reaps_orphaned_zombies() {
    if !have_root("init_reaps_orphaned_zombies") {
        return;
    }
    let env = Env::new();
    // An orphan (double fork) is reparented to pid 1; `sleep` as pid 1 never reaps it.
    let script = "(sleep 0.1 &); exec sleep 100";
    env.detach(&["--name", "noinit", "demo", "sh", "-c", script]);
    env.exec_until("noinit", "ps -o stat,comm", "Z");
    env.detach(&["--name", "withinit", "--init", "demo", "sh", "-c", script]);
    // pid 1 is the init, the process its child.
    env.exec_until("withinit", "ps -o pid,comm", "    2 sleep");
    let init = env
        .run(&["exec", "withinit", "cat", "/proc/1/cmdline"])
        .ok();
    assert!(!init.starts_with("sh"), "{init}");
    // The orphan existed before pid 2 exec'd sleep; it ends and the init reaps it: no
    // zombie and no orphan left (without --init the zombie above stays for good).
    let mut last = String::new();
    let reaped = wait_for(Duration::from_secs(30), "the orphan reaped", || {
        last = env
            .run(&["exec", "withinit", "ps", "-o", "stat,args"])
            .stdout;
        !last.lines().any(|l| l.starts_with('Z')) && !last.contains("sleep 0.1")
    });
    assert!(reaped.is_ok(), "--init left a zombie: {last}");
    let still = env.run(&["exec", "noinit", "ps", "-o", "stat,args"]).ok();
    assert!(still.lines().any(|l| l.starts_with('Z')), "{still}");
    // The init forwards SIGTERM to the process (sleep dies of it), and reports its status.
    env.run(&["stop", "-t", "30", "withinit"]).ok();
    assert_eq!(env.inspect("withinit", "{{.State.ExitCode}}"), "143");
    env.run(&["rm", "-f", "noinit", "withinit"]).ok();
}

#[test]
fn tty_is_a_real_pty_whose_size_follows_the_terminal() {
    if !have_root("tty_is_a_real_pty_whose_size_follows_the_terminal") {
        return;
    }
    let env = Env::new();
    let out = env
        .run(&["run", "--rm", "-t", "demo", "sh", "-c", "tty; echo $TERM"])
        .ok();
    assert_eq!(out, "/dev/pts/0\r\nxterm\r\n");
    // Under a terminal of 33 rows and 101 columns (script(1) makes one).
    let cmd = format!(
        "stty rows 33 cols 101; {} --root {} run --rm -t demo stty size",
        strata_tests::mounts::workspace_bin("strata", "STRATA_BIN")
            .unwrap()
            .display(),
        env.strata.root().display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("33 101"), "{text}");
    // Resized while it runs: the container's terminal follows (SIGWINCH to strata, from the
    // shell, until the container saw the new size and ended). Same for exec -t.
    let bin = strata_tests::mounts::workspace_bin("strata", "STRATA_BIN").unwrap();
    let strata = format!("{} --root {}", bin.display(), env.strata.root().display());
    env.detach(&["--name", "term", "demo", "sleep", "100"]);
    let wait_resize = r#"while [ "$(stty size)" = "20 50" ]; do sleep 0.05; done; stty size"#;
    for cmd in [
        format!("run --rm -t demo sh -c '{wait_resize}'"),
        format!("exec -t term sh -c '{wait_resize}'"),
    ] {
        let script = format!(
            "stty rows 20 cols 50; {strata} {cmd} < /dev/tty & sleep 0.2; stty rows 40 cols 90; \
             while kill -WINCH $! 2>/dev/null; do sleep 0.1; done; wait"
        );
        let out = std::process::Command::new("timeout")
            .args(["60", "script", "-qec", &script, "/dev/null"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("40 90"), "{cmd}: {text}");
    }
    // run -it under a terminal: typed lines reach the shell, its exit is run's status.
    let cmd = format!("{strata} run --rm -it demo sh");
    let mut child = std::process::Command::new("timeout")
        .args(["60", "script", "-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"echo typed-$((6*7))\nexit 3\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("typed-42\r\n"), "{text}");
    assert_eq!(out.status.code(), Some(3), "{text}");
    let tty = env.run(&["exec", "-t", "term", "tty"]).ok();
    assert!(tty.starts_with("/dev/pts/"), "{tty}");
}

#[test]
fn top_lists_the_container_processes() {
    if !have_root("top_lists_the_container_processes") {
        return;
    }
    let env = Env::new();
    env.detach(&["--name", "topme", "demo", "sleep", "1003"]);
    let top = env.run(&["top", "topme"]).ok();
    let lines: Vec<&str> = top.lines().collect();
    assert!(
        lines[0].starts_with("UID") && lines[0].contains("PID") && lines[0].ends_with("CMD"),
        "{top}"
    );
    assert_eq!(lines.len(), 2, "{top}");
    assert!(lines[1].ends_with("sleep 1003"), "{top}");
    env.run(&["rm", "-f", "topme"]).ok();
}
