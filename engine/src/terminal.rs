//! This process's terminal: raw mode for an attached session, and its size changes.

use std::os::fd::AsFd;

use nix::sys::signal::{SigSet, Signal};

/// Calls `f` with this process's terminal size each time it changes (SIGWINCH). Blocks
/// SIGWINCH in the calling thread: call it before spawning the threads that must not take it.
pub fn on_window_change(mut f: impl FnMut(strata_runtime::WindowSize) + Send + 'static) {
    let mut set = SigSet::empty();
    set.add(Signal::SIGWINCH);
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || loop {
        if set.wait().is_ok() {
            if let Some(ws) = strata_runtime::pty::window_size(std::io::stdin().as_fd()) {
                f(ws);
            }
        }
    });
}

/// The terminal of this process's stdin in raw mode until dropped.
pub struct RawTerminal {
    saved: Option<nix::sys::termios::Termios>,
}

impl RawTerminal {
    pub fn enter() -> RawTerminal {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(stdin.as_fd()) else {
            return RawTerminal { saved: None };
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        RawTerminal { saved: Some(saved) }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(s) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin().as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                s,
            );
        }
    }
}
