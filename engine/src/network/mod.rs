//! A container's network, as docker users expect it (`--network`):
//!
//! ```text
//!   bridge       root's default: the strata0 bridge, a veth, an address, NAT   (bridge.rs)
//!                -p through a userspace proxy in the monitor                    (proxy.rs)
//!   slirp4netns  the rootless default (`bridge` means it rootless, as podman):
//!                a user-mode stack on tap0, 10.0.2.100/24; -p through its API   (slirp.rs)
//!   none         loopback only
//!   host         the host's namespace, hosts and resolv.conf
//!   container:ID another running container's namespace and files
//! ```
//!
//! The monitor makes the namespace first ([`bridge::new_netns`], held by a descriptor),
//! configures it, then starts the container in it (`ContainerSpec::netns`): the process
//! never runs before its network is up. `/etc/hosts`, `/etc/hostname` and
//! `/etc/resolv.conf` ([`files`]) are written in the container's directory and bind-mounted
//! over the root, whose init layer (`init/`, a lower under the upper, as docker's `-init`
//! layer) holds empty files to mount on: nothing of them reaches the upper, so `diff`,
//! `commit` and `export` never see them.

pub mod bridge;
pub mod config;
pub mod files;
pub mod proxy;
pub mod slirp;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use strata_image::store::Store;
use strata_runtime::{MountSpec, NetworkMode};

pub use config::{Address, Mode, NetworkConfig};
pub use slirp::{find_helper, have_pasta, Published};

use crate::containers::{Containers, PortBinding, Record};
use crate::{Error, Result};

/// slirp4netns's fixed addresses (its defaults for 10.0.2.0/24).
pub const SLIRP_IP: &str = "10.0.2.100";
pub const SLIRP_GATEWAY: &str = "10.0.2.2";
pub const SLIRP_DNS: &str = "10.0.2.3";
pub const SLIRP_MAC: &str = "02:42:0a:00:02:64";

/// The container's network while it runs; dropping it stops the helpers and gives the
/// bridge address and veth back.
#[derive(Default)]
pub struct Network {
    /// The namespace, until the container holds it.
    ns: Option<OwnedFd>,
    /// What the runtime joins (`ContainerSpec::netns`).
    pub netns: Option<PathBuf>,
    /// The three files, mounted first (a `-v` on one of them wins).
    pub mounts: Vec<MountSpec>,
    /// The hostname, for `container:` (the other container's).
    pub hostname: Option<String>,
    pub address: Address,
    /// The ports as published (random host ports chosen).
    pub published: Vec<PortBinding>,
    slirp: Option<Published>,
    proxy: Option<proxy::Proxy>,
    /// The container whose bridge lease this is.
    bridge: Option<String>,
}

impl Drop for Network {
    fn drop(&mut self) {
        self.proxy.take();
        self.slirp.take();
        if let Some(id) = self.bridge.take() {
            bridge::release(&id);
        }
        self.ns.take();
    }
}

/// The init layer: a directory under the upper with empty `etc/hosts`, `etc/hostname` and
/// `etc/resolv.conf` to bind-mount on, so mounting them writes nothing in the upper.
pub fn init_layer(dir: &Path) -> Result<PathBuf> {
    let init = dir.join("init");
    let etc = init.join("etc");
    std::fs::create_dir_all(&etc).map_err(|source| Error::Create {
        path: etc.clone(),
        source,
    })?;
    for name in ["hosts", "hostname", "resolv.conf"] {
        let p = etc.join(name);
        if !p.exists() {
            std::fs::write(&p, b"").map_err(|source| Error::Create { path: p, source })?;
        }
    }
    Ok(init)
}

fn write(path: PathBuf, text: &str) -> Result<PathBuf> {
    std::fs::write(&path, text).map_err(|source| Error::Create {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

fn bind(source: PathBuf, destination: &str) -> MountSpec {
    MountSpec::Bind {
        source,
        destination: destination.to_string(),
        readonly: false,
    }
}

fn read_host(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The running container `id`'s host pid 1, for `container:` networks.
fn running_pid(store: &Store, id: &str) -> Result<i32> {
    let st = Containers::new(store).state(id)?;
    if !st.status.is_active() || st.pid <= 0 {
        return Err(Error::InvalidRequest(format!(
            "cannot join network of a non running container: {id}"
        )));
    }
    Ok(st.pid)
}

/// The pid whose user namespace a rootless monitor must join instead of making its own
/// (`container:` networks: only the namespace's owner may enter it).
pub fn user_namespace_to_join(store: &Store, rec: &Record) -> Result<Option<i32>> {
    match Mode::from_name(&rec.network.mode, !nix::unistd::geteuid().is_root()) {
        Mode::Container(id) => running_pid(store, &id).map(Some),
        _ => Ok(None),
    }
}

/// Sets up container `rec`'s network before its start, in the monitor (after its user and
/// mount namespaces): the namespace, its link, the files, published ports.
pub fn start(store: &Store, rec: &Record, dir: &Path) -> Result<Network> {
    let rootless = !nix::unistd::geteuid().is_root();
    let mode = Mode::from_name(&rec.network.mode, rootless);
    let cfg = &rec.network;
    let mut net = Network::default();
    let hostname = rec.spec.hostname.clone().unwrap_or_default();
    if let Mode::Container(other) = &mode {
        let pid = running_pid(store, other)?;
        net.netns = Some(PathBuf::from(format!("/proc/{pid}/ns/net")));
        let other_dir = Containers::new(store).dir(other);
        for (name, dest) in [
            ("hosts", "/etc/hosts"),
            ("hostname", "/etc/hostname"),
            ("resolv.conf", "/etc/resolv.conf"),
        ] {
            net.mounts.push(bind(other_dir.join(name), dest));
        }
        net.hostname = std::fs::read_to_string(other_dir.join("hostname"))
            .ok()
            .map(|h| h.trim().to_string());
        return Ok(net);
    }
    if matches!(mode, Mode::Bridge | Mode::Slirp4netns) {
        let ns = bridge::new_netns()?;
        net.netns = Some(bridge::ns_path(&ns));
        net.ns = Some(ns);
    }
    let ns_path = net.netns.clone();
    match &mode {
        Mode::Bridge => {
            let ns = net.ns.as_ref().expect("made above");
            net.bridge = Some(rec.id.clone());
            let att = bridge::attach(&rec.id, ns)?;
            net.address = Address {
                ip: att.ip.clone(),
                gateway: att.gateway.clone(),
                prefix_len: att.prefix_len,
                mac: att.mac.clone(),
            };
            let mut ports = rec.ports.clone();
            for p in &mut ports {
                if p.host_port == 0 {
                    p.host_port = slirp::free_port(&p.proto, &p.host_ip)?;
                }
            }
            if !ports.is_empty() {
                net.proxy = Some(proxy::start(&att.ip, &ports)?);
            }
            net.published = ports;
        }
        Mode::Slirp4netns => {
            let helper = find_helper().ok_or(Error::NoSlirp)?;
            let path = ns_path.as_deref().expect("made above");
            let p = slirp::publish(&helper, dir, path, &rec.ports)
                .map_err(|e| Error::Publish(Box::new(e)))?;
            net.published = p.ports.clone();
            net.slirp = Some(p);
            net.address = Address {
                ip: SLIRP_IP.into(),
                gateway: SLIRP_GATEWAY.into(),
                prefix_len: 24,
                mac: SLIRP_MAC.into(),
            };
        }
        _ => {}
    }
    // `host-gateway`: the host as the container reaches it.
    let gateway = match &mode {
        Mode::Slirp4netns => SLIRP_GATEWAY.to_string(),
        Mode::Host => "127.0.0.1".to_string(),
        _ => bridge::GATEWAY.to_string(),
    };
    let extra: Vec<(String, String)> = cfg
        .extra_hosts
        .iter()
        .filter_map(|h| h.split_once(':'))
        .map(|(n, ip)| {
            let ip = if ip == "host-gateway" { &gateway } else { ip };
            (n.to_string(), ip.to_string())
        })
        .collect();
    let host_resolv = read_host("/etc/resolv.conf");
    let dns = files::DnsConfig {
        servers: &cfg.dns,
        search: &cfg.dns_search,
        options: &cfg.dns_options,
    };
    let (hosts, resolv, name) = match &mode {
        Mode::Host => (
            files::host_hosts(&read_host("/etc/hosts"), &extra),
            files::resolv_conf(&host_resolv, &dns, None, false),
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
        Mode::Slirp4netns => (
            files::hosts(&extra, Some((SLIRP_IP, &hostname))),
            files::resolv_conf(&host_resolv, &dns, Some(SLIRP_DNS), true),
            hostname.clone(),
        ),
        Mode::Bridge => (
            files::hosts(&extra, Some((&net.address.ip, &hostname))),
            files::resolv_conf(&host_resolv, &dns, None, true),
            hostname.clone(),
        ),
        // `none`: nothing but loopback, so the hostname is a loopback name too.
        _ => (
            files::hosts(&extra, Some(("127.0.0.1", &hostname))),
            files::resolv_conf(&host_resolv, &dns, None, true),
            hostname.clone(),
        ),
    };
    net.mounts = vec![
        bind(write(dir.join("hosts"), &hosts)?, "/etc/hosts"),
        bind(
            write(dir.join("hostname"), &format!("{name}\n"))?,
            "/etc/hostname",
        ),
        bind(write(dir.join("resolv.conf"), &resolv)?, "/etc/resolv.conf"),
    ];
    Ok(net)
}

/// The network `inspect` and `ps` name for `rec` (a record from before networks: what its
/// runtime mode was).
pub fn mode_name(rec: &Record) -> String {
    if !rec.network.mode.is_empty() {
        return rec.network.mode.clone();
    }
    match rec.spec.network {
        NetworkMode::Host => "host".into(),
        NetworkMode::None => "none".into(),
        NetworkMode::Private => "private".into(),
    }
}

/// Gives back what a container whose monitor is gone (or that is being removed) may still
/// hold: its bridge address and veth. Idempotent.
pub fn release(rec: &Record) {
    let rootless = !nix::unistd::geteuid().is_root();
    if !rootless && Mode::from_name(&rec.network.mode, rootless) == Mode::Bridge {
        bridge::release(&rec.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_follow_docker_names() {
        assert_eq!(Mode::parse(None, false).unwrap(), Mode::Bridge);
        assert_eq!(
            Mode::parse(Some("default"), true).unwrap(),
            Mode::Slirp4netns
        );
        assert_eq!(
            Mode::parse(Some("bridge"), true).unwrap(),
            Mode::Slirp4netns
        );
        assert_eq!(
            Mode::parse(Some("container:web"), false).unwrap(),
            Mode::Container("web".into())
        );
        assert!(Mode::parse(Some("container:"), false).is_err());
        assert!(Mode::parse(Some("mynet"), false).is_err());
        for m in [Mode::Bridge, Mode::Slirp4netns, Mode::None, Mode::Host] {
            assert_eq!(Mode::from_name(&m.name(), false), m);
        }
        assert_eq!(Mode::None.runtime(), NetworkMode::Private);
        assert_eq!(Mode::Host.runtime(), NetworkMode::Host);
        assert_eq!(Mode::Bridge.runtime(), NetworkMode::Private);
    }

    #[test]
    fn flags_are_checked_and_kept() {
        let c = NetworkConfig::new(
            &Mode::Bridge,
            &["1.1.1.1".into()],
            &[],
            &[],
            &["gw:host-gateway".into(), "db=10.0.0.5".into()],
        )
        .unwrap();
        assert_eq!(c.extra_hosts, ["gw:host-gateway", "db:10.0.0.5"]);
        assert!(NetworkConfig::new(&Mode::Bridge, &["x".into()], &[], &[], &[]).is_err());
        assert!(NetworkConfig::new(
            &Mode::Container("a".into()),
            &["1.1.1.1".into()],
            &[],
            &[],
            &[]
        )
        .is_err());
    }
}
