//! Starting a container and exec'ing into one.
//!
//! ```text
//! caller ── fork ─► setup child (single-threaded: keeps only its own descriptors)
//!    │                joins the cgroup, unshare(NEWNS|NEWUTS|NEWIPC|NEWCGROUP[|NEWNET]
//!    │                |NEWPID), clone(CLONE_PARENT) ─► pid 1 (the caller's child)
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

use std::os::fd::OwnedFd;

use crate::cgroups::Cgroup;
use crate::process::ExitStatus;
use crate::pty::WindowSize;
use crate::spec::{ContainerSpec, ProcessSpec};
use crate::Result;

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
        let _ = (spec, stdio);
        todo!()
    }
}

/// Runs `process` inside the running container whose pid 1 is `target_pid` (a host pid),
/// as `docker exec` does: in all its namespaces and its cgroup, with the user, capabilities
/// (docker's default set ± `cap_add`/`cap_drop`; pass `cap_add: ["ALL"]` for a privileged
/// container), rlimits, cwd and environment of `process`. Returns once the process has
/// exec'd, or with its typed error (see [`crate::Error::exit_code`]). Inside the
/// container its pid is not 1.
pub fn exec(target_pid: i32, process: &ProcessSpec, stdio: Stdio) -> Result<ExecRunning> {
    let _ = (target_pid, process, stdio);
    todo!()
}
