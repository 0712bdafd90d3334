//! run's exit codes and flags, the detached lifecycle (logs, exec, stop, rm), names, and
//! the faults: a monitor killed with SIGKILL, a stale mount from a crash, bad input.

use std::time::Duration;

use strata_tests::mounts::wait_for;
use strata_tests::users::have_root;

use super::{cgroup_dir, mounts_under, processes_with, Env};

#[test]
fn run_exit_codes_follow_docker() {
    if !have_root("run_exit_codes_follow_docker") {
        return;
    }
    let env = Env::new();
    assert_eq!(
        env.run(&["run", "--rm", "demo", "echo", "hello"]).ok(),
        "hello\n"
    );
    env.run(&["run", "--rm", "demo", "sh", "-c", "exit 3"])
        .fails(3);
    let err = env.run(&["run", "--rm", "demo", "nosuchcmd"]).fails(127);
    assert!(
        err.contains("nosuchcmd") && err.contains("not found"),
        "{err}"
    );
    let err = env.run(&["run", "--rm", "demo", "/etc/passwd"]).fails(126);
    assert!(err.contains("/etc/passwd"), "{err}");
    let err = env.run(&["run", "--rm", "demo", "/"]).fails(126);
    assert!(err.contains("directory"), "{err}");
    let err = env
        .run(&["run", "--rm", "--memory", "lots", "demo", "true"])
        .fails(125);
    assert!(err.contains("--memory") && err.contains("lots"), "{err}");
    assert!(
        env.container_dirs().is_empty(),
        "--rm left {:?}",
        env.container_dirs()
    );
    // The demo image is an image like any other.
    let images = env.run(&["images"]).ok();
    assert!(
        images.contains("localhost/demo") && images.contains("latest"),
        "{images}"
    );
    let cmd = env
        .run(&["inspect", "-f", "{{json .Config.Cmd}}", "localhost/demo"])
        .ok();
    assert_eq!(cmd.trim(), r#"["sh"]"#);
    // `demo` names it for the image commands too; removed, the next run makes it again.
    let history = env.run(&["history", "demo"]).ok();
    assert!(
        history.contains("demo image from the host's busybox"),
        "{history}"
    );
    let rmi = env.run(&["rmi", "demo"]).ok();
    assert!(rmi.contains("Untagged: localhost/demo:latest"), "{rmi}");
    assert_eq!(env.run(&["run", "--rm", "demo", "true"]).code, 0);
    assert!(env.run(&["images"]).ok().contains("localhost/demo"));
}

#[test]
fn rm_flag_leaves_nothing_behind() {
    if !have_root("rm_flag_leaves_nothing_behind") {
        return;
    }
    let env = Env::new();
    let out = env
        .run(&[
            "run",
            "--rm",
            "--memory",
            "64m",
            "demo",
            "sh",
            "-c",
            "echo x > /new; hostname",
        ])
        .ok();
    let short = out.trim().to_string();
    assert_eq!(short.len(), 12, "{out}");
    assert!(env.container_dirs().is_empty());
    assert!(mounts_under(&env.containers_dir()).is_empty());
    let cgroups: Vec<String> = std::fs::read_dir(cgroup_dir("memory", "x").parent().unwrap())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !cgroups.iter().any(|c| c.starts_with(&short)),
        "--rm left its cgroup"
    );
    assert_eq!(env.run(&["ps", "-aq"]).ok(), "");
}

#[test]
fn detached_container_logs_exec_stop_rm() {
    if !have_root("detached_container_logs_exec_stop_rm") {
        return;
    }
    let env = Env::new();
    let id = env.detach(&[
        "--name",
        "web",
        "demo",
        "sh",
        "-c",
        "echo started; echo oops >&2; trap 'echo term; exit 7' TERM; while true; do sleep 0.1; done",
    ]);
    let ps = env.run(&["ps"]).ok();
    let lines: Vec<&str> = ps.lines().collect();
    assert!(lines[0].starts_with("CONTAINER ID   IMAGE"), "{ps}");
    assert!(
        lines[0].contains("COMMAND") && lines[0].ends_with("NAMES"),
        "{ps}"
    );
    assert!(
        lines[1].starts_with(&id[..12]) && lines[1].contains("Up ") && lines[1].ends_with("web"),
        "{ps}"
    );
    assert!(lines[1].contains("\"sh -c echo started;…\""), "{ps}");
    // The monitor reads stdout and stderr from two pipes: each stream is ordered, not the two.
    wait_for(Duration::from_secs(30), "the log", || {
        let both = env.run(&["logs", "web"]);
        both.stdout == "started\n" && both.stderr == "oops\n"
    })
    .unwrap();
    // logs -t: RFC 3339 with nanoseconds, then the line.
    let t = env.run(&["logs", "-t", "web"]).ok();
    let (ts, line) = t.trim_end().split_once(' ').unwrap();
    assert_eq!(line, "started");
    assert!(
        ts.len() == 30 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
        "{ts}"
    );
    // By name, full id, unique prefix.
    for who in ["web", &id[..], &id[..6]] {
        let h = env.run(&["exec", who, "hostname"]).ok();
        assert_eq!(h.trim(), &id[..12]);
    }
    env.run(&["exec", "web", "sh", "-c", "exit 5"]).fails(5);
    env.run(&["exec", "web", "nosuchcmd"]).fails(127);
    let e = env
        .run(&[
            "exec",
            "-e",
            "X=1",
            "-w",
            "/tmp",
            "web",
            "sh",
            "-c",
            "echo $X $(pwd)",
        ])
        .ok();
    assert_eq!(e, "1 /tmp\n");
    // exec -u resolves in the container's /etc/passwd; exec -i feeds stdin.
    assert_eq!(
        env.run(&["exec", "-u", "nobody", "web", "id", "-un"]).ok(),
        "nobody\n"
    );
    let err = env.run(&["exec", "-u", "nosuch", "web", "id"]).fails(125);
    assert!(err.contains("unable to find user nosuch"), "{err}");
    let out = super::run_input(
        &env.strata,
        &["exec", "-i", "web", "sh", "-c", "read l; echo got $l"],
        b"typed\n",
    );
    assert_eq!(out.ok(), "got typed\n");
    // exec -d leaves its process running in the container.
    env.run(&[
        "exec",
        "-d",
        "web",
        "sh",
        "-c",
        "echo detached > /tmp/d; sleep 100",
    ])
    .ok();
    env.exec_until("web", "cat /tmp/d", "detached");
    assert_eq!(env.run(&["stop", "web"]).ok(), "web\n");
    assert_eq!(
        env.inspect("web", "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 7"
    );
    let ps = env.run(&["ps", "-a"]).ok();
    assert!(ps.contains("Exited (7)"), "{ps}");
    assert_eq!(env.run(&["ps", "-q"]).ok(), "");
    assert_eq!(env.run(&["logs", "web"]).ok(), "started\nterm\n");
    assert_eq!(env.run(&["logs", "--tail", "1", "web"]).ok(), "term\n");
    assert_eq!(env.run(&["port", "web"]).ok(), "");
    let err = env.run(&["port", "web", "80"]).fails(1);
    assert!(err.contains("No public port '80'"), "{err}");
    assert_eq!(env.run(&["rm", "web"]).ok(), "web\n");
    assert!(
        !env.containers_dir().join(&id).exists(),
        "rm left the directory (upper)"
    );
    let err = env.run(&["logs", "web"]).fails(1);
    assert!(err.contains("No such container: web"), "{err}");
}

#[test]
fn logs_follow_ends_with_the_container_and_detached_rm_removes() {
    if !have_root("logs_follow_ends_with_the_container_and_detached_rm_removes") {
        return;
    }
    let env = Env::new();
    env.detach(&[
        "--name",
        "talker",
        "demo",
        "sh",
        "-c",
        "for i in 1 2 3; do echo line$i; sleep 0.2; done",
    ]);
    let out = env.run(&["logs", "-f", "talker"]).ok();
    assert_eq!(out, "line1\nline2\nline3\n");
    assert_eq!(env.inspect("talker", "{{.State.Status}}"), "exited");
    env.run(&["rm", "talker"]).ok();
    // -d --rm: gone once it ends.
    env.detach(&["--rm", "demo", "true"]);
    wait_for(Duration::from_secs(30), "the --rm container to go", || {
        env.container_dirs().is_empty()
    })
    .unwrap();
}

#[test]
fn rm_refuses_a_running_container_and_rm_force_kills_it() {
    if !have_root("rm_refuses_a_running_container_and_rm_force_kills_it") {
        return;
    }
    let env = Env::new();
    let id = env.detach(&["--name", "busy", "--memory", "32m", "demo", "sleep", "1001"]);
    let err = env.run(&["rm", "busy"]).fails(1);
    assert!(
        err.contains("stop the container before removing or force remove"),
        "{err}"
    );
    assert!(cgroup_dir("memory", &id).is_dir());
    env.run(&["rm", "-f", "busy"]).ok();
    assert!(env.container_dirs().is_empty());
    assert!(!cgroup_dir("memory", &id).exists(), "rm -f left the cgroup");
    assert!(
        processes_with("sleep 1001").is_empty(),
        "rm -f left the process"
    );
}

#[test]
fn stop_escalates_to_sigkill_after_the_timeout() {
    if !have_root("stop_escalates_to_sigkill_after_the_timeout") {
        return;
    }
    let env = Env::new();
    env.detach(&[
        "--name",
        "stubborn",
        "demo",
        "sh",
        "-c",
        "trap 'echo ignoring TERM' TERM; echo ready; while true; do sleep 0.1; done",
    ]);
    wait_for(Duration::from_secs(30), "ready", || {
        env.run(&["logs", "stubborn"]).stdout.contains("ready")
    })
    .unwrap();
    env.run(&["stop", "-t", "1", "stubborn"]).ok();
    assert_eq!(env.inspect("stubborn", "{{.State.ExitCode}}"), "137");
    assert!(env
        .run(&["logs", "stubborn"])
        .ok()
        .contains("ignoring TERM"));
    // kill -s: the signal given (the trap runs); kill: SIGKILL.
    env.run(&["start", "stubborn"]).ok();
    wait_for(Duration::from_secs(30), "ready again", || {
        env.run(&["logs", "stubborn"])
            .stdout
            .matches("ready")
            .count()
            == 2
    })
    .unwrap();
    env.run(&["kill", "-s", "TERM", "stubborn"]).ok();
    wait_for(Duration::from_secs(30), "the trap", || {
        env.run(&["logs", "stubborn"])
            .stdout
            .matches("ignoring TERM")
            .count()
            == 2
    })
    .unwrap();
    assert_eq!(env.inspect("stubborn", "{{.State.Status}}"), "running");
    env.run(&["kill", "stubborn"]).ok();
    env.wait_state("stubborn", "exited");
    assert_eq!(env.inspect("stubborn", "{{.State.ExitCode}}"), "137");
    let err = env.run(&["kill", "stubborn"]).fails(1);
    assert!(err.contains("is not running"), "{err}");
}

#[test]
fn stop_signal_and_stop_timeout_of_the_container() {
    if !have_root("stop_signal_and_stop_timeout_of_the_container") {
        return;
    }
    let env = Env::new();
    let script =
        "trap 'exit 5' USR1; trap 'echo no' TERM; echo ready; while true; do sleep 0.1; done";
    env.detach(&[
        "--name",
        "usr1",
        "--stop-signal",
        "USR1",
        "demo",
        "sh",
        "-c",
        script,
    ]);
    env.detach(&[
        "--name",
        "slow",
        "--stop-timeout",
        "1",
        "demo",
        "sh",
        "-c",
        script,
    ]);
    for name in ["usr1", "slow"] {
        wait_for(Duration::from_secs(30), "ready", || {
            env.run(&["logs", name]).stdout.contains("ready")
        })
        .unwrap();
    }
    assert_eq!(env.inspect("usr1", "{{.Config.StopSignal}}"), "USR1");
    env.run(&["stop", "usr1"]).ok();
    assert_eq!(env.inspect("usr1", "{{.State.ExitCode}}"), "5");
    // TERM is trapped and ignored: after its 1 s, SIGKILL.
    env.run(&["stop", "slow"]).ok();
    assert_eq!(env.inspect("slow", "{{.State.ExitCode}}"), "137");
    let err = env
        .run(&["run", "--stop-signal", "NOPE", "demo", "true"])
        .fails(125);
    assert!(err.contains("NOPE"), "{err}");
    env.run(&["rm", "usr1", "slow"]).ok();
}

#[test]
fn names_are_unique_and_a_refused_run_leaves_nothing() {
    if !have_root("names_are_unique_and_a_refused_run_leaves_nothing") {
        return;
    }
    let env = Env::new();
    let id = env.detach(&["--name", "dup", "demo", "sleep", "100"]);
    let err = env
        .run(&["run", "--name", "dup", "demo", "true"])
        .fails(125);
    assert!(
        err.contains("The container name \"/dup\" is already in use by container")
            && err.contains(&id),
        "{err}"
    );
    assert_eq!(env.container_dirs(), std::slice::from_ref(&id));
    // rename frees the name.
    env.run(&["rename", "dup", "other"]).ok();
    env.run(&["run", "--rm", "--name", "dup", "demo", "true"])
        .ok();
    let err = env.run(&["rename", "other", "bad name"]).fails(1);
    assert!(err.contains("Invalid container name"), "{err}");
    env.run(&["rm", "-f", "other"]).ok();
    // Two runs at once with one name: one wins, nothing of the other is left.
    let a = env
        .strata
        .command(&["run", "-d", "--name", "race", "demo", "sleep", "100"])
        .spawn()
        .unwrap();
    let b = env
        .strata
        .command(&["run", "-d", "--name", "race", "demo", "sleep", "100"])
        .spawn()
        .unwrap();
    let codes: Vec<i32> = [a, b]
        .into_iter()
        .map(|c| c.wait_with_output().unwrap().status.code().unwrap())
        .collect();
    let mut sorted = codes.clone();
    sorted.sort();
    assert_eq!(sorted, [0, 125], "{codes:?}");
    assert_eq!(env.container_dirs().len(), 1);
    env.run(&["rm", "-f", "race"]).ok();
}

#[test]
fn bad_input_fails_clearly_and_leaves_nothing() {
    if !have_root("bad_input_fails_clearly_and_leaves_nothing") {
        return;
    }
    let env = Env::new();
    for (args, want) in [
        (
            vec!["run", "localhost:1/nope:latest"],
            "Unable to find image",
        ),
        (
            vec!["run", "-v", "relative:path", "demo", "true"],
            "invalid volume specification",
        ),
        (
            vec!["run", "-v", "/tmp:/x:bogus", "demo", "true"],
            "invalid mode: bogus",
        ),
        (
            vec!["run", "-v", "data:/x", "-m", "12q", "demo", "true"],
            "invalid size: '12q'",
        ),
        (
            vec!["run", "-m", "1k", "demo", "true"],
            "Minimum memory limit",
        ),
        (vec!["run", "--cpus", "64", "demo", "true"], "range of CPUs"),
        (
            vec!["run", "--network", "bridge2", "demo", "true"],
            "network bridge2 not found",
        ),
        (
            vec!["run", "--cap-add", "NOPE", "demo", "true"],
            "unknown capability",
        ),
        (
            vec!["run", "--name", "-x", "demo", "true"],
            "Invalid container name",
        ),
        (
            vec!["run", "-p", "x:80", "demo", "true"],
            "invalid port specification",
        ),
        (vec!["run", "demo", "--entrypoint"], "not found"),
        (
            vec!["create", "--entrypoint", "", "demo"],
            "No command specified",
        ),
    ] {
        let r = env.run(&args);
        let code = if want == "not found" { 127 } else { 125 };
        let err = r.fails(code);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // The run whose command was not found was created (as docker does): remove it.
    env.run(&["container", "prune", "-f"]).ok();
    assert!(
        env.container_dirs().is_empty(),
        "{:?}",
        env.container_dirs()
    );
    let volumes: Vec<_> = std::fs::read_dir(env.strata.root().join("volumes"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(volumes.is_empty(), "a failed run left volumes {volumes:?}");
}

#[test]
fn killing_the_monitor_leaves_a_truthful_state_that_rm_force_cleans() {
    if !have_root("killing_the_monitor_leaves_a_truthful_state_that_rm_force_cleans") {
        return;
    }
    let env = Env::new();
    let id = env.detach(&[
        "--name", "orphan", "--memory", "32m", "demo", "sleep", "1002",
    ]);
    let monitor = env.state(&id)["monitor_pid"].as_i64().unwrap() as i32;
    assert!(monitor > 0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for(Duration::from_secs(30), "the monitor to die", || {
        std::fs::read_to_string(format!("/proc/{monitor}/stat"))
            .map(|s| s.contains(") Z"))
            .unwrap_or(true)
    })
    .unwrap();
    // The container dies with its monitor, before any strata command looks.
    wait_for(
        Duration::from_secs(10),
        "the container to die with its monitor",
        || processes_with("sleep 1002").is_empty(),
    )
    .unwrap();
    let ps = env
        .run(&["ps", "-a", "--format", "{{.Names}} {{.State}} {{.Status}}"])
        .ok();
    assert_eq!(ps, "orphan dead Dead\n");
    assert_eq!(
        env.run(&["ps", "-q"]).ok(),
        "",
        "a dead container is not running"
    );
    assert_eq!(
        env.inspect("orphan", "{{.State.Dead}} {{.State.Running}}"),
        "true false"
    );
    assert!(
        processes_with("sleep 1002").is_empty(),
        "the container outlived its monitor"
    );
    env.run(&["rm", "-f", "orphan"]).ok();
    assert!(env.container_dirs().is_empty());
    assert!(!cgroup_dir("memory", &id).exists());
    assert!(mounts_under(&env.containers_dir()).is_empty());
}

#[test]
fn a_stale_mount_from_a_crash_is_cleaned_by_the_next_command() {
    if !have_root("a_stale_mount_from_a_crash_is_cleaned_by_the_next_command") {
        return;
    }
    let env = Env::new();
    env.run(&["create", "--name", "crashed", "demo", "true"])
        .ok();
    let id = env.inspect("crashed", "{{.Id}}");
    // What a crash leaves: a mount at the container's rootfs and a state that says running,
    // written by a monitor that is gone.
    let dir = env.containers_dir().join(&id);
    let rootfs = dir.join("rootfs");
    nix::mount::mount(
        Some("tmpfs"),
        &rootfs,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let mut st = env.state(&id);
    st["status"] = "running".into();
    st["monitor_pid"] = 999_999.into();
    st["monitor_start"] = 1.into();
    std::fs::write(dir.join("state.json"), serde_json::to_vec(&st).unwrap()).unwrap();
    assert!(!mounts_under(&rootfs).is_empty());
    let ps = env
        .run(&["ps", "-a", "--format", "{{.Names}} {{.State}}"])
        .ok();
    assert_eq!(ps, "crashed dead\n");
    assert!(
        mounts_under(&rootfs).is_empty(),
        "the stale mount is still there"
    );
    env.run(&["rm", "crashed"]).ok();
    assert!(env.container_dirs().is_empty());
}

#[test]
fn create_start_attach_wait_restart_and_the_upper_persists() {
    if !have_root("create_start_attach_wait_restart_and_the_upper_persists") {
        return;
    }
    let env = Env::new();
    let id = env
        .run(&[
            "create",
            "--name",
            "counter",
            "demo",
            "sh",
            "-c",
            "echo x >> /count; wc -l < /count",
        ])
        .ok();
    assert_eq!(id.trim().len(), 64);
    assert_eq!(env.inspect("counter", "{{.State.Status}}"), "created");
    let ps = env.run(&["ps", "-a"]).ok();
    assert!(ps.contains("Created"), "{ps}");
    assert_eq!(env.run(&["start", "-a", "counter"]).ok(), "1\n");
    assert_eq!(
        env.run(&["start", "-a", "counter"]).ok(),
        "2\n",
        "the upper did not persist"
    );
    env.run(&["start", "counter"]).ok();
    assert_eq!(env.run(&["wait", "counter"]).ok(), "0\n");
    assert_eq!(env.run(&["logs", "counter"]).ok(), "1\n2\n3\n");
    let diff = env.run(&["diff", "counter"]).ok();
    assert_eq!(diff, "A /count\n");
    // restart of a running container: stopped, started again.
    env.detach(&[
        "--name",
        "loop",
        "demo",
        "sh",
        "-c",
        "echo up; while true; do sleep 0.1; done",
    ]);
    wait_for(
        Duration::from_secs(30),
        "the first start in the log",
        || env.run(&["logs", "loop"]).stdout == "up\n",
    )
    .unwrap();
    env.run(&["restart", "-t", "0", "loop"]).ok();
    env.wait_state("loop", "running");
    wait_for(Duration::from_secs(30), "two starts in the log", || {
        env.run(&["logs", "loop"]).stdout == "up\nup\n"
    })
    .unwrap();
    // attach: output of the running container here, stdin there, its end ends attach.
    env.detach(&[
        "-i",
        "--name",
        "echoer",
        "demo",
        "sh",
        "-c",
        "while read l; do echo got $l; done; exit 4",
    ]);
    let out = super::run_input(&env.strata, &["attach", "echoer"], b"hello\n");
    assert_eq!(out.stdout, "got hello\n");
    assert_eq!(out.code, 4);
    env.wait_state("echoer", "exited");
    let _ = id;
    env.run(&["rm", "-f", "loop", "echoer", "counter"]).ok();
    assert!(env.container_dirs().is_empty());
}

#[test]
fn ps_filters_format_and_prune() {
    if !have_root("ps_filters_format_and_prune") {
        return;
    }
    let env = Env::new();
    env.run(&[
        "run", "--name", "three", "-l", "team=a", "demo", "sh", "-c", "exit 3",
    ])
    .fails(3);
    env.run(&["run", "--name", "zero", "demo", "true"]).ok();
    let up = env.detach(&["--name", "up1", "demo", "sleep", "100"]);
    let names = |f: &[&str]| {
        let mut a = vec!["ps", "-a", "--format", "{{.Names}}"];
        for x in f {
            a.push("-f");
            a.push(x);
        }
        let mut v: Vec<String> = env.run(&a).ok().lines().map(str::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(names(&["status=exited"]), ["three", "zero"]);
    assert_eq!(names(&["status=running"]), ["up1"]);
    assert_eq!(names(&["exited=3"]), ["three"]);
    assert_eq!(names(&["name=ze"]), ["zero"]);
    assert_eq!(names(&["ancestor=demo"]), ["three", "up1", "zero"]);
    assert_eq!(names(&["ancestor=busybox"]), Vec::<String>::new());
    assert_eq!(names(&["label=team=a"]), ["three"]);
    assert_eq!(names(&["status=exited", "name=three"]), ["three"]);
    assert_eq!(env.run(&["ps", "-q"]).ok(), format!("{}\n", &up[..12]));
    assert_eq!(env.run(&["ps", "-q", "--no-trunc"]).ok(), format!("{up}\n"));
    assert_eq!(
        env.run(&["ps", "-a", "-n", "1", "--format", "{{.Names}}"])
            .ok(),
        "up1\n"
    );
    let json = env.run(&["ps", "--format", "json"]).ok();
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["Names"], "up1");
    assert_eq!(v["State"], "running");
    let s = env.run(&["ps", "-s"]).ok();
    assert!(s.lines().next().unwrap().ends_with("SIZE"), "{s}");
    assert!(s.contains("(virtual "), "{s}");
    let err = env.run(&["ps", "-f", "status=sleepy"]).fails(1);
    assert!(err.contains("invalid filter"), "{err}");
    let out = env.run(&["container", "prune", "-f"]).ok();
    assert!(
        out.starts_with("Deleted Containers:\n") && out.contains("Total reclaimed space:"),
        "{out}"
    );
    assert_eq!(names(&[]), ["up1"]);
    assert_eq!(
        env.run(&["container", "ls", "--format", "{{.Names}}"]).ok(),
        "up1\n"
    );
    env.run(&["container", "rm", "-f", "up1"]).ok();
}

#[test]
fn inspect_is_docker_shaped_and_tries_containers_first() {
    if !have_root("inspect_is_docker_shaped_and_tries_containers_first") {
        return;
    }
    let env = Env::new();
    let id = env
        .run(&[
            "create",
            "--name",
            "insp",
            "-e",
            "A=1",
            "-w",
            "/tmp",
            "--memory",
            "64m",
            "--cpus",
            "0.5",
            "--pids-limit",
            "9",
            "-h",
            "hh",
            "demo",
            "echo",
            "hi",
        ])
        .ok();
    let id = id.trim();
    let out = env.run(&["inspect", "insp"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let c = &v[0];
    assert_eq!(c["Id"], id);
    assert_eq!(c["Name"], "/insp");
    assert_eq!(c["Path"], "echo");
    assert_eq!(c["Args"], serde_json::json!(["hi"]));
    assert_eq!(c["State"]["Status"], "created");
    assert_eq!(c["State"]["Running"], false);
    assert_eq!(c["State"]["OOMKilled"], false);
    assert_eq!(c["Config"]["Cmd"], serde_json::json!(["echo", "hi"]));
    assert_eq!(c["Config"]["Hostname"], "hh");
    assert_eq!(c["Config"]["WorkingDir"], "/tmp");
    assert!(c["Config"]["Env"]
        .as_array()
        .unwrap()
        .contains(&"A=1".into()));
    assert_eq!(c["HostConfig"]["Memory"], 64 << 20);
    assert_eq!(c["HostConfig"]["NanoCpus"], 500_000_000);
    assert_eq!(c["HostConfig"]["PidsLimit"], 9);
    let image_id = env
        .run(&["images", "--no-trunc", "-q", "localhost/demo"])
        .ok();
    assert_eq!(c["Image"], image_id.trim());
    // container.json carries what image prune reads.
    let rec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.containers_dir().join(id).join("container.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(rec["id"], id);
    assert_eq!(rec["name"], "insp");
    assert_eq!(rec["image_id"], image_id.trim());
    // Images still inspect, and --type picks.
    assert_eq!(
        env.inspect("localhost/demo", "{{json .Config.Cmd}}"),
        r#"["sh"]"#
    );
    let err = env
        .run(&["inspect", "--type", "container", "localhost/demo"])
        .fails(1);
    assert!(err.contains("No such container"), "{err}");
    env.run(&["rm", "insp"]).ok();
}

#[test]
fn exec_enters_every_namespace_and_the_cgroup() {
    if !have_root("exec_enters_every_namespace_and_the_cgroup") {
        return;
    }
    let env = Env::new();
    let id = env.detach(&[
        "--name", "target", "--memory", "64m", "demo", "sleep", "1005",
    ]);
    env.run(&["exec", "-d", "target", "sleep", "1006"]).ok();
    let mut exec_pid = 0;
    wait_for(Duration::from_secs(30), "the exec'd process", || {
        exec_pid = processes_with("sleep 1006").first().copied().unwrap_or(0);
        exec_pid > 0
    })
    .unwrap();
    let pid1 = env.inspect("target", "{{.State.Pid}}");
    for ns in ["pid", "mnt", "net", "uts", "ipc", "cgroup"] {
        let a = std::fs::read_link(format!("/proc/{pid1}/ns/{ns}")).unwrap();
        let b = std::fs::read_link(format!("/proc/{exec_pid}/ns/{ns}")).unwrap();
        assert_eq!(a, b, "exec is not in the container's {ns} namespace");
    }
    let procs = super::cgroup_value(&id, "memory", "cgroup.procs");
    assert!(
        procs.lines().any(|p| p == exec_pid.to_string()),
        "exec is not in the container's cgroup"
    );
    // Inside, pid 1 is the container's command and the exec'd one is not pid 1.
    let ps = env.run(&["exec", "target", "ps", "-o", "pid,args"]).ok();
    assert!(ps.contains("    1 sleep 1005"), "{ps}");
    assert!(!ps.contains("    1 sleep 1006"), "{ps}");
    env.run(&["rm", "-f", "target"]).ok();
}

#[test]
fn attach_detaches_with_ctrl_p_ctrl_q_and_exiting_the_shell_stops_the_container() {
    if !have_root("attach_detaches_with_ctrl_p_ctrl_q_and_exiting_the_shell_stops_the_container") {
        return;
    }
    let env = Env::new();
    env.detach(&["-it", "--name", "shell", "demo", "sh"]);
    // A terminal for attach; the detach keys must arrive after attach made it raw.
    let session = |first: &[u8], after: &str, then: &[u8]| {
        super::terminal_session(&env, "attach shell", first, &[(after, then)])
    };
    let (code, text) = session(b"echo marker-$((6*7))\n", "marker-42", b"\x10\x11");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("read escape sequence"), "{text}");
    assert_eq!(env.inspect("shell", "{{.State.Status}}"), "running");
    // Attached again, exiting the shell stops the container; attach returns its status.
    let (code, text) = session(b"echo again\n", "again\r\n", b"exit 5\n");
    assert_eq!(code, Some(5), "{text}");
    env.wait_state("shell", "exited");
    assert_eq!(env.inspect("shell", "{{.State.ExitCode}}"), "5");
    env.run(&["rm", "shell"]).ok();
}
