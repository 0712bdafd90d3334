//! Pseudo-terminals: window sizes, and handing a master descriptor between processes.
//!
//! The pty is allocated inside the container, from its own devpts instance (so the
//! process's terminal is `/dev/pts/0` there, as under docker), and the master travels to
//! the caller over a socket pair with SCM_RIGHTS, as runc's console socket.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::{sys, Error, Result};

/// A terminal's size in character cells.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowSize {
    pub rows: u16,
    pub cols: u16,
}

/// The size of the terminal `fd` is, `None` when it is not a terminal.
pub fn window_size(fd: impl AsFd) -> Option<WindowSize> {
    sys::get_window_size(fd)
        .ok()
        .map(|(rows, cols)| WindowSize { rows, cols })
}

/// Sets the window size of the terminal behind `master` (the foreground process group gets
/// SIGWINCH).
pub fn resize(master: impl AsFd, rows: u16, cols: u16) -> Result<()> {
    sys::set_window_size(master, rows, cols).map_err(Error::sys("resizing the terminal"))
}

/// In the container (its /dev/ptmx): a new pty; returns the master and the slave's path.
pub(crate) fn open_in_container() -> Result<(OwnedFd, String)> {
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(Error::sys("opening /dev/ptmx"))?;
    nix::pty::grantpt(&master).map_err(Error::sys("grantpt"))?;
    nix::pty::unlockpt(&master).map_err(Error::sys("unlockpt"))?;
    let name = nix::pty::ptsname_r(&master).map_err(Error::sys("ptsname"))?;
    Ok((sys::own_fd(master.into_raw_fd()), name))
}

/// Sends `fd` over the unix socket `sock` (SCM_RIGHTS): also how `strata-runtime` hands a
/// container's pty master to an OCI `--console-socket`.
pub fn send_fd(sock: impl AsFd, fd: impl AsFd) -> Result<()> {
    let fds = [fd.as_fd().as_raw_fd()];
    sendmsg::<()>(
        sock.as_fd().as_raw_fd(),
        &[IoSlice::new(b"m")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map(drop)
    .map_err(Error::sys("sending the pty master"))
}

/// Receives one descriptor sent by [`send_fd`]; `None` when the peer closed first.
pub(crate) fn recv_fd(sock: impl AsFd) -> Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = loop {
        match recvmsg::<()>(
            sock.as_fd().as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r.map_err(Error::sys("receiving the pty master"))?,
        }
    };
    let mut got = None;
    for c in msg
        .cmsgs()
        .map_err(Error::sys("receiving the pty master"))?
    {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                let fd = sys::own_fd(fd);
                got.get_or_insert(fd);
            }
        }
    }
    Ok(got)
}
