//! The OCI side of the runtime, for the `strata-runtime` binary: a bundle's `config.json`
//! (the `oci-spec` crate's types) turned into a [`ContainerSpec`] and back ([`to_oci`], which
//! `strata run`'s monitor writes and reads back, so both start from a bundle), runc's
//! lifecycle rules ([`allowed`]), and the state directory
//! under `--root` that lets separate `create`, `start`, `state`, `kill` and `delete` calls
//! find a container, as runc's.
//!
//! ```text
//! <root>/<id>/state.json   id, pid, pid start time, bundle, rootfs, created, owner
//! <root>/<id>/exec.fifo    the start gate while the container is created
//! ```
//! The status is derived, never stored: pid gone (or reused: the start time differs) →
//! stopped; the FIFO still there → created; cgroup frozen → paused; else running.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, LinuxResources, Spec};
use serde::{Deserialize, Serialize};

use crate::cgroups::Cgroup;
use crate::idmap::IdRange;
use crate::spec::{
    ContainerSpec, Device, DeviceRule, Hook, MountSpec, NamespaceKind, NamespaceMode, NetworkMode,
    ProcessSpec, Resources, Rlimit, UserSpec,
};
use crate::{Error, Result};

/// runc's default root for root.
pub const DEFAULT_ROOT: &str = "/run/strata-runtime";

/// The OCI runtime spec version this runtime speaks.
pub const OCI_VERSION: &str = "1.0.2";

/// Mount types the runtime's own setup makes (/proc, /sys, /dev and its pts, shm, mqueue):
/// the bundle's entries for them are covered.
const BUILT_IN: [&str; 5] = ["/proc", "/sys", "/dev", "/dev/pts", "/dev/mqueue"];

fn bundle_error(bundle: &Path, reason: impl Into<String>) -> Error {
    Error::Bundle {
        path: bundle.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads `bundle/config.json` and makes the container spec for `id` (its rootfs resolved
/// against the bundle).
pub fn load_bundle(id: &str, bundle: &Path) -> Result<(ContainerSpec, Spec)> {
    let config = bundle.join("config.json");
    let oci = Spec::load(&config).map_err(|e| bundle_error(&config, e.to_string()))?;
    let spec = from_oci(id, bundle, &oci)?;
    Ok((spec, oci))
}

/// Annotations for what a [`ContainerSpec`] holds and the runtime spec cannot say: strata's
/// `--privileged` (every capability, no masked paths, the host's /dev), `--init` (a reaper
/// as pid 1), `--network none` (loopback left down).
const PRIVILEGED: &str = "org.strata.privileged";
const INIT: &str = "org.strata.init";
const NETWORK: &str = "org.strata.network";

/// The container spec for `id` of an OCI spec whose relative paths resolve against
/// `bundle`: [`to_oci`]'s inverse (`from_oci(to_oci(s)) == s` for a spec in its normal
/// form: capabilities resolved into `cap_drop: ["ALL"]` plus the set, rlimits named
/// `RLIMIT_*`, cwd absolute, cpus as quota and period).
pub fn from_oci(id: &str, bundle: &Path, oci: &Spec) -> Result<ContainerSpec> {
    let config = bundle.join("config.json");
    let root = oci
        .root()
        .as_ref()
        .ok_or_else(|| bundle_error(&config, "no root"))?;
    let rootfs = bundle.join(root.path());
    let process = oci
        .process()
        .as_ref()
        .ok_or_else(|| bundle_error(&config, "no process"))?;
    let mut spec = ContainerSpec {
        id: id.to_string(),
        rootfs,
        process: process_spec(process)?,
        hostname: oci.hostname().clone(),
        readonly_rootfs: root.readonly().unwrap_or(false),
        ..Default::default()
    };
    for m in oci.mounts().iter().flatten() {
        let dest = m.destination().to_string_lossy().into_owned();
        let typ = m.typ().as_deref().unwrap_or("");
        let options = m.options().clone().unwrap_or_default();
        if BUILT_IN.contains(&dest.as_str()) || matches!(typ, "proc" | "sysfs" | "cgroup") {
            continue;
        }
        if typ == "bind" || options.iter().any(|o| o == "bind" || o == "rbind") {
            let source = m
                .source()
                .clone()
                .ok_or_else(|| bundle_error(&config, format!("mount {dest}: no source")))?;
            spec.mounts.push(MountSpec::Bind {
                source,
                destination: dest,
                readonly: options.iter().any(|o| o == "ro"),
            });
        } else if typ == "tmpfs" {
            let data: Vec<&str> = options
                .iter()
                .map(String::as_str)
                // Data (size=, mode=, uid= …); flags (nosuid, tmpcopyup, rprivate …) are
                // the runtime's own or unsupported.
                .filter(|o| o.contains('='))
                .collect();
            spec.mounts.push(MountSpec::Tmpfs {
                destination: dest,
                options: data.join(","),
            });
        }
    }
    let mut network = NetworkMode::Host;
    if let Some(linux) = oci.linux() {
        // Every kind the bundle does not list is the caller's, as the spec says.
        spec.namespaces = NamespaceKind::ALL
            .iter()
            .map(|k| (*k, NamespaceMode::Shared))
            .collect();
        for ns in linux.namespaces().iter().flatten() {
            let kind = match ns.typ() {
                LinuxNamespaceType::Network => {
                    network = NetworkMode::Private;
                    spec.netns = ns.path().clone();
                    continue;
                }
                LinuxNamespaceType::User => NamespaceKind::User,
                LinuxNamespaceType::Mount => NamespaceKind::Mount,
                LinuxNamespaceType::Pid => NamespaceKind::Pid,
                LinuxNamespaceType::Uts => NamespaceKind::Uts,
                LinuxNamespaceType::Ipc => NamespaceKind::Ipc,
                LinuxNamespaceType::Cgroup => NamespaceKind::Cgroup,
                LinuxNamespaceType::Time => {
                    return Err(bundle_error(&config, "time namespaces are not supported"))
                }
            };
            let mode = match ns.path() {
                Some(path) => NamespaceMode::Join(path.clone()),
                None => NamespaceMode::New,
            };
            if let Some(slot) = spec.namespaces.iter_mut().find(|(k, _)| *k == kind) {
                slot.1 = mode;
            }
        }
        if spec.namespace(NamespaceKind::Mount) == NamespaceMode::Shared {
            return Err(bundle_error(
                &config,
                "the container needs a mount namespace (linux.namespaces has no \"mount\")",
            ));
        }
        let ranges = |m: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| -> Vec<IdRange> {
            m.iter()
                .flatten()
                .map(|r| IdRange {
                    inside: r.container_id(),
                    outside: r.host_id(),
                    count: r.size(),
                })
                .collect()
        };
        spec.uid_mappings = ranges(linux.uid_mappings());
        spec.gid_mappings = ranges(linux.gid_mappings());
        if spec.namespace(NamespaceKind::User) == NamespaceMode::New
            && (spec.uid_mappings.is_empty() || spec.gid_mappings.is_empty())
        {
            return Err(bundle_error(
                &config,
                "a new user namespace needs linux.uidMappings and linux.gidMappings",
            ));
        }
        if let Some(r) = linux.resources() {
            spec.resources = resources(r);
        }
        spec.cgroup_path = linux
            .cgroups_path()
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .filter(|p| !p.is_empty());
        let mut sysctl: Vec<(String, String)> = linux
            .sysctl()
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        sysctl.sort();
        spec.sysctl = sysctl;
        spec.masked_paths = linux.masked_paths().clone();
        spec.readonly_paths = linux.readonly_paths().clone();
        spec.devices = linux
            .devices()
            .iter()
            .flatten()
            .map(|d| Device {
                path: d.path().to_string_lossy().into_owned(),
                kind: d.typ().as_str().chars().next().unwrap_or('c'),
                major: d.major(),
                minor: d.minor(),
                mode: d.file_mode(),
                uid: d.uid(),
                gid: d.gid(),
            })
            .collect();
        // The bundle's filter as written: its capability conditions are the caller's
        // (podman and containerd resolve them), so no for_caps pass here.
        spec.seccomp = linux
            .seccomp()
            .as_ref()
            .map(crate::seccomp::Profile::from_oci)
            .transpose()?;
    }
    spec.network = network;
    spec.oom_score_adj = process.oom_score_adj();
    if let Some(h) = oci.hooks() {
        spec.create_container_hooks = hooks(h.create_container());
        spec.start_container_hooks = hooks(h.start_container());
    }
    let hooked = !spec.create_container_hooks.is_empty() || !spec.start_container_hooks.is_empty();
    spec.hook_state = hooked.then(|| {
        serde_json::json!({
            "ociVersion": OCI_VERSION,
            "id": id,
            "status": "created",
            "pid": 0,
            "bundle": bundle,
            "annotations": oci.annotations().clone().unwrap_or_default(),
        })
    });
    let annotations = oci.annotations().clone().unwrap_or_default();
    let flag = |k: &str| annotations.get(k).is_some_and(|v| v == "true");
    spec.privileged = flag(PRIVILEGED);
    spec.init = flag(INIT);
    if spec.network == NetworkMode::Private && annotations.get(NETWORK).is_some_and(|v| v == "none")
    {
        spec.network = NetworkMode::None;
    }
    // The defaults stay implicit, so a spec that never named them reads back the same.
    spec.namespaces
        .retain(|(kind, mode)| *mode != ContainerSpec::default().namespace(*kind));
    let is_default = |l: &Option<Vec<String>>, d: &[&str]| {
        l.as_ref()
            .is_some_and(|l| l.len() == d.len() && l.iter().zip(d).all(|(a, b)| a == b))
    };
    if is_default(&spec.masked_paths, &crate::setup::MASKED) || spec.privileged {
        spec.masked_paths = None;
    }
    if is_default(&spec.readonly_paths, &crate::setup::READ_ONLY) || spec.privileged {
        spec.readonly_paths = None;
    }
    Ok(spec)
}

/// The OCI spec (config.json) equivalent to `spec`, for runc or [`from_oci`]: the
/// standard /proc, /dev, /sys mounts, the volumes, namespaces, resources, capabilities as
/// explicit sets, strata's extras as `org.strata.*` annotations.
pub fn to_oci(spec: &ContainerSpec) -> Result<Spec> {
    let p = &spec.process;
    let mut caps: Vec<String> = crate::caps::resolve(spec.privileged, &p.cap_add, &p.cap_drop)?
        .iter()
        .map(|c| c.to_string())
        .collect();
    caps.sort();
    let rlimits: Vec<serde_json::Value> = p
        .rlimits
        .iter()
        .map(|r| {
            let lower = r.kind.to_ascii_lowercase();
            let name = lower.strip_prefix("rlimit_").unwrap_or(&lower);
            serde_json::json!({
                "type": format!("RLIMIT_{}", name.to_ascii_uppercase()),
                "soft": r.soft,
                "hard": r.hard,
            })
        })
        .collect();
    // runc's standard mounts that this runtime makes itself (its /dev/shm is its own too).
    let standard: Vec<_> = Spec::default()
        .mounts()
        .iter()
        .flatten()
        .filter(|m| m.destination() != Path::new("/dev/shm"))
        .cloned()
        .collect();
    let mut mounts = serde_json::to_value(standard).map_err(|e| Error::Other(e.to_string()))?;
    let list = mounts
        .as_array_mut()
        .ok_or(Error::Other("no default mounts".into()))?;
    for m in &spec.mounts {
        list.push(match m {
            MountSpec::Bind {
                source,
                destination,
                readonly,
            } => {
                let mut options = vec!["rbind"];
                if *readonly {
                    options.push("ro");
                }
                serde_json::json!({
                    "destination": destination,
                    "type": "bind",
                    "source": source,
                    "options": options,
                })
            }
            MountSpec::Tmpfs {
                destination,
                options,
            } => {
                let mut o: Vec<&str> = vec!["nosuid", "nodev"];
                o.extend(options.split(',').filter(|x| !x.is_empty()));
                serde_json::json!({
                    "destination": destination,
                    "type": "tmpfs",
                    "source": "tmpfs",
                    "options": o,
                })
            }
        });
    }
    let mut namespaces = Vec::new();
    for kind in NamespaceKind::ALL {
        let name = match kind {
            NamespaceKind::Mount => "mount",
            k => k.proc_name(),
        };
        match spec.namespace(kind) {
            NamespaceMode::New => namespaces.push(serde_json::json!({"type": name})),
            NamespaceMode::Join(path) => {
                namespaces.push(serde_json::json!({"type": name, "path": path}))
            }
            NamespaceMode::Shared => {}
        }
    }
    if spec.network != NetworkMode::Host {
        namespaces.push(match &spec.netns {
            Some(path) => serde_json::json!({"type": "network", "path": path}),
            None => serde_json::json!({"type": "network"}),
        });
    }
    let ranges = |r: &[IdRange]| -> Vec<serde_json::Value> {
        r.iter()
            .map(|r| serde_json::json!({"containerID": r.inside, "hostID": r.outside, "size": r.count}))
            .collect()
    };
    let res = &spec.resources;
    let mut resources = serde_json::json!({});
    if let Some(m) = res.memory {
        resources["memory"] = serde_json::json!({"limit": m});
    }
    if let Some(n) = res.pids_limit {
        resources["pids"] = serde_json::json!({"limit": n});
    }
    let mut cpu = serde_json::json!({});
    if let Some(cpus) = res.cpus {
        // What Cgroup::apply writes for --cpus.
        cpu["quota"] = serde_json::json!((cpus * 100_000.0).round().max(1000.0) as i64);
        cpu["period"] = serde_json::json!(100_000);
    }
    if let Some(q) = res.cpu_quota {
        cpu["quota"] = serde_json::json!(q);
    }
    if let Some(p) = res.cpu_period {
        cpu["period"] = serde_json::json!(p);
    }
    if let Some(s) = res.cpu_shares {
        cpu["shares"] = serde_json::json!(s);
    }
    if cpu != serde_json::json!({}) {
        resources["cpu"] = cpu;
    }
    if !res.devices.is_empty() {
        let rules: Vec<serde_json::Value> = res.devices.iter().map(device_rule_json).collect();
        resources["devices"] = serde_json::json!(rules);
    }
    let (masked, readonly): (Vec<String>, Vec<String>) = match spec.privileged {
        true => (Vec::new(), Vec::new()),
        false => (
            spec.masked_paths
                .clone()
                .unwrap_or_else(|| crate::setup::MASKED.map(String::from).to_vec()),
            spec.readonly_paths
                .clone()
                .unwrap_or_else(|| crate::setup::READ_ONLY.map(String::from).to_vec()),
        ),
    };
    let devices: Vec<serde_json::Value> = spec
        .devices
        .iter()
        .map(|d| {
            serde_json::json!({
                "path": d.path, "type": d.kind.to_string(), "major": d.major, "minor": d.minor,
                "fileMode": d.mode, "uid": d.uid, "gid": d.gid,
            })
        })
        .collect();
    let hook = |h: &Hook| serde_json::json!({"path": h.path, "args": h.args, "env": h.env, "timeout": h.timeout});
    let mut annotations = serde_json::Map::new();
    for (key, on) in [(PRIVILEGED, spec.privileged), (INIT, spec.init)] {
        if on {
            annotations.insert(key.into(), "true".into());
        }
    }
    if spec.network == NetworkMode::None {
        annotations.insert(NETWORK.into(), "none".into());
    }
    let mut linux = serde_json::json!({
        "namespaces": namespaces,
        "resources": resources,
        "maskedPaths": masked,
        "readonlyPaths": readonly,
        "sysctl": spec.sysctl.iter().cloned().collect::<HashMap<String, String>>(),
        "devices": devices,
    });
    if !spec.uid_mappings.is_empty() {
        linux["uidMappings"] = serde_json::json!(ranges(&spec.uid_mappings));
        linux["gidMappings"] = serde_json::json!(ranges(&spec.gid_mappings));
    }
    if let Some(path) = &spec.cgroup_path {
        linux["cgroupsPath"] = serde_json::json!(path);
    }
    if let Some(profile) = &spec.seccomp {
        // docker's profile shape is the runtime spec's seccomp object.
        linux["seccomp"] =
            serde_json::to_value(profile).map_err(|e| Error::Other(e.to_string()))?;
    }
    let mut process = serde_json::json!({
        "terminal": p.terminal,
        "user": {"uid": p.user.uid, "gid": p.user.gid, "additionalGids": p.user.additional_gids},
        "args": p.args,
        "env": p.env,
        "cwd": if p.cwd.is_empty() { "/" } else { p.cwd.as_str() },
        "capabilities": {
            "bounding": caps, "effective": caps, "permitted": caps,
        },
        "rlimits": rlimits,
        "noNewPrivileges": p.no_new_privileges,
    });
    if let Some(adj) = spec.oom_score_adj {
        process["oomScoreAdj"] = serde_json::json!(adj);
    }
    let mut oci = serde_json::json!({
        "ociVersion": OCI_VERSION,
        "root": {"path": spec.rootfs, "readonly": spec.readonly_rootfs},
        "process": process,
        "mounts": mounts,
        "linux": linux,
        "annotations": annotations,
    });
    if let Some(h) = &spec.hostname {
        oci["hostname"] = serde_json::json!(h);
    }
    if !spec.create_container_hooks.is_empty() || !spec.start_container_hooks.is_empty() {
        oci["hooks"] = serde_json::json!({
            "createContainer": spec.create_container_hooks.iter().map(hook).collect::<Vec<_>>(),
            "startContainer": spec.start_container_hooks.iter().map(hook).collect::<Vec<_>>(),
        });
    }
    serde_json::from_value(oci)
        .map_err(|e| Error::Other(format!("the OCI form of {}: {e}", spec.id)))
}

/// `c 1:3 rwm` → `{"allow", "type": "c", "major": 1, "minor": 3, "access": "rwm"}`; `a`
/// (every device) has no type.
fn device_rule_json(r: &DeviceRule) -> serde_json::Value {
    let mut v = serde_json::json!({"allow": r.allow});
    let mut it = r.rule.split_whitespace();
    let kind = it.next().unwrap_or("a");
    if kind == "a" {
        return v;
    }
    v["type"] = serde_json::json!(kind);
    if let Some((major, minor)) = it.next().and_then(|n| n.split_once(':')) {
        for (key, n) in [("major", major), ("minor", minor)] {
            if let Ok(n) = n.parse::<i64>() {
                v[key] = serde_json::json!(n);
            }
        }
    }
    v["access"] = serde_json::json!(it.next().unwrap_or("rwm"));
    v
}

fn hooks(list: &Option<Vec<oci_spec::runtime::Hook>>) -> Vec<Hook> {
    list.iter()
        .flatten()
        .map(|h| Hook {
            path: h.path().clone(),
            args: h.args().clone().unwrap_or_default(),
            env: h.env().clone().unwrap_or_default(),
            timeout: h.timeout().and_then(|t| u64::try_from(t).ok()),
        })
        .collect()
}

/// The hooks the runtime binary runs itself, in its own namespaces.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RuntimeHooks {
    /// `prestart` (deprecated) then `createRuntime`: at create, once pid 1 is set up.
    pub create_runtime: Vec<Hook>,
    /// After `start` let the process run; failures are warnings.
    pub poststart: Vec<Hook>,
    /// At delete, once the container is gone; failures are warnings.
    pub poststop: Vec<Hook>,
}

impl RuntimeHooks {
    pub fn of(oci: &Spec) -> RuntimeHooks {
        let Some(h) = oci.hooks() else {
            return RuntimeHooks::default();
        };
        #[allow(deprecated)]
        let mut create_runtime = hooks(h.prestart());
        create_runtime.extend(hooks(h.create_runtime()));
        RuntimeHooks {
            create_runtime,
            poststart: hooks(h.poststart()),
            poststop: hooks(h.poststop()),
        }
    }
}

/// The cgroup limits of an OCI `linux.resources` object (config.json's, or
/// `update --resources`).
pub fn resources(r: &LinuxResources) -> Resources {
    let cpu = r.cpu().as_ref();
    Resources {
        memory: r
            .memory()
            .as_ref()
            .and_then(|m| m.limit())
            .and_then(|l| u64::try_from(l).ok()),
        pids_limit: r.pids().as_ref().map(|p| p.limit()),
        cpus: None,
        cpu_quota: cpu.and_then(|c| c.quota()),
        cpu_period: cpu.and_then(|c| c.period()),
        cpu_shares: cpu.and_then(|c| c.shares()),
        devices: r
            .devices()
            .iter()
            .flatten()
            .map(|d| {
                let kind = d.typ().map(|t| t.as_str().to_string());
                let num = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or("*".into());
                let rule = match kind.as_deref() {
                    None | Some("a") => "a".to_string(),
                    Some(k) => format!(
                        "{k} {}:{} {}",
                        num(d.major()),
                        num(d.minor()),
                        d.access().clone().unwrap_or_else(|| "rwm".into())
                    ),
                };
                DeviceRule {
                    allow: d.allow(),
                    rule,
                }
            })
            .collect(),
    }
}

/// Reads an `update --resources FILE` JSON object (`-` for stdin).
pub fn load_resources(path: &Path) -> Result<Resources> {
    let text = read_arg_file(path)?;
    let r: LinuxResources =
        serde_json::from_str(&text).map_err(|e| bundle_error(path, e.to_string()))?;
    Ok(resources(&r))
}

fn read_arg_file(path: &Path) -> Result<String> {
    match path == Path::new("-") {
        true => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(Error::io(path))?;
            Ok(s)
        }
        false => std::fs::read_to_string(path).map_err(Error::io(path)),
    }
}

/// Reads an `exec --process FILE` JSON object (`-` for stdin).
pub fn load_process(path: &Path) -> Result<ProcessSpec> {
    let text = read_arg_file(path)?;
    let p: oci_spec::runtime::Process =
        serde_json::from_str(&text).map_err(|e| bundle_error(path, e.to_string()))?;
    process_spec(&p)
}

/// The process of an OCI `process` object (config.json's, or `exec --process FILE`).
pub fn process_spec(p: &oci_spec::runtime::Process) -> Result<ProcessSpec> {
    let user = p.user();
    let caps = p
        .capabilities()
        .as_ref()
        .and_then(|c| c.bounding().clone())
        .unwrap_or_default();
    // Sorted: the bundle's set has no order.
    let mut cap_add: Vec<String> = caps
        .iter()
        .map(|c| {
            serde_json::to_value(c)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        })
        .collect();
    cap_add.sort();
    let rlimits = p
        .rlimits()
        .iter()
        .flatten()
        .map(|r| Rlimit {
            kind: serde_json::to_value(r.typ())
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            soft: r.soft(),
            hard: r.hard(),
        })
        .collect();
    Ok(ProcessSpec {
        args: p.args().clone().unwrap_or_default(),
        env: p.env().clone().unwrap_or_default(),
        cwd: p.cwd().to_string_lossy().into_owned(),
        user: UserSpec {
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
        },
        terminal: p.terminal().unwrap_or(false),
        no_new_privileges: p.no_new_privileges().unwrap_or(false),
        // The bundle lists the whole set: start from none.
        cap_drop: vec!["ALL".into()],
        cap_add,
        rlimits,
        // The container's filter, set by the caller that knows the container.
        seccomp: None,
    })
}

/// A container's lifecycle status (runtime-spec `status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        };
        f.write_str(s)
    }
}

/// A lifecycle verb whose allowed states runc 1.1 sets (the runtime spec leaves most of
/// them to the runtime; runc's callers match its texts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Start,
    Kill,
    /// `delete` without `--force`.
    Delete,
    Pause,
    Resume,
    Exec,
    Update,
    Ps,
}

/// Whether `verb` may act on container `id` in `status`; the error is runc's
/// ([`Error::WrongState`]).
pub fn allowed(verb: Verb, id: &str, status: Status) -> Result<()> {
    use Status::*;
    let refuse = |msg: &str| Err(Error::WrongState(msg.to_string()));
    match (verb, status) {
        (Verb::Start, Created)
        | (Verb::Kill, Created | Running | Paused)
        | (Verb::Delete, Created | Stopped)
        | (Verb::Pause, Created | Running)
        | (Verb::Resume, Paused)
        | (Verb::Exec, Created | Running)
        | (Verb::Update, Created | Running | Paused)
        | (Verb::Ps, _) => Ok(()),
        (Verb::Start, Stopped) => refuse("cannot start a container that has stopped"),
        (Verb::Start, Paused) => refuse("cannot start a container in the paused state"),
        (Verb::Start, Running) => refuse("cannot start an already running container"),
        (Verb::Delete, s) => Err(Error::WrongState(format!(
            "cannot delete container {id} that is not stopped: {s}"
        ))),
        (Verb::Resume, _) => refuse("container not paused"),
        (Verb::Exec, Paused) => {
            refuse("cannot exec in a paused container (use --ignore-paused to override)")
        }
        (Verb::Exec, _) => refuse("cannot exec in a stopped container"),
        (Verb::Kill | Verb::Pause | Verb::Update, _) => refuse("container not running"),
    }
}

/// What `state.json` holds about a container.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Saved {
    pub id: String,
    pub pid: i32,
    /// Field 22 of /proc/PID/stat at create: tells a reused pid from ours.
    pub start_time: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339.
    pub created: String,
    pub owner: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// The bundle's `cgroupsPath`; `None`: `strata/<id>`.
    #[serde(default)]
    pub cgroup_path: Option<String>,
    /// The hooks to run at start and delete (the bundle may be gone by then).
    #[serde(default)]
    pub hooks: RuntimeHooks,
}

impl Saved {
    /// The container's cgroup (it may not exist: rootless without delegation).
    pub fn cgroup(&self) -> Cgroup {
        match &self.cgroup_path {
            Some(p) => Cgroup::at(p),
            None => Cgroup::of(&self.id),
        }
    }
}

/// The runtime-spec state plus runc's `rootfs`, `created` and `owner`, as `state` prints it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub oci_version: String,
    pub id: String,
    pub status: Status,
    pub pid: i32,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "HashMap::is_empty", default)]
    pub annotations: HashMap<String, String>,
}

/// The start time of `pid` (clock ticks since boot), `None` when it is gone or a zombie.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command, which may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// The containers under one `--root`.
pub struct Root {
    dir: PathBuf,
}

impl Root {
    pub fn new(dir: impl Into<PathBuf>) -> Root {
        Root { dir: dir.into() }
    }

    /// The directory of container `id`.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// The start gate of container `id`.
    pub fn fifo(&self, id: &str) -> PathBuf {
        self.dir(id).join("exec.fifo")
    }

    /// Makes the directory and start gate of a new container `id`; fails when it exists.
    pub fn prepare(&self, id: &str) -> Result<PathBuf> {
        if id.is_empty() || id == "." || id == ".." || id.contains('/') {
            return Err(Error::InvalidId(id.to_string()));
        }
        std::fs::create_dir_all(&self.dir).map_err(Error::io(&self.dir))?;
        let dir = self.dir(id);
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::Exists(id.to_string()))
            }
            r => r.map_err(Error::io(&dir))?,
        }
        let fifo = self.fifo(id);
        // Writable by all, as runc's: pid 1 opens it for writing as the container's root,
        // which a user namespace may map to another host id than the caller's. Only the
        // owner may open it for reading, which is what starts the container.
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o622))
            .map_err(Error::sys(format!("mkfifo {}", fifo.display())))?;
        std::fs::set_permissions(&fifo, std::os::unix::fs::PermissionsExt::from_mode(0o622))
            .map_err(Error::io(&fifo))?;
        Ok(fifo)
    }

    pub fn save(&self, saved: &Saved) -> Result<()> {
        let path = self.dir(&saved.id).join("state.json");
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_vec(saved).map_err(|e| Error::Other(e.to_string()))?;
        std::fs::write(&tmp, text).map_err(Error::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(Error::io(&path))
    }

    /// The saved record of `id`; [`Error::NoSuchContainer`] when there is none.
    pub fn load(&self, id: &str) -> Result<Saved> {
        let path = self.dir(id).join("state.json");
        let text = match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoSuchContainer(id.to_string()))
            }
            r => r.map_err(Error::io(&path))?,
        };
        serde_json::from_slice(&text).map_err(|e| Error::Other(format!("{}: {e}", path.display())))
    }

    /// The status of a saved container, derived from its pid, cgroup and gate: frozen
    /// before created, as runc (a created container may be paused).
    pub fn status(&self, saved: &Saved) -> Status {
        if saved.pid <= 0 || start_time(saved.pid) != Some(saved.start_time) {
            return Status::Stopped;
        }
        let cg = saved.cgroup();
        if cg.exists() && cg.is_frozen() {
            return Status::Paused;
        }
        if self.fifo(&saved.id).exists() {
            return Status::Created;
        }
        Status::Running
    }

    pub fn state(&self, saved: &Saved) -> State {
        let status = self.status(saved);
        State {
            oci_version: OCI_VERSION.to_string(),
            id: saved.id.clone(),
            status,
            pid: if status == Status::Stopped {
                0
            } else {
                saved.pid
            },
            bundle: saved.bundle.clone(),
            rootfs: saved.rootfs.clone(),
            created: saved.created.clone(),
            owner: saved.owner.clone(),
            annotations: saved.annotations.clone(),
        }
    }

    /// Ids of every container under the root, sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|id| self.dir(id).join("state.json").exists())
            .collect();
        ids.sort();
        ids
    }

    /// Removes what is left of `id`: its cgroup and its directory.
    pub fn remove(&self, id: &str) -> Result<()> {
        match self.load(id) {
            Ok(saved) => saved.cgroup().destroy(),
            Err(_) => Cgroup::of(id).destroy(),
        }
        let dir = self.dir(id);
        std::fs::remove_dir_all(&dir).map_err(Error::io(&dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::UserSpec;

    /// A spec in the normal form [`from_oci`] reads back (see there), with every field set.
    fn full_spec() -> ContainerSpec {
        let mut caps: Vec<String> = crate::caps::DOCKER_DEFAULT
            .iter()
            .map(|c| format!("CAP_{c}").replace("CAP_CAP_", "CAP_"))
            .collect();
        caps.sort();
        ContainerSpec {
            id: "c1".into(),
            rootfs: "/r/rootfs".into(),
            process: ProcessSpec {
                args: vec!["sh".into(), "-c".into(), "true".into()],
                env: vec!["PATH=/bin".into(), "A=b c".into()],
                cwd: "/work".into(),
                user: UserSpec {
                    uid: 1000,
                    gid: 1000,
                    additional_gids: vec![5],
                },
                terminal: true,
                no_new_privileges: true,
                cap_add: caps,
                cap_drop: vec!["ALL".into()],
                rlimits: vec![Rlimit {
                    kind: "RLIMIT_NOFILE".into(),
                    soft: 10,
                    hard: 20,
                }],
                seccomp: None,
            },
            hostname: Some("h".into()),
            mounts: vec![
                MountSpec::Bind {
                    source: "/src".into(),
                    destination: "/data".into(),
                    readonly: true,
                },
                MountSpec::Tmpfs {
                    destination: "/t".into(),
                    options: "size=1m,mode=1777".into(),
                },
            ],
            readonly_rootfs: true,
            network: NetworkMode::None,
            netns: None,
            namespaces: vec![
                (NamespaceKind::User, NamespaceMode::New),
                (
                    NamespaceKind::Pid,
                    NamespaceMode::Join("/proc/1/ns/pid".into()),
                ),
                (NamespaceKind::Cgroup, NamespaceMode::Shared),
            ],
            uid_mappings: vec![IdRange {
                inside: 0,
                outside: 1000,
                count: 1,
            }],
            gid_mappings: vec![IdRange {
                inside: 0,
                outside: 1000,
                count: 1,
            }],
            privileged: false,
            resources: Resources {
                memory: Some(1 << 20),
                pids_limit: Some(10),
                cpus: None,
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                cpu_shares: Some(512),
                devices: vec![
                    DeviceRule {
                        allow: false,
                        rule: "a".into(),
                    },
                    DeviceRule {
                        allow: true,
                        rule: "c 1:3 rwm".into(),
                    },
                ],
            },
            init: true,
            seccomp: Some(
                crate::seccomp::Profile::parse(
                    br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                        {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
                )
                .unwrap(),
            ),
            start_gate: None,
            cgroup_path: Some("/x/c1".into()),
            sysctl: vec![("kernel.shmmax".into(), "1".into())],
            masked_paths: Some(vec!["/secret".into()]),
            readonly_paths: None,
            oom_score_adj: Some(5),
            no_pivot: false,
            devices: vec![Device {
                path: "/dev/fuse".into(),
                kind: 'c',
                major: 10,
                minor: 229,
                mode: Some(0o600),
                uid: Some(0),
                gid: None,
            }],
            create_container_hooks: Vec::new(),
            start_container_hooks: Vec::new(),
            hook_state: None,
        }
    }

    #[test]
    fn to_oci_and_back_is_the_same_spec() {
        let spec = full_spec();
        let oci = to_oci(&spec).unwrap();
        assert_eq!(from_oci("c1", Path::new("/b"), &oci).unwrap(), spec);
        // strata run's own defaults: nothing named, nothing added on the way back.
        let plain = ContainerSpec {
            id: "p".into(),
            rootfs: "/r".into(),
            process: ProcessSpec {
                args: vec!["true".into()],
                cwd: "/".into(),
                cap_drop: vec!["ALL".into()],
                cap_add: full_spec().process.cap_add,
                ..Default::default()
            },
            ..Default::default()
        };
        let back = from_oci("p", Path::new("/b"), &to_oci(&plain).unwrap()).unwrap();
        assert_eq!(back, plain);
        // --cpus is written as the quota the cgroup code sets.
        let cpus = ContainerSpec {
            resources: Resources {
                cpus: Some(0.5),
                ..Default::default()
            },
            ..plain.clone()
        };
        let back = from_oci("p", Path::new("/b"), &to_oci(&cpus).unwrap()).unwrap();
        assert_eq!(
            (back.resources.cpu_quota, back.resources.cpu_period),
            (Some(50_000), Some(100_000))
        );
    }

    #[test]
    fn runc_rules_refuse_with_runc_texts() {
        assert!(allowed(Verb::Start, "c", Status::Created).is_ok());
        assert!(allowed(Verb::Pause, "c", Status::Created).is_ok());
        let text = |v, s| allowed(v, "c", s).unwrap_err().to_string();
        assert_eq!(
            text(Verb::Delete, Status::Paused),
            "cannot delete container c that is not stopped: paused"
        );
        assert_eq!(text(Verb::Resume, Status::Running), "container not paused");
        assert_eq!(text(Verb::Kill, Status::Stopped), "container not running");
    }
}
