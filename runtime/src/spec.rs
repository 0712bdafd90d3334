//! What a container is made of, as the CLI decides it and the init applies it. Plain data,
//! stored as JSON beside the container (`containers/<id>/config.json`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything the container's init needs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ContainerSpec {
    pub id: String,
    /// The mounted union root, in the monitor's mount namespace.
    pub rootfs: PathBuf,
    pub process: ProcessSpec,
    pub hostname: String,
    pub mounts: Vec<MountSpec>,
    pub readonly_rootfs: bool,
    pub network: NetworkMode,
    /// All capabilities, no masked or read-only paths.
    pub privileged: bool,
    pub resources: Resources,
    /// A small init as pid 1 that reaps zombies and forwards signals to the process.
    pub init: bool,
}

/// The process to run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    /// `KEY=VALUE`.
    pub env: Vec<String>,
    pub cwd: String,
    /// `user[:group]`, names or numbers, resolved in the container's /etc/passwd and
    /// /etc/group; empty is root.
    pub user: String,
    pub terminal: bool,
    pub no_new_privileges: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
}

/// A volume or tmpfs inside the container.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum MountSpec {
    Bind {
        source: PathBuf,
        destination: String,
        readonly: bool,
    },
    Tmpfs {
        destination: String,
        /// mount(8) data, e.g. `size=64m,mode=1777`.
        options: String,
    },
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum NetworkMode {
    /// A new network namespace with loopback up (docker's default minus the bridge).
    #[default]
    Private,
    /// A new network namespace with nothing in it.
    None,
    /// The host's network namespace.
    Host,
}

/// cgroup limits.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Resources {
    /// Bytes.
    pub memory: Option<u64>,
    pub pids_limit: Option<i64>,
    pub cpus: Option<f64>,
}

impl Resources {
    pub fn any(&self) -> bool {
        self.memory.is_some() || self.pids_limit.is_some() || self.cpus.is_some()
    }
}
