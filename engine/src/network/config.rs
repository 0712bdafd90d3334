//! What a container's network is, as its record keeps it and `inspect` shows it: the mode
//! `--network` resolved to, the DNS and hosts flags, the address. Plain data, so the
//! container records can hold it without depending on the network machinery.

use serde::{Deserialize, Serialize};
use strata_runtime::NetworkMode;

use super::files;
use crate::{Error, Result};

/// The network a container is on (`--network`), resolved at create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Bridge,
    Slirp4netns,
    None,
    Host,
    /// Another container's network namespace: its full id.
    Container(String),
}

impl Mode {
    /// docker's names; `default` (and no flag) is the bridge as root and slirp4netns
    /// rootless, where a bridge cannot be made. `container:NAME` comes back unresolved.
    pub fn parse(flag: Option<&str>, rootless: bool) -> Result<Mode> {
        Ok(match flag {
            None | Some("default") | Some("bridge") if rootless => Mode::Slirp4netns,
            None | Some("default") | Some("bridge") => Mode::Bridge,
            Some("slirp4netns") => Mode::Slirp4netns,
            Some("none") => Mode::None,
            Some("host") => Mode::Host,
            Some(other) => match other.strip_prefix("container:") {
                Some(name) if !name.is_empty() => Mode::Container(name.to_string()),
                _ => {
                    return Err(Error::InvalidRequest(format!(
                        "network {other} not found (strata knows bridge, slirp4netns, none, \
                         host and container:NAME)"
                    )))
                }
            },
        })
    }

    /// As stored and shown (`HostConfig.NetworkMode`): `bridge`, `container:ID`, …
    pub fn name(&self) -> String {
        match self {
            Mode::Bridge => "bridge".into(),
            Mode::Slirp4netns => "slirp4netns".into(),
            Mode::None => "none".into(),
            Mode::Host => "host".into(),
            Mode::Container(id) => format!("container:{id}"),
        }
    }

    /// A stored name back (an empty one, from a strata before networks, is the default).
    pub fn from_name(name: &str, rootless: bool) -> Mode {
        Mode::parse(Some(name).filter(|n| !n.is_empty()), rootless).unwrap_or(Mode::None)
    }

    /// What the runtime makes of it: a namespace of its own with loopback up for all but
    /// `host` (docker's `none` has `lo` up too).
    pub fn runtime(&self) -> NetworkMode {
        match self {
            Mode::Host => NetworkMode::Host,
            _ => NetworkMode::Private,
        }
    }
}

/// The network flags of a container, as `inspect` shows them in `HostConfig`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct NetworkConfig {
    /// [`Mode::name`].
    pub mode: String,
    /// `--dns`, `--dns-search`, `--dns-option`.
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    /// `--add-host`, as `NAME:IP` (`host-gateway` kept as a word).
    pub extra_hosts: Vec<String>,
}

impl NetworkConfig {
    /// Checks the flags; `mode` is already resolved.
    pub fn new(
        mode: &Mode,
        dns: &[String],
        dns_search: &[String],
        dns_options: &[String],
        add_host: &[String],
    ) -> Result<NetworkConfig> {
        for d in dns {
            files::parse_dns(d)?;
        }
        let mut extra_hosts = Vec::new();
        for h in add_host {
            let (name, ip) = files::parse_add_host(h)?;
            extra_hosts.push(format!("{name}:{ip}"));
        }
        if let Mode::Container(_) = mode {
            if !dns.is_empty() || !dns_search.is_empty() || !dns_options.is_empty() {
                return Err(Error::InvalidRequest(
                    "conflicting options: dns and the network mode".into(),
                ));
            }
            if !extra_hosts.is_empty() {
                return Err(Error::InvalidRequest(
                    "conflicting options: custom host-to-IP mapping and the network mode".into(),
                ));
            }
        }
        Ok(NetworkConfig {
            mode: mode.name(),
            dns: dns.to_vec(),
            dns_search: dns_search.to_vec(),
            dns_options: dns_options.to_vec(),
            extra_hosts,
        })
    }
}

/// What `inspect` shows of a running container's address (`NetworkSettings`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Address {
    pub ip: String,
    pub gateway: String,
    pub prefix_len: u8,
    pub mac: String,
}
