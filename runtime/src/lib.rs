//! strata-runtime: a lightweight namespace runtime for containers whose root is a FUSE
//! union mount.
//!
//! How a container starts (the CLI's monitor drives it; see `cli/src/container/monitor.rs`):
//! ```text
//! monitor ── [rootless] ns::enter_user_namespace (single id map)
//!         ── ns::enter_mount_namespace: the union is mounted here, invisible to the host,
//!            and gone with the last process of the namespace
//!         ── mounts the union at spec.rootfs (strata-fs)
//!         ── ns::enter_pid_namespace: the next child is pid 1 of a new pid namespace
//!         ── spawns `strata __init SPEC` ─┐
//!                                          └─ init::run: new mount/uts/ipc/net namespaces,
//!                                             /proc /sys /dev …, volumes, masked paths,
//!                                             pivot_root, rlimits, user, capabilities,
//!                                             exec (or, with --init, fork + reap)
//! ```
//! Setup errors travel back on a pipe (`init::ERR_FD_ENV`) so the monitor tells "could not
//! start" (125/126/127) from the process's own exit status. `exec` joins a running
//! container's namespaces (`ns::join`).

pub mod caps;
pub mod cgroups;
pub mod init;
pub mod ns;
pub mod spec;

pub use spec::{ContainerSpec, MountSpec, NetworkMode, ProcessSpec, Resources};

use std::path::PathBuf;

/// Why the runtime could not do what was asked; each names the thing that was wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Sys {
        what: String,
        source: nix::errno::Errno,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    #[error(
        "cgroup limits ({flag}) need a cgroup this user may manage; none is delegated here \
         (run as root, or on a cgroup v2 system with a delegated user slice)"
    )]
    CgroupsUnavailable { flag: String },
    #[error("exec: {path}: executable file not found in $PATH")]
    NotFound { path: String },
    #[error("exec: {path}: {reason}")]
    NotExecutable { path: String, reason: String },
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
