//! strata-runtime against real namespaces and cgroups: busybox containers started with
//! `Container::start`, checked from inside (their output) and outside (host /proc, cgroup
//! files). Root tests skip unless `STRATA_PRIVILEGED_TESTS=1`; rootless ones re-run as
//! `strata-test`.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use strata_runtime::spec::{MountSpec, NetworkMode, Resources, Rlimit, UserSpec};
use strata_runtime::{exec, process, pty, Container, Error, ExitStatus, ProcessSpec, Stdio};
use support::*;

macro_rules! root_or_skip {
    () => {
        if !have_root(module_path!()) {
            return;
        }
    };
}

#[test]
fn exit_status_propagates() {
    root_or_skip!();
    let rootfs = Rootfs::new();
    let (status, _, _) = run(&sh(&rootfs, "exit 42"));
    assert_eq!(status, ExitStatus::Exited(42));
    // A child killed by a signal: the shell's 128+N comes through as an exit code.
    let (status, _, _) = run(&sh(&rootfs, "sh -c 'kill -KILL $$'; exit $?"));
    assert_eq!(status, ExitStatus::Exited(137));
}

#[test]
fn pid_1_is_the_command_and_host_pids_are_invisible() {
    root_or_skip!();
    let rootfs = Rootfs::new();
    assert_eq!(output(&sh(&rootfs, "echo $$")).trim(), "1");
    let out = output(&sh(&rootfs, "ls /proc"));
    let pids: Vec<u32> = out
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    // sh (1) and ls (2): nothing of the host's hundreds of processes.
    assert!(pids.contains(&1), "{pids:?}");
    assert!(pids.len() <= 3 && pids.iter().all(|p| *p < 10), "{pids:?}");
}

#[test]
fn hostname_and_network_modes() {
    root_or_skip!();
    let rootfs = Rootfs::new();
    let mut spec = sh(
        &rootfs,
        "hostname; cat /sys/class/net/lo/flags; ls /sys/class/net",
    );
    spec.hostname = Some("box1".into());
    let out = output(&spec);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "box1");
    // IFF_UP (0x1) | IFF_LOOPBACK (0x8); only lo in a private namespace.
    assert_eq!(lines[1], "0x9", "{out}");
    assert_eq!(&lines[2..], ["lo"], "{out}");
    spec.network = NetworkMode::None;
    let out = output(&spec);
    assert_eq!(out.lines().nth(1), Some("0x8"), "lo stays down: {out}");
    spec.network = NetworkMode::Host;
    let out = output(&spec);
    let host = std::fs::read_dir("/sys/class/net").unwrap().count();
    assert_eq!(out.lines().skip(2).count(), host, "{out}");
}

#[test]
fn masked_and_read_only_paths() {
    root_or_skip!();
    let rootfs = Rootfs::new();
    // (This host's kernel has no /proc/kcore; where it exists it reads empty.)
    let out = output(&sh(
        &rootfs,
        "cat /proc/kcore 2>/dev/null | wc -c; wc -c < /proc/timer_list; wc -c < /proc/keys; \
         ls -A /sys/firmware | wc -l; touch /proc/timer_list 2>/dev/null;",
    ));
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "0", "0"],
        "{out}"
    );
    let (status, _, err) = run(&sh(&rootfs, "echo x > /proc/sys/kernel/domainname"));
    assert_ne!(status, ExitStatus::Exited(0));
    assert!(err.contains("Read-only file system"), "{err}");
    // Every read-only path that exists is its own read-only mount.
    let out = output(&sh(&rootfs, "cat /proc/self/mountinfo"));
    for path in [
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ] {
        if !std::path::Path::new(path).exists() {
            continue;
        }
        let line = out
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(path))
            .unwrap_or_else(|| panic!("{path} not mounted: {out}"));
        let opts = line.split(' ').nth(5).unwrap();
        assert!(opts.split(',').any(|o| o == "ro"), "{line}");
    }
    let (status, _, err) = run(&sh(&rootfs, "mkdir /sys/x"));
    assert_ne!(status, ExitStatus::Exited(0));
    assert!(err.contains("Read-only file system"), "{err}");
    // Privileged: nothing masked, /proc/sys writable.
    let mut spec = sh(
        &rootfs,
        "grep -q . /proc/timer_list && cat /proc/sys/kernel/domainname > /proc/sys/kernel/domainname",
    );
    spec.privileged = true;
    output(&spec);
}

#[test]
fn dev_has_the_standard_devices() {
    root_or_skip!();
    let rootfs = Rootfs::new();
    let out = output(&sh(
        &rootfs,
        "for d in null zero full random urandom tty; do test -c /dev/$d || echo missing $d; done; \
         head -c 4 /dev/zero | wc -c; echo x > /dev/null; \
         for l in ptmx fd stdin; do readlink /dev/$l; done; \
         grep -E ' /dev/(pts|shm|mqueue) ' /proc/mounts | cut -d' ' -f2,3",
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "4",
            "pts/ptmx",
            "/proc/self/fd",
            "/proc/self/fd/0",
            "/dev/pts devpts",
            "/dev/shm tmpfs",
            "/dev/mqueue mqueue"
        ],
        "{out}"
    );
}

#[test]
fn devices_cgroup_refuses_nodes_for_host_devices() {
    root_or_skip!();
    let rootfs = Rootfs::new();
    // Root keeps CAP_MKNOD (docker's default), so it can make a node for a host device:
    // /dev/fuse (10:229), which the host lets anyone open. The devices cgroup must refuse
    // opening it, and only it: /dev/null still opens.
    let mut spec = sh(
        &rootfs,
        "rm -f /tmp/fuse; mknod /tmp/fuse c 10 229 && echo made; (exec 3<>/tmp/fuse) 2>&1; \
         (exec 3<>/dev/null) && echo null-ok",
    );
    let out = output(&spec);
    assert!(out.starts_with("made\n"), "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.ends_with("null-ok\n"), "{out}");
    // Control: a privileged container opens it.
    spec.privileged = true;
    let out = output(&spec);
    assert_eq!(out, "made\nnull-ok\n");
}

fn cap_line(out: &str, name: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("{name} in {out}"));
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

#[test]
fn capabilities_are_dockers_default_set() {
    root_or_skip!();
    let rootfs = Rootfs::new();
    let mut spec = sh(&rootfs, "grep Cap /proc/self/status");
    let out = output(&spec);
    assert_eq!(cap_line(&out, "CapEff"), 0xa80425fb, "{out}");
    assert_eq!(cap_line(&out, "CapPrm"), 0xa80425fb, "{out}");
    assert_eq!(cap_line(&out, "CapBnd"), 0xa80425fb, "{out}");
    assert_eq!(cap_line(&out, "CapInh"), 0, "{out}");
    spec.process.cap_drop = vec!["ALL".into()];
    let out = output(&spec);
    assert_eq!(cap_line(&out, "CapEff"), 0, "{out}");
    assert_eq!(cap_line(&out, "CapBnd"), 0, "{out}");
    spec.process.cap_drop = vec!["NET_RAW".into(), "cap_chown".into()];
    spec.process.cap_add = vec!["SYS_ADMIN".into()];
    let out = output(&spec);
    let want = (0xa80425fb_u64 & !(1 << 13) & !1) | (1 << 21);
    assert_eq!(cap_line(&out, "CapEff"), want, "{out}");
    // Privileged: everything this host's bounding set has.
    spec.process.cap_add.clear();
    spec.process.cap_drop.clear();
    spec.privileged = true;
    let host = std::fs::read_to_string("/proc/self/status").unwrap();
    let out = output(&spec);
    assert_eq!(cap_line(&out, "CapEff"), cap_line(&host, "CapBnd"), "{out}");
    let mut spec = sh(&rootfs, "true");
    spec.process.cap_add = vec!["CAP_BOGUS".into()];
    let e = start(&spec)
        .err()
        .expect("an unknown capability is refused");
    assert!(
        matches!(&e, Error::UnknownCapability(c) if c == "CAP_BOGUS"),
        "{e}"
    );
    assert_eq!(e.exit_code(), 125);
}

#[test]
fn user_and_groups_apply_and_drop_capabilities() {
    root_or_skip!();
    let rootfs = Rootfs::new();
    let mut spec = sh(
        &rootfs,
        "id -u; id -g; id -G; echo $HOME; grep -E 'CapEff|CapBnd' /proc/self/status",
    );
    spec.process.user = UserSpec {
        uid: 1000,
        gid: 1000,
        additional_gids: vec![10],
    };
    let out = output(&spec);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..4],
        ["1000", "1000", "1000 10", "/home/user"],
        "{out}"
    );
    assert_eq!(cap_line(&out, "CapEff"), 0, "{out}");
    assert_eq!(cap_line(&out, "CapBnd"), 0xa80425fb, "{out}");
    // Names resolve through the image's files.
    let u = strata_runtime::user::resolve(rootfs.path(), "user").unwrap();
    assert_eq!((u.uid, u.gid, u.additional_gids), (1000, 1000, vec![10]));
}

#[test]
fn no_new_privileges_only_when_asked_and_umask() {
    root_or_skip!();
    let rootfs = Rootfs::new();
    let mut spec = sh(
        &rootfs,
        "grep NoNewPrivs /proc/self/status | tr -d '\\t '; umask",
    );
    assert_eq!(output(&spec), "NoNewPrivs:0\n0022\n");
    spec.process.no_new_privileges = true;
    assert_eq!(output(&spec), "NoNewPrivs:1\n0022\n");
}

#[test]
fn read_only_rootfs() {
    root_or_skip!();
    let rootfs = Rootfs::new();
    let mut spec = sh(&rootfs, "touch /newfile");
    spec.readonly_rootfs = true;
    let (status, _, err) = run(&spec);
    assert_ne!(status, ExitStatus::Exited(0));
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(!rootfs.path().join("newfile").exists());
    // /dev and volumes stay writable.
    spec.process.args[2] = "echo ok > /dev/shm/x && echo ok > /scratch/x".into();
    spec.mounts = vec![MountSpec::Tmpfs {
        destination: "/scratch".into(),
        options: String::new(),
    }];
    output(&spec);
    spec.readonly_rootfs = false;
    spec.process.args[2] = "touch /newfile".into();
    output(&spec);
    assert!(rootfs.path().join("newfile").exists());
}

#[test]
fn bind_volumes_and_tmpfs() {
    root_or_skip!();
    let rootfs = Rootfs::new();
    let vol = host_dir();
    std::fs::write(vol.join("hello"), "from host\n").unwrap();
    let mut spec = sh(
        &rootfs,
        "cat /data/hello; echo back > /data/written; grep ' /scratch ' /proc/mounts | cut -d' ' -f3,4",
    );
    spec.mounts = vec![
        MountSpec::Bind {
            source: vol.clone(),
            destination: "/data".into(),
            readonly: false,
        },
        MountSpec::Tmpfs {
            destination: "/scratch".into(),
            options: "size=1m,mode=1777".into(),
        },
    ];
    let out = output(&spec);
    assert!(out.starts_with("from host\n"), "{out}");
    assert!(out.contains("tmpfs rw,nosuid,nodev"), "{out}");
    assert!(out.contains("size=1024k"), "{out}");
    assert_eq!(
        std::fs::read_to_string(vol.join("written")).unwrap(),
        "back\n"
    );
    // :ro
    spec.mounts.truncate(1);
    spec.mounts[0] = MountSpec::Bind {
        source: vol.clone(),
        destination: "/data".into(),
        readonly: true,
    };
    spec.process.args[2] = "cat /data/hello && echo no > /data/hello".into();
    let (status, out, err) = run(&spec);
    assert_ne!(status, ExitStatus::Exited(0));
    assert_eq!(out, "from host\n");
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(
        std::fs::read_to_string(vol.join("hello")).unwrap(),
        "from host\n"
    );
    // A file volume.
    spec.mounts[0] = MountSpec::Bind {
        source: vol.join("hello"),
        destination: "/etc/motd".into(),
        readonly: true,
    };
    spec.process.args[2] = "cat /etc/motd".into();
    assert_eq!(output(&spec), "from host\n");
    // A missing source names the volume.
    spec.mounts[0] = MountSpec::Bind {
        source: vol.join("absent-dir"),
        destination: "/vol-x".into(),
        readonly: false,
    };
    let e = start(&spec).err().expect("a missing volume source fails");
    assert!(e.to_string().contains("/vol-x"), "{e}");
    assert_eq!(e.exit_code(), 125);
    std::fs::remove_dir_all(&vol).unwrap();
}

#[test]
fn volume_destination_symlink_stays_in_the_root() {
    root_or_skip!();
    let rootfs = Rootfs::new();
    let victim = host_dir();
    // An image symlink pointing at a host path: the mount lands inside the rootfs.
    std::os::unix::fs::symlink(&victim, rootfs.path().join("evil")).unwrap();
    let mut spec = sh(
        &rootfs,
        "grep -c ' /evil\\| /' /proc/mounts >/dev/null; ls /",
    );
    spec.mounts = vec![MountSpec::Tmpfs {
        destination: "/evil/sub".into(),
        options: String::new(),
    }];
    output(&spec);
    assert!(
        rootfs
            .path()
            .join(victim.strip_prefix("/").unwrap())
            .join("sub")
            .is_dir(),
        "the destination was created inside the rootfs"
    );
    assert!(!victim.join("sub").exists(), "nothing created on the host");
    std::fs::remove_dir_all(&victim).unwrap();
}

#[test]
fn cwd_is_created_and_owned_by_the_user() {
    root_or_skip!();
    let rootfs = Rootfs::new();
    let mut spec = sh(&rootfs, "pwd; stat -c %u:%g .; touch mine");
    spec.process.cwd = "/work/deep".into();
    spec.process.user = UserSpec {
        uid: 1000,
        gid: 1000,
        additional_gids: vec![],
    };
    assert_eq!(output(&spec), "/work/deep\n1000:1000\n");
    assert!(rootfs.path().join("work/deep/mine").exists());
}

#[test]
fn environment_defaults() {
    root_or_skip!();
    let rootfs = Rootfs::new();
    let mut spec = sh(&rootfs, "echo $PATH; echo $HOSTNAME; echo $HOME; echo $FOO");
    spec.hostname = Some("envbox".into());
    spec.process.env = vec!["FOO=bar".into()];
    assert_eq!(
        output(&spec),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nenvbox\n/root\nbar\n"
    );
}

#[test]
fn rlimits_within_the_callers_hard_limit() {
    root_or_skip!();
    let rootfs = Rootfs::new();
    let mut spec = sh(&rootfs, "ulimit -n; ulimit -Hn");
    spec.process.rlimits = vec![Rlimit {
        kind: "nofile".into(),
        soft: 100,
        hard: 200,
    }];
    assert_eq!(output(&spec), "100\n200\n");
    // Above the caller's hard limit (this host has no CAP_SYS_RESOURCE): a clear error.
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let has_sys_resource = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .unwrap();
    if !has_sys_resource {
        spec.process.rlimits[0] = Rlimit {
            kind: "RLIMIT_NOFILE".into(),
            soft: hard + 1,
            hard: hard + 1,
        };
        let e = start(&spec).err().expect("raising the hard limit fails");
        assert!(
            matches!(&e, Error::Rlimit { kind, max, .. } if kind == "RLIMIT_NOFILE" && *max == hard),
            "{e}"
        );
    }
    spec.process.rlimits[0].kind = "bogus".into();
    let e = start(&spec).err().unwrap();
    assert!(matches!(&e, Error::UnknownRlimit(k) if k == "bogus"), "{e}");
}

#[test]
fn command_not_found_is_127() {
    root_or_skip!();
    let rootfs = Rootfs::new();
    for args in [vec!["no-such-command"], vec!["/bin/no-such-file"]] {
        let mut spec = sh(&rootfs, "");
        spec.process.args = args.iter().map(|s| s.to_string()).collect();
        let e = start(&spec)
            .err()
            .expect("a missing command fails to start");
        assert!(
            matches!(&e, Error::NotFound { path } if path == args[0]),
            "{e}"
        );
        assert_eq!(e.exit_code(), 127);
    }
    // An id that is not one path component, or no command at all: refused up front.
    let mut spec = sh(&rootfs, "true");
    spec.id = "../escape".into();
    let e = start(&spec).err().unwrap();
    assert!(
        matches!(&e, Error::InvalidId(id) if id == "../escape"),
        "{e}"
    );
    spec.id = unique_id("rt");
    spec.process.args.clear();
    assert!(matches!(start(&spec).err().unwrap(), Error::NoCommand));
    // Nothing is left behind: the cgroup is gone.
    let mut spec = sh(&rootfs, "");
    spec.process.args = vec!["nope".into()];
    let _ = start(&spec).err().unwrap();
    assert!(!strata_runtime::Cgroup::of(&spec.id).exists());
}

#[test]
fn not_executable_is_126() {
    root_or_skip!();
    let rootfs = Rootfs::new();
    std::fs::write(rootfs.path().join("bin/script"), "#!/bin/sh\necho hi\n").unwrap();
    for (args, reason) in [
        (vec!["/bin/script"], "permission denied"),
        (vec!["script"], "permission denied"),
        (vec!["/etc"], "is a directory"),
    ] {
        let mut spec = sh(&rootfs, "");
        spec.process.args = args.iter().map(|s| s.to_string()).collect();
        let e = start(&spec).err().expect("not executable");
        assert!(
            matches!(&e, Error::NotExecutable { path, reason: r } if path == args[0] && r == reason),
            "{e}"
        );
        assert_eq!(e.exit_code(), 126);
    }
}

#[test]
fn without_init_pid_1_ignores_sigterm() {
    root_or_skip!();
    let rootfs = Rootfs::new();
    let mut spec = sh(&rootfs, "");
    spec.process.args = vec!["sleep".into(), "100".into()];
    let c = start(&spec).unwrap();
    let pid = c.running.pid;
    process::signal(pid, Signal::SIGTERM).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        process::try_wait(pid).unwrap(),
        None,
        "pid 1 has no handler"
    );
    process::signal(pid, Signal::SIGKILL).unwrap();
    assert_eq!(c.finish().0, ExitStatus::Signaled(Signal::SIGKILL));
}

/// The zombies in the container of `pid`, seen by a process exec'd into it.
/// The zombies pid 1 of the container has inherited and not reaped. Only pid 1's children
/// count: a shell's own foreground child is briefly a zombie until the shell waits for it.
fn zombies_in(pid: i32) -> String {
    let p = ProcessSpec {
        args: vec![
            "sh".into(),
            "-c".into(),
            "cat /proc/[0-9]*/stat | cut -d' ' -f2,3,4 | grep ' Z 1$' | cut -d' ' -f1,2 || true"
                .into(),
        ],
        ..Default::default()
    };
    let (stdio, out_r, _err_r) = piped();
    let e = exec(pid, &p, stdio).unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(out_r), &mut out).unwrap();
    e.wait().unwrap();
    out
}

#[test]
fn init_reaps_zombies_and_forwards_sigterm() {
    root_or_skip!();
    let rootfs = Rootfs::new();
    // Control: a pid 1 that never waits (sleep, exec'd by the shell) keeps the orphan it
    // inherits as a zombie, and the check sees it.
    let mut spec = sh(&rootfs, "sh -c 'sleep 0.1 &'; exec sleep 30");
    let c = start(&spec).unwrap();
    let pid = c.running.pid;
    assert!(
        eventually(Duration::from_secs(5), || zombies_in(pid)
            .contains("(sleep) Z")),
        "the control shows a zombie"
    );
    c.running.signal(Signal::SIGKILL).unwrap();
    c.finish();
    // With --init the orphan is reparented to the reaper, which reaps it.
    spec.process.args[2] = "echo $$; sh -c 'sleep 0.1 &'; \
        trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.05; done"
        .into();
    spec.init = true;
    let (stdio, out_r, err_r) = piped();
    let running = Container::start(&spec, stdio).unwrap();
    let _guard = guard(&running);
    let mut out = std::io::BufReader::new(std::fs::File::from(out_r));
    let mut line = || {
        let mut l = String::new();
        std::io::BufRead::read_line(&mut out, &mut l).unwrap();
        l.trim_end().to_string()
    };
    assert_eq!(line(), "2", "the process is the init's child");
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", running.pid)).unwrap();
    assert_eq!(comm.trim(), "strata-init");
    assert_eq!(line(), "ready");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(zombies_in(running.pid), "", "no zombie under --init");
    // The trap is set: SIGTERM to pid 1 reaches the shell through the init.
    running.signal(Signal::SIGTERM).unwrap();
    assert_eq!(line(), "got-term");
    assert_eq!(running.wait().unwrap(), ExitStatus::Exited(7));
    drop(err_r);
    if let Some(cg) = &running.cgroup {
        cg.destroy();
    }
}

#[test]
fn init_exits_with_the_process_signal() {
    root_or_skip!();
    let rootfs = Rootfs::new();
    let mut spec = sh(&rootfs, "kill -USR1 $$");
    spec.init = true;
    let (status, _, _) = run(&spec);
    assert_eq!(status, ExitStatus::Exited(128 + Signal::SIGUSR1 as i32));
    // A command that is missing under --init is still the typed error.
    spec.process.args = vec!["nope".into()];
    let e = start(&spec).err().unwrap();
    assert_eq!(e.exit_code(), 127, "{e}");
}

#[test]
fn memory_limit_oom_kills() {
    root_or_skip!();
    let rootfs = Rootfs::new();
    let mut spec = sh(&rootfs, "");
    // busybox tail keeps the whole newline-free line in memory.
    spec.process.args = vec!["tail".into(), "/dev/zero".into()];
    spec.resources = Resources {
        memory: Some(32 << 20),
        ..Default::default()
    };
    let c = start(&spec).unwrap();
    let cg = c.running.cgroup.clone().expect("root gets a cgroup");
    let status = c.running.wait().unwrap();
    assert_eq!(status, ExitStatus::Signaled(Signal::SIGKILL));
    assert!(cg.oom_killed());
    cg.destroy();
    // Without the limit nothing is OOM-killed.
    let mut spec = sh(&rootfs, "head -c 1000000 /dev/zero | wc -c");
    spec.resources.memory = Some(32 << 20);
    let c = start(&spec).unwrap();
    let cg = c.running.cgroup.clone().unwrap();
    let st = c.running.wait().unwrap();
    assert_eq!(st, ExitStatus::Exited(0));
    assert!(!cg.oom_killed());
    cg.destroy();
}

#[test]
fn pids_limit_bounds_a_fork_bomb() {
    root_or_skip!();
    let rootfs = Rootfs::new();
    let mut spec = sh(
        &rootfs,
        "(i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done); exec sleep 30",
    );
    spec.resources.pids_limit = Some(10);
    let c = start(&spec).unwrap();
    let cg = c.running.cgroup.clone().unwrap();
    // The bomb stops growing at the limit (where it stops below depends on the moment the
    // first fork fails: the shell gives up its loop then).
    assert!(eventually(Duration::from_secs(10), || cg.pids().len() >= 5));
    std::thread::sleep(Duration::from_millis(500));
    let n = cg.pids().len();
    assert!((5..=10).contains(&n), "{n} processes under pids.max 10");
    cg.destroy();
    let (status, _, err) = c.finish();
    assert_eq!(status, ExitStatus::Signaled(Signal::SIGKILL));
    assert!(err.contains("can't fork"), "{err}");
    assert!(!cg.exists());
}

#[test]
fn cpu_quota_is_written() {
    root_or_skip!();
    let rootfs = Rootfs::new();
    let mut spec = sh(
        &rootfs,
        "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null; true",
    );
    spec.resources.cpus = Some(0.5);
    let c = start(&spec).unwrap();
    let quota = if strata_runtime::cgroups::is_v2() {
        "cpu.max"
    } else {
        "cpu.cfs_quota_us"
    };
    let dir = if strata_runtime::cgroups::is_v2() {
        format!("/sys/fs/cgroup/strata/{}", spec.id)
    } else {
        format!("/sys/fs/cgroup/cpu/strata/{}", spec.id)
    };
    let text = std::fs::read_to_string(format!("{dir}/{quota}")).unwrap();
    assert!(text.starts_with("50000"), "{text}");
    c.finish();
    assert!(!std::path::Path::new(&dir).exists());
}

#[test]
fn freeze_stops_cpu_time_and_thaw_resumes() {
    root_or_skip!();
    let rootfs = Rootfs::new();
    let c = start(&sh(&rootfs, "while :; do :; done")).unwrap();
    let pid = c.running.pid;
    let cg = c.running.cgroup.clone().unwrap();
    assert!(eventually(Duration::from_secs(5), || cpu_ticks(pid) > 5));
    cg.freeze().unwrap();
    assert!(cg.is_frozen());
    let t1 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(cpu_ticks(pid), t1, "no CPU time while frozen");
    cg.thaw().unwrap();
    assert!(!cg.is_frozen());
    assert!(eventually(Duration::from_secs(5), || cpu_ticks(pid) > t1 + 5));
    // Nothing can be exec'd into a paused container.
    cg.freeze().unwrap();
    let p = ProcessSpec {
        args: vec!["true".into()],
        ..Default::default()
    };
    let e = exec(pid, &p, Stdio::Inherit).expect_err("exec refuses a paused container");
    assert!(matches!(e, Error::Paused { pid: p } if p == pid), "{e}");
    cg.thaw().unwrap();
    // kill_all reaches a frozen cgroup too (destroy thaws).
    cg.freeze().unwrap();
    cg.destroy();
    assert_eq!(c.finish().0, ExitStatus::Signaled(Signal::SIGKILL));
    assert!(!cg.exists());
}

#[test]
fn cgroup_v2_freezer_and_missing_controllers() {
    root_or_skip!();
    // This host is cgroup v1 with a controller-less v2 mount: the v2 code path gets its
    // freezer (cgroup.freeze is core) and its refusal of limits without controllers.
    let unified = std::path::Path::new("/sys/fs/cgroup/unified");
    if !unified.join("cgroup.controllers").exists() {
        eprintln!("cgroup_v2_freezer_and_missing_controllers: skipped, no cgroup2 at {unified:?}");
        return;
    }
    let id = unique_id("v2");
    let limited = Resources {
        memory: Some(64 << 20),
        ..Default::default()
    };
    match strata_runtime::Cgroup::create_under(unified, &id, &limited) {
        Err(Error::CgroupsUnavailable { flag }) => assert_eq!(flag, "--memory"),
        other => panic!("memory without the controller: {other:?}"),
    }
    assert!(
        !unified.join("strata").join(&id).exists(),
        "nothing left behind"
    );
    let cg = strata_runtime::Cgroup::create_under(unified, &id, &Resources::default())
        .unwrap()
        .expect("a v2 cgroup");
    assert!(cg.exists());
    let mut busy = std::process::Command::new("/bin/busybox")
        .args(["sh", "-c", "while :; do :; done"])
        .spawn()
        .unwrap();
    let pid = busy.id() as i32;
    cg.add(pid).unwrap();
    assert_eq!(cg.pids(), [pid]);
    assert!(eventually(Duration::from_secs(5), || cpu_ticks(pid) > 5));
    cg.freeze().unwrap();
    assert!(cg.is_frozen());
    let t1 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(cpu_ticks(pid), t1, "no CPU time while frozen");
    cg.thaw().unwrap();
    assert!(eventually(Duration::from_secs(5), || cpu_ticks(pid) > t1 + 5));
    cg.freeze().unwrap();
    cg.destroy();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&busy.wait().unwrap()),
        Some(libc::SIGKILL)
    );
    assert!(!cg.exists());
}

#[test]
fn exec_joins_the_containers_namespaces_and_cgroup() {
    root_or_skip!();
    let rootfs = Rootfs::new();
    let mut spec = sh(&rootfs, "");
    spec.process.args = vec!["sleep".into(), "100".into()];
    spec.hostname = Some("joined".into());
    let c = start(&spec).unwrap();
    let pid = c.running.pid;
    let process = ProcessSpec {
        args: vec![
            "sh".into(),
            "-c".into(),
            "hostname; echo $$; cat /proc/1/cmdline | tr '\\0' ' '; echo; id -u; \
             grep CapEff /proc/self/status; cat /proc/self/cgroup | grep -c ':/$'"
                .into(),
        ],
        user: UserSpec {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![],
        },
        ..Default::default()
    };
    let (stdio, out_r, _err_r) = piped();
    let e = exec(pid, &process, stdio).unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(out_r), &mut out).unwrap();
    assert_eq!(e.wait().unwrap(), ExitStatus::Exited(0), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "joined");
    let inner: u32 = lines[1].parse().unwrap();
    assert!(inner > 1, "exec'd shell is not pid 1: {inner}");
    assert_eq!(lines[2].trim(), "sleep 100");
    assert_eq!(lines[3], "1000");
    assert_eq!(cap_line(&out, "CapEff"), 0);
    // In the cgroup namespace every hierarchy shows the container's cgroup as `/`.
    assert!(lines[5].parse::<u32>().unwrap() >= 4, "{out}");
    // exec errors are typed too.
    let bad = ProcessSpec {
        args: vec!["nope".into()],
        ..Default::default()
    };
    let (stdio, _o, _e) = piped();
    let err = exec(pid, &bad, stdio).err().unwrap();
    assert_eq!(err.exit_code(), 127, "{err}");
    process::signal(pid, Signal::SIGKILL).unwrap();
    c.finish();
}

fn read_pty(master: std::os::fd::OwnedFd) -> String {
    let mut f = std::fs::File::from(master);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // EIO once the slave's last holder exits.
    while let Ok(n) = std::io::Read::read(&mut f, &mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).replace('\r', "")
}

#[test]
fn pty_is_the_containers_dev_pts_0() {
    root_or_skip!();
    let rootfs = Rootfs::new();
    for init in [false, true] {
        let mut spec = sh(
            &rootfs,
            "tty; stty size; echo $TERM; [ /dev/console -ef /dev/pts/0 ] && echo console",
        );
        spec.process.terminal = true;
        spec.init = init;
        let running = Container::start(
            &spec,
            Stdio::Pty {
                size: Some(strata_runtime::WindowSize {
                    rows: 33,
                    cols: 101,
                }),
            },
        )
        .unwrap();
        let _guard = guard(&running);
        let master = running.pty_master.unwrap();
        let out = read_pty(master);
        let st = strata_runtime::process::wait(running.pid).unwrap();
        if let Some(cg) = &running.cgroup {
            cg.destroy();
        }
        assert_eq!(st, ExitStatus::Exited(0), "{out}");
        assert_eq!(out, "/dev/pts/0\n33 101\nxterm\nconsole\n", "init={init}");
    }
}

#[test]
fn pty_resize_reaches_the_process() {
    root_or_skip!();
    let rootfs = Rootfs::new();
    let mut spec = sh(
        &rootfs,
        "trap 'stty size; exit 0' WINCH; echo go; while :; do sleep 0.05; done",
    );
    spec.init = true;
    let running = Container::start(&spec, Stdio::Pty { size: None }).unwrap();
    let _guard = guard(&running);
    let master = running.pty_master.unwrap();
    let mut f = std::fs::File::from(master);
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut f, &mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("go"));
    pty::resize(&f, 40, 120).unwrap();
    let out = read_pty(f.into());
    assert_eq!(out.trim(), "40 120");
    assert_eq!(process::wait(running.pid).unwrap(), ExitStatus::Exited(0));
    if let Some(cg) = &running.cgroup {
        cg.destroy();
    }
}

#[test]
fn containers_start_in_parallel() {
    root_or_skip!();
    // Several threads starting at once: no descriptor leaks between them (each run ends).
    let handles: Vec<_> = (0..6)
        .map(|i| {
            std::thread::spawn(move || {
                let rootfs = Rootfs::new();
                let mut spec = sh(&rootfs, &format!("echo {i}"));
                spec.init = i % 2 == 0;
                output(&spec)
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), format!("{i}\n"));
    }
}

// --- rootless ---------------------------------------------------------------------------

/// A forked single-threaded child of the test (CLONE_NEWUSER refuses a threaded caller;
/// the test harness has threads) that reports lines over a pipe: progress, then `ok` or
/// the failure.
struct Forked {
    pid: nix::unistd::Pid,
    lines: std::io::BufReader<std::fs::File>,
}

fn say(w: &std::os::fd::OwnedFd, line: &str) {
    let _ = nix::unistd::write(w, format!("{line}\n").as_bytes());
}

#[allow(unsafe_code)]
fn fork_child(f: impl FnOnce(&std::os::fd::OwnedFd) -> Result<(), String>) -> Forked {
    let (r, w) = nix::unistd::pipe().unwrap();
    // SAFETY: the child runs only `f` and _exits; it takes no lock another thread of the
    // test harness may hold (it prints nothing; glibc's malloc is fork-safe).
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            drop(r);
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&w)))
                .unwrap_or_else(|_| Err("panicked".into()));
            match res {
                Ok(()) => say(&w, "ok"),
                Err(e) => say(&w, &format!("failed: {e}")),
            }
            // SAFETY: ends the forked child without the harness's atexit handlers.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(w);
            Forked {
                pid: child,
                lines: std::io::BufReader::new(std::fs::File::from(r)),
            }
        }
    }
}

impl Forked {
    fn line(&mut self) -> String {
        let mut s = String::new();
        std::io::BufRead::read_line(&mut self.lines, &mut s).unwrap();
        s.trim_end().to_string()
    }

    fn finish(mut self) -> Result<(), String> {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut self.lines, &mut s).unwrap();
        let _ = nix::sys::wait::waitpid(self.pid, None);
        match s.trim_end().lines().last() {
            Some("ok") => Ok(()),
            _ => Err(s),
        }
    }
}

fn in_forked_child(f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    fork_child(|_| f()).finish()
}

fn check(cond: bool, what: impl Into<String>) -> Result<(), String> {
    cond.then_some(()).ok_or_else(|| what.into())
}

#[test]
#[ignore = "run as strata-test by rootless_containers"]
fn rootless_child() {
    assert!(is_child(), "run through rootless_containers");
    let vol = std::path::PathBuf::from(std::env::var("STRATA_RT_VOLUME").unwrap());
    let res = in_forked_child(|| {
        let rootfs = Rootfs::new();
        let me = nix::unistd::getuid().to_string();
        let mapping = strata_runtime::idmap::IdMapping::single();
        strata_runtime::idmap::enter_user_namespace(&mapping).map_err(|e| e.to_string())?;
        strata_runtime::idmap::enter_mount_namespace().map_err(|e| e.to_string())?;
        check(nix::unistd::geteuid().is_root(), "uid 0 in the namespace")?;
        let mut spec = sh(
            &rootfs,
            "id -u; cat /proc/self/uid_map; echo $$; hostname; touch /vol/made-inside; \
             wc -c < /proc/timer_list; grep CapEff /proc/self/status; \
             echo x >> /etc/shadow 2>/dev/null && echo shadow-written || echo shadow-refused",
        );
        spec.hostname = Some("rootless".into());
        spec.mounts = vec![
            MountSpec::Bind {
                source: vol.clone(),
                destination: "/vol".into(),
                readonly: false,
            },
            MountSpec::Bind {
                source: "/etc/shadow".into(),
                destination: "/etc/shadow".into(),
                readonly: false,
            },
        ];
        let c = start(&spec).map_err(|e| format!("start: {e}"))?;
        check(
            c.running.cgroup.is_none(),
            "no cgroup rootless without delegation",
        )?;
        let (status, out, err) = c.finish();
        check(
            status == ExitStatus::Exited(0),
            format!("{status:?} {out} {err}"),
        )?;
        let lines: Vec<&str> = out.lines().collect();
        check(lines.len() == 7, format!("output: {out} {err}"))?;
        check(lines[0] == "0", format!("uid inside: {out}"))?;
        let map: Vec<&str> = lines[1].split_whitespace().collect();
        check(map == ["0", me.as_str(), "1"], format!("uid_map: {out}"))?;
        check(lines[2] == "1", format!("pid: {out}"))?;
        check(lines[3] == "rootless", format!("hostname: {out}"))?;
        check(lines[4] == "0", format!("timer_list masked: {out}"))?;
        check(
            lines[5].ends_with("00000000a80425fb"),
            format!("caps: {out}"),
        )?;
        check(lines[6] == "shadow-refused", format!("shadow: {out}"))?;
        // With only its own id mapped, the image's other users cannot be.
        let mut other = sh(&rootfs, "true");
        other.process.user = UserSpec {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![],
        };
        match start(&other) {
            Err(Error::Unmapped {
                kind: "uid",
                id: 1000,
            }) => {}
            Err(e) => return Err(format!("unmapped user: {e}")),
            Ok(_) => return Err("an unmapped user started".into()),
        }
        // Limits need a cgroup this user cannot have here.
        let mut limited = sh(&rootfs, "true");
        limited.resources.memory = Some(64 << 20);
        match start(&limited) {
            Err(Error::CgroupsUnavailable { flag }) if flag == "--memory" => {}
            Err(e) => return Err(format!("limits: {e}")),
            Ok(_) => return Err("limits without a cgroup started".into()),
        }
        // --network host: sysfs cannot be mounted (the net namespace is the host's), /sys
        // is bound read-only instead.
        let mut host_net = sh(
            &rootfs,
            "ls /sys/class/net | grep -c .; mkdir /sys/x; \
             awk '$5 ~ \"^/sys\" { print $5, $6 }' /proc/self/mountinfo",
        );
        host_net.network = NetworkMode::Host;
        let (_, out, err) = start(&host_net)
            .map_err(|e| format!("host net: {e}"))?
            .finish();
        let mut lines = out.lines();
        check(
            lines.next().unwrap_or("").parse::<u32>().unwrap_or(0) >= 1,
            format!("host interfaces: {out}"),
        )?;
        // /sys and every mount below it (cgroup hierarchies …) read-only.
        let mounts: Vec<&str> = lines.collect();
        check(mounts.len() > 1, format!("/sys submounts: {out}"))?;
        check(
            mounts.iter().all(|m| {
                m.split(' ')
                    .nth(1)
                    .is_some_and(|o| o.split(',').any(|f| f == "ro"))
            }),
            format!("/sys read-only recursively: {out}"),
        )?;
        check(
            err.contains("Read-only file system"),
            format!("/sys ro: {err}"),
        )?;
        // A read-only root and a read-only volume: the remounts keep the flags the host
        // locked on the source mounts.
        let mut ro = sh(
            &rootfs,
            "touch /x 2>&1; touch /vol/x 2>&1; touch /dev/shm/ok && echo dev-ok",
        );
        ro.readonly_rootfs = true;
        ro.mounts = vec![MountSpec::Bind {
            source: vol.clone(),
            destination: "/vol".into(),
            readonly: true,
        }];
        let (st, out, err) = start(&ro).map_err(|e| format!("read-only: {e}"))?.finish();
        check(
            st == ExitStatus::Exited(0)
                && out.matches("Read-only file system").count() == 2
                && out.ends_with("dev-ok\n"),
            format!("read-only: {st:?} {out} {err}"),
        )?;
        // A terminal from the container's own devpts.
        let tty = sh(&rootfs, "tty");
        let running =
            Container::start(&tty, Stdio::Pty { size: None }).map_err(|e| format!("pty: {e}"))?;
        let out = read_pty(running.pty_master.unwrap());
        let st = process::wait(running.pid).map_err(|e| e.to_string())?;
        check(
            st == ExitStatus::Exited(0) && out == "/dev/pts/0\n",
            format!("pty: {st:?} {out:?}"),
        )?;
        // exec from the same user namespace.
        let mut long = sh(&rootfs, "");
        long.process.args = vec!["sleep".into(), "100".into()];
        let c = start(&long).map_err(|e| format!("{e}"))?;
        let p = ProcessSpec {
            args: vec!["sh".into(), "-c".into(), "echo $$; id -u".into()],
            ..Default::default()
        };
        let (stdio, out_r, _e) = piped();
        let e = exec(c.running.pid, &p, stdio).map_err(|e| format!("exec: {e}"))?;
        let mut out = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(out_r), &mut out).unwrap();
        let _ = e.wait();
        let _ = process::signal(c.running.pid, Signal::SIGKILL);
        c.finish();
        let l: Vec<&str> = out.lines().collect();
        check(
            l.len() == 2 && l[0] != "1" && l[1] == "0",
            format!("exec: {out}"),
        )
    });
    if let Err(e) = res {
        panic!("rootless: {e}");
    }
}

#[test]
fn rootless_containers() {
    if is_child() || !have_root(module_path!()) {
        return;
    }
    let (uid, gid) = test_user();
    let vol = host_dir();
    nix::unistd::chown(
        &vol,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .unwrap();
    run_test_as_user(
        "rootless_child",
        &[("STRATA_RT_VOLUME", vol.to_str().unwrap())],
    );
    // uid 0 inside is the user outside.
    let meta = std::fs::metadata(vol.join("made-inside")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), uid);
    std::fs::remove_dir_all(&vol).unwrap();
}

#[test]
#[ignore = "run as strata-test by rootless_subuid_containers"]
fn rootless_subuid_child() {
    assert!(is_child(), "run through rootless_subuid_containers");
    let vol = std::path::PathBuf::from(std::env::var("STRATA_RT_VOLUME").unwrap());
    let mut child = fork_child(|w| {
        let rootfs = Rootfs::new();
        let mapping = strata_runtime::idmap::IdMapping::detect();
        check(mapping.helpers, format!("subordinate ids: {mapping:?}"))?;
        strata_runtime::idmap::enter_user_namespace(&mapping).map_err(|e| e.to_string())?;
        strata_runtime::idmap::enter_mount_namespace().map_err(|e| e.to_string())?;
        let mut spec = sh(
            &rootfs,
            "touch /vol/by-root; cat /proc/self/uid_map | wc -l",
        );
        spec.mounts = vec![MountSpec::Bind {
            source: vol.clone(),
            destination: "/vol".into(),
            readonly: false,
        }];
        let (st, out, err) = start(&spec).map_err(|e| format!("{e}"))?.finish();
        check(
            st == ExitStatus::Exited(0) && out.trim() == "2",
            format!("root: {st:?} {out} {err}"),
        )?;
        // A user of the image is a subordinate id on the host; tty (5) is mapped, so
        // devpts gets gid=5 (/proc/mounts shows it as the host's gid).
        spec.process.args[2] = "touch /vol/by-1000; id -u; grep ' /dev/pts ' /proc/mounts".into();
        spec.process.user = UserSpec {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![10],
        };
        let (st, out, err) = start(&spec).map_err(|e| format!("{e}"))?.finish();
        check(
            st == ExitStatus::Exited(0) && out.starts_with("1000\n") && out.contains(",gid="),
            format!("user: {st:?} {out} {err}"),
        )?;
        // A long-running container for exec from outside the user namespace.
        let mut long = sh(&rootfs, "");
        long.process.args = vec!["sleep".into(), "100".into()];
        let c = start(&long).map_err(|e| format!("{e}"))?;
        say(w, &format!("pid {}", c.running.pid));
        let (st, _, _) = c.finish();
        check(
            st == ExitStatus::Signaled(Signal::SIGKILL),
            format!("long: {st:?}"),
        )
    });
    let line = child.line();
    let Some(pid) = line.strip_prefix("pid ") else {
        panic!("{line} {:?}", child.finish());
    };
    let pid: i32 = pid.parse().unwrap();
    // This process is outside the user namespace: exec joins it first.
    let p = ProcessSpec {
        args: vec![
            "sh".into(),
            "-c".into(),
            "id -u; echo $$; cat /proc/self/uid_map | wc -l".into(),
        ],
        ..Default::default()
    };
    let (stdio, out_r, err_r) = piped();
    let res = exec(pid, &p, stdio);
    let mut out = String::new();
    let mut err = String::new();
    if let Ok(e) = &res {
        std::io::Read::read_to_string(&mut std::fs::File::from(out_r), &mut out).unwrap();
        std::io::Read::read_to_string(&mut std::fs::File::from(err_r), &mut err).unwrap();
        let _ = e.wait();
    }
    process::signal(pid, Signal::SIGKILL).unwrap();
    child.finish().unwrap();
    let e = res.unwrap();
    let _ = e;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out} {err}");
    assert_eq!(lines[0], "0");
    assert_ne!(lines[1], "1");
    assert_eq!(lines[2], "2");
}

const SUBID_RANGE: (u32, u32) = (300000, 65536);

#[test]
fn rootless_subuid_containers() {
    if is_child() || !have_root(module_path!()) {
        return;
    }
    if !std::path::Path::new("/usr/bin/newuidmap").exists() {
        eprintln!("rootless_subuid_containers: skipped, needs newuidmap (apt-get install uidmap)");
        return;
    }
    let (uid, gid) = test_user();
    let listed = std::fs::read_to_string("/etc/subuid")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with(&format!("{TEST_USER}:")));
    if !listed {
        let (start, count) = SUBID_RANGE;
        let range = format!("{start}-{}", start + count - 1);
        let st = std::process::Command::new("usermod")
            .args(["--add-subuids", &range, "--add-subgids", &range, TEST_USER])
            .status()
            .unwrap();
        assert!(st.success(), "usermod --add-subuids: {st}");
    }
    let sub_start: u32 = std::fs::read_to_string("/etc/subuid")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{TEST_USER}:")))
        .and_then(|rest| rest.split(':').next()?.parse().ok())
        .unwrap();
    let vol = host_dir();
    nix::unistd::chown(
        &vol,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .unwrap();
    std::fs::set_permissions(&vol, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    run_test_as_user(
        "rootless_subuid_child",
        &[("STRATA_RT_VOLUME", vol.to_str().unwrap())],
    );
    let owner = |name: &str| {
        let meta = std::fs::metadata(vol.join(name)).unwrap();
        std::os::unix::fs::MetadataExt::uid(&meta)
    };
    assert_eq!(owner("by-root"), uid);
    // Container uid 1000 is subordinate id 999 of the range (container 1 is its start).
    assert_eq!(owner("by-1000"), sub_start + 999);
    std::fs::remove_dir_all(&vol).unwrap();
}
