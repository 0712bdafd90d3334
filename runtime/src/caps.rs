//! Capabilities: docker's default set, `--cap-add`/`--cap-drop`, and applying a set to the
//! calling process.

use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};

use crate::{Error, Result};

/// docker's default capabilities (mask 0xa80425fb).
pub const DOCKER_DEFAULT: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

fn parse(name: &str) -> Result<Capability> {
    let upper = name.to_ascii_uppercase();
    let full = match upper.starts_with("CAP_") {
        true => upper,
        false => format!("CAP_{upper}"),
    };
    Capability::from_str(&full).map_err(|_| Error::UnknownCapability(name.to_string()))
}

/// The set a container gets: all when privileged, else docker's default with `add` and
/// `drop` applied (`ALL` in either means every capability).
pub fn resolve(privileged: bool, add: &[String], drop: &[String]) -> Result<CapsHashSet> {
    if privileged {
        return Ok(caps::all());
    }
    let mut set = CapsHashSet::new();
    if !drop.iter().any(|d| d.eq_ignore_ascii_case("ALL")) {
        for name in DOCKER_DEFAULT {
            set.insert(parse(name)?);
        }
        for d in drop {
            set.remove(&parse(d)?);
        }
    }
    for a in add {
        if a.eq_ignore_ascii_case("ALL") {
            set.extend(caps::all());
        } else {
            set.insert(parse(a)?);
        }
    }
    Ok(set)
}

fn caps_error(step: &'static str) -> impl Fn(caps::errors::CapsError) -> Error {
    move |e| Error::Capabilities {
        step: step.into(),
        reason: e.to_string(),
    }
}

/// Removes from the bounding set every capability not in `set` (needs CAP_SETPCAP: call
/// before changing uid). Nothing run afterwards, setuid binaries included, can gain them.
pub fn limit_bounding(set: &CapsHashSet) -> Result<()> {
    for cap in caps::all() {
        if !set.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap).map_err(caps_error("bounding set"))?;
        }
    }
    Ok(())
}

/// After setuid with `PR_SET_KEEPCAPS`: effective and permitted become `set` (as far as the
/// process still has them) and inheritable empty (docker's, since CVE-2022-24769). A
/// non-root user then loses them at execve, as under docker, unless a file grants them;
/// root gets its bounding set back at execve.
pub fn apply(set: &CapsHashSet) -> Result<()> {
    let have = caps::read(None, CapSet::Permitted).map_err(caps_error("reading"))?;
    let want: CapsHashSet = have.intersection(set).copied().collect();
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new())
        .map_err(caps_error("inheritable set"))?;
    caps::set(None, CapSet::Effective, &want).map_err(caps_error("effective set"))?;
    caps::set(None, CapSet::Permitted, &want).map_err(caps_error("permitted set"))
}

/// The mask of `set` as /proc/PID/status prints it (`CapEff: 00000000a80425fb`).
pub fn mask(set: &CapsHashSet) -> u64 {
    set.iter().map(|c| 1u64 << c.index()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_default_mask() {
        let set = resolve(false, &[], &[]).unwrap();
        assert_eq!(mask(&set), 0xa80425fb);
        let set = resolve(false, &["sys_admin".into()], &["NET_RAW".into()]).unwrap();
        assert!(set.contains(&Capability::CAP_SYS_ADMIN));
        assert!(!set.contains(&Capability::CAP_NET_RAW));
        assert!(resolve(false, &[], &["all".into()]).unwrap().is_empty());
        let e = resolve(false, &["BOGUS".into()], &[]).unwrap_err();
        assert_eq!(e.to_string(), "unknown capability \"BOGUS\"");
    }
}
