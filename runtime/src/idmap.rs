//! The caller's own namespaces for rootless use: a user namespace with an id mapping, and a
//! mount namespace to mount the union in.
//!
//! An unprivileged process may map only its own uid and gid into a namespace it creates
//! (and must deny setgroups first). More ids (a `/etc/subuid` range) need the setuid helpers
//! `newuidmap`/`newgidmap`, run from outside the namespace: here from a forked helper that
//! waits until the parent has unshared.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{getegid, geteuid, ForkResult};

use crate::{Error, Result};

/// One contiguous range: container ids `inside..inside+count` are host ids
/// `outside..outside+count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
        let single = IdMapping::single();
        if helper("newuidmap").is_none() || helper("newgidmap").is_none() {
            return single;
        }
        let uid = geteuid();
        let name = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_default();
        let keys = [name.as_str(), &uid.to_string()].map(str::to_string);
        let (Some(sub_u), Some(sub_g)) = (
            subordinate(Path::new("/etc/subuid"), &keys),
            subordinate(Path::new("/etc/subgid"), &keys),
        ) else {
            return single;
        };
        IdMapping {
            uids: vec![single.uids[0], sub_u],
            gids: vec![single.gids[0], sub_g],
            helpers: true,
        }
    }

    /// Only the caller's own uid and gid, as root of the namespace.
    pub fn single() -> IdMapping {
        let range = |outside| IdRange {
            inside: 0,
            outside,
            count: 1,
        };
        IdMapping {
            uids: vec![range(geteuid().as_raw())],
            gids: vec![range(getegid().as_raw())],
            helpers: false,
        }
    }
}

/// The first range `/etc/subuid`-style file `path` gives one of `keys` (user name or
/// number), mapped from id 1.
fn subordinate(path: &Path, keys: &[String]) -> Option<IdRange> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let mut it = line.trim().split(':');
        let (who, start, count) = (it.next()?, it.next()?, it.next()?);
        if who.is_empty() || !keys.iter().any(|k| k == who) {
            return None;
        }
        Some(IdRange {
            inside: 1,
            outside: start.parse().ok()?,
            count: count.parse().ok().filter(|c| *c > 0)?,
        })
    })
}

/// Where a setuid map helper is installed.
fn helper(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn map_text(ranges: &[IdRange]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.inside, r.outside, r.count))
        .collect()
}

/// Makes the calling process, which must be single-threaded (a kernel rule for
/// CLONE_NEWUSER), uid and gid 0 of a new user namespace with `mapping`. Afterwards it has
/// every capability inside it, and none over the host.
pub fn enter_user_namespace(mapping: &IdMapping) -> Result<()> {
    if !mapping.helpers {
        unshare(CloneFlags::CLONE_NEWUSER).map_err(unshare_error)?;
        write("/proc/self/setgroups", "deny")?;
        write("/proc/self/uid_map", &map_text(&mapping.uids))?;
        return write("/proc/self/gid_map", &map_text(&mapping.gids));
    }
    // The owner of a namespace may not write a multi-range map: newuidmap/newgidmap
    // (setuid, checked against /etc/subuid) must, from outside, once the namespace exists.
    let (mut go_r, go_w) = pipe()?;
    let me = nix::unistd::getpid();
    let child = match crate::sys::fork().map_err(Error::sys("fork of the id map helper"))? {
        ForkResult::Child => {
            drop(go_w);
            let mut b = [0u8; 1];
            let code = match go_r.read(&mut b) {
                Ok(1) => match run_map_helpers(me.as_raw(), &mapping.uids, &mapping.gids) {
                    Ok(()) => 0,
                    Err(e) => {
                        let _ = writeln!(std::io::stderr(), "strata: {e}");
                        1
                    }
                },
                _ => 2,
            };
            std::process::exit(code)
        }
        ForkResult::Parent { child } => child,
    };
    drop(go_r);
    let unshared = unshare(CloneFlags::CLONE_NEWUSER).map_err(unshare_error);
    let mut go_w = go_w;
    if unshared.is_ok() {
        let _ = go_w.write_all(b"g");
    }
    drop(go_w);
    let status = waitpid(child, None).map_err(Error::sys("waiting for newuidmap"))?;
    unshared?;
    match status {
        WaitStatus::Exited(_, 0) => Ok(()),
        _ => Err(Error::Other(format!(
            "newuidmap/newgidmap could not map {} and {} ({status:?})",
            map_text(&mapping.uids).trim().replace('\n', ", "),
            map_text(&mapping.gids).trim().replace('\n', ", ")
        ))),
    }
}

fn unshare_error(e: nix::errno::Errno) -> Error {
    let what = match e {
        nix::errno::Errno::EINVAL => "unshare(CLONE_NEWUSER) (the caller must be single-threaded)",
        _ => "unshare(CLONE_NEWUSER)",
    };
    Error::sys(what)(e)
}

/// Writes the maps of the user namespace process `pid` just made, from outside it:
/// directly when this process is root of its own namespace (it holds CAP_SETUID and
/// CAP_SETGID over the new one) or maps only its own ids (setgroups denied first, a kernel
/// rule), else through the setuid `newuidmap`/`newgidmap`, which check /etc/subuid.
pub fn write_maps(pid: i32, uids: &[IdRange], gids: &[IdRange]) -> Result<()> {
    let own = |r: &[IdRange], id: u32| r.len() == 1 && r[0].count == 1 && r[0].outside == id;
    let root = geteuid().is_root();
    let own_ids = own(uids, geteuid().as_raw()) && own(gids, getegid().as_raw());
    if !(root || own_ids) {
        return run_map_helpers(pid, uids, gids);
    }
    let dir = format!("/proc/{pid}");
    if !root {
        write(&format!("{dir}/setgroups"), "deny")?;
    }
    write(&format!("{dir}/uid_map"), &map_text(uids))?;
    write(&format!("{dir}/gid_map"), &map_text(gids))
}

fn run_map_helpers(pid: i32, uids: &[IdRange], gids: &[IdRange]) -> Result<()> {
    for (tool, ranges) in [("newuidmap", uids), ("newgidmap", gids)] {
        let path = helper(tool).ok_or_else(|| Error::Other(format!("{tool} not found")))?;
        let mut cmd = Command::new(&path);
        cmd.arg(pid.to_string());
        for r in ranges.iter() {
            cmd.args([r.inside, r.outside, r.count].map(|n| n.to_string()));
        }
        let out = cmd.output().map_err(Error::io(&path))?;
        if !out.status.success() {
            return Err(Error::Other(format!(
                "{tool} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    Ok(())
}

fn pipe() -> Result<(std::fs::File, std::fs::File)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(Error::sys("pipe"))?;
    Ok((r.into(), w.into()))
}

fn write(path: &str, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(Error::io(path))
}

/// A new mount namespace for the caller with every mount made a recursive slave: host
/// mounts still appear, mounts made here (the union) never reach the host and vanish with
/// the namespace's last process.
pub fn enter_mount_namespace() -> Result<()> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(Error::sys("unshare(CLONE_NEWNS)"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(Error::sys("making / a recursive slave"))
}

/// The ranges of /proc/self/uid_map (or gid_map).
fn own_map(file: &str) -> Vec<IdRange> {
    std::fs::read_to_string(format!("/proc/self/{file}"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace().map(|n| n.parse::<u32>());
            Some(IdRange {
                inside: it.next()?.ok()?,
                outside: it.next()?.ok()?,
                count: it.next()?.ok()?,
            })
        })
        .collect()
}

/// Whether the caller is in a user namespace other than the initial one (a mapping that is
/// not the identity over every id).
pub fn in_user_namespace() -> bool {
    own_map("uid_map")
        != [IdRange {
            inside: 0,
            outside: 0,
            count: u32::MAX,
        }]
}

/// Whether gid `gid` of the caller's user namespace is mapped.
pub(crate) fn gid_mapped(gid: u32) -> bool {
    own_map("gid_map")
        .iter()
        .any(|r| gid >= r.inside && gid - r.inside < r.count)
}

/// Whether uid `uid` of the caller's user namespace is mapped.
pub(crate) fn uid_mapped(uid: u32) -> bool {
    own_map("uid_map")
        .iter()
        .any(|r| uid >= r.inside && uid - r.inside < r.count)
}

/// The caller's uid in the parent user namespace (the host's, one level up), through
/// /proc/self/uid_map.
pub fn host_uid() -> u32 {
    let uid = geteuid().as_raw();
    own_map("uid_map")
        .iter()
        .find(|r| uid >= r.inside && uid - r.inside < r.count)
        .map(|r| r.outside + (uid - r.inside))
        .unwrap_or(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_by_name_or_number() {
        let dir = std::env::temp_dir().join(format!("strata-subuid-{}", std::process::id()));
        std::fs::write(&dir, "# x\nalice:100000:65536\n1000:200000:10\nbob:5:0\n").unwrap();
        let r = |keys: &[&str]| {
            subordinate(
                &dir,
                &keys.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            r(&["alice", "999"]),
            Some(IdRange {
                inside: 1,
                outside: 100000,
                count: 65536
            })
        );
        assert_eq!(r(&["carol", "1000"]).map(|r| r.outside), Some(200000));
        assert_eq!(r(&["bob", "7"]), None, "an empty range is no range");
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(map_text(&IdMapping::single().uids).lines().count(), 1);
    }
}
