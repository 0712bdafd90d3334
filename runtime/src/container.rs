//! Starting a container and exec'ing into one.
//!
//! ```text
//! caller ── fork ─► setup child (single-threaded: keeps only its own descriptors)
//!    │                joins the cgroup [and spec.netns], unshare(NEWNS|NEWUTS|NEWIPC
//!    │                |NEWCGROUP[|NEWNET]|NEWPID), clone(CLONE_PARENT) ─► pid 1
//!    │  ◄── pid 1's host pid (pipe) ───────────────────┘  setup::container → execve
//!    │  ◄── pty master (SCM_RIGHTS, Stdio::Pty) ──────────┤
//!    │  ◄── serialized Error, or EOF at execve ───────────┘  (close-on-exec pipe)
//! ```
//! The setup child exits as soon as pid 1 exists; pid 1 is a child of the caller, which
//! must wait for it ([`Running::wait`]) and must not ignore SIGCHLD.
//!
//! `exec` has the same shape: the setup child joins the target's user (when it is not
//! ours), mount, pid, uts, ipc, net and cgroup namespaces and its cgroup, then clones the
//! process into the pid namespace.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::stat::Mode;
use nix::unistd::{dup2, getpid, setpgid, setsid, ForkResult, Pid};

use crate::cgroups::Cgroup;
use crate::process::ExitStatus;
use crate::pty::WindowSize;
use crate::spec::{ContainerSpec, NamespaceKind, NamespaceMode, NetworkMode, ProcessSpec};
use crate::{credentials, process, pty, setup, sys, wire, Error, Result};

/// Where the container's stdin, stdout and stderr come from.
#[derive(Debug, Default)]
pub enum Stdio {
    /// The caller's own 0, 1 and 2.
    #[default]
    Inherit,
    /// These descriptors (pipes, files, /dev/null …); the caller may drop its copies after
    /// `start` returns.
    Fds {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// A new pseudo-terminal from the container's own /dev/pts (so `tty` names
    /// `/dev/pts/0`): the process gets the slave as stdin/stdout/stderr and controlling
    /// terminal, the caller gets the master in [`Running::pty_master`]. `size` is the
    /// initial window size; `None` copies the caller's stdin terminal's when it is one.
    Pty { size: Option<WindowSize> },
}

/// A started container.
#[derive(Debug)]
pub struct Running {
    /// Host pid (in the caller's pid namespace) of the container's pid 1: the process, or
    /// the `--init` reaper. A child of the caller.
    pub pid: i32,
    /// The pty master under [`Stdio::Pty`]: read the container's output from it, write its
    /// input, [`crate::pty::resize`] it.
    pub pty_master: Option<OwnedFd>,
    /// The container's cgroup; `None` when rootless without delegation and no limits were
    /// asked. The caller destroys it after pid 1 is gone ([`Cgroup::destroy`]).
    pub cgroup: Option<Cgroup>,
}

impl Running {
    /// Waits for pid 1 to exit (blocking).
    pub fn wait(&self) -> Result<ExitStatus> {
        crate::process::wait(self.pid)
    }

    /// Sends `sig` to pid 1 (see [`crate::process::signal`]).
    pub fn signal(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        crate::process::signal(self.pid, sig)
    }
}

/// A process started in a running container by [`exec`].
#[derive(Debug)]
pub struct ExecRunning {
    /// Host pid; a child of the caller.
    pub pid: i32,
    pub pty_master: Option<OwnedFd>,
}

impl ExecRunning {
    /// Waits for the process to exit (blocking).
    pub fn wait(&self) -> Result<ExitStatus> {
        crate::process::wait(self.pid)
    }
}

/// What [`Container::start_with`] calls before pid 1 pivots: given pid 1's host pid.
pub type BeforePivot<'a> = &'a mut dyn FnMut(i32) -> Result<()>;

/// Namespace container runtime entry point.
pub struct Container;

impl Container {
    /// Starts the container `spec` describes and returns once its process has exec'd (with
    /// `--init`: once the reaper's child has), or with the error that stopped it.
    ///
    /// Creates the cgroup `strata/<id>` ([`Cgroup::create`]): rootless without a delegated
    /// cgroup it runs without one, or fails with [`crate::Error::CgroupsUnavailable`] when
    /// limits were asked. On error nothing is left running and the cgroup is removed.
    ///
    /// The caller may be multi-threaded (the work that needs a single thread happens in a
    /// forked child), but must not ignore SIGCHLD.
    pub fn start(spec: &ContainerSpec, stdio: Stdio) -> Result<Running> {
        Container::start_with(spec, stdio, None)
    }

    /// [`Container::start`], with `before_pivot` called in the caller once pid 1 made its
    /// namespaces and mounts and before it pivots into the root (OCI `createRuntime`
    /// hooks), with pid 1's host pid. Pid 1 waits for it; its error stops the start (pid 1
    /// is killed).
    pub fn start_with(
        spec: &ContainerSpec,
        stdio: Stdio,
        before_pivot: Option<BeforePivot<'_>>,
    ) -> Result<Running> {
        if spec.process.args.is_empty() {
            return Err(Error::NoCommand);
        }
        // The id names directories (the cgroup): one plain path component.
        if spec.id.is_empty() || spec.id == "." || spec.id == ".." || spec.id.contains('/') {
            return Err(Error::InvalidId(spec.id.clone()));
        }
        let cgroup = match &spec.cgroup_path {
            Some(path) => Cgroup::create_at(path, &spec.resources)?,
            None => Cgroup::create(&spec.id, &spec.resources)?,
        };
        if let (Some(cg), false) = (&cgroup, spec.privileged) {
            // FIFOs need no rule; `u` (unbuffered) is a character device.
            let own: Vec<String> = spec
                .devices
                .iter()
                .filter(|d| d.kind != 'p')
                .map(|d| {
                    let kind = if d.kind == 'b' { 'b' } else { 'c' };
                    format!("{kind} {}:{} rwm", d.major, d.minor)
                })
                .collect();
            if let Err(e) = cg.restrict_devices(&spec.resources.devices, &own) {
                cg.destroy();
                return Err(e);
            }
        }
        let target = Target::New {
            spec,
            cgroup: cgroup.as_ref(),
        };
        match launch(target, &spec.process, stdio, before_pivot) {
            Ok((pid, pty_master)) => Ok(Running {
                pid,
                pty_master,
                cgroup,
            }),
            Err(e) => {
                if let Some(cg) = &cgroup {
                    cg.destroy();
                }
                Err(e)
            }
        }
    }
}

/// Runs `process` inside the running container whose pid 1 is `target_pid` (a host pid),
/// as `docker exec` does: in all its namespaces and its cgroup, with the user, capabilities
/// (docker's default set ± `cap_add`/`cap_drop`; pass `cap_add: ["ALL"]` for a privileged
/// container), rlimits, cwd and environment of `process`. Returns once the process has
/// exec'd, or with its typed error (see [`crate::Error::exit_code`]). Inside the
/// container its pid is not 1. A paused container refuses with [`Error::Paused`].
pub fn exec(target_pid: i32, process: &ProcessSpec, stdio: Stdio) -> Result<ExecRunning> {
    if process.args.is_empty() {
        return Err(Error::NoCommand);
    }
    // Read from the caller's view of /proc, before anything is joined.
    let cgroup = Cgroup::of_process(target_pid);
    // Joining a frozen cgroup would freeze the setup child, and this call with it.
    if cgroup.is_frozen() {
        return Err(Error::Paused { pid: target_pid });
    }
    let target = Target::Join {
        pid: target_pid,
        cgroup,
    };
    let (pid, pty_master) = launch(target, process, stdio, None)?;
    Ok(ExecRunning { pid, pty_master })
}

/// What the setup child builds the process in.
enum Target<'a> {
    /// New namespaces for `spec`, in `cgroup`.
    New {
        spec: &'a ContainerSpec,
        cgroup: Option<&'a Cgroup>,
    },
    /// The namespaces and cgroup of running process `pid`.
    Join { pid: i32, cgroup: Cgroup },
}

/// The setup child's and the container process's ends of the channels to the caller.
struct Ends {
    /// The new process's host pid, 4 bytes.
    pid: Option<OwnedFd>,
    /// A serialized [`Error`]; close-on-exec, so EOF without bytes means exec'd.
    err: Option<OwnedFd>,
    /// Under [`Stdio::Pty`]: the socket the pty master goes over.
    pty: Option<OwnedFd>,
    /// Under [`Stdio::Fds`]: stdin, stdout, stderr.
    stdio: Option<[OwnedFd; 3]>,
    size: Option<WindowSize>,
    /// With a new user namespace: the setup child says it unshared (write end), then waits
    /// for the caller to have written its id maps (read end).
    userns: Option<(OwnedFd, OwnedFd)>,
    /// The start gate (an O_PATH descriptor), opened by the setup child before any
    /// namespace: the path may be out of reach of the container's root (a user namespace
    /// whose root is not the caller, pivot_root). Pid 1 reopens it for writing through
    /// /proc/self/fd.
    gate: Option<OwnedFd>,
    /// With a [`BeforePivot`] callback: pid 1 says it is ready to pivot (write end), then
    /// waits for the caller's go (read end).
    pivot: Option<(OwnedFd, OwnedFd)>,
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(Error::sys("pipe"))
}

/// Forks the setup child for `target`, which clones the process; returns its host pid and
/// the pty master once it exec'd, or the error it met.
fn launch(
    target: Target<'_>,
    process: &ProcessSpec,
    stdio: Stdio,
    before_pivot: Option<BeforePivot<'_>>,
) -> Result<(i32, Option<OwnedFd>)> {
    let (pid_r, pid_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (sock, size, fds) = match stdio {
        Stdio::Inherit => (None, None, None),
        Stdio::Fds {
            stdin,
            stdout,
            stderr,
        } => (None, None, Some([stdin, stdout, stderr])),
        Stdio::Pty { size } => {
            let pair = socketpair(
                AddressFamily::Unix,
                SockType::Stream,
                None,
                SockFlag::SOCK_CLOEXEC,
            )
            .map_err(Error::sys("socketpair for the pty"))?;
            let size = size.or_else(|| pty::window_size(std::io::stdin()));
            (Some(pair), size, None)
        }
    };
    let (sock_here, sock_there) = match sock {
        Some((a, b)) => (Some(a), Some(b)),
        None => (None, None),
    };
    let want_pty = sock_here.is_some();
    let new_userns = match &target {
        Target::New { spec, .. } => spec.namespace(NamespaceKind::User) == NamespaceMode::New,
        Target::Join { .. } => false,
    };
    let (userns_here, userns_there) = match new_userns {
        true => {
            let (unshared_r, unshared_w) = pipe()?;
            let (go_r, go_w) = pipe()?;
            (Some((unshared_r, go_w)), Some((unshared_w, go_r)))
        }
        false => (None, None),
    };
    let (pivot_here, pivot_there) = match before_pivot.is_some() {
        true => {
            let (ready_r, ready_w) = pipe()?;
            let (go_r, go_w) = pipe()?;
            (Some((ready_r, go_w)), Some((ready_w, go_r)))
        }
        false => (None, None),
    };
    let ends = Ends {
        pid: Some(pid_w),
        err: Some(err_w),
        pty: sock_there,
        stdio: fds,
        size,
        userns: userns_there,
        gate: None,
        pivot: pivot_there,
    };
    let child = match sys::fork().map_err(Error::sys("fork"))? {
        ForkResult::Child => {
            drop((pid_r, err_r, sock_here, userns_here, pivot_here));
            setup_child(target, process, ends)
        }
        ForkResult::Parent { child } => child,
    };
    drop(ends);
    if let (Some((unshared_r, go_w)), Target::New { spec, .. }) = (userns_here, &target) {
        map_user_namespace(child.as_raw(), spec, unshared_r, go_w)?;
    }
    let pid = read_pid(pid_r);
    // (Retries EINTR: a caller with signal handlers must not leave it a zombie.)
    let _ = process::wait(child.as_raw());
    if let (Some(pid), Some((ready_r, go_w)), Some(callback)) = (pid, pivot_here, before_pivot) {
        // EOF instead of the byte: pid 1 failed first and reports why below.
        let mut byte = [0u8; 1];
        if File::from(ready_r).read(&mut byte).unwrap_or(0) == 1 {
            if let Err(e) = callback(pid) {
                let _ = process::signal(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = process::wait(pid);
                return Err(e);
            }
            let _ = nix::unistd::write(&go_w, &[1]);
        }
    }
    // The master arrives before the exec; EOF instead when setup failed first.
    let master = match (pid, sock_here) {
        (Some(_), Some(sock)) => pty::recv_fd(&sock).unwrap_or(None),
        _ => None,
    };
    let mut bytes = Vec::new();
    let _ = File::from(err_r).read_to_end(&mut bytes);
    if let Some(e) = wire::decode(&bytes) {
        if let Some(pid) = pid {
            let _ = process::wait(pid);
        }
        return Err(e);
    }
    let Some(pid) = pid else {
        return Err(Error::Other(format!(
            "the setup process (pid {child}) ended before starting the container"
        )));
    };
    if want_pty && master.is_none() {
        let _ = process::signal(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = process::wait(pid);
        return Err(Error::Other("no pty master came from the container".into()));
    }
    Ok((pid, master))
}

/// Created: the command is checked, the caller is told (EOF on the error pipe), then pid 1
/// blocks opening the FIFO for writing until `start` opens it for reading.
fn wait_at_gate(exec: &credentials::Exec, gate: OwnedFd, ends: &mut Ends) -> Result<()> {
    credentials::check_command(exec)?;
    drop(ends.err.take());
    let path = format!("/proc/self/fd/{}", gate.as_raw_fd());
    let fifo = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(Error::io(&path))?;
    let _ = nix::unistd::write(&fifo, &[0]);
    Ok(())
}

/// Lets the created container whose start gate is `gate` exec its process: opens the FIFO
/// for reading (pid 1 is blocked opening it for writing) and waits for its byte.
pub fn start_created(gate: &std::path::Path) -> Result<()> {
    let mut f = File::open(gate).map_err(Error::io(gate))?;
    let mut byte = [0u8; 1];
    let n = f.read(&mut byte).map_err(Error::io(gate))?;
    if n == 0 {
        return Err(Error::Other(
            "the container's process exited before start".into(),
        ));
    }
    Ok(())
}

/// The caller's side of a new user namespace: once the setup child `child` unshared it,
/// write its id maps and let it go on. An error kills the child (which would otherwise run
/// unmapped); EOF instead of the byte means the child failed first and reports why itself.
fn map_user_namespace(
    child: i32,
    spec: &ContainerSpec,
    unshared_r: OwnedFd,
    go_w: OwnedFd,
) -> Result<()> {
    let mut byte = [0u8; 1];
    if File::from(unshared_r).read(&mut byte).unwrap_or(0) == 0 {
        return Ok(());
    }
    if let Err(e) = crate::idmap::write_maps(child, &spec.uid_mappings, &spec.gid_mappings) {
        let _ = process::signal(child, nix::sys::signal::Signal::SIGKILL);
        let _ = process::wait(child);
        return Err(e);
    }
    let _ = nix::unistd::write(&go_w, &[1]);
    Ok(())
}

fn read_pid(r: OwnedFd) -> Option<i32> {
    let mut buf = [0u8; 4];
    File::from(r).read_exact(&mut buf).ok()?;
    Some(i32::from_le_bytes(buf))
}

/// Closes every descriptor but 0, 1, 2 and `keep`: the caller may be multi-threaded, and
/// descriptors other threads opened (their pipes to other containers) must not stay open
/// in a long-lived process of this container.
fn close_other_fds(keep: &[RawFd]) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        if fd > 2 && !keep.contains(&fd) {
            let _ = nix::unistd::close(fd);
        }
    }
}

fn report(ends: &Ends, e: &Error) {
    if let Some(w) = &ends.err {
        wire::send(w, e);
    }
}

/// The setup child: never returns. Errors go to the caller over the error pipe.
fn setup_child(target: Target<'_>, process: &ProcessSpec, mut ends: Ends) -> ! {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        setup_steps(target, process, &mut ends)
    }));
    let code = match outcome {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            report(&ends, &e);
            e.exit_code()
        }
        Err(_) => {
            report(
                &ends,
                &Error::Other("the runtime's setup process panicked".into()),
            );
            125
        }
    };
    sys::exit_now(code)
}

fn setup_steps(target: Target<'_>, process: &ProcessSpec, ends: &mut Ends) -> Result<()> {
    sys::default_signal_handlers().map_err(Error::sys("resetting signal handlers"))?;
    let keep: Vec<RawFd> = [&ends.pid, &ends.err, &ends.pty]
        .into_iter()
        .flatten()
        .map(|f| f.as_raw_fd())
        .chain(ends.stdio.iter().flatten().map(|f| f.as_raw_fd()))
        .chain(
            ends.userns
                .iter()
                .chain(&ends.pivot)
                .flat_map(|(a, b)| [a.as_raw_fd(), b.as_raw_fd()]),
        )
        .collect();
    close_other_fds(&keep);
    if let Target::New { spec, .. } = &target {
        if let Some(path) = &spec.start_gate {
            let fd = nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(Error::sys(format!("opening {}", path.display())))?;
            ends.gate = Some(sys::own_fd(fd));
        }
    }
    let spec = match &target {
        Target::New { spec, cgroup } => {
            enter_new(spec, *cgroup, ends.userns.take())?;
            Some(*spec)
        }
        Target::Join { pid, cgroup } => {
            enter_existing(*pid, cgroup)?;
            None
        }
    };
    match sys::clone_fork(CloneFlags::CLONE_PARENT).map_err(Error::sys("clone"))? {
        ForkResult::Child => {
            if spec.is_some_and(|s| s.start_gate.is_none()) {
                // The caller (the monitor) is this process's parent: if it is killed, the
                // container goes with it rather than running unsupervised on a root whose
                // FUSE server is gone. Not for exec: `exec -d` outlives its caller.
                let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
            }
            let e = match process_main(spec, process, ends) {
                Ok(never) => match never {},
                Err(e) => e,
            };
            report(ends, &e);
            sys::exit_now(e.exit_code())
        }
        ForkResult::Parent { child } => {
            if let Some(w) = ends.pid.take() {
                let _ = nix::unistd::write(&w, &child.as_raw().to_le_bytes());
            }
            Ok(())
        }
    }
}

/// In the setup child: the cgroup, the namespaces joined by path, a new user namespace
/// (mapped by the caller, see [`map_user_namespace`]), then the other new namespaces (the
/// pid namespace is for the next child), with every mount private to the container. runc's
/// order: what is joined is joined with the caller's rights, what is new belongs to the new
/// user namespace.
fn enter_new(
    spec: &ContainerSpec,
    cgroup: Option<&Cgroup>,
    userns: Option<(OwnedFd, OwnedFd)>,
) -> Result<()> {
    if let Some(cg) = cgroup {
        // Before CLONE_NEWCGROUP: the namespace's root is the cgroup it is made in.
        cg.add(getpid().as_raw())?;
    }
    if let Some(adj) = spec.oom_score_adj {
        // Before the user namespace: lowering it needs CAP_SYS_RESOURCE over the host's.
        let path = "/proc/self/oom_score_adj";
        std::fs::write(path, adj.to_string()).map_err(Error::io(path))?;
    }
    // Open all first: joining a mount namespace changes what later paths name.
    let mut joins = Vec::new();
    let mut flags = CloneFlags::empty();
    for kind in NamespaceKind::ALL {
        match spec.namespace(kind) {
            NamespaceMode::Join(path) => {
                let f = File::open(&path).map_err(Error::io(&path))?;
                joins.push((kind.proc_name(), clone_flag(kind), path, f));
            }
            NamespaceMode::New if kind != NamespaceKind::User => flags |= clone_flag(kind),
            _ => {}
        }
    }
    match (&spec.network, &spec.netns) {
        (NetworkMode::Host, _) => {}
        (_, Some(path)) => {
            let f = File::open(path).map_err(Error::io(path))?;
            joins.push(("network", CloneFlags::CLONE_NEWNET, path.clone(), f));
        }
        (_, None) => flags |= CloneFlags::CLONE_NEWNET,
    }
    for (name, flag, path, f) in joins {
        setns(f.as_fd(), flag).map_err(Error::sys(format!(
            "joining the {name} namespace {}",
            path.display()
        )))?;
    }
    if let Some((unshared_w, go_r)) = userns {
        unshare(CloneFlags::CLONE_NEWUSER).map_err(Error::sys("unshare(CLONE_NEWUSER)"))?;
        nix::unistd::write(&unshared_w, &[1]).map_err(Error::sys("telling the caller"))?;
        let mut byte = [0u8; 1];
        if File::from(go_r).read(&mut byte).unwrap_or(0) == 0 {
            return Err(Error::Other(
                "the caller did not map the user namespace".into(),
            ));
        }
        // Root of the new namespace: the caller's ids may not be mapped in it at all.
        let (uid, gid) = (nix::unistd::Uid::from_raw(0), nix::unistd::Gid::from_raw(0));
        nix::unistd::setresgid(gid, gid, gid)
            .and_then(|_| nix::unistd::setresuid(uid, uid, uid))
            .map_err(Error::sys("becoming root of the new user namespace"))?;
    }
    unshare(flags).map_err(Error::sys("unshare of the container namespaces"))?;
    if spec.namespace(NamespaceKind::Mount) != NamespaceMode::New {
        return Ok(());
    }
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(Error::sys(
        "making / private in the container's mount namespace",
    ))
}

fn clone_flag(kind: NamespaceKind) -> CloneFlags {
    match kind {
        NamespaceKind::User => CloneFlags::CLONE_NEWUSER,
        NamespaceKind::Mount => CloneFlags::CLONE_NEWNS,
        NamespaceKind::Pid => CloneFlags::CLONE_NEWPID,
        NamespaceKind::Uts => CloneFlags::CLONE_NEWUTS,
        NamespaceKind::Ipc => CloneFlags::CLONE_NEWIPC,
        NamespaceKind::Cgroup => CloneFlags::CLONE_NEWCGROUP,
    }
}

/// In the setup child: the cgroup and every namespace of `pid`, user first when it is not
/// ours (it grants the rights to join the others).
fn enter_existing(pid: i32, cgroup: &Cgroup) -> Result<()> {
    // Best effort: a rootless caller may not write the container's cgroup.
    let _ = cgroup.add(getpid().as_raw());
    let same = |name: &str| -> bool {
        let a = std::fs::read_link(format!("/proc/self/ns/{name}"));
        let b = std::fs::read_link(format!("/proc/{pid}/ns/{name}"));
        matches!((a, b), (Ok(a), Ok(b)) if a == b)
    };
    // Open all first: once in the mount namespace, /proc is the container's.
    let mut files = Vec::new();
    for (name, flag) in [
        ("user", CloneFlags::CLONE_NEWUSER),
        ("mnt", CloneFlags::CLONE_NEWNS),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("net", CloneFlags::CLONE_NEWNET),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ] {
        if same(name) {
            continue;
        }
        let path = format!("/proc/{pid}/ns/{name}");
        files.push((name, flag, File::open(&path).map_err(Error::io(path))?));
    }
    for (name, flag, f) in files {
        setns(f.as_fd(), flag).map_err(Error::sys(format!(
            "joining the {name} namespace of pid {pid}"
        )))?;
    }
    Ok(())
}

/// Moves `fds` to 0, 1 and 2 (through high numbers first, so no source is overwritten).
fn install_stdio(fds: [OwnedFd; 3]) -> Result<()> {
    let mut high = Vec::new();
    for f in &fds {
        let fd = fcntl(f.as_raw_fd(), FcntlArg::F_DUPFD_CLOEXEC(10))
            .map_err(Error::sys("dup of a stdio descriptor"))?;
        high.push(sys::own_fd(fd));
    }
    drop(fds);
    for (target, f) in high.iter().enumerate() {
        dup2(f.as_raw_fd(), target as RawFd).map_err(Error::sys("dup2 of a stdio descriptor"))?;
    }
    Ok(())
}

/// The new pty from the container's devpts becomes the controlling terminal and stdio;
/// its master goes to the caller.
fn install_pty(sock: OwnedFd, size: Option<WindowSize>, console: bool) -> Result<()> {
    let (master, name) = pty::open_in_container()?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&name)
        .map_err(Error::io(&name))?;
    sys::set_controlling_terminal(&slave).map_err(Error::sys(format!(
        "making {name} the controlling terminal"
    )))?;
    if let Some(size) = size.filter(|s| s.rows > 0 && s.cols > 0) {
        sys::set_window_size(&slave, size.rows, size.cols)
            .map_err(Error::sys("setting the window size"))?;
    }
    for target in 0..3 {
        dup2(slave.as_raw_fd(), target).map_err(Error::sys("dup2 of the terminal"))?;
    }
    if console {
        // As runc: /dev/console is the container's terminal.
        let path = std::path::Path::new("/dev/console");
        if std::fs::symlink_metadata(path).is_err() {
            File::create(path).map_err(Error::io(path))?;
        }
        mount(
            Some(name.as_str()),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(Error::sys("mounting /dev/console"))?;
    }
    pty::send_fd(&sock, &master)
}

/// The container's process (pid 1 for a new container): stdio, the container's mounts,
/// the terminal, credentials, then exec — or, with `--init`, fork the process and reap.
fn process_main(
    spec: Option<&ContainerSpec>,
    process: &ProcessSpec,
    ends: &mut Ends,
) -> Result<std::convert::Infallible> {
    if let Some(fds) = ends.stdio.take() {
        install_stdio(fds)?;
    }
    let gate = ends.gate.take();
    // Before pivot_root: the host's /proc names pid 1's host pid.
    let start_hooks = spec
        .filter(|s| !s.start_container_hooks.is_empty())
        .map(|s| (&s.start_container_hooks, crate::hooks::state_of_pid1(s)));
    if let Some(spec) = spec {
        let mut pivot = ends.pivot.take();
        let mut wait_for_caller = || -> Result<()> {
            let Some((ready_w, go_r)) = pivot.take() else {
                return Ok(());
            };
            nix::unistd::write(&ready_w, &[1]).map_err(Error::sys("telling the caller"))?;
            drop(ready_w);
            let mut byte = [0u8; 1];
            match File::from(go_r).read(&mut byte).unwrap_or(0) {
                1 => Ok(()),
                _ => Err(Error::Other("the caller stopped the start".into())),
            }
        };
        setup::container(&setup::Kernel, spec, &mut wait_for_caller)?;
    }
    setsid().map_err(Error::sys("setsid"))?;
    if let Some(sock) = ends.pty.take() {
        install_pty(sock, ends.size, spec.is_some())?;
    }
    let privileged = spec.is_some_and(|s| s.privileged);
    let seccomp = match spec {
        Some(s) => s.seccomp.as_ref(),
        None => process.seccomp.as_ref(),
    };
    let exec = credentials::prepare(process, privileged, seccomp)?;
    if let Some(gate) = gate {
        wait_at_gate(&exec, gate, ends)?;
    }
    if let Some((hooks, state)) = start_hooks {
        crate::hooks::run_all(hooks, &state, "startContainer")?;
    }
    if !spec.is_some_and(|s| s.init) {
        return Err(credentials::exec(&exec));
    }
    // --init: block what the reaper waits for before the child exists.
    process::init_signals()
        .thread_block()
        .map_err(Error::sys("blocking signals for the init"))?;
    match sys::fork().map_err(Error::sys("fork of the container process"))? {
        ForkResult::Child => {
            // Its own process group, in the terminal's foreground (SIGTTOU is still
            // blocked, so tcsetpgrp from the background is allowed).
            let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
            if nix::unistd::isatty(0).unwrap_or(false) {
                let _ = nix::unistd::tcsetpgrp(std::io::stdin(), getpid());
            }
            Err(credentials::exec(&exec))
        }
        ForkResult::Parent { child } => {
            // The error pipe must reach EOF when the child execs.
            drop(ends.err.take());
            // A forked copy of the caller: at least its name says what it is in `ps`.
            let _ = nix::sys::prctl::set_name(c"strata-init");
            process::reap_and_forward(child)
        }
    }
}
