//! The root default network, as docker's `bridge`: a `strata0` bridge (10.215.0.1/24) on
//! the host, one veth pair per container (`st<id12>` on the bridge, `eth0` in the
//! container), an address from a small IPAM, and NAT out (iptables MASQUERADE).
//!
//! The bridge and its iptables rules are made once, under the IPAM lock, and stay (as
//! docker's `docker0` does); per container there is only the veth and the IPAM entry, both
//! gone after [`release`]. The IPAM is host-wide (`/run/strata/strata0.json`, one lock):
//! stores with other roots share the bridge, so they must share its addresses. An entry
//! whose monitor is gone (pid and start time) is taken back at the next allocation.
//!
//! Links and addresses are set with iproute2's `ip`, rules with `iptables -w` (both what a
//! docker host has); commands run inside the container's namespace from a thread that
//! joined it (namespaces are per thread; a spawned child inherits its thread's).

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};
use strata_image::store::lock::Lock;

use crate::containers::process_start;
use crate::{Error, Result};

/// The bridge's name on the host.
pub const BRIDGE: &str = "strata0";
/// The bridge's address: the containers' gateway and `host-gateway`.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 215, 0, 1);
/// The bridge's prefix length (253 containers at once).
pub const PREFIX: u8 = 24;

/// Where the IPAM lives: host-wide, gone at reboot with the links it describes.
fn ipam_dir() -> PathBuf {
    std::env::var_os("STRATA_NETWORK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/strata"))
}

/// One address in use.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Lease {
    ip: Ipv4Addr,
    /// The container's full id.
    id: String,
    /// The monitor holding the address (pid and start time, to tell it from a reused pid).
    monitor_pid: i32,
    monitor_start: u64,
}

impl Lease {
    fn alive(&self) -> bool {
        self.monitor_pid > 0 && process_start(self.monitor_pid) == Some(self.monitor_start)
    }
}

/// What a container got on the bridge.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Attachment {
    pub ip: String,
    pub gateway: String,
    pub prefix_len: u8,
    pub mac: String,
    /// The host side of the veth pair.
    pub host_veth: String,
}

/// The host side's name for container `id`: at most 15 bytes (IFNAMSIZ).
pub fn host_veth(id: &str) -> String {
    format!("st{}", &id[..12.min(id.len())])
}

fn run(step: &'static str, cmd: &mut Command) -> Result<()> {
    let out = cmd.stdin(std::process::Stdio::null()).output();
    finished(step, cmd.get_program(), out)
}

/// The outcome of a finished `ip`/`iptables`: its stderr names what went wrong.
fn finished(
    step: &'static str,
    program: &std::ffi::OsStr,
    out: std::io::Result<std::process::Output>,
) -> Result<()> {
    let out = out.map_err(|source| Error::StartHelper {
        path: PathBuf::from(program),
        source,
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::Network {
        step,
        message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

fn ip(args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(args);
    c
}

/// Several `ip` commands in one process (`ip -batch`), stopping at the first that fails.
fn ip_batch(step: &'static str, lines: &[String]) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| Error::StartHelper {
            path: PathBuf::from("ip"),
            source,
        })?;
    let mut stdin = child.stdin.take().expect("piped");
    let _ = stdin.write_all(lines.join("\n").as_bytes());
    drop(stdin);
    finished(step, "ip".as_ref(), child.wait_with_output())
}

/// Whether network interface `name` exists on the host.
fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Whether `name` is administratively up (IFF_UP in its flags).
fn link_up(name: &str) -> bool {
    let flags = std::fs::read_to_string(Path::new("/sys/class/net").join(name).join("flags"));
    flags
        .ok()
        .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
        .is_some_and(|f| f & 1 == 1)
}

fn iptables(args: &[&str]) -> Command {
    let mut c = Command::new("iptables");
    c.arg("-w").args(args);
    c
}

/// The rules the bridge needs, made once: NAT out of the subnet, and forwarding to and from
/// the bridge accepted even where the FORWARD policy is DROP.
fn rules() -> Vec<Vec<String>> {
    let subnet = format!("{GATEWAY}/{PREFIX}");
    let comment = ["-m", "comment", "--comment", "strata0"];
    let mut r: Vec<Vec<&str>> = vec![
        vec![
            "-t",
            "nat",
            "POSTROUTING",
            "-s",
            &subnet,
            "!",
            "-o",
            BRIDGE,
            "-j",
            "MASQUERADE",
        ],
        vec!["-t", "filter", "FORWARD", "-i", BRIDGE, "-j", "ACCEPT"],
        vec!["-t", "filter", "FORWARD", "-o", BRIDGE, "-j", "ACCEPT"],
    ];
    for rule in &mut r {
        rule.extend_from_slice(&comment);
    }
    r.into_iter()
        .map(|v| v.into_iter().map(str::to_string).collect())
        .collect()
}

/// The bridge with its address, forwarding on, the NAT rules: made when missing.
fn ensure_bridge() -> Result<()> {
    if !link_exists(BRIDGE) {
        ip_batch(
            "creating the strata0 bridge",
            &[
                format!("link add {BRIDGE} type bridge"),
                format!("addr add {GATEWAY}/{PREFIX} dev {BRIDGE}"),
            ],
        )?;
    }
    if !link_up(BRIDGE) {
        run(
            "bringing the strata0 bridge up",
            &mut ip(&["link", "set", BRIDGE, "up"]),
        )?;
    }
    let fwd = Path::new("/proc/sys/net/ipv4/ip_forward");
    if std::fs::read_to_string(fwd)
        .map(|s| s.trim() != "1")
        .unwrap_or(true)
    {
        std::fs::write(fwd, "1").map_err(|source| Error::Create {
            path: fwd.to_path_buf(),
            source,
        })?;
    }
    for rule in rules() {
        // [table flag, table, chain, spec...]
        let (table, rest) = rule.split_at(2);
        let (chain, spec) = rest.split_first().expect("chain");
        let mut check: Vec<&str> = table.iter().map(String::as_str).collect();
        check.push("-C");
        check.push(chain);
        check.extend(spec.iter().map(String::as_str));
        if run("checking a strata0 rule", &mut iptables(&check)).is_ok() {
            continue;
        }
        let mut add: Vec<&str> = table.iter().map(String::as_str).collect();
        add.push("-A");
        add.push(chain);
        add.extend(spec.iter().map(String::as_str));
        run("adding the strata0 NAT rules", &mut iptables(&add))?;
    }
    Ok(())
}

fn read_leases(path: &Path) -> Result<Vec<Lease>> {
    match std::fs::read(path) {
        Ok(b) if b.is_empty() => Ok(Vec::new()),
        Ok(b) => serde_json::from_slice(&b).map_err(|source| Error::Parse {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(Error::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn write_leases(path: &Path, leases: &[Lease]) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(leases).map_err(|source| Error::Serialize {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|source| Error::Create {
            path: path.to_path_buf(),
            source,
        })
}

/// The lowest free address of the subnet, after the gateway.
fn first_free(leases: &[Lease]) -> Option<Ipv4Addr> {
    let [a, b, c, _] = GATEWAY.octets();
    (2..=254u8)
        .map(|d| Ipv4Addr::new(a, b, c, d))
        .find(|ip| !leases.iter().any(|l| l.ip == *ip))
}

/// Takes the IPAM lock and calls `f` with the leases, live ones only (a dead holder's veth
/// is deleted); writes back what `f` leaves.
fn with_leases<T>(f: impl FnOnce(&mut Vec<Lease>) -> Result<T>) -> Result<T> {
    let dir = ipam_dir();
    std::fs::create_dir_all(&dir).map_err(|source| Error::Create {
        path: dir.clone(),
        source,
    })?;
    let _lock = Lock::exclusive(&dir.join("strata0.lock"))?;
    let path = dir.join("strata0.json");
    let mut leases = read_leases(&path)?;
    leases.retain(|l| {
        let alive = l.alive();
        if !alive {
            delete_link(&host_veth(&l.id));
        }
        alive
    });
    let out = f(&mut leases)?;
    write_leases(&path, &leases)?;
    Ok(out)
}

/// The interface of the host's default route in `/proc/net/route`'s text.
fn default_route_iface(routes: &str) -> Option<&str> {
    routes.lines().skip(1).find_map(|l| {
        let mut f = l.split_whitespace();
        let iface = f.next()?;
        (f.next()? == "00000000").then_some(iface)
    })
}

/// The MTU for a container's veth: the host's way out's (docker's 1500 would stall TCP
/// on a host whose uplink is smaller, as this VM's 1400), else 1500.
fn uplink_mtu() -> u32 {
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    default_route_iface(&routes)
        .and_then(|i| std::fs::read_to_string(Path::new("/sys/class/net").join(i).join("mtu")).ok())
        .and_then(|m| m.trim().parse().ok())
        .unwrap_or(1500)
}

/// Deletes host link `name` when it exists (its veth peer goes with it).
fn delete_link(name: &str) {
    if link_exists(name) {
        let _ = run("deleting a veth", &mut ip(&["link", "del", name]));
    }
}

/// A new network namespace, held by the returned descriptor (no process lives in it yet).
pub fn new_netns() -> Result<OwnedFd> {
    std::thread::scope(|s| {
        s.spawn(|| -> Result<OwnedFd> {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET)
                .map_err(Error::os("unshare of a network namespace"))?;
            let f =
                std::fs::File::open("/proc/thread-self/ns/net").map_err(|source| Error::Read {
                    path: "/proc/thread-self/ns/net".into(),
                    source,
                })?;
            Ok(OwnedFd::from(f))
        })
        .join()
        .unwrap_or_else(|_| Err(Error::InvalidRequest("network namespace thread".into())))
    })
}

/// Runs `f` in a thread inside the network namespace `ns`.
fn in_netns<T: Send>(ns: &OwnedFd, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| -> Result<T> {
            nix::sched::setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(Error::os("joining the container's network namespace"))?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(Error::InvalidRequest("network namespace thread".into())))
    })
}

/// The path other processes (ip, slirp4netns, the runtime) open `ns` by.
pub fn ns_path(ns: &OwnedFd) -> PathBuf {
    PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        ns.as_raw_fd()
    ))
}

/// Puts the namespace `ns` of container `id` on the bridge: an address, the veth pair,
/// `eth0` up with its default route. The monitor calling it holds the lease.
pub fn attach(id: &str, ns: &OwnedFd) -> Result<Attachment> {
    let me = std::process::id() as i32;
    let host = host_veth(id);
    let ip_addr = with_leases(|leases| {
        ensure_bridge()?;
        let ip = first_free(leases).ok_or_else(|| Error::Network {
            step: "allocating an address on strata0",
            message: format!("all of {GATEWAY}/{PREFIX} is in use"),
        })?;
        leases.push(Lease {
            ip,
            id: id.to_string(),
            monitor_pid: me,
            monitor_start: process_start(me).unwrap_or(0),
        });
        Ok(ip)
    })?;
    let att = Attachment {
        ip: ip_addr.to_string(),
        gateway: GATEWAY.to_string(),
        prefix_len: PREFIX,
        mac: super::files::mac_for(ip_addr),
        host_veth: host.clone(),
    };
    let result = (|| {
        let path = ns_path(ns);
        let path = path.to_string_lossy();
        // A veth left by a crashed monitor of the same container goes first.
        delete_link(&host);
        let mtu = uplink_mtu();
        ip_batch(
            "creating the container's veth pair on strata0",
            &[
                format!(
                    "link add {host} mtu {mtu} type veth peer name eth0 mtu {mtu} address {} \
                     netns {path}",
                    att.mac
                ),
                format!("link set {host} master {BRIDGE} up"),
            ],
        )?;
        let lines = [
            "link set lo up".to_string(),
            format!("addr add {}/{PREFIX} dev eth0", att.ip),
            "link set eth0 up".to_string(),
            format!("route add default via {}", att.gateway),
        ];
        in_netns(ns, || {
            ip_batch("configuring eth0 in the container's namespace", &lines)
        })
    })();
    if let Err(e) = result {
        release(id);
        return Err(e);
    }
    Ok(att)
}

/// Gives back what container `id` held on the bridge: its veth and its address. Idempotent
/// (the monitor's end, `rm`, the cleanup after a dead monitor all call it).
pub fn release(id: &str) {
    delete_link(&host_veth(id));
    let _ = with_leases(|leases| {
        leases.retain(|l| l.id != id);
        Ok(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_the_lowest_free_after_the_gateway() {
        let lease = |d: u8| Lease {
            ip: Ipv4Addr::new(10, 215, 0, d),
            id: format!("{d:064}"),
            monitor_pid: 1,
            monitor_start: 0,
        };
        assert_eq!(first_free(&[]), Some(Ipv4Addr::new(10, 215, 0, 2)));
        assert_eq!(
            first_free(&[lease(2), lease(4)]),
            Some(Ipv4Addr::new(10, 215, 0, 3))
        );
        let full: Vec<Lease> = (2..=254).map(lease).collect();
        assert_eq!(first_free(&full), None);
        assert_eq!(host_veth(&"ab".repeat(32)).len(), 14);
    }

    #[test]
    fn the_uplink_is_the_default_route_s_interface() {
        let routes = "Iface\tDestination\tGateway\tFlags\n\
                      strata0\t0000D70A\t00000000\t0001\n\
                      eth0\t00000000\t010200C0\t0003\n";
        assert_eq!(default_route_iface(routes), Some("eth0"));
        assert_eq!(default_route_iface("Iface\n"), None);
    }

    #[test]
    fn leases_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("strata0.json");
        assert!(read_leases(&p).unwrap().is_empty());
        let l = vec![Lease {
            ip: Ipv4Addr::new(10, 215, 0, 9),
            id: "x".into(),
            monitor_pid: 7,
            monitor_start: 8,
        }];
        write_leases(&p, &l).unwrap();
        assert_eq!(read_leases(&p).unwrap(), l);
    }
}
