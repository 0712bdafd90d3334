//! `--user name[:group]` to numeric ids, resolved in the container's /etc/passwd and
//! /etc/group as docker does: names or numbers; a uid absent from passwd is taken as is
//! with gid 0; the user's supplementary groups come from /etc/group.

use std::path::Path;

use crate::spec::UserSpec;
use crate::{Error, Result};

/// The `:`-separated records of `file` (e.g. `etc/passwd`) inside `rootfs`, resolved without
/// leaving it; empty when missing.
fn records(rootfs: &Path, file: &str) -> Vec<Vec<String>> {
    let path = crate::setup::resolve_in(rootfs, file);
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect()
}

/// Resolves `user` (`""`, `name`, `uid`, `name:group`, `uid:gid`) against the files under
/// `rootfs` (the mounted root, read from the caller's side). Empty is root.
pub fn resolve(rootfs: &Path, user: &str) -> Result<UserSpec> {
    let (user, group) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let passwd = records(rootfs, "etc/passwd");
    let entry = passwd
        .iter()
        .filter(|f| f.len() >= 4)
        .find(|f| f[0] == user)
        .or_else(|| {
            passwd
                .iter()
                .filter(|f| f.len() >= 4)
                .find(|f| f[2] == user)
        });
    let (uid, mut gid, name) = match (entry, user.parse::<u32>()) {
        (Some(f), _) => match (f[2].parse(), f[3].parse()) {
            (Ok(uid), Ok(gid)) => (uid, gid, Some(f[0].clone())),
            _ => return Err(Error::UnknownUser(user.to_string())),
        },
        (None, Ok(uid)) => (uid, 0, None),
        (None, Err(_)) => return Err(Error::UnknownUser(user.to_string())),
    };
    let groups = records(rootfs, "etc/group");
    if let Some(g) = group.filter(|g| !g.is_empty()) {
        let by_name = groups.iter().find(|f| f.len() >= 3 && f[0] == g);
        gid = match (by_name, g.parse::<u32>()) {
            (Some(f), _) => f[2]
                .parse()
                .map_err(|_| Error::UnknownGroup(g.to_string()))?,
            (None, Ok(n)) => n,
            (None, Err(_)) => return Err(Error::UnknownGroup(g.to_string())),
        };
    }
    let mut additional_gids = Vec::new();
    if let (Some(name), None) = (&name, group) {
        for f in groups.iter().filter(|f| f.len() >= 4) {
            if f[3].split(',').any(|m| m.trim() == name) {
                if let Ok(g) = f[2].parse::<u32>() {
                    if g != gid && !additional_gids.contains(&g) {
                        additional_gids.push(g);
                    }
                }
            }
        }
    }
    Ok(UserSpec {
        uid,
        gid,
        additional_gids,
    })
}

/// The home directory of `uid` in `rootfs`'s /etc/passwd, `/` when absent.
pub fn home(rootfs: &Path, uid: u32) -> String {
    records(rootfs, "etc/passwd")
        .into_iter()
        .find(|f| f.len() >= 6 && f[2].parse() == Ok(uid))
        .map(|f| f[5].clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_groups() {
        let root = std::env::temp_dir().join(format!("strata-user-{}", std::process::id()));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            root.join("etc/group"),
            "root:x:0:\nalice:x:1000:\nwheel:x:10:root,alice\naudio:x:29:alice\n",
        )
        .unwrap();
        let r = |u: &str| resolve(&root, u);
        assert_eq!(
            r("").unwrap(),
            UserSpec {
                uid: 0,
                gid: 0,
                additional_gids: vec![10]
            }
        );
        assert_eq!(
            r("alice").unwrap(),
            UserSpec {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![10, 29]
            }
        );
        assert_eq!(r("1000:audio").unwrap().gid, 29);
        assert_eq!(r("1000:audio").unwrap().additional_gids, Vec::<u32>::new());
        assert_eq!(
            r("4242").unwrap(),
            UserSpec {
                uid: 4242,
                gid: 0,
                additional_gids: vec![]
            }
        );
        assert_eq!(r("4242:77").unwrap().gid, 77);
        assert!(matches!(r("bob"), Err(Error::UnknownUser(u)) if u == "bob"));
        assert!(matches!(r("alice:nogroup"), Err(Error::UnknownGroup(g)) if g == "nogroup"));
        assert_eq!(home(&root, 1000), "/home/alice");
        assert_eq!(home(&root, 5), "/");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
