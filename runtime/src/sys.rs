//! Every `unsafe` call of the crate, one small function each with its `// SAFETY:`,
//! converted at once to a typed result.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigHandler, Signal};
use nix::unistd::{ForkResult, Pid};

/// fork(2).
#[allow(unsafe_code)]
pub(crate) fn fork() -> nix::Result<ForkResult> {
    // SAFETY: the child only runs the runtime's own setup code, which takes no lock another
    // thread of the caller could hold at the fork: glibc resets malloc's locks in the child,
    // and the setup code prints nothing and reads no environment variable.
    unsafe { nix::unistd::fork() }
}

/// clone(2) with a null stack: like fork, with namespace and CLONE_PARENT flags. Only for a
/// single-threaded caller (the runtime's setup child).
#[allow(unsafe_code)]
pub(crate) fn clone_fork(flags: CloneFlags) -> nix::Result<ForkResult> {
    let flags = flags.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: with a null stack pointer the child continues on a copy-on-write copy of the
    // caller's stack, exactly as fork; the caller is single-threaded, so no lock can be held
    // by a thread that does not exist in the child.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    match ret {
        -1 => Err(Errno::last()),
        0 => Ok(ForkResult::Child),
        pid => Ok(ForkResult::Parent {
            child: Pid::from_raw(pid as i32),
        }),
    }
}

/// Takes ownership of a descriptor this process just received (SCM_RIGHTS) or created.
#[allow(unsafe_code)]
pub(crate) fn own_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: the descriptor is fresh (returned by the kernel to this call's caller) and
    // nothing else in the process refers to it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// TIOCSCTTY: makes the terminal `fd` the controlling terminal of the calling session
/// leader.
#[allow(unsafe_code)]
pub(crate) fn set_controlling_terminal(fd: impl AsFd) -> nix::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal); no memory is passed.
    let r = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCSCTTY, 0) };
    Errno::result(r).map(drop)
}

/// TIOCGWINSZ: (rows, columns). Plain numbers, so this file needs nothing of pty.rs.
#[allow(unsafe_code)]
pub(crate) fn get_window_size(fd: impl AsFd) -> nix::Result<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` to the pointer, which points to one.
    let r = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    Errno::result(r).map(|_| (ws.ws_row, ws.ws_col))
}

/// TIOCSWINSZ.
#[allow(unsafe_code)]
pub(crate) fn set_window_size(fd: impl AsFd, rows: u16, cols: u16) -> nix::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `struct winsize` from the pointer, which points to one.
    let r = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    Errno::result(r).map(drop)
}

/// Sets IFF_UP on the network interface `lo` of the caller's network namespace.
#[allow(unsafe_code)]
pub(crate) fn loopback_up() -> nix::Result<()> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: `ifreq` is plain data, valid when zeroed.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of one `ifreq`, which `req`
    // is; the socket is open.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    Errno::result(r)?;
    // SAFETY: the union's flags member is the one SIOCGIFFLAGS just filled.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads one `ifreq`, which `req` is.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
    Errno::result(r).map(drop)
}

/// Puts every catchable signal back to its default disposition: a forked child must not
/// run the caller's handlers, and ignored signals (a Rust caller ignores SIGPIPE) survive
/// execve.
#[allow(unsafe_code)]
pub(crate) fn default_signal_handlers() -> nix::Result<()> {
    for sig in Signal::iterator() {
        if sig == Signal::SIGKILL || sig == Signal::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL installs no handler, so no Rust code runs in signal context.
        unsafe { nix::sys::signal::signal(sig, SigHandler::SigDfl) }?;
    }
    Ok(())
}

/// [`default_signal_handlers`], and every signal unblocked: the state a process should
/// start in.
pub(crate) fn reset_signals() -> nix::Result<()> {
    default_signal_handlers()?;
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    )
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// mount_setattr(2) with AT_RECURSIVE and MOUNT_ATTR_RDONLY: `path` and every mount below
/// it read-only (kernel 5.12+; ENOSYS before).
#[allow(unsafe_code)]
pub(crate) fn readonly_recursive(path: &std::path::Path) -> nix::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the path is a NUL-terminated string and `attr` a `struct mount_attr` whose
    // size is passed; the kernel only reads both.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c.as_ptr(),
            AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    Errno::result(r).map(drop)
}

/// _exit(2): ends a forked child without running the caller's atexit handlers or flushing
/// its stdio buffers (copies of the parent's, which the parent flushes itself).
#[allow(unsafe_code)]
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes no pointers and never returns.
    unsafe { libc::_exit(code) }
}
