//! The container's first process: `strata __init SPEC`, spawned by the monitor as pid 1 of a
//! new pid namespace. It builds the container's view (namespaces, mounts, pivot_root),
//! becomes the configured user with the configured capabilities, and execs the command, or
//! with `--init` runs it as a child and reaps.
//!
//! It talks to the monitor over two inherited pipes named in its environment: it waits for
//! one byte on `SYNC_FD_ENV` (the monitor has put it in the cgroup), and on a setup error
//! writes `CODE message` to `ERR_FD_ENV` and exits with CODE (125, 126, 127). The error
//! pipe is close-on-exec, so an empty read tells the monitor the command started.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::statvfs::{statvfs, FsFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{
    chdir, pivot_root, setgid, setgroups, sethostname, setsid, setuid, Gid, Pid, Uid,
};

use crate::spec::{ContainerSpec, MountSpec, NetworkMode};
use crate::{caps, Error, Result};

/// Environment variable naming the error pipe's write end.
pub const ERR_FD_ENV: &str = "STRATA_INIT_ERRFD";
/// Environment variable naming the pipe the init waits on before it starts.
pub const SYNC_FD_ENV: &str = "STRATA_INIT_SYNCFD";
/// Environment variable naming the pty slave (host path) to make the controlling terminal.
pub const TTY_ENV: &str = "STRATA_INIT_TTY";

/// runc's default masked paths: hidden behind /dev/null (files) or an empty read-only
/// tmpfs (directories).
const MASKED: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
/// runc's default read-only paths.
const READ_ONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];
/// Devices a container gets, bind-mounted from the host (a user namespace cannot mknod).
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// An inherited descriptor named by environment variable `var`.
fn inherited_fd(var: &str) -> Option<OwnedFd> {
    let n: i32 = std::env::var(var).ok()?.parse().ok()?;
    std::env::remove_var(var);
    // SAFETY: the monitor passed this descriptor to this process for this purpose alone; it
    // is owned here from now on and closed once.
    #[allow(unsafe_code)]
    let fd = unsafe { OwnedFd::from_raw_fd(n) };
    let _ = nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    Some(fd)
}

/// Runs the container described by `spec`; never returns.
pub fn run(spec: &ContainerSpec) -> ! {
    let err_pipe = inherited_fd(ERR_FD_ENV).map(File::from);
    let sync = inherited_fd(SYNC_FD_ENV).map(File::from);
    let e = match start(spec, sync) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let code = e.exit_code();
    match err_pipe {
        Some(mut f) => {
            let _ = write!(f, "{code} {e}");
        }
        None => eprintln!("strata init: {e}"),
    }
    std::process::exit(code);
}

enum Never {}

fn start(spec: &ContainerSpec, sync: Option<File>) -> Result<Never> {
    if let Some(mut s) = sync {
        let mut b = [0u8; 1];
        // EOF: the monitor is gone; starting now would leave an unsupervised container.
        if s.read(&mut b).map_err(Error::io("sync pipe"))? == 0 {
            return Err(Error::Other(
                "the monitor went away before the start".into(),
            ));
        }
    }
    if let Ok(tty) = std::env::var(TTY_ENV) {
        std::env::remove_var(TTY_ENV);
        controlling_terminal(&tty)?;
    }
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWCGROUP;
    if spec.network != NetworkMode::Host {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    unshare(flags).map_err(Error::sys("unshare of the container namespaces"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(Error::sys("making / private"))?;
    if !spec.hostname.is_empty() {
        sethostname(&spec.hostname).map_err(Error::sys("sethostname"))?;
    }
    if spec.network == NetworkMode::Private {
        loopback_up();
    }
    let root = &spec.rootfs;
    mount_system(root, spec.privileged)?;
    for m in &spec.mounts {
        mount_volume(root, m)?;
    }
    if !spec.privileged {
        mask_paths(root)?;
    }
    enter_root(root)?;
    if spec.readonly_rootfs {
        remount_read_only(Path::new("/"))?;
    }
    exec_process(spec)
}

/// A new session whose controlling terminal is `tty`, on stdin/stdout/stderr.
fn controlling_terminal(tty: &str) -> Result<()> {
    setsid().map_err(Error::sys("setsid"))?;
    // Opening a terminal without O_NOCTTY after setsid makes it the controlling one.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(tty)
        .map_err(Error::io(tty))?;
    for target in 0..3 {
        nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&f), target)
            .map_err(Error::sys("dup2 of the terminal"))?;
    }
    Ok(())
}

/// Brings `lo` up in the new network namespace with the host's `ip` (before pivot_root).
fn loopback_up() {
    let ok = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("strata: warning: could not bring up the container's loopback (ip link)");
    }
}

fn mnt(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(src, target, fstype, flags, data)
        .map_err(Error::sys(format!("mounting {}", target.display())))
}

fn inside(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(Error::io(path))
}

/// An empty file to mount over (a device, a masked file, a file volume).
fn touch(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        mkdir(parent)?;
    }
    if path.exists() {
        return Ok(());
    }
    File::create(path).map(drop).map_err(Error::io(path))
}

/// The flags a bind remount must keep: a user namespace may not clear the ones locked on
/// the source mount.
fn locked_flags(path: &Path) -> MsFlags {
    let mut flags = MsFlags::empty();
    if let Ok(st) = statvfs(path) {
        let f = st.flags();
        for (s, m) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if f.contains(s) {
                flags |= m;
            }
        }
    }
    flags
}

fn remount_read_only(path: &Path) -> Result<()> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked_flags(path);
    mnt(None, path, None, flags, None)
}

/// /proc, /sys, /dev and its standard contents inside `root`.
fn mount_system(root: &Path, privileged: bool) -> Result<()> {
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let proc_dir = inside(root, "proc");
    mkdir(&proc_dir)?;
    mnt(
        Some(Path::new("proc")),
        &proc_dir,
        Some("proc"),
        nosuid_nodev_noexec,
        None,
    )?;
    let sys = inside(root, "sys");
    mkdir(&sys)?;
    let ro = match privileged {
        true => MsFlags::empty(),
        false => MsFlags::MS_RDONLY,
    };
    if mount(
        Some("sysfs"),
        &sys,
        Some("sysfs"),
        nosuid_nodev_noexec | ro,
        None::<&str>,
    )
    .is_err()
    {
        // A user namespace that does not own the network namespace cannot mount sysfs.
        mnt(
            Some(Path::new("/sys")),
            &sys,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        if !privileged {
            remount_read_only(&sys)?;
        }
    }
    let dev = inside(root, "dev");
    mkdir(&dev)?;
    mnt(
        Some(Path::new("tmpfs")),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for name in DEVICES {
        let target = dev.join(name);
        touch(&target)?;
        mnt(
            Some(&Path::new("/dev").join(name)),
            &target,
            None,
            MsFlags::MS_BIND,
            None,
        )?;
    }
    let pts = dev.join("pts");
    mkdir(&pts)?;
    let in_userns = std::fs::read_to_string("/proc/self/uid_map")
        .map(|m| m.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
        .unwrap_or(true);
    let pts_opts = match in_userns {
        true => "newinstance,ptmxmode=0666,mode=0620",
        false => "newinstance,ptmxmode=0666,mode=0620,gid=5",
    };
    mnt(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(pts_opts),
    )?;
    let shm = dev.join("shm");
    mkdir(&shm)?;
    mnt(
        Some(Path::new("shm")),
        &shm,
        Some("tmpfs"),
        nosuid_nodev_noexec,
        Some("mode=1777,size=65536k"),
    )?;
    let mqueue = dev.join("mqueue");
    mkdir(&mqueue)?;
    if let Err(e) = mnt(
        Some(Path::new("mqueue")),
        &mqueue,
        Some("mqueue"),
        nosuid_nodev_noexec,
        None,
    ) {
        eprintln!("strata: warning: {e}");
    }
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        let p = dev.join(link);
        std::os::unix::fs::symlink(target, &p).map_err(Error::io(p))?;
    }
    Ok(())
}

fn mount_volume(root: &Path, m: &MountSpec) -> Result<()> {
    match m {
        MountSpec::Bind {
            source,
            destination,
            readonly,
        } => {
            let target = inside(root, destination);
            if source.is_dir() {
                mkdir(&target)?;
            } else {
                touch(&target)?;
            }
            mnt(
                Some(source),
                &target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            if *readonly {
                remount_read_only(&target)?;
            }
        }
        MountSpec::Tmpfs {
            destination,
            options,
        } => {
            let target = inside(root, destination);
            mkdir(&target)?;
            let data = match options.is_empty() {
                true => None,
                false => Some(options.as_str()),
            };
            mnt(
                Some(Path::new("tmpfs")),
                &target,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                data,
            )?;
        }
    }
    Ok(())
}

fn mask_paths(root: &Path) -> Result<()> {
    for path in MASKED {
        let p = inside(root, path);
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            mnt(
                Some(Path::new("tmpfs")),
                &p,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None,
            )?;
        } else {
            mnt(
                Some(Path::new("/dev/null")),
                &p,
                None,
                MsFlags::MS_BIND,
                None,
            )?;
        }
    }
    for path in READ_ONLY {
        let p = inside(root, path);
        if !p.exists() {
            continue;
        }
        mnt(Some(&p), &p, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
        remount_read_only(&p)?;
    }
    Ok(())
}

/// pivot_root into `root` and drop the old root.
fn enter_root(root: &Path) -> Result<()> {
    chdir(root).map_err(Error::sys(format!("chdir {}", root.display())))?;
    // Stacking the old root under the new one and detaching it needs no directory for it.
    pivot_root(".", ".").map_err(Error::sys("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(Error::sys("detaching the old root"))?;
    chdir("/").map_err(Error::sys("chdir /"))
}

/// A user as the container's /etc/passwd and /etc/group resolve `user[:group]`.
struct User {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    home: String,
}

fn passwd_lines(path: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect()
}

fn resolve_user(spec: &str) -> Result<User> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let passwd = passwd_lines("/etc/passwd");
    let entry = passwd
        .iter()
        .find(|f| f.len() >= 7 && (f[0] == user || f[2] == user));
    let (uid, mut gid, home, name) = match (entry, user.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse().unwrap_or(0),
            f[3].parse().unwrap_or(0),
            f[5].clone(),
            Some(f[0].clone()),
        ),
        (None, Ok(uid)) => (uid, uid, "/".to_string(), None),
        (None, Err(_)) => return Err(Error::UnknownUser(user.to_string())),
    };
    let groups_file = passwd_lines("/etc/group");
    if let Some(g) = group {
        gid = match groups_file.iter().find(|f| f.len() >= 3 && f[0] == g) {
            Some(f) => f[2].parse().unwrap_or(0),
            None => g.parse().map_err(|_| Error::UnknownGroup(g.to_string()))?,
        };
    }
    let mut groups = vec![gid];
    if let Some(name) = name {
        for f in &groups_file {
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(g) = f[2].parse() {
                    if !groups.contains(&g) {
                        groups.push(g);
                    }
                }
            }
        }
    }
    Ok(User {
        uid,
        gid,
        groups,
        home: if home.is_empty() { "/".into() } else { home },
    })
}

/// The path `cmd` names, searched in `path` when it has no `/`.
fn find_command(cmd: &str, path: &str) -> Result<PathBuf> {
    let check = |p: &Path| -> Result<PathBuf> {
        let meta = std::fs::metadata(p).map_err(|_| Error::NotFound {
            path: cmd.to_string(),
        })?;
        if meta.is_dir() {
            return Err(Error::NotExecutable {
                path: cmd.to_string(),
                reason: "is a directory".into(),
            });
        }
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(Error::NotExecutable {
                path: cmd.to_string(),
                reason: "permission denied".into(),
            });
        }
        Ok(p.to_path_buf())
    };
    if cmd.contains('/') {
        return check(Path::new(cmd));
    }
    let mut last = None;
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        match check(&Path::new(dir).join(cmd)) {
            Ok(p) => return Ok(p),
            Err(e @ Error::NotExecutable { .. }) => last = Some(e),
            Err(_) => {}
        }
    }
    Err(last.unwrap_or(Error::NotFound {
        path: cmd.to_string(),
    }))
}

/// The environment: the spec's, plus PATH, HOME and HOSTNAME when it lacks them.
fn environment(spec: &ContainerSpec, user: &User) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = spec
        .process
        .env
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), String::new()),
        })
        .collect();
    let mut default = |k: &str, v: String| {
        if !env.iter().any(|(key, _)| key == k) {
            env.push((k.to_string(), v));
        }
    };
    default(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    );
    default("HOSTNAME", spec.hostname.clone());
    default("HOME", user.home.clone());
    if spec.process.terminal {
        default("TERM", "xterm".into());
    }
    env
}

fn exec_process(spec: &ContainerSpec) -> Result<Never> {
    let p = &spec.process;
    let user = resolve_user(&p.user)?;
    let env = environment(spec, &user);
    let cwd = if p.cwd.is_empty() {
        "/"
    } else {
        p.cwd.as_str()
    };
    if !Path::new(cwd).is_dir() {
        std::fs::create_dir_all(cwd).map_err(Error::io(cwd))?;
        let _ = nix::unistd::chown(
            cwd,
            Some(Uid::from_raw(user.uid)),
            Some(Gid::from_raw(user.gid)),
        );
    }
    let argv0 = p
        .args
        .first()
        .ok_or_else(|| Error::Other("no command given and the image has none".into()))?;
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let program = find_command(argv0, &path_var)?;
    let set = caps::resolve(spec.privileged, &p.cap_add, &p.cap_drop)?;
    caps::limit_bounding(&set)?;
    let groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    setgroups(&groups).map_err(Error::sys("setgroups"))?;
    let mut cmd = Command::new(&program);
    cmd.arg0(argv0)
        .args(&p.args[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd);
    if spec.init {
        // pid 1 stays root to reap and forward; the process gets the user.
        cmd.uid(user.uid).gid(user.gid);
        if p.no_new_privileges {
            nix::sys::prctl::set_no_new_privs().map_err(Error::sys("no_new_privs"))?;
        }
        return supervise(cmd, argv0);
    }
    setgid(Gid::from_raw(user.gid)).map_err(Error::sys("setgid"))?;
    setuid(Uid::from_raw(user.uid)).map_err(Error::sys("setuid"))?;
    if user.uid == 0 {
        caps::set_effective(&set)?;
    }
    if p.no_new_privileges {
        nix::sys::prctl::set_no_new_privs().map_err(Error::sys("no_new_privs"))?;
    }
    let e = cmd.exec();
    Err(exec_error(argv0, e))
}

fn exec_error(argv0: &str, e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::ENOENT) => Error::NotFound {
            path: argv0.to_string(),
        },
        Some(libc::EACCES) | Some(libc::ENOEXEC) | Some(libc::EPERM) => Error::NotExecutable {
            path: argv0.to_string(),
            reason: e.to_string(),
        },
        _ => Error::Other(format!("exec {argv0}: {e}")),
    }
}

/// `--init`: run the process as a child, forward signals to it, reap every zombie, and exit
/// with its status.
fn supervise(mut cmd: Command, argv0: &str) -> Result<Never> {
    let forwarded = [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
        Signal::SIGCONT,
        Signal::SIGTSTP,
    ];
    let mut set = SigSet::empty();
    for s in forwarded {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set.thread_block().map_err(Error::sys("blocking signals"))?;
    // The child starts with an empty signal mask (std resets it).
    let child = cmd.spawn().map_err(|e| exec_error(argv0, e))?;
    let child = Pid::from_raw(child.id() as i32);
    loop {
        let sig = set.wait().map_err(Error::sys("sigwait"))?;
        if sig != Signal::SIGCHLD {
            let _ = kill(child, sig);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => std::process::exit(code),
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => {
                    std::process::exit(128 + sig as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
}
