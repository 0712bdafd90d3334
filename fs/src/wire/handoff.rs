//! Handing a connection to a server process: the supervisor (which mounted, and keeps the
//! `/dev/fuse` descriptor so the connection outlives any server) sends the device and the
//! journal over a Unix socket (SCM_RIGHTS), with one byte saying whether the server takes
//! over from one that died. Passing descriptors this way, rather than by inheritance,
//! keeps them close-on-exec everywhere: no other child of the supervisor (the container's
//! processes) can inherit the device.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// What a server receives.
pub struct Handoff {
    pub device: OwnedFd,
    pub journal: OwnedFd,
    /// The connection's INIT was answered by an earlier server.
    pub take_over: bool,
}

/// Sends the device and the journal to the server at the other end of `socket`.
pub fn send(
    socket: impl AsFd,
    device: impl AsFd,
    journal: impl AsFd,
    take_over: bool,
) -> std::io::Result<()> {
    let fds = [device.as_fd(), journal.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    let byte = [u8::from(take_over)];
    sendmsg(
        socket,
        &[IoSlice::new(&byte)],
        &mut control,
        SendFlags::empty(),
    )?;
    Ok(())
}

/// Receives what [`send`] sent.
pub fn receive(socket: impl AsFd) -> std::io::Result<Handoff> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8];
    let got = recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = msg {
            fds.extend(received);
        }
    }
    if got.bytes != 1 || fds.len() != 2 {
        return Err(std::io::Error::other(
            "the supervisor sent no FUSE device and journal",
        ));
    }
    let journal = fds.pop().expect("two");
    let device = fds.pop().expect("two");
    Ok(Handoff {
        device,
        journal,
        take_over: byte[0] == 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_arrive_with_the_flag() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let dev = tempfile::tempfile().unwrap();
        let journal = tempfile::tempfile().unwrap();
        send(&a, &dev, &journal, true).unwrap();
        let got = receive(&b).unwrap();
        assert!(got.take_over);
        use std::os::unix::fs::MetadataExt;
        let ino = |f: &std::fs::File| f.metadata().unwrap().ino();
        assert_eq!(ino(&std::fs::File::from(got.device)), ino(&dev));
        assert_eq!(ino(&std::fs::File::from(got.journal)), ino(&journal));
    }
}
