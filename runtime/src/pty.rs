//! Pseudo-terminals: window sizes, and handing a master descriptor between processes.
//!
//! The pty is allocated inside the container, from its own devpts instance (so the
//! process's terminal is `/dev/pts/0` there, as under docker), and the master travels to
//! the caller over a socket pair with SCM_RIGHTS, as runc's console socket.

use std::os::fd::AsFd;

use crate::Result;

/// A terminal's size in character cells.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowSize {
    pub rows: u16,
    pub cols: u16,
}

/// The size of the terminal `fd` is, `None` when it is not a terminal.
pub fn window_size(fd: impl AsFd) -> Option<WindowSize> {
    let _ = fd;
    todo!()
}

/// Sets the window size of the terminal behind `master` (the foreground process group gets
/// SIGWINCH).
pub fn resize(master: impl AsFd, rows: u16, cols: u16) -> Result<()> {
    let _ = (master, rows, cols);
    todo!()
}
