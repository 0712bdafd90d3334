//! strata-runtime: a lightweight namespace runtime for containers whose root is a FUSE
//! union mount.
//!
//! # How the CLI's monitor drives it
//!
//! ```text
//! monitor (single-threaded until here)
//!   ├─ rootless only: idmap::IdMapping::detect() + idmap::enter_user_namespace(&m)
//!   │     the monitor becomes uid 0 of a new user namespace (its own uid mapped, plus the
//!   │     /etc/subuid range through newuidmap when both exist)
//!   ├─ idmap::enter_mount_namespace()      mounts made now stay out of the host's view
//!   ├─ mount the union (strata-fs) at spec.rootfs
//!   ├─ oci::to_oci(&spec) → containers/<id>/config.json, oci::load_bundle → spec
//!   │     (the bundle path strata-runtime create takes)
//!   ├─ Container::start(&spec, stdio) ─ fork ─► setup child: joins the cgroup (and
//!   │     spec.netns, a network namespace the caller prepared), unshares
//!   │     pid/mnt/uts/ipc/net/cgroup namespaces, clones (CLONE_PARENT) ─► pid 1
//!   │                                                   │
//!   │   Running { pid, pty_master, cgroup } ◄── pid ────┘ /proc /sys /dev, volumes, masked
//!   │                                                     paths, pivot_root, rlimits, user,
//!   │   (start returns once pid 1 exec'd, or with        capabilities, execve (or, with
//!   │    its typed error: 127 / 126 / 125)                --init, fork the process + reap)
//!   ├─ Running::wait() / process::wait(pid)   pid 1 is the monitor's own child
//!   └─ exec(pid, &process, stdio)             `strata exec`: joins every namespace + cgroup
//! ```
//!
//! Setup errors of the container's processes travel back to the caller over a close-on-exec
//! pipe as a serialized [`Error`], so `start` and `exec` return the same typed error the
//! child met; [`Error::exit_code`] gives docker's status for it (127 command not found, 126
//! not executable, 125 anything else). Everything after execve is the process's own: its
//! exit status comes from [`process::wait`] (128+N for signal N).
//!
//! # Rules for the caller
//! - [`idmap::enter_user_namespace`] needs a single-threaded process (EINVAL otherwise):
//!   call it before spawning any thread (the FUSE server's included). If it fails after
//!   the unshare (newuidmap refused the map), the process is in an unmapped namespace:
//!   exit rather than go on.
//! - Pid 1 ([`Running::pid`]) and exec'd processes ([`ExecRunning::pid`]) are the caller's
//!   own children: wait for them with [`process::wait`] / [`Running::wait`]. Do not reap
//!   with `waitpid(-1)` elsewhere and do not set SIGCHLD to SIG_IGN (either steals the
//!   status).
//! - The caller's signal handlers and mask do not leak into the container: the setup child
//!   resets handlers, the process starts with every signal unblocked and default
//!   dispositions (SIGPIPE included). Without `--init`, pid 1 ignores signals it has no
//!   handler for (kernel rule for a namespace's init), so `stop` must escalate to SIGKILL;
//!   with `--init` the reaper forwards them.
//! - Output: with [`Stdio::Fds`], pipes reach EOF when every container process closed
//!   them. With [`Stdio::Pty`], [`Running::pty_master`] is the master: read output from
//!   it (EIO once the last slave holder is gone), write input to it, and
//!   [`pty::resize`] it on SIGWINCH.
//! - After pid 1 exits: read [`Cgroup::oom_killed`] first, then [`Cgroup::destroy`] (it
//!   kills stragglers, thaws, removes the directories; idempotent, so `rm -f` and crash
//!   cleanup can call `Cgroup::of(id).destroy()` too).
//! - The union must be mounted with `allow_other` (and `default_permissions`): container
//!   users other than the mounter's uid are refused by FUSE otherwise.
//! - [`exec`] works from any process: one outside the container's user namespace joins it
//!   first (a rootless `strata exec` run by the same user). For a privileged container
//!   pass `cap_add: ["ALL"]` in the exec'd [`ProcessSpec`]. A paused container refuses
//!   with [`Error::Paused`].
//! - Rootless with a single-id map (no /etc/subuid range or no uidmap package) only root
//!   exists inside: another `--user` fails with [`Error::Unmapped`].
//!
//! # Modules
//! - [`spec`]: the container description (serde; the CLI stores it).
//! - [`oci`]: bundles (config.json, both ways) and the `--root` state of `strata-runtime`,
//!   runc's lifecycle rules.
//! - [`idmap`]: user and mount namespaces for the caller (rootless).
//! - [`container`]: [`Container::start`], [`exec`], [`Stdio`], [`Running`].
//! - [`cgroups`]: v1 hierarchies or v2; limits, freezer, OOM flag, kill, destroy.
//! - [`process`]: wait, signals, signal names, the `--init` reaper.
//! - [`hooks`]: OCI hooks, state on stdin.
//! - [`pty`]: window sizes.
//! - [`caps`]: docker's default capability set, `--cap-add`/`--cap-drop`.
//! - [`seccomp`]: docker's default profile, docker JSON profiles, the filter loaded before
//!   exec ([`ContainerSpec::seccomp`]).
//! - [`user`]: `name[:group]` to numeric ids through the container's /etc/passwd.
//!
//! The in-container setup lives in the private `setup` (mounts, pivot_root) and
//! `credentials` (rlimits, user, capabilities, exec) modules; every `unsafe` call is in the
//! private `sys` module.

pub mod caps;
pub mod cgroups;
pub mod container;
pub mod hooks;
pub mod idmap;
pub mod oci;
pub mod process;
pub mod pty;
pub mod seccomp;
pub mod spec;
pub mod user;

mod credentials;
mod setup;
mod sys;
mod wire;

pub use cgroups::Cgroup;
pub use container::{exec, Container, ExecRunning, Running, Stdio};
pub use process::ExitStatus;
pub use pty::WindowSize;
pub use spec::{
    ContainerSpec, Device, DeviceRule, Hook, MountSpec, NamespaceKind, NamespaceMode, NetworkMode,
    ProcessSpec, Resources, Rlimit, UserSpec,
};

use std::path::PathBuf;

/// Why the runtime could not do what was asked; each variant names the step or thing that
/// was wrong. Errors met inside the container before execve arrive here intact (see
/// [`Error::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed; `what` names the step and its object (`mounting /proc`,
    /// `mounting volume /data`, `pivot_root into /run/x`, `setuid 1000`).
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: nix::errno::Errno,
    },
    /// A file could not be read, written or created.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    #[error("unknown signal {0:?}")]
    UnknownSignal(String),
    #[error("unknown rlimit {0:?}")]
    UnknownRlimit(String),
    /// A `--ulimit` above what the caller may set.
    #[error(
        "rlimit {kind}: cannot set {soft}:{hard} (the caller's hard limit is {max}): {source}"
    )]
    Rlimit {
        kind: String,
        soft: u64,
        hard: u64,
        max: u64,
        #[source]
        source: nix::errno::Errno,
    },
    /// Limits were asked for but this process may not manage cgroups (rootless without a
    /// delegated cgroup v2 tree).
    #[error(
        "cgroup limits ({flag}) need a cgroup this user may manage; none is delegated here \
         (run as root, or on a cgroup v2 system with a delegated user slice)"
    )]
    CgroupsUnavailable { flag: String },
    /// The command is not in the container (exit status 127).
    #[error("exec: {path}: executable file not found in $PATH")]
    NotFound { path: String },
    /// The command exists but cannot be executed (exit status 126).
    #[error("exec: {path}: {reason}")]
    NotExecutable { path: String, reason: String },
    /// Setting the capability sets failed.
    #[error("capabilities: {step}: {reason}")]
    Capabilities { step: String, reason: String },
    /// The process's user or group does not exist in the user namespace (rootless with a
    /// single-id mapping).
    #[error(
        "{kind} {id} is not mapped in this user namespace: rootless containers need \
         /etc/subuid and /etc/subgid ranges for the user and newuidmap/newgidmap (uidmap) \
         to run as anyone but root"
    )]
    Unmapped { kind: &'static str, id: u32 },
    /// The container is paused (its cgroup frozen): nothing can start in it.
    #[error("container with pid {pid} is paused; unpause it first")]
    Paused { pid: i32 },
    /// The container id cannot name a directory.
    #[error("invalid container id {0:?}")]
    InvalidId(String),
    /// A bundle's config.json is missing, unreadable or lacks something required.
    #[error("bundle {path}: {reason}")]
    Bundle { path: PathBuf, reason: String },
    /// No container of this id under the runtime's root.
    #[error("container does not exist: {0}")]
    NoSuchContainer(String),
    /// A container of this id exists already.
    #[error("container with given ID already exists: {0}")]
    Exists(String),
    /// The action needs a state the container is not in.
    #[error("{0}")]
    WrongState(String),
    /// The process list is empty.
    #[error("no command given")]
    NoCommand,
    /// The seccomp profile is malformed, or its filter could not be loaded.
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    /// An OCI hook failed or timed out.
    #[error("{stage} hook {path}: {reason}")]
    Hook {
        stage: String,
        path: PathBuf,
        reason: String,
    },
    /// A container process died during setup without saying why.
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub(crate) fn sys(what: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> Error {
        let what = what.into();
        move |source| Error::Sys { what, source }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    /// docker's exit status for a container that did not start: 127 command not found,
    /// 126 not executable, 125 anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NotFound { .. } => 127,
            Error::NotExecutable { .. } => 126,
            _ => 125,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
