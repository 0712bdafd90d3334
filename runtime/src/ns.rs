//! Entering namespaces: the monitor's own (user, mount, pid) and a running container's
//! (for `exec`).

use std::fs::File;
use std::os::fd::AsFd;

use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::{getegid, geteuid};

use crate::{Error, Result};

/// Makes the calling (single-threaded) process root of a new user namespace mapping only
/// its own uid and gid: what an unprivileged user may do without helpers.
pub fn enter_user_namespace() -> Result<()> {
    let (uid, gid) = (geteuid(), getegid());
    unshare(CloneFlags::CLONE_NEWUSER).map_err(Error::sys("unshare(CLONE_NEWUSER)"))?;
    write("/proc/self/setgroups", "deny")?;
    write("/proc/self/uid_map", &format!("0 {uid} 1"))?;
    write("/proc/self/gid_map", &format!("0 {gid} 1"))?;
    Ok(())
}

fn write(path: &str, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(Error::io(path))
}

/// A new mount namespace for the caller, where mounts do not propagate back to the host.
pub fn enter_mount_namespace() -> Result<()> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(Error::sys("unshare(CLONE_NEWNS)"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(Error::sys("making / a slave mount"))
}

/// The next child of the caller is pid 1 of a new pid namespace.
pub fn enter_pid_namespace() -> Result<()> {
    unshare(CloneFlags::CLONE_NEWPID).map_err(Error::sys("unshare(CLONE_NEWPID)"))
}

/// Joins every namespace of process `pid` (a container's pid 1), user first when it is
/// not ours. Children spawned afterwards are in its pid namespace; the caller's root and
/// working directory become the container's root.
pub fn join(pid: i32) -> Result<()> {
    let open = |name: &str| {
        let path = format!("/proc/{pid}/ns/{name}");
        File::open(&path).map_err(Error::io(path))
    };
    let same = |name: &str| -> bool {
        let a = std::fs::read_link(format!("/proc/self/ns/{name}"));
        let b = std::fs::read_link(format!("/proc/{pid}/ns/{name}"));
        matches!((a, b), (Ok(a), Ok(b)) if a == b)
    };
    // Open all first: once in the mount namespace, /proc is the container's.
    let mut files = Vec::new();
    for (name, flag) in [
        ("user", CloneFlags::CLONE_NEWUSER),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        if !same(name) {
            files.push((name, flag, open(name)?));
        }
    }
    for (name, flag, f) in files {
        setns(f.as_fd(), flag).map_err(Error::sys(format!("joining the {name} namespace")))?;
    }
    Ok(())
}
