//! Processes: waiting, signals, signal names, and the `--init` reaper.
//!
//! The process topology of a container (see also `container.rs`):
//! ```text
//! caller (the CLI's monitor, or `strata exec`)
//!  ├── setup child        forked; joins the cgroup, unshares (or setns's) the namespaces,
//!  │                      clones the next process with CLONE_PARENT and exits at once
//!  └── pid 1              the caller's own child (wait for it with [`wait`])
//!       without --init:   the process itself; signals it has no handler for are ignored
//!                         (pid 1 of a namespace), as under docker: `stop` escalates to
//!                         SIGKILL
//!       with --init:      the reaper ── fork ─► the process (its own process group, the
//!                         terminal's foreground under a pty)
//! ```
//! The reaper forwards SIGTERM SIGINT SIGHUP SIGQUIT SIGUSR1 SIGUSR2 SIGWINCH SIGCONT
//! SIGTSTP SIGTTIN SIGTTOU SIGALRM SIGPIPE to the process, reaps every zombie of the
//! namespace (orphans are reparented to it), and exits with the process's status (128+N
//! for signal N); the kernel then kills what is left in the namespace.
//!
//! Messages between these processes (`container.rs`): the new pid (4 bytes, setup child →
//! caller), a serialized [`crate::Error`] on a close-on-exec pipe (→ caller; EOF alone
//! means exec'd), and the pty master over a unix socket (SCM_RIGHTS, pid 1 → caller).

use std::str::FromStr;

use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::{Error, Result};

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// `exit(code)`.
    Exited(i32),
    /// Killed by this signal.
    Signaled(Signal),
}

impl ExitStatus {
    /// The shell's / docker's number: the exit code, or 128+N for signal N.
    pub fn code(&self) -> i32 {
        match self {
            ExitStatus::Exited(c) => *c,
            ExitStatus::Signaled(s) => 128 + *s as i32,
        }
    }
}

fn status(ws: WaitStatus) -> Option<ExitStatus> {
    match ws {
        WaitStatus::Exited(_, c) => Some(ExitStatus::Exited(c)),
        WaitStatus::Signaled(_, s, _) => Some(ExitStatus::Signaled(s)),
        _ => None,
    }
}

/// Waits (blocking, retrying on EINTR) for child `pid` to exit and reaps it.
pub fn wait(pid: i32) -> Result<ExitStatus> {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(ws) => {
                if let Some(s) = status(ws) {
                    return Ok(s);
                }
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys(format!("waiting for pid {pid}"))(e)),
        }
    }
}

/// Like [`wait`] without blocking: `None` while `pid` runs.
pub fn try_wait(pid: i32) -> Result<Option<ExitStatus>> {
    match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        Ok(ws) => Ok(status(ws)),
        Err(e) => Err(Error::sys(format!("waiting for pid {pid}"))(e)),
    }
}

/// Sends `sig` to `pid` (a host pid). A container's pid 1 without `--init` ignores signals
/// it has no handler for, except SIGKILL and SIGSTOP.
pub fn signal(pid: i32, sig: Signal) -> Result<()> {
    kill(Pid::from_raw(pid), sig).map_err(Error::sys(format!("sending {sig} to pid {pid}")))
}

/// `SIGTERM`, `TERM`, `term`, `15` → SIGTERM.
pub fn parse_signal(name: &str) -> Result<Signal> {
    let unknown = || Error::UnknownSignal(name.to_string());
    if let Ok(n) = name.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| unknown());
    }
    let upper = name.trim().to_ascii_uppercase();
    let full = match upper.starts_with("SIG") {
        true => upper,
        false => format!("SIG{upper}"),
    };
    Signal::from_str(&full).map_err(|_| unknown())
}

/// Signals the `--init` reaper passes on to its child.
pub const FORWARDED: [Signal; 13] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
    Signal::SIGTSTP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGALRM,
    Signal::SIGPIPE,
];

/// The signals the reaper blocks before forking (forwarded ones and SIGCHLD) so none is
/// lost between the fork and its `sigwait`.
pub(crate) fn init_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// The `--init` loop of pid 1 once `child` (the process) runs, with [`init_signals`]
/// blocked: forward signals to it, reap every zombie, exit with its status.
pub(crate) fn reap_and_forward(child: Pid) -> ! {
    let set = init_signals();
    loop {
        let sig = match set.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig != Signal::SIGCHLD {
            let _ = kill(child, sig);
            continue;
        }
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(ws) if ws.pid() == Some(child) => {
                    if let Some(s) = status(ws) {
                        crate::sys::exit_now(s.code());
                    }
                }
                Ok(_) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        for name in ["SIGTERM", "TERM", "term", "15", "SigTerm"] {
            assert_eq!(parse_signal(name).unwrap(), Signal::SIGTERM, "{name}");
        }
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("winch").unwrap(), Signal::SIGWINCH);
        for bad in ["SIGBOGUS", "0", "99", ""] {
            assert!(
                matches!(parse_signal(bad), Err(Error::UnknownSignal(_))),
                "{bad}"
            );
        }
        assert_eq!(ExitStatus::Signaled(Signal::SIGKILL).code(), 137);
        assert_eq!(ExitStatus::Exited(3).code(), 3);
    }
}
