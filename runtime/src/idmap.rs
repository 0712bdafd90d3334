//! The caller's own namespaces for rootless use: a user namespace with an id mapping, and a
//! mount namespace to mount the union in.
//!
//! An unprivileged process may map only its own uid and gid into a namespace it creates
//! (and must deny setgroups first). More ids (a `/etc/subuid` range) need the setuid helpers
//! `newuidmap`/`newgidmap`, run from outside the namespace: here from a forked helper that
//! waits until the parent has unshared.

use crate::Result;

/// One contiguous range: container ids `inside..inside+count` are host ids
/// `outside..outside+count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// The uid and gid maps of a new user namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdMapping {
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
    /// Written by `newuidmap`/`newgidmap` (more than one range); otherwise by the process
    /// itself (a single range of its own ids, setgroups denied).
    pub helpers: bool,
}

impl IdMapping {
    /// The mapping for the calling user: `0 → own uid/gid`, plus `1.. → the subordinate
    /// range` when `/etc/subuid` and `/etc/subgid` list one for the user (by name or number)
    /// and `newuidmap`/`newgidmap` are installed; else the single id.
    pub fn detect() -> IdMapping {
        todo!()
    }

    /// Only the caller's own uid and gid, as root of the namespace.
    pub fn single() -> IdMapping {
        todo!()
    }
}

/// Makes the calling process, which must be single-threaded (a kernel rule for
/// CLONE_NEWUSER), uid and gid 0 of a new user namespace with `mapping`. Afterwards it has
/// every capability inside it, and none over the host.
pub fn enter_user_namespace(mapping: &IdMapping) -> Result<()> {
    let _ = mapping;
    todo!()
}

/// A new mount namespace for the caller with every mount made a recursive slave: host
/// mounts still appear, mounts made here (the union) never reach the host and vanish with
/// the namespace's last process.
pub fn enter_mount_namespace() -> Result<()> {
    todo!()
}

/// Whether the caller is in a user namespace other than the initial one (a mapping that is
/// not the identity over every id).
pub fn in_user_namespace() -> bool {
    todo!()
}

/// The caller's uid in the initial user namespace (through /proc/self/uid_map).
pub fn host_uid() -> u32 {
    todo!()
}
