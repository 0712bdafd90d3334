//! What a container is made of, as the CLI decides it and the runtime applies it. Plain data,
//! stored as JSON beside the container (`containers/<id>/`). Every field has a default so a
//! spec written by an older strata still reads.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything [`crate::Container::start`] needs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ContainerSpec {
    /// The container's id: names its cgroup (`strata/<id>`).
    pub id: String,
    /// The already-mounted union root, in the caller's mount namespace. The runtime
    /// bind-mounts it onto itself in the container's own mount namespace (pivot_root needs a
    /// mount point), so a plain directory works too.
    pub rootfs: PathBuf,
    pub process: ProcessSpec,
    /// The container's hostname; `None` keeps the caller's (in a new UTS namespace).
    pub hostname: Option<String>,
    /// Volumes and tmpfs mounts, mounted in order after /proc, /sys and /dev.
    pub mounts: Vec<MountSpec>,
    /// Remount the root read-only after every mount is in place (`--read-only`).
    pub readonly_rootfs: bool,
    pub network: NetworkMode,
    /// A network namespace to join instead of making one (an nsfs path: `/proc/PID/ns/net`,
    /// `/proc/PID/fd/N`), when `network` is not [`NetworkMode::Host`]: the caller configured
    /// it before the start (a veth, slirp4netns), so the process never runs without its
    /// network, or it is another container's (`--network container:NAME`).
    pub netns: Option<PathBuf>,
    /// How each namespace kind other than network is had, where it differs from the
    /// default ([`ContainerSpec::namespace`]); a bundle's `linux.namespaces` lists them all.
    pub namespaces: Vec<(NamespaceKind, NamespaceMode)>,
    /// The uid map of a new user namespace (container id, host id, count), written by the
    /// caller once the setup child made the namespace: directly as root or for the caller's
    /// own single id, else through `newuidmap`.
    pub uid_mappings: Vec<crate::idmap::IdRange>,
    /// The gid map, as [`ContainerSpec::uid_mappings`] (`newgidmap`).
    pub gid_mappings: Vec<crate::idmap::IdRange>,
    /// All capabilities (within the caller's bounding set), no masked or read-only paths,
    /// /sys read-write.
    pub privileged: bool,
    /// cgroup limits; see [`crate::cgroups::Cgroup::create`].
    pub resources: Resources,
    /// `--init`: pid 1 is a small reaper that forwards signals to the process, its child,
    /// and exits with the process's status. Without it the process itself is pid 1.
    pub init: bool,
    /// The seccomp filter pid 1 loads right before exec; `None` is unconfined (exec'd
    /// processes take [`ProcessSpec::seccomp`]). Capability conditions are already
    /// decided ([`crate::seccomp::Profile::for_caps`]).
    pub seccomp: Option<crate::seccomp::Profile>,
    /// The OCI lifecycle's created state (`strata-runtime create`): a FIFO pid 1 opens for
    /// writing once set up, just before exec, and blocks on until `start` opens it for
    /// reading ([`crate::container::start_created`]). Pid 1 then outlives its caller (no
    /// parent-death signal), as the caller of `create` exits.
    pub start_gate: Option<PathBuf>,
    /// The cgroup, as a path under each hierarchy's root (OCI `cgroupsPath`, leading `/`
    /// or not); `None` is `strata/<id>`.
    pub cgroup_path: Option<String>,
    /// Kernel parameters written under /proc/sys once /proc is mounted (`net.ipv4.ip_forward`
    /// → /proc/sys/net/ipv4/ip_forward), before the read-only paths.
    pub sysctl: Vec<(String, String)>,
    /// Paths hidden behind /dev/null or an empty read-only tmpfs; `None` is runc's default
    /// list. Ignored when privileged.
    pub masked_paths: Option<Vec<String>>,
    /// Paths made read-only; `None` is runc's default list. Ignored when privileged.
    pub readonly_paths: Option<Vec<String>>,
    /// /proc/PID/oom_score_adj of the container's processes, set before the namespaces.
    pub oom_score_adj: Option<i32>,
    /// Enter the root with MS_MOVE and chroot rather than pivot_root (`--no-pivot`, for a
    /// root on a ramfs where pivot_root fails); the old root stays reachable to a process
    /// that may chroot.
    pub no_pivot: bool,
    /// Device nodes made in /dev besides the default ones (null, zero, full, random,
    /// urandom, tty): mknod, or in a user namespace (no mknod there) a bind mount of the
    /// host's node at the same path. Their cgroup rule is allowed too.
    pub devices: Vec<Device>,
    /// OCI `createContainer` hooks: run by pid 1 in the container's namespaces after the
    /// mounts, before pivot_root (paths resolve in the runtime's file system).
    pub create_container_hooks: Vec<Hook>,
    /// OCI `startContainer` hooks: run by pid 1 once started, before the process's exec
    /// (paths resolve in the container).
    pub start_container_hooks: Vec<Hook>,
    /// The runtime-spec state the container hooks get on stdin; pid 1 fills in its host
    /// `pid`.
    pub hook_state: Option<serde_json::Value>,
}

/// A device node of [`ContainerSpec::devices`].
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Device {
    /// Inside the container, under /dev.
    pub path: String,
    /// `c` (or `u`), `b`, `p`.
    pub kind: char,
    pub major: i64,
    pub minor: i64,
    /// Permission bits; 0o666 when `None`.
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// A hook: a program run with the container's state on stdin (OCI `hooks`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Hook {
    /// Absolute.
    pub path: PathBuf,
    /// argv, `args[0]` included (the spec's rule); empty means `[path]`.
    pub args: Vec<String>,
    pub env: Vec<String>,
    /// Seconds; killed and failed after that.
    pub timeout: Option<u64>,
}

impl ContainerSpec {
    /// How the container has namespace `kind`: as [`ContainerSpec::namespaces`] says, else
    /// new for mount, pid, uts, ipc and cgroup and the caller's own user namespace.
    pub fn namespace(&self, kind: NamespaceKind) -> NamespaceMode {
        if let Some((_, mode)) = self.namespaces.iter().find(|(k, _)| *k == kind) {
            return mode.clone();
        }
        match kind {
            NamespaceKind::User => NamespaceMode::Shared,
            _ => NamespaceMode::New,
        }
    }
}

/// A namespace kind, network aside ([`NetworkMode`] and [`ContainerSpec::netns`]).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceKind {
    User,
    Mount,
    Pid,
    Uts,
    Ipc,
    Cgroup,
}

impl NamespaceKind {
    /// Every kind, user first: it grants the rights to make or join the others.
    pub const ALL: [NamespaceKind; 6] = [
        NamespaceKind::User,
        NamespaceKind::Mount,
        NamespaceKind::Pid,
        NamespaceKind::Uts,
        NamespaceKind::Ipc,
        NamespaceKind::Cgroup,
    ];

    /// The name under /proc/PID/ns/.
    pub fn proc_name(self) -> &'static str {
        match self {
            NamespaceKind::User => "user",
            NamespaceKind::Mount => "mnt",
            NamespaceKind::Pid => "pid",
            NamespaceKind::Uts => "uts",
            NamespaceKind::Ipc => "ipc",
            NamespaceKind::Cgroup => "cgroup",
        }
    }
}

/// How the container has one namespace kind.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum NamespaceMode {
    /// A new one.
    New,
    /// The one at this nsfs path (`/proc/PID/ns/ipc`, a bind-mounted namespace file).
    Join(PathBuf),
    /// The caller's (the kind is absent from the bundle's list).
    Shared,
}

/// The process to run: the container's, or one `exec`'d into it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ProcessSpec {
    /// argv; `args[0]` is looked up in the `PATH` of `env` (inside the container) unless it
    /// contains a `/`.
    pub args: Vec<String>,
    /// `KEY=VALUE`. `PATH`, `HOME` (from the container's /etc/passwd, else `/`) and
    /// `HOSTNAME` are added when missing, and `TERM=xterm` under a terminal.
    pub env: Vec<String>,
    /// Working directory inside the container, created (owned by the user) when missing, as
    /// docker does. Empty means `/`.
    pub cwd: String,
    /// Numeric ids; [`crate::user::resolve`] turns `name[:group]` into one using the
    /// container's /etc/passwd and /etc/group.
    pub user: UserSpec,
    /// Adds `TERM=xterm` when `env` has no `TERM`. The terminal itself comes from
    /// [`crate::Stdio::Pty`].
    pub terminal: bool,
    /// `PR_SET_NO_NEW_PRIVS` (`--security-opt no-new-privileges`); off by default, as docker,
    /// so setuid binaries work.
    pub no_new_privileges: bool,
    /// Capability names with or without `CAP_`, any case; `ALL` means every capability.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// Resource limits set before exec (`--ulimit`).
    pub rlimits: Vec<Rlimit>,
    /// The seccomp filter of a process exec'd into a running container (the container's
    /// own; [`crate::exec`] has no [`ContainerSpec`]). Pid 1 takes [`ContainerSpec::seccomp`].
    pub seccomp: Option<crate::seccomp::Profile>,
}

/// The user the process runs as.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct UserSpec {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (`gid` need not be repeated).
    pub additional_gids: Vec<u32>,
}

/// One resource limit. Setting a hard limit above the caller's fails with
/// [`crate::Error::Rlimit`] unless the caller holds CAP_SYS_RESOURCE (this host's bounding
/// set lacks it).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rlimit {
    /// `nofile`, `RLIMIT_NOFILE`, `NOFILE` … (docker's `--ulimit` names).
    pub kind: String,
    pub soft: u64,
    pub hard: u64,
}

/// A volume or tmpfs inside the container.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum MountSpec {
    /// `-v source:destination[:ro]`: a recursive bind mount (`:ro` makes every mount under
    /// it read-only too). The destination is created (a directory, or an empty file when
    /// the source is not a directory), resolved inside the root.
    Bind {
        source: PathBuf,
        destination: String,
        readonly: bool,
    },
    /// `--tmpfs destination[:options]`, mounted nosuid,nodev.
    Tmpfs {
        destination: String,
        /// mount(8) data, e.g. `size=64m,mode=1777`; empty for the kernel's defaults.
        options: String,
    },
}

/// The container's network.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum NetworkMode {
    /// A new network namespace with loopback up (docker's default minus the bridge).
    #[default]
    Private,
    /// A new network namespace with nothing in it, loopback down (`--network none`).
    None,
    /// The caller's network namespace (`--network host`).
    Host,
}

/// cgroup limits.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Resources {
    /// `--memory`, bytes. Swap is limited to the same value, so going over OOM-kills.
    pub memory: Option<u64>,
    /// `--pids-limit`; zero or negative means unlimited.
    pub pids_limit: Option<i64>,
    /// `--cpus`: CFS quota of this many CPUs per 100 ms period.
    pub cpus: Option<f64>,
    /// CFS quota and period in µs as given (OCI `cpu.quota`, `cpu.period`); a quota of -1
    /// is unlimited.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    /// cgroup v1 `cpu.shares` (v2: converted to `cpu.weight`).
    pub cpu_shares: Option<u64>,
    /// Device cgroup rules after the deny-all, in order (OCI `linux.resources.devices`),
    /// before docker's default allowed devices and the spec's own devices.
    pub devices: Vec<DeviceRule>,
}

/// One device cgroup rule: `allow` or deny `rule` (`c 1:3 rwm`, `a`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    pub rule: String,
}

impl Resources {
    /// Whether any limit is asked for.
    pub fn any(&self) -> bool {
        self.memory.is_some()
            || self.pids_limit.is_some()
            || self.cpus.is_some()
            || self.cpu_quota.is_some()
            || self.cpu_period.is_some()
            || self.cpu_shares.is_some()
    }

    /// The command-line flags of the limits asked for, for messages (`--memory, --cpus`).
    pub fn flags(&self) -> String {
        let mut v = Vec::new();
        if self.memory.is_some() {
            v.push("--memory");
        }
        if self.pids_limit.is_some() {
            v.push("--pids-limit");
        }
        if self.cpus.is_some() {
            v.push("--cpus");
        }
        if self.cpu_quota.is_some() || self.cpu_period.is_some() || self.cpu_shares.is_some() {
            v.push("cpu quota, period or shares");
        }
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_and_old_specs_read() {
        let spec = ContainerSpec {
            id: "c1".into(),
            rootfs: "/r".into(),
            hostname: Some("h".into()),
            mounts: vec![MountSpec::Tmpfs {
                destination: "/t".into(),
                options: "size=1m".into(),
            }],
            process: ProcessSpec {
                args: vec!["sh".into()],
                rlimits: vec![Rlimit {
                    kind: "nofile".into(),
                    soft: 10,
                    hard: 20,
                }],
                ..Default::default()
            },
            ..Default::default()
        };
        let text = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<ContainerSpec>(&text).unwrap(), spec);
        let old: ContainerSpec = serde_json::from_str(r#"{"id":"x"}"#).unwrap();
        assert_eq!(old.network, NetworkMode::Private);
        assert_eq!(
            Resources {
                memory: Some(1),
                cpus: Some(0.5),
                ..Default::default()
            }
            .flags(),
            "--memory, --cpus"
        );
    }
}
