//! The three files every container gets, as docker writes them: `/etc/hosts`,
//! `/etc/hostname` and `/etc/resolv.conf`. Their text is made here from plain values (unit
//! tested); the monitor writes them in the container's directory and bind-mounts them over
//! the root, so they never reach the upper (diff, commit and export do not see them).

use std::net::IpAddr;

use crate::{Error, Result};

/// docker's localhost and IPv6 lines, first in every `/etc/hosts` it writes.
const LOCALHOST: &str = "127.0.0.1\tlocalhost\n\
::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\n\
ff00::0\tip6-mcastprefix\n\
ff02::1\tip6-allnodes\n\
ff02::2\tip6-allrouters\n";

/// docker's fallback when the host has no resolver a container can reach.
const FALLBACK_DNS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

/// `--add-host NAME:IP` checked (docker also takes `NAME=IP`); `host-gateway` stays a word,
/// resolved when the container starts.
pub fn parse_add_host(spec: &str) -> Result<(String, String)> {
    let bad = || {
        Error::InvalidFlag(format!("invalid argument \"{spec}\" for \"--add-host\" flag: bad format for add-host: \"{spec}\""))
    };
    let (name, ip) = spec
        .split_once('=')
        .or_else(|| spec.split_once(':'))
        .ok_or_else(bad)?;
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return Err(bad());
    }
    // An IPv6 address may come in brackets (`host:[::1]`).
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if ip != "host-gateway" && ip.parse::<IpAddr>().is_err() {
        return Err(Error::InvalidFlag(format!(
            "invalid argument \"{spec}\" for \"--add-host\" flag: invalid IP address in add-host: \"{ip}\""
        )));
    }
    Ok((name.to_string(), ip.to_string()))
}

/// `--dns IP` checked.
pub fn parse_dns(ip: &str) -> Result<()> {
    ip.parse::<IpAddr>().map(drop).map_err(|_| {
        Error::InvalidFlag(format!(
            "invalid argument \"{ip}\" for \"--dns\" flag: {ip} is not an ip address"
        ))
    })
}

/// What `/etc/hosts` says: `extra` are `(name, ip)` from `--add-host` with `host-gateway`
/// already replaced; `me` is the container's own address and hostname, when it has one.
pub fn hosts(extra: &[(String, String)], me: Option<(&str, &str)>) -> String {
    let mut s = String::from(LOCALHOST);
    for (name, ip) in extra {
        s.push_str(&format!("{ip}\t{name}\n"));
    }
    if let Some((ip, name)) = me {
        s.push_str(&format!("{ip}\t{name}\n"));
    }
    s
}

/// The host's `/etc/hosts` (for `--network host`) with the `--add-host` lines after it.
pub fn host_hosts(host: &str, extra: &[(String, String)]) -> String {
    let mut s = host.to_string();
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    for (name, ip) in extra {
        s.push_str(&format!("{ip}\t{name}\n"));
    }
    s
}

/// What the user asked of `/etc/resolv.conf`.
#[derive(Clone, Debug, Default)]
pub struct DnsConfig<'a> {
    pub servers: &'a [String],
    pub search: &'a [String],
    pub options: &'a [String],
}

/// `/etc/resolv.conf` from the host's (`host`) and the flags. `forwarder`: the one resolver
/// the container can use (slirp4netns's 10.0.2.3) instead of the host's. `skip_loopback`:
/// drop the host's 127.x / ::1 resolvers, which a container in its own network namespace
/// cannot reach (docker's rule for the bridge), falling back to docker's public ones.
pub fn resolv_conf(
    host: &str,
    flags: &DnsConfig<'_>,
    forwarder: Option<&str>,
    skip_loopback: bool,
) -> String {
    let mut servers: Vec<String> = Vec::new();
    let mut search: Vec<String> = Vec::new();
    let mut options: Vec<String> = Vec::new();
    for line in host.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => servers.extend(words.next().map(str::to_string)),
            Some("search") | Some("domain") => search = words.map(str::to_string).collect(),
            Some("options") => options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    if let Some(f) = forwarder {
        servers = vec![f.to_string()];
    } else if skip_loopback {
        servers.retain(|s| !s.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()));
        if servers.is_empty() {
            servers = FALLBACK_DNS.iter().map(|s| s.to_string()).collect();
        }
    }
    if !flags.servers.is_empty() {
        servers = flags.servers.to_vec();
    }
    if !flags.search.is_empty() {
        // `--dns-search .` means no search domains, as docker.
        search = flags.search.iter().filter(|s| *s != ".").cloned().collect();
    }
    if !flags.options.is_empty() {
        options = flags.options.to_vec();
    }
    let mut s = String::new();
    if !search.is_empty() {
        s.push_str(&format!("search {}\n", search.join(" ")));
    }
    for ns in &servers {
        s.push_str(&format!("nameserver {ns}\n"));
    }
    if !options.is_empty() {
        s.push_str(&format!("options {}\n", options.join(" ")));
    }
    s
}

/// The MAC address docker derives from a container's IPv4 address: `02:42` and its four
/// bytes.
pub fn mac_for(ip: std::net::Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_has_localhost_extra_hosts_then_the_container() {
        let extra = vec![
            ("db".to_string(), "10.1.2.3".to_string()),
            ("host.docker.internal".to_string(), "10.0.2.2".to_string()),
        ];
        let text = hosts(&extra, Some(("10.215.0.2", "abc")));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "127.0.0.1\tlocalhost");
        assert_eq!(lines[6], "10.1.2.3\tdb");
        assert_eq!(lines[7], "10.0.2.2\thost.docker.internal");
        assert_eq!(lines[8], "10.215.0.2\tabc");
        assert_eq!(hosts(&[], None).lines().count(), 6);
    }

    #[test]
    fn resolv_conf_follows_the_host_the_forwarder_and_the_flags() {
        let host = "# generated\nnameserver 127.0.0.53\nnameserver 10.9.9.9\nsearch a.example b.example\noptions edns0\n";
        let none = DnsConfig::default();
        assert_eq!(
            resolv_conf(host, &none, None, true),
            "search a.example b.example\nnameserver 10.9.9.9\noptions edns0\n"
        );
        assert_eq!(
            resolv_conf(host, &none, None, false),
            "search a.example b.example\nnameserver 127.0.0.53\nnameserver 10.9.9.9\noptions edns0\n"
        );
        assert_eq!(
            resolv_conf(host, &none, Some("10.0.2.3"), true),
            "search a.example b.example\nnameserver 10.0.2.3\noptions edns0\n"
        );
        assert_eq!(
            resolv_conf("nameserver 127.0.0.1\n", &none, None, true),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        let servers = vec!["1.2.3.4".to_string()];
        let search = vec!["x.test".to_string()];
        let options = vec!["ndots:2".to_string()];
        let flags = DnsConfig {
            servers: &servers,
            search: &search,
            options: &options,
        };
        assert_eq!(
            resolv_conf(host, &flags, Some("10.0.2.3"), true),
            "search x.test\nnameserver 1.2.3.4\noptions ndots:2\n"
        );
    }

    #[test]
    fn add_host_and_dns_are_checked() {
        assert_eq!(
            parse_add_host("db:10.0.0.5").unwrap(),
            ("db".into(), "10.0.0.5".into())
        );
        assert_eq!(
            parse_add_host("gw=host-gateway").unwrap(),
            ("gw".into(), "host-gateway".into())
        );
        assert_eq!(parse_add_host("v6:[::1]").unwrap().1, "::1");
        assert!(parse_add_host("nocolon").is_err());
        assert!(parse_add_host("db:not-an-ip").is_err());
        assert!(parse_dns("1.1.1.1").is_ok());
        assert!(parse_dns("resolver").is_err());
        assert_eq!(mac_for("10.215.0.2".parse().unwrap()), "02:42:0a:d7:00:02");
    }
}
