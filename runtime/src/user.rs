//! `--user name[:group]` to numeric ids, resolved in the container's /etc/passwd and
//! /etc/group as docker does: names or numbers; a uid absent from passwd is taken as is
//! with gid 0; the user's supplementary groups come from /etc/group.

use std::path::Path;

use crate::spec::UserSpec;
use crate::Result;

/// Resolves `user` (`""`, `name`, `uid`, `name:group`, `uid:gid`) against the files under
/// `rootfs` (the mounted root, read from the caller's side). Empty is root.
pub fn resolve(rootfs: &Path, user: &str) -> Result<UserSpec> {
    let _ = (rootfs, user);
    todo!()
}

/// The home directory of `uid` in `rootfs`'s /etc/passwd, `/` when absent.
pub fn home(rootfs: &Path, uid: u32) -> String {
    let _ = (rootfs, uid);
    todo!()
}
