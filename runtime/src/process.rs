//! Processes: waiting, signals, signal names, and the `--init` reaper.
//!
//! ```text
//! without --init:  pid 1 = the process (signals without a handler are ignored by pid 1,
//!                  as under docker: `stop` escalates to SIGKILL)
//! with --init:     pid 1 = reaper ── fork ─► the process (own process group; foreground
//!                  of the terminal under a pty)
//!                  the reaper forwards SIGTERM SIGINT SIGHUP SIGQUIT SIGUSR1 SIGUSR2
//!                  SIGWINCH SIGCONT SIGTSTP SIGTTIN SIGTTOU SIGALRM SIGPIPE to it, reaps
//!                  every zombie of the namespace, and exits with its status (128+N for
//!                  signal N)
//! ```

use nix::sys::signal::Signal;

use crate::Result;

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

/// Waits (blocking, retrying on EINTR) for child `pid` to exit and reaps it.
pub fn wait(pid: i32) -> Result<ExitStatus> {
    let _ = pid;
    todo!()
}

/// Like [`wait`] without blocking: `None` while `pid` runs.
pub fn try_wait(pid: i32) -> Result<Option<ExitStatus>> {
    let _ = pid;
    todo!()
}

/// Sends `sig` to `pid` (a host pid). A container's pid 1 without `--init` ignores signals
/// it has no handler for, except SIGKILL and SIGSTOP.
pub fn signal(pid: i32, sig: Signal) -> Result<()> {
    let _ = (pid, sig);
    todo!()
}

/// `SIGTERM`, `TERM`, `term`, `15` → SIGTERM.
pub fn parse_signal(name: &str) -> Result<Signal> {
    let _ = name;
    todo!()
}
