//! The same commands as the unprivileged `strata-test` user: strata makes a user namespace
//! (one id, or /etc/subuid ranges through newuidmap when the user has some), mounts the
//! union inside it, and the container's root owns nothing on the host it was not given.
//! Each test re-runs its `_child` as that user (`run_test_as_user`).

use std::time::Duration;

use strata_tests::mounts::wait_for;
use strata_tests::users::{have_root, is_child, run_test_as_user, Rootless};

use super::isolation::DOCKER_CAPS;
use super::{processes_with, Env};

fn as_user(name: &str) {
    if !have_root(name) {
        return;
    }
    run_test_as_user(
        &format!("containers::rootless::{name}_child"),
        Rootless::Host,
    )
    .unwrap();
}

#[test]
fn rootless_run_exit_codes_and_isolation() {
    as_user("rootless_run_exit_codes_and_isolation");
}

#[test]
#[ignore = "run by rootless_run_exit_codes_and_isolation"]
fn rootless_run_exit_codes_and_isolation_child() {
    assert!(is_child());
    let env = Env::new();
    assert_eq!(
        env.run(&["run", "--rm", "demo", "echo", "hello"]).ok(),
        "hello\n"
    );
    env.run(&["run", "--rm", "demo", "sh", "-c", "exit 3"])
        .fails(3);
    env.run(&["run", "--rm", "demo", "nosuchcmd"]).fails(127);
    env.run(&["run", "--rm", "demo", "/etc/passwd"]).fails(126);
    env.run(&["run", "--rm", "-m", "bad", "demo", "true"])
        .fails(125);
    // Root inside, the user outside.
    let out = env
        .run(&[
            "run",
            "--rm",
            "-h",
            "rl",
            "demo",
            "sh",
            "-c",
            "id -u; hostname; echo $$; cat /proc/self/uid_map",
        ])
        .ok();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..3], ["0", "rl", "1"]);
    let me = nix::unistd::getuid().as_raw().to_string();
    let map: Vec<&str> = lines[3].split_whitespace().collect();
    assert_eq!(&map[..2], ["0", me.as_str()], "{out}");
    let status = env
        .run(&["run", "--rm", "demo", "cat", "/proc/self/status"])
        .ok();
    let caps = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    assert!(caps.ends_with(DOCKER_CAPS), "{caps}");
    // Another user of the image: through the user's /etc/subuid range (newuidmap), or a
    // clear refusal with a single id.
    let r = env.run(&[
        "run",
        "--rm",
        "-u",
        "nobody",
        "demo",
        "sh",
        "-c",
        "id -u; touch /tmp/x && stat -c %u /tmp/x",
    ]);
    if r.code == 0 {
        assert_eq!(r.stdout, "65534\n65534\n");
    } else {
        let err = r.fails(125);
        assert!(err.contains("subuid") || err.contains("mapped"), "{err}");
    }
    // root-in-container cannot touch host files it does not own.
    let out = env
        .run(&[
            "run",
            "--rm",
            "-v",
            "/etc:/hostetc",
            "demo",
            "sh",
            "-c",
            "touch /hostetc/strata-owned 2>&1; echo x >> /hostetc/passwd 2>&1; true",
        ])
        .ok();
    assert!(out.contains("Permission denied"), "{out}");
    assert!(!std::path::Path::new("/etc/strata-owned").exists());
    // The union is mounted in the monitor's namespace, not the user's.
    let err = env
        .run(&["run", "--rm", "--read-only", "demo", "touch", "/x"])
        .fails(1);
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(env.container_dirs().is_empty());
}

#[test]
fn rootless_detached_lifecycle() {
    as_user("rootless_detached_lifecycle");
}

#[test]
#[ignore = "run by rootless_detached_lifecycle"]
fn rootless_detached_lifecycle_child() {
    let env = Env::new();
    let id = env.detach(&[
        "--name",
        "rl",
        "-v",
        "vol:/v",
        "demo",
        "sh",
        "-c",
        "echo up; echo $$ > /v/pid; trap 'exit 9' TERM; while true; do sleep 0.1; done; : rootless-marker",
    ]);
    wait_for(Duration::from_secs(30), "the log", || {
        env.run(&["logs", "rl"]).stdout == "up\n"
    })
    .unwrap();
    assert_eq!(env.run(&["exec", "rl", "cat", "/v/pid"]).ok(), "1\n");
    assert_eq!(env.run(&["exec", "rl", "id", "-u"]).ok(), "0\n");
    let ps = env.run(&["ps", "--format", "{{.Names}} {{.State}}"]).ok();
    assert_eq!(ps, "rl running\n");
    env.run(&[
        "exec",
        "rl",
        "sh",
        "-c",
        "echo changed > /etc/motd && rm -r /home && mkdir /home",
    ])
    .ok();
    env.run(&["stop", "rl"]).ok();
    assert_eq!(env.inspect("rl", "{{.State.ExitCode}}"), "9");
    // The volume's mount point was made in the upper, as docker makes it in the container's
    // layer.
    assert_eq!(
        env.run(&["diff", "rl"]).ok(),
        "C /etc\nA /etc/motd\nD /home\nA /v\n"
    );
    // The upper persists across stop/start.
    env.run(&["start", "rl"]).ok();
    assert_eq!(
        env.run(&["exec", "rl", "cat", "/etc/motd"]).ok(),
        "changed\n"
    );
    // The monitor killed: ps is truthful, rm -f cleans.
    let monitor = env.state(&id)["monitor_pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for(Duration::from_secs(30), "dead", || {
        env.run(&["ps", "-a", "--format", "{{.State}}"]).stdout == "dead\n"
    })
    .unwrap();
    env.run(&["rm", "-f", "rl"]).ok();
    assert!(env.container_dirs().is_empty());
    assert!(processes_with("rootless-marker").is_empty());
    assert!(
        env.strata.root().join("volumes/vol/_data/pid").exists(),
        "rm removed a named volume"
    );
    // cp both ways, stopped and running.
    let host = env.tmp.path().join("h.txt");
    std::fs::write(&host, "from host\n").unwrap();
    env.run(&["create", "--name", "files", "demo", "cat", "/h.txt"])
        .ok();
    env.run(&["cp", host.to_str().unwrap(), "files:/h.txt"])
        .ok();
    assert_eq!(env.run(&["start", "-a", "files"]).ok(), "from host\n");
    let back = env.tmp.path().join("back.txt");
    env.run(&["cp", "files:/etc/group", back.to_str().unwrap()])
        .ok();
    assert!(std::fs::read_to_string(&back)
        .unwrap()
        .starts_with("root:x:0:"));
    // pause needs the freezer, which this user may not manage here: a clear error.
    env.detach(&["--name", "busy", "demo", "sleep", "100"]);
    let r = env.run(&["pause", "busy"]);
    if r.code != 0 {
        let err = r.fails(1);
        assert!(err.contains("cgroup"), "{err}");
    }
    env.run(&["rm", "-f", "busy", "files"]).ok();
    // Limits need a cgroup this user may manage: a clear error, nothing left.
    let r = env.run(&["run", "--rm", "--memory", "64m", "demo", "true"]);
    if r.code != 0 {
        let err = r.fails(125);
        assert!(err.contains("cgroup"), "{err}");
    }
    assert!(env.container_dirs().is_empty());
}
