//! Mount options, in fuse-overlayfs's syntax, so that strata-fs can stand in as podman's
//! `mount_program` and serve as a mount(8) helper (`mount -t fuse.strata-fs`).

use std::path::PathBuf;
use std::time::Duration;

use crate::ids::{parse_ranges, IdMapper};

/// A mount option that could not be taken; the message names the option.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionsError {
    #[error("unknown mount option {0:?}")]
    Unknown(String),
    #[error("mount option {0:?} needs a value ({0}=...)")]
    MissingValue(String),
    #[error("mount option {option:?}: bad value: {reason}")]
    BadValue { option: String, reason: String },
    #[error("no lowerdir= or layers= given: at least one lower layer is needed")]
    NoLowerdir,
    #[error("upperdir= and workdir= go together: {0} is missing")]
    UpperWithoutWork(&'static str),
}

/// Everything the mount options say.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Lower directories, top first (the leftmost of `lowerdir=`).
    pub lowerdirs: Vec<PathBuf>,
    /// Layer index directories (as `strata pull` builds them), top first, stacked below
    /// the lower directories.
    pub layers: Vec<PathBuf>,
    pub upperdir: Option<PathBuf>,
    pub workdir: Option<PathBuf>,
    pub ids: IdMapper,
    pub allow_other: bool,
    pub allow_root: bool,
    /// fsync of copied-up files and `fsync(2)` calls reach the disk (`fsync=0` and
    /// `volatile` turn it off).
    pub fsync: bool,
    /// `ro`, or no upper directory.
    pub read_only: bool,
    /// Entry and attribute cache time given to the kernel.
    pub timeout: Duration,
    pub fsname: Option<String>,
    pub dev: Option<bool>,
    pub suid: Option<bool>,
    pub exec: Option<bool>,
    pub noatime: bool,
    /// FUSE passthrough of file I/O where the kernel allows it.
    pub passthrough: bool,
    pub threads: Option<usize>,
    /// Which request loop serves the mount (`server=fuser|strata`); unset: fuser, unless
    /// `STRATA_FS_SERVER` names one.
    pub server: Option<ServerKind>,
    /// How requests reach strata's own loop (`transport=auto|uring|dev`); unset: what
    /// `STRATA_FS_TRANSPORT` names, else auto.
    pub transport: Option<TransportKind>,
}

/// How requests travel between the kernel and strata's own loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    /// io_uring where the kernel and the caller can have it, else `/dev/fuse`.
    Auto,
    /// FUSE over io_uring (per-CPU queues); refused when the kernel cannot.
    Uring,
    /// `read`/`writev` of `/dev/fuse`.
    Dev,
}

impl TransportKind {
    /// `auto`, `uring` or `dev`.
    pub fn parse(v: &str) -> Option<TransportKind> {
        match v {
            "auto" => Some(TransportKind::Auto),
            "uring" | "io_uring" => Some(TransportKind::Uring),
            "dev" => Some(TransportKind::Dev),
            _ => None,
        }
    }
}

/// The request loop serving a mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    /// fuser's session (`fuse.rs`).
    Fuser,
    /// strata's own loop (`wire/`), which a restarted server can take over.
    Strata,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            lowerdirs: Vec::new(),
            layers: Vec::new(),
            upperdir: None,
            workdir: None,
            ids: IdMapper::default(),
            allow_other: false,
            allow_root: false,
            fsync: true,
            read_only: false,
            timeout: Duration::from_secs(3600),
            fsname: None,
            dev: None,
            suid: None,
            exec: None,
            noatime: false,
            passthrough: true,
            threads: None,
            server: None,
            transport: None,
        }
    }
}

fn bad(option: &str, reason: impl Into<String>) -> OptionsError {
    OptionsError::BadValue {
        option: option.to_string(),
        reason: reason.into(),
    }
}

impl MountOptions {
    /// Applies one `-o` argument (comma-separated options; empty items are ignored, as
    /// containers/storage passes `…,,volatile`).
    pub fn apply(&mut self, list: &str) -> Result<(), OptionsError> {
        for item in list.split(',') {
            self.apply_one(item)?;
        }
        Ok(())
    }

    fn apply_one(&mut self, item: &str) -> Result<(), OptionsError> {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (item, None),
        };
        fn need<'v>(key: &str, v: Option<&'v str>) -> Result<&'v str, OptionsError> {
            v.filter(|v| !v.is_empty())
                .ok_or_else(|| OptionsError::MissingValue(key.to_string()))
        }
        match key {
            "" => {}
            "lowerdir" => {
                self.lowerdirs = need(key, value)?
                    .split(':')
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
                    .collect();
            }
            "layers" => {
                self.layers = need(key, value)?
                    .split(':')
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
                    .collect();
            }
            "upperdir" => self.upperdir = Some(PathBuf::from(need(key, value)?)),
            "workdir" => self.workdir = Some(PathBuf::from(need(key, value)?)),
            "uidmapping" => {
                self.ids.uids = parse_ranges(need(key, value)?).map_err(|e| bad(key, e))?
            }
            "gidmapping" => {
                self.ids.gids = parse_ranges(need(key, value)?).map_err(|e| bad(key, e))?
            }
            "squash_to_root" => {
                self.ids.squash_uid = Some(0);
                self.ids.squash_gid = Some(0);
            }
            "squash_to_uid" => {
                self.ids.squash_uid = Some(
                    need(key, value)?
                        .parse()
                        .map_err(|e| bad(key, format!("{e}")))?,
                )
            }
            "squash_to_gid" => {
                self.ids.squash_gid = Some(
                    need(key, value)?
                        .parse()
                        .map_err(|e| bad(key, format!("{e}")))?,
                )
            }
            "allow_other" => self.allow_other = true,
            "allow_root" => self.allow_root = true,
            "fsync" => {
                self.fsync = match need(key, value)? {
                    "0" => false,
                    "1" => true,
                    v => return Err(bad(key, format!("{v:?} is not 0 or 1"))),
                }
            }
            "volatile" => self.fsync = false,
            "timeout" => {
                let secs: f64 = need(key, value)?
                    .parse()
                    .map_err(|e| bad(key, format!("{e}")))?;
                if !(0.0..=1e9).contains(&secs) {
                    return Err(bad(key, "out of range"));
                }
                self.timeout = Duration::from_secs_f64(secs);
            }
            "threads" => {
                let n: usize = need(key, value)?
                    .parse()
                    .map_err(|e| bad(key, format!("{e}")))?;
                if n == 0 || n > 64 {
                    return Err(bad(key, "must be 1 to 64"));
                }
                self.threads = Some(n);
            }
            "fsname" => self.fsname = Some(need(key, value)?.to_string()),
            "server" => {
                self.server = Some(match need(key, value)? {
                    "fuser" => ServerKind::Fuser,
                    "strata" => ServerKind::Strata,
                    v => return Err(bad(key, format!("{v:?} is not fuser or strata"))),
                })
            }
            "transport" => {
                let v = need(key, value)?;
                self.transport = Some(
                    TransportKind::parse(v)
                        .ok_or_else(|| bad(key, format!("{v:?} is not auto, uring or dev")))?,
                );
            }
            "passthrough" => self.passthrough = true,
            "nopassthrough" => self.passthrough = false,
            "ro" => self.read_only = true,
            "rw" => self.read_only = false,
            "dev" => self.dev = Some(true),
            "nodev" => self.dev = Some(false),
            "suid" => self.suid = Some(true),
            "nosuid" => self.suid = Some(false),
            "exec" => self.exec = Some(true),
            "noexec" => self.exec = Some(false),
            "noatime" | "relatime" | "nodiratime" => self.noatime = true,
            "atime" | "strictatime" => self.noatime = false,
            // Accepted for compatibility; strata always behaves this way or has no such knob.
            "default_permissions"
            | "noacl"
            | "acl"
            | "userxattr"
            | "static_nlink"
            | "async"
            | "auto"
            | "noauto"
            | "user"
            | "nouser"
            | "users"
            | "_netdev"
            | "nofail"
            | "defaults"
            | "redirect_dir"
            | "index"
            | "metacopy"
            | "xino"
            | "xattr_permissions"
            | "noxattrs"
            | "plugins"
            | "debug"
            | "max_write"
            | "fast_ino"
            | "squash_to_root_gid" => {}
            k if k.starts_with("x-") => {}
            _ => return Err(OptionsError::Unknown(item.to_string())),
        }
        Ok(())
    }

    /// Checks the combination once every option is in.
    pub fn validate(&mut self) -> Result<(), OptionsError> {
        if self.lowerdirs.is_empty() && self.layers.is_empty() {
            return Err(OptionsError::NoLowerdir);
        }
        self.validate_upper()
    }

    /// Checks that the upper and work directories go together; a mount without an upper is
    /// read-only. [`MountOptions::validate`] less the lowers: for a caller that brings its
    /// own (an image store's layers, not `lowerdir=`/`layers=` paths).
    pub fn validate_upper(&mut self) -> Result<(), OptionsError> {
        match (&self.upperdir, &self.workdir) {
            (Some(_), None) => return Err(OptionsError::UpperWithoutWork("workdir")),
            (None, Some(_)) => return Err(OptionsError::UpperWithoutWork("upperdir")),
            _ => {}
        }
        if self.upperdir.is_none() {
            self.read_only = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<MountOptions, OptionsError> {
        let mut o = MountOptions::default();
        o.apply(s)?;
        o.validate()?;
        Ok(o)
    }

    #[test]
    fn podman_style_options_parse() {
        let o = parse("lowerdir=/l1:/l2,upperdir=/u,workdir=/w,,volatile").unwrap();
        assert_eq!(
            o.lowerdirs,
            vec![PathBuf::from("/l1"), PathBuf::from("/l2")]
        );
        assert_eq!(o.upperdir, Some(PathBuf::from("/u")));
        assert!(!o.fsync);
        assert!(!o.read_only);
    }

    #[test]
    fn no_upper_means_read_only() {
        assert!(parse("lowerdir=/l").unwrap().read_only);
    }

    #[test]
    fn unknown_option_is_named() {
        let e = parse("lowerdir=/l,frobnicate").unwrap_err();
        assert_eq!(e, OptionsError::Unknown("frobnicate".into()));
        assert!(e.to_string().contains("frobnicate"));
    }

    #[test]
    fn incomplete_combinations_are_refused() {
        assert_eq!(
            parse("upperdir=/u,workdir=/w").unwrap_err(),
            OptionsError::NoLowerdir
        );
        assert_eq!(
            parse("lowerdir=/l,upperdir=/u").unwrap_err(),
            OptionsError::UpperWithoutWork("workdir")
        );
        assert!(matches!(
            parse("lowerdir=/l,fsync=2").unwrap_err(),
            OptionsError::BadValue { .. }
        ));
        assert_eq!(
            parse("lowerdir=").unwrap_err(),
            OptionsError::MissingValue("lowerdir".into())
        );
    }

    #[test]
    fn mapping_and_squash_options() {
        let o =
            parse("lowerdir=/l,uidmapping=0:1000:1,gidmapping=0:1000:1,squash_to_uid=5").unwrap();
        assert_eq!(o.ids.uid_to_view(1000), 5);
        assert_eq!(o.ids.gid_to_view(1000), 0);
    }
}
