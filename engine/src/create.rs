//! `create`: from docker's flags and the image config to a stored container ([`Record`]).
//!
//! The image config applies as docker applies it: `Env` first and `-e`/`--env-file` over it
//! by name; `Entrypoint` + `Cmd`, where a command on the line replaces `Cmd` and
//! `--entrypoint` replaces `Entrypoint` and drops the image's `Cmd`; `WorkingDir` unless
//! `-w`; `User` unless `-u`; each of `Volumes` an anonymous volume unless a `-v` covers it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use strata_image::pull::PullObserver;
use strata_image::reference::Reference;
use strata_image::store::{demo, image::Image, Store};
use strata_runtime::seccomp::Profile;
use strata_runtime::{ContainerSpec, MountSpec, NetworkMode, ProcessSpec, Resources};

use crate::containers::{self, Containers, PortBinding, Record, VolumeMount};
use crate::flags::{
    environment, keys, parse_bytes, parse_port, parse_ulimit, parse_volume, seccomp_option,
    strings, Seccomp, VolumeSpec,
};
use crate::network::{Mode, NetworkConfig};
use crate::volumes::Volumes;
use crate::{Error, Result};

/// What `create` is asked: docker's flags as given (parsed and checked here), then
/// `IMAGE [COMMAND [ARG...]]` in `argv`.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// Keep STDIN open even if not attached
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    pub tty: bool,
    /// Automatically remove the container when it exits
    pub rm: bool,
    /// Assign a name to the container
    pub name: Option<String>,
    /// Set environment variables
    pub env: Vec<String>,
    /// Read in a file of environment variables
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    pub user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    pub entrypoint: Option<String>,
    /// Container host name
    pub hostname: Option<String>,
    /// Bind mount a volume (HOST:CTR, HOST:CTR:ro, NAME:CTR, or CTR for an anonymous volume)
    pub volume: Vec<String>,
    /// Mount a tmpfs directory (PATH or PATH:OPTIONS)
    pub tmpfs: Vec<String>,
    /// Mount the container's root filesystem as read only
    pub read_only: bool,
    /// Connect a container to a network (bridge, slirp4netns, none, host, container:NAME;
    /// default: bridge as root, slirp4netns rootless)
    pub network: Option<String>,
    /// Set custom DNS servers
    pub dns: Vec<String>,
    /// Set custom DNS search domains
    pub dns_search: Vec<String>,
    /// Set DNS options
    pub dns_option: Vec<String>,
    /// Add a custom host-to-IP mapping (host:ip; ip may be host-gateway)
    pub add_host: Vec<String>,
    /// Publish a container's port(s) to the host (HOST:CTR, IP:HOST:CTR, CTR; /udp after CTR)
    pub publish: Vec<String>,
    /// Publish all exposed ports to random ports
    pub publish_all: bool,
    /// Expose a port or a range of ports
    pub expose: Vec<String>,
    /// Memory limit (e.g. 512m, 1g)
    pub memory: Option<String>,
    /// Tune container pids limit (-1 for unlimited)
    pub pids_limit: Option<i64>,
    /// Number of CPUs
    pub cpus: Option<String>,
    /// Add Linux capabilities
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities
    pub cap_drop: Vec<String>,
    /// Give extended privileges to this container
    pub privileged: bool,
    /// Run an init inside the container that forwards signals and reaps processes
    pub init: bool,
    /// Security options (no-new-privileges)
    pub security_opt: Vec<String>,
    /// Ulimit options (e.g. nofile=1024:2048)
    pub ulimit: Vec<String>,
    /// Set metadata on a container
    pub label: Vec<String>,
    /// Signal to stop the container (default: the image's StopSignal, else SIGTERM)
    pub stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container before SIGKILL
    pub stop_timeout: Option<i64>,
    /// IMAGE [COMMAND [ARG...]]
    pub argv: Vec<String>,
}

/// The image to run: the demo image is made on first use; another unknown one is pulled
/// (`on_pull` hears of it first, for docker's `Unable to find image` line).
pub(crate) fn resolve_image(
    store: &Store,
    name: &str,
    pull: &dyn PullObserver,
    on_pull: &dyn Fn(&Reference),
) -> Result<Image> {
    let table = store.table()?;
    if let Ok(found) = store.find(&table, name) {
        return Ok(found.image().clone());
    }
    if demo::is_demo(name) {
        demo::ensure(store).map_err(Error::Demo)?;
        let table = store.table()?;
        return Ok(store.find(&table, demo::REFERENCE)?.image().clone());
    }
    let reference = Reference::parse(name)?;
    on_pull(&reference);
    strata_image::pull::pull(
        store,
        &strata_image::registry::auth::AuthFile::new(store.root()),
        &reference,
        &strata_image::pull::PullOptions {
            platform: strata_image::oci::PlatformSpec::host(),
            explicit_platform: false,
            insecure: false,
            full: false,
        },
        pull,
    )?;
    let table = store.table()?;
    Ok(store.find(&table, name)?.image().clone())
}

/// Validates the flags, resolves the image and stores the container (state `created`).
/// Nothing is left behind on error.
/// `pull` reports the pull of a missing image; `on_pull` is told before it starts.
pub fn create(
    store: &Store,
    opts: &CreateOptions,
    pull: &dyn PullObserver,
    on_pull: &dyn Fn(&Reference),
) -> Result<Record> {
    crate::monitor::cleanup_stale(store);
    // Flags first: a bad one costs no image lookup or pull.
    let memory = opts
        .memory
        .as_deref()
        .map(|m| {
            parse_bytes(m).map_err(|e| {
                Error::InvalidFlag(format!(
                    "invalid argument \"{m}\" for \"-m, --memory\" flag: {e}"
                ))
            })
        })
        .transpose()?;
    if let Some(m) = memory {
        if m < 6 * 1024 * 1024 {
            return Err(Error::InvalidRequest(
                "Minimum memory limit allowed is 6MB".into(),
            ));
        }
    }
    let cpus = match opts.cpus.as_deref() {
        None => None,
        Some(c) => {
            let v: f64 = c
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| {
                    Error::InvalidFlag(format!("invalid argument \"{c}\" for \"--cpus\" flag"))
                })?;
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            if v > n as f64 || (v > 0.0 && v < 0.01) {
                return Err(Error::InvalidRequest(format!(
                    "range of CPUs is from 0.01 to {n}.00, as there are only {n} CPUs available"
                )));
            }
            (v > 0.0).then_some(v)
        }
    };
    let rootless = !nix::unistd::geteuid().is_root();
    let mut mode = Mode::parse(opts.network.as_deref(), rootless)?;
    if let Mode::Container(name) = &mode {
        if opts.hostname.is_some() {
            return Err(Error::InvalidRequest(
                "conflicting options: hostname and the network mode".into(),
            ));
        }
        mode = Mode::Container(Containers::new(store).find(name)?.id);
    }
    // Rootless without slirp4netns: loopback only, unless asked for by name (or -p, below).
    if mode == Mode::Slirp4netns
        && opts.network.as_deref() != Some("slirp4netns")
        && opts.publish.is_empty()
        && !opts.publish_all
        && crate::network::find_helper().is_none()
    {
        mode = Mode::None;
    }
    let network_config = NetworkConfig::new(
        &mode,
        &opts.dns,
        &opts.dns_search,
        &opts.dns_option,
        &opts.add_host,
    )?;
    let network = mode.runtime();
    let volume_specs = opts
        .volume
        .iter()
        .map(|v| parse_volume(v))
        .collect::<Result<Vec<_>>>()?;
    let mut ports = opts
        .publish
        .iter()
        .map(|p| parse_port(p))
        .collect::<Result<Vec<_>>>()?;
    let rlimits = opts
        .ulimit
        .iter()
        .map(|u| parse_ulimit(u))
        .collect::<Result<Vec<_>>>()?;
    let mut no_new_privileges = false;
    let mut seccomp = Seccomp::Default;
    // docker stores a file profile's content, not its path, in HostConfig.SecurityOpt.
    let mut security_opt = Vec::new();
    for s in &opts.security_opt {
        if let Some(v) = s
            .strip_prefix("seccomp=")
            .or_else(|| s.strip_prefix("seccomp:"))
        {
            seccomp = seccomp_option(v)?;
            security_opt.push(match &seccomp {
                Seccomp::File(text, _) => format!("seccomp={text}"),
                _ => s.clone(),
            });
            continue;
        }
        security_opt.push(s.clone());
        match s.as_str() {
            "no-new-privileges" | "no-new-privileges=true" | "no-new-privileges:true" => {
                no_new_privileges = true
            }
            "no-new-privileges=false" | "no-new-privileges:false" => no_new_privileges = false,
            s if s.starts_with("apparmor=") || s.starts_with("label=") => {}
            _ => return Err(Error::InvalidFlag(format!("invalid --security-opt: {s:?}"))),
        }
    }
    let caps: Vec<String> =
        strata_runtime::caps::resolve(opts.privileged, &opts.cap_add, &opts.cap_drop)?
            .iter()
            .map(|c| c.to_string())
            .collect();
    // docker: --privileged runs unconfined whatever the profile.
    let seccomp = match seccomp {
        _ if opts.privileged => None,
        Seccomp::Unconfined => None,
        Seccomp::Default => Some(Profile::docker_default(&caps)),
        Seccomp::File(_, p) => Some(p.for_caps(&caps)),
    };
    let mut labels = BTreeMap::new();
    for l in &opts.label {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        labels.insert(k.to_string(), v.to_string());
    }
    if let Some(name) = &opts.name {
        if !containers::valid_name(name) {
            return Err(Error::InvalidName(name.clone()));
        }
    }
    if let Some(sig) = &opts.stop_signal {
        strata_runtime::process::parse_signal(sig)?;
    }
    let (image_name, command) = opts
        .argv
        .split_first()
        .ok_or_else(|| Error::InvalidRequest("no image given".into()))?;

    let img = resolve_image(store, image_name, pull, on_pull)?;
    let config = img.config.config.clone().unwrap_or(Value::Null);
    let cfg = |k: &str| config.get(k);
    let env = environment(&strings(cfg("Env")), &opts.env, &opts.env_file)?;
    let stop_signal = opts.stop_signal.clone().unwrap_or_else(|| {
        cfg("StopSignal")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    });
    let (entrypoint, cmd) = match &opts.entrypoint {
        Some(e) if e.is_empty() => (Vec::new(), command.to_vec()),
        Some(e) => (vec![e.clone()], command.to_vec()),
        None if !command.is_empty() => (strings(cfg("Entrypoint")), command.to_vec()),
        None => (strings(cfg("Entrypoint")), strings(cfg("Cmd"))),
    };
    let argv: Vec<String> = entrypoint.iter().chain(cmd.iter()).cloned().collect();
    if argv.is_empty() {
        return Err(Error::InvalidRequest("No command specified".into()));
    }
    let mut exposed: Vec<String> = keys(cfg("ExposedPorts"));
    for e in &opts.expose {
        let e = if e.contains('/') {
            e.clone()
        } else {
            format!("{e}/tcp")
        };
        if !exposed.contains(&e) {
            exposed.push(e);
        }
    }
    if opts.publish_all {
        for e in &exposed {
            let (p, proto) = e.split_once('/').unwrap_or((e, "tcp"));
            if let Ok(p) = p.parse() {
                ports.push(PortBinding {
                    host_ip: String::new(),
                    host_port: 0,
                    container_port: p,
                    proto: proto.into(),
                });
            }
        }
    }
    if !ports.is_empty() && network != NetworkMode::Host {
        if matches!(mode, Mode::None | Mode::Container(_)) {
            return Err(Error::InvalidRequest(
                "conflicting options: port publishing and the container type network mode".into(),
            ));
        }
        if mode == Mode::Slirp4netns && crate::network::find_helper().is_none() {
            let pasta = match crate::network::have_pasta() {
                true => " (pasta is installed, but strata does not drive it yet)",
                false => "",
            };
            return Err(Error::InvalidRequest(format!(
                "publishing ports (-p, -P) needs slirp4netns, which is not installed{pasta}: \
                 apt-get install slirp4netns"
            )));
        }
        if mode == Mode::Bridge {
            crate::network::proxy::check(&ports)?;
        }
    }

    let id = containers::new_id()?;
    // Empty: generated when the container is stored, under the names lock.
    let name = opts.name.clone().unwrap_or_default();
    // The layers must have their indexes before a monitor mounts them.
    store.image_layer_dirs(&img)?;
    let volumes_store = Volumes::new(store);
    // Held until the record naming the volumes is written (or they are removed again):
    // `volume rm` sees them in use or not at all.
    let held = volumes_store.lock()?;
    let mut volumes = Vec::new();
    let mut anonymous = Vec::new();
    let mut mounts = Vec::new();
    // Named volumes made by this create, removed again if it fails.
    let mut made = Vec::new();
    let result = (|| -> Result<Record> {
        for v in &volume_specs {
            let (kind, vname, source, ctr, ro) = match v {
                VolumeSpec::Bind { host, ctr, ro } => {
                    let host = std::path::absolute(host).map_err(|source| Error::BindSource {
                        path: host.clone(),
                        source,
                    })?;
                    if !host.exists() {
                        std::fs::create_dir_all(&host).map_err(|source| {
                            Error::CreateBindSource {
                                path: host.clone(),
                                source,
                            }
                        })?;
                    }
                    ("bind", String::new(), host, ctr.clone(), *ro)
                }
                VolumeSpec::Named { name, ctr, ro } => {
                    if !volumes_store.exists(name) {
                        made.push(name.clone());
                    }
                    let data = volumes_store.ensure(&held, name)?;
                    ("volume", name.clone(), data, ctr.clone(), *ro)
                }
                VolumeSpec::Anonymous { ctr } => {
                    let vname = volumes_store.make_anonymous(&held)?;
                    let data = volumes_store.data(&vname);
                    anonymous.push(vname.clone());
                    ("volume", vname, data, ctr.clone(), false)
                }
            };
            volumes.push(VolumeMount {
                kind: kind.into(),
                name: vname,
                source,
                destination: ctr,
                rw: !ro,
            });
        }
        for dest in keys(cfg("Volumes")) {
            if volumes.iter().any(|v| v.destination == dest) {
                continue;
            }
            let vname = volumes_store.make_anonymous(&held)?;
            let data = volumes_store.data(&vname);
            anonymous.push(vname.clone());
            volumes.push(VolumeMount {
                kind: "volume".into(),
                name: vname,
                source: data,
                destination: dest,
                rw: true,
            });
        }
        for v in &volumes {
            mounts.push(MountSpec::Bind {
                source: v.source.clone(),
                destination: v.destination.clone(),
                readonly: !v.rw,
            });
        }
        for t in &opts.tmpfs {
            let (dest, options) = t.split_once(':').unwrap_or((t, ""));
            if !dest.starts_with('/') {
                return Err(Error::InvalidFlag(format!(
                    "invalid tmpfs mount point {dest:?}: not an absolute path"
                )));
            }
            mounts.push(MountSpec::Tmpfs {
                destination: dest.to_string(),
                options: options.to_string(),
            });
            volumes.push(VolumeMount {
                kind: "tmpfs".into(),
                destination: dest.to_string(),
                rw: true,
                ..Default::default()
            });
        }
        let user = opts.user.clone().unwrap_or_else(|| {
            cfg("User")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        });
        let cwd = opts.workdir.clone().unwrap_or_else(|| {
            cfg("WorkingDir")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        });
        if !cwd.is_empty() && !cwd.starts_with('/') {
            return Err(Error::InvalidRequest(format!(
                "the working directory '{cwd}' is invalid, it needs to be an absolute path"
            )));
        }
        let hostname = opts
            .hostname
            .clone()
            .unwrap_or_else(|| id[..12].to_string());
        let spec = ContainerSpec {
            id: id.clone(),
            rootfs: PathBuf::new(),
            process: ProcessSpec {
                args: argv.clone(),
                env,
                cwd,
                terminal: opts.tty,
                no_new_privileges,
                cap_add: opts.cap_add.clone(),
                cap_drop: opts.cap_drop.clone(),
                rlimits,
                ..Default::default()
            },
            hostname: match network {
                NetworkMode::Host if opts.hostname.is_none() => None,
                _ => Some(hostname),
            },
            mounts,
            readonly_rootfs: opts.read_only,
            network,
            netns: None,
            privileged: opts.privileged,
            resources: Resources {
                memory,
                pids_limit: opts.pids_limit,
                cpus,
                ..Default::default()
            },
            init: opts.init,
            seccomp,
            // strata's monitor starts the process at once: no created state.
            start_gate: None,
            // The default namespaces; a rootless user namespace is the monitor's own.
            ..Default::default()
        };
        let mut image_labels: BTreeMap<String, String> = img.config.labels();
        image_labels.extend(labels.clone());
        let rec = Record {
            id: id.clone(),
            name: name.clone(),
            image: image_name.clone(),
            image_id: img.id.to_string(),
            diff_ids: img
                .config
                .rootfs
                .diff_ids
                .iter()
                .map(|d| d.to_string())
                .collect(),
            created: jiff::Timestamp::now().to_string(),
            spec,
            user,
            path: argv[0].clone(),
            args: argv[1..].to_vec(),
            cmd,
            entrypoint,
            labels: image_labels,
            auto_remove: opts.rm,
            interactive: opts.interactive,
            tty: opts.tty,
            volumes: volumes.clone(),
            anonymous_volumes: anonymous.clone(),
            ports: ports.clone(),
            exposed: exposed.clone(),
            security_opt: security_opt.clone(),
            stop_signal: stop_signal.clone(),
            stop_timeout: opts.stop_timeout,
            network: network_config.clone(),
        };
        let mut rec = rec;
        Containers::new(store).create(&mut rec)?;
        Ok(rec)
    })();
    if result.is_err() {
        for v in anonymous.iter().chain(made.iter()) {
            let _ = volumes_store.remove(v);
        }
    }
    drop(held);
    result
}
