//! `strata info`: what this host and store are, in docker's `/info` field names (so
//! `--format '{{.NCPU}}'` and `{{json .}}` read as they do under docker). Only the fields
//! that mean something for strata are there; each is read from its source at the call
//! (no cache): the store for containers, images and volumes, the kernel for the rest.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use strata_image::registry::auth::AuthFile;
use strata_image::store::{fsutil, Store};

use crate::containers::{Containers, Status};
use crate::{Error, Result};

/// docker's info document, the fields that apply.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Info {
    /// The store's id: a UUID made on first use (docker's daemon ID).
    #[serde(rename = "ID")]
    pub id: String,
    pub containers: usize,
    pub containers_running: usize,
    pub containers_paused: usize,
    /// Created, exited and dead ones (docker: all but running and paused).
    pub containers_stopped: usize,
    pub images: usize,
    /// The storage driver: `strata-fs`.
    pub driver: String,
    /// Its details as docker's `[name, value]` pairs.
    pub driver_status: Vec<[String; 2]>,
    pub logging_driver: String,
    /// `cgroupfs` (strata writes the cgroup files itself), `none` where it may not.
    pub cgroup_driver: String,
    /// `1` or `2`.
    pub cgroup_version: String,
    pub kernel_version: String,
    /// /etc/os-release's PRETTY_NAME.
    pub operating_system: String,
    #[serde(rename = "OSVersion")]
    pub os_version: String,
    #[serde(rename = "OSType")]
    pub os_type: String,
    /// uname's machine (`x86_64`).
    pub architecture: String,
    /// The CPUs this process may run on (as `nproc`).
    #[serde(rename = "NCPU")]
    pub ncpu: usize,
    /// Bytes of RAM.
    pub mem_total: u64,
    pub docker_root_dir: String,
    /// The host name.
    pub name: String,
    pub server_version: String,
    pub runtimes: BTreeMap<String, Runtime>,
    pub default_runtime: String,
    /// `name=rootless` when running as a user, `name=cgroupns`: docker's strings.
    pub security_options: Vec<String>,
    pub index_server_address: String,
    pub registry_config: RegistryConfig,
    pub warnings: Vec<String>,
}

impl Info {
    /// Whether strata runs rootless (docker reports it among the security options).
    pub fn rootless(&self) -> bool {
        self.security_options.iter().any(|o| o == "name=rootless")
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Runtime {
    pub path: String,
}

/// The registries strata knows: loopback ones spoken to in plain HTTP (docker's insecure
/// CIDRs) and those credentials are stored for.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegistryConfig {
    #[serde(rename = "InsecureRegistryCIDRs")]
    pub insecure_registry_cidrs: Vec<String>,
    pub index_configs: BTreeMap<String, IndexConfig>,
    pub mirrors: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct IndexConfig {
    pub name: String,
    pub mirrors: Vec<String>,
    /// TLS required (false for loopback registries, which strata reaches over HTTP).
    pub secure: bool,
    pub official: bool,
}

/// Gathers the document for `store`.
pub fn gather(store: &Store) -> Result<Info> {
    let containers = Containers::new(store);
    let (mut running, mut paused, mut total) = (0, 0, 0);
    for rec in containers.records()? {
        total += 1;
        match containers.state(&rec.id)?.status {
            Status::Running => running += 1,
            Status::Paused => paused += 1,
            _ => {}
        }
    }
    let images = store.images()?.len();
    let uname = nix::sys::utsname::uname().map_err(Error::os("uname"))?;
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let os_field = |key: &str| {
        os_release
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default()
    };
    let rootless = !nix::unistd::geteuid().is_root();
    let mut security_options = Vec::new();
    if rootless {
        security_options.push("name=rootless".to_string());
    }
    security_options.push("name=cgroupns".to_string());
    let cgroup_v2 = strata_runtime::cgroups::is_v2();
    let layers = std::fs::read_dir(store.layers_dir())
        .map(|rd| rd.flatten().filter(|e| e.path().is_dir()).count())
        .unwrap_or(0);
    let whiteouts = match rootless {
        true => ".wh. files (fuse-overlayfs's rootless format)",
        false => "character devices 0/0 (kernel overlayfs's format)",
    };
    let driver_status = [
        ("Backing Filesystem", backing_filesystem(store.root())),
        ("Layers", layers.to_string()),
        ("Served by", "FUSE, in each container's monitor".into()),
        ("FUSE Transport", fuse_transport()),
        ("Upper whiteouts", whiteouts.into()),
    ]
    .into_iter()
    .map(|(k, v)| [k.to_string(), v])
    .collect();
    let mut index_configs = BTreeMap::new();
    index_configs.insert(
        "docker.io".to_string(),
        IndexConfig {
            name: "docker.io".into(),
            mirrors: Vec::new(),
            secure: true,
            official: true,
        },
    );
    for host in AuthFile::new(store.root()).registries()? {
        let secure = !strata_image::reference::is_loopback_domain(&host);
        index_configs
            .entry(host.clone())
            .or_insert_with(|| IndexConfig {
                name: host,
                mirrors: Vec::new(),
                secure,
                official: false,
            });
    }
    Ok(Info {
        id: engine_id(store)?,
        containers: total,
        containers_running: running,
        containers_paused: paused,
        containers_stopped: total - running - paused,
        images,
        driver: "strata-fs".into(),
        driver_status,
        logging_driver: "json-file".into(),
        cgroup_driver: match strata_runtime::cgroups::usable() {
            true => "cgroupfs".into(),
            false => "none".into(),
        },
        cgroup_version: if cgroup_v2 { "2" } else { "1" }.into(),
        kernel_version: uname.release().to_string_lossy().into_owned(),
        operating_system: os_field("PRETTY_NAME"),
        os_version: os_field("VERSION_ID"),
        os_type: "linux".into(),
        architecture: uname.machine().to_string_lossy().into_owned(),
        ncpu: cpus(),
        mem_total: mem_total(),
        docker_root_dir: store.root().display().to_string(),
        name: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        server_version: env!("CARGO_PKG_VERSION").to_string(),
        runtimes: BTreeMap::from([(
            "strata-runtime".to_string(),
            Runtime {
                path: "strata-runtime".into(),
            },
        )]),
        default_runtime: "strata-runtime".into(),
        security_options,
        index_server_address: "https://index.docker.io/v1/".into(),
        registry_config: RegistryConfig {
            insecure_registry_cidrs: vec!["127.0.0.0/8".into(), "::1/128".into()],
            index_configs,
            mirrors: Vec::new(),
        },
        warnings: Vec::new(),
    })
}

/// The CPUs this process may run on: its affinity mask, as `nproc` and Go's NumCPU count.
fn cpus() -> usize {
    use nix::sched::{sched_getaffinity, CpuSet};
    match sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&i| set.is_set(i).unwrap_or(false))
            .count(),
        Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// MemTotal of /proc/meminfo in bytes.
fn mem_total() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    parse_mem_total(&text)
}

fn parse_mem_total(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// docker's name for the filesystem under `path` (its `Backing Filesystem`).
fn backing_filesystem(path: &Path) -> String {
    let existing = path.ancestors().find(|p| p.exists()).unwrap_or(path);
    let Ok(st) = nix::sys::statfs::statfs(existing) else {
        return "<unknown>".into();
    };
    // The magic's C type differs between architectures (i64 on x86_64, u32 on others).
    #[allow(clippy::unnecessary_cast)]
    let magic = st.filesystem_type().0 as i64;
    filesystem_name(magic).into()
}

fn filesystem_name(magic: i64) -> &'static str {
    match magic {
        0xEF53 => "extfs",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x794C_7630 => "overlayfs",
        0x2FC1_2FC1 => "zfs",
        0x6969 => "nfs",
        0x6573_5546 => "fuse",
        _ => "<unknown>",
    }
}

/// `ROOT/engine-id`: a random UUID (v4) made on first use, kept for the store's life.
fn engine_id(store: &Store) -> Result<String> {
    let path = store.root().join("engine-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        if !id.trim().is_empty() {
            return Ok(id.trim().to_string());
        }
    }
    let hex = crate::containers::new_id()?;
    let b = hex.as_bytes();
    let s = |r: std::ops::Range<usize>| std::str::from_utf8(&b[r]).unwrap_or_default();
    // Version 4, variant 10xx.
    let variant = ["8", "9", "a", "b"][usize::from(b[16] % 4)];
    let id = format!(
        "{}-{}-4{}-{variant}{}-{}",
        s(0..8),
        s(8..12),
        s(13..16),
        s(17..20),
        s(20..32)
    );
    let tmp = store.tmp_dir();
    std::fs::create_dir_all(&tmp).map_err(|source| Error::Create {
        path: tmp.clone(),
        source,
    })?;
    // Two first callers at once: the last rename wins and both read it back.
    fsutil::atomic_write(&tmp, &path, format!("{id}\n").as_bytes())?;
    Ok(std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .unwrap_or(id))
}

/// How a running container's union is served: fuser's loop reads `/dev/fuse`; and a server that takes the connection over
/// after a crash (`STRATA_FS_SERVER=strata`) reads `/dev/fuse`, as a dead server's io_uring
/// entries die with it and queued requests would wait for a fetch that never comes.
fn fuse_transport() -> String {
    let opts = strata_fs::options::MountOptions::default();
    match strata_fs::mount::server_kind(&opts) {
        strata_fs::options::ServerKind::Strata => {
            "/dev/fuse (strata's restartable server: io_uring queues die with a server)".into()
        }
        strata_fs::options::ServerKind::Fuser => "/dev/fuse (fuser's loop)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_ids_and_host_facts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let info = gather(&store).unwrap();
        assert_eq!((info.containers, info.images), (0, 0));
        assert_eq!(info.driver, "strata-fs");
        assert_eq!(info.id.len(), 36);
        assert_eq!(info.id.as_bytes()[14], b'4');
        assert_eq!(gather(&store).unwrap().id, info.id, "the id is kept");
        assert!(info.ncpu >= 1 && info.mem_total > 0);
        assert_eq!(info.rootless(), !nix::unistd::geteuid().is_root());
        let json = serde_json::to_value(&info).unwrap();
        for key in [
            "ID",
            "ContainersRunning",
            "NCPU",
            "MemTotal",
            "OSType",
            "DockerRootDir",
            "KernelVersion",
            "CgroupVersion",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
        assert_eq!(
            json["RegistryConfig"]["InsecureRegistryCIDRs"][0],
            "127.0.0.0/8"
        );
    }

    #[test]
    fn meminfo_and_filesystem_names() {
        assert_eq!(
            parse_mem_total("MemTotal:        2000 kB\nMemFree: 1 kB\n"),
            2_048_000
        );
        assert_eq!(parse_mem_total(""), 0);
        assert_eq!(filesystem_name(0xEF53), "extfs");
        assert_eq!(filesystem_name(1), "<unknown>");
    }
}
