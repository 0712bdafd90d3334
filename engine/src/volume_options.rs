//! A volume's `-o` options (docker's `local` driver: `type`, `device`, `o`) read into the
//! mount they ask for; checked when the volume is created, mounted by `volume_mount`.

use std::collections::BTreeMap;

use nix::mount::MsFlags;

use crate::{Error, Result};

/// How a volume's options mount it (docker's local driver: `mount -t TYPE -o O DEVICE`).
#[derive(Clone, Debug, PartialEq)]
pub struct LocalMount {
    /// `type`: `tmpfs`, `none` (with `o=bind`), or a file system on a device.
    pub fstype: String,
    pub device: String,
    pub flags: MsFlags,
    /// The options `o` has besides flags, for the file system (`size=64m,uid=1000`).
    pub data: String,
    /// `o=bind` or `o=rbind`.
    pub bind: bool,
}

/// The mount flags `o=` may name, as moby's mount package maps them (`true`: set it).
const FLAGS: [(&str, bool, MsFlags); 20] = [
    ("defaults", false, MsFlags::empty()),
    ("ro", true, MsFlags::MS_RDONLY),
    ("rw", false, MsFlags::MS_RDONLY),
    ("suid", false, MsFlags::MS_NOSUID),
    ("nosuid", true, MsFlags::MS_NOSUID),
    ("dev", false, MsFlags::MS_NODEV),
    ("nodev", true, MsFlags::MS_NODEV),
    ("exec", false, MsFlags::MS_NOEXEC),
    ("noexec", true, MsFlags::MS_NOEXEC),
    ("sync", true, MsFlags::MS_SYNCHRONOUS),
    ("async", false, MsFlags::MS_SYNCHRONOUS),
    ("dirsync", true, MsFlags::MS_DIRSYNC),
    ("atime", false, MsFlags::MS_NOATIME),
    ("noatime", true, MsFlags::MS_NOATIME),
    ("diratime", false, MsFlags::MS_NODIRATIME),
    ("nodiratime", true, MsFlags::MS_NODIRATIME),
    ("relatime", true, MsFlags::MS_RELATIME),
    ("norelatime", false, MsFlags::MS_RELATIME),
    ("strictatime", true, MsFlags::MS_STRICTATIME),
    ("nostrictatime", false, MsFlags::MS_STRICTATIME),
];

impl LocalMount {
    /// The mount a volume's options ask for; None without options (a plain directory).
    pub fn of(name: &str, options: &BTreeMap<String, String>) -> Result<Option<LocalMount>> {
        if options.is_empty() {
            return Ok(None);
        }
        let bad = |message: String| Error::VolumeOption {
            name: name.to_string(),
            message,
        };
        if options.contains_key("size") {
            return Err(bad(
                "option \"size\" needs a quota-capable backing file system, which strata's \
                 local driver does not use (a tmpfs takes o=size=…)"
                    .into(),
            ));
        }
        let fstype = options.get("type").cloned().unwrap_or_default();
        if fstype.is_empty() {
            return Err(bad("missing required option: \"type\"".into()));
        }
        let device = options.get("device").cloned().unwrap_or_default();
        let mut flags = MsFlags::empty();
        let mut data = Vec::new();
        let mut bind = false;
        for word in options
            .get("o")
            .map(String::as_str)
            .unwrap_or("")
            .split(',')
        {
            if word.is_empty() {
                continue;
            }
            if let Some((_, set, flag)) = FLAGS.iter().find(|(n, _, _)| *n == word) {
                flags.set(*flag, *set);
                continue;
            }
            match word {
                "bind" => bind = true,
                "rbind" => {
                    bind = true;
                    flags |= MsFlags::MS_REC;
                }
                _ => data.push(word),
            }
        }
        if bind {
            if !data.is_empty() {
                return Err(bad(format!(
                    "option \"o={}\": a bind mount takes only flags, not {:?}",
                    options["o"],
                    data.join(",")
                )));
            }
            if !device.starts_with('/') {
                return Err(bad(format!(
                    "option \"device={device}\": a bind mount needs an absolute host path"
                )));
            }
        } else if fstype == "none" {
            return Err(bad("option \"type=none\" needs \"o=bind\"".into()));
        } else if device.is_empty() && fstype != "tmpfs" {
            return Err(bad(format!(
                "missing required option: \"device\" (for type={fstype})"
            )));
        }
        Ok(Some(LocalMount {
            fstype,
            device,
            flags,
            data: data.join(","),
            bind,
        }))
    }

    /// Whether an unprivileged user's namespace may make this mount: a tmpfs or a bind;
    /// a file system on a device needs root.
    pub fn check_rootless(&self, name: &str) -> Result<()> {
        if self.bind || self.fstype == "tmpfs" {
            return Ok(());
        }
        Err(Error::VolumeOption {
            name: name.to_string(),
            message: format!(
                "option \"type={}\" mounts a device, which only root may do (a rootless \
                 container takes type=tmpfs and type=none with o=bind)",
                self.fstype
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_parse_as_docker_local_driver_takes_them() {
        assert_eq!(LocalMount::of("v", &BTreeMap::new()).unwrap(), None);
        let t = LocalMount::of(
            "v",
            &opts(&[
                ("type", "tmpfs"),
                ("device", "tmpfs"),
                ("o", "size=64m,uid=1000,noexec,ro"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(t.data, "size=64m,uid=1000");
        assert_eq!(t.flags, MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY);
        assert!(!t.bind);
        t.check_rootless("v").unwrap();
        let b = LocalMount::of(
            "v",
            &opts(&[("type", "none"), ("o", "rbind,ro"), ("device", "/srv")]),
        )
        .unwrap()
        .unwrap();
        assert!(b.bind && b.flags.contains(MsFlags::MS_REC | MsFlags::MS_RDONLY));
        b.check_rootless("v").unwrap();
        let e = LocalMount::of("v", &opts(&[("type", "ext4"), ("device", "/dev/sdz")]))
            .unwrap()
            .unwrap();
        let err = e.check_rootless("v").unwrap_err().to_string();
        assert!(err.contains("type=ext4"), "{err}");
        for (bad, names) in [
            (opts(&[("device", "/x")]), "\"type\""),
            (opts(&[("type", "none"), ("device", "/x")]), "type=none"),
            (opts(&[("type", "none"), ("o", "bind")]), "device="),
            (
                opts(&[("type", "none"), ("o", "bind,size=1"), ("device", "/x")]),
                "o=bind,size=1",
            ),
            (opts(&[("type", "ext4")]), "\"device\""),
            (opts(&[("type", "tmpfs"), ("size", "1g")]), "\"size\""),
        ] {
            let err = LocalMount::of("v", &bad).unwrap_err().to_string();
            assert!(
                err.starts_with("volume v: ") && err.contains(names),
                "{err}"
            );
        }
    }
}
