//! The rootless default network, as rootless podman's: slirp4netns, a user-mode network
//! stack outside the namespace, gives the container a `tap0` (10.0.2.100/24, default route
//! 10.0.2.2, which is the host's loopback; DNS forwarder 10.0.2.3) and forwards host ports
//! to it (`-p`, `-P`: its API socket's `add_hostfwd`). The monitor starts it on the
//! namespace it made, before the container's process exists, and keeps it for the
//! container's life; it ends with the monitor (its exit pipe closes) even when the monitor
//! is killed.
//!
//! pasta is not driven yet: Debian 12's (2023-03) cannot open a namespace given by path
//! here, as root or rootless. Without slirp4netns `run -p` fails before anything is made.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::containers::PortBinding;
use crate::{Error, Result};

/// An I/O error at `step` (sockets and pipes of the helper have no path worth naming).
fn io(step: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |source| Error::Os { step, source }
}

/// slirp4netns in `PATH`.
pub fn find_helper() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("slirp4netns"))
        .find(|p| p.is_file())
}

/// Whether pasta is in `PATH` (for the message when slirp4netns is not).
pub fn have_pasta() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("pasta").is_file()))
}

/// A running helper; stopped when dropped.
pub struct Published {
    child: Child,
    /// The write end of slirp4netns's exit pipe: its end tells the helper to go.
    _exit: OwnedFd,
    /// The ports as published (random host ports chosen).
    pub ports: Vec<PortBinding>,
}

impl Drop for Published {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free host port for `proto`, when the user asked for any (`-p 80`, `-P`).
pub(crate) fn free_port(proto: &str, ip: &str) -> Result<u16> {
    let addr = format!("{}:0", if ip.is_empty() { "0.0.0.0" } else { ip });
    Ok(match proto {
        "udp" => std::net::UdpSocket::bind(&addr)
            .and_then(|s| s.local_addr())
            .map_err(io("choosing a free UDP port"))?
            .port(),
        _ => std::net::TcpListener::bind(&addr)
            .and_then(|s| s.local_addr())
            .map_err(io("choosing a free TCP port"))?
            .port(),
    })
}

fn inheritable(fd: &OwnedFd) -> Result<()> {
    nix::fcntl::fcntl(
        fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .map_err(Error::os("fcntl"))?;
    Ok(())
}

/// Waits for one byte on `f` (the helper's ready pipe), at most `limit`.
fn wait_ready(mut f: File, limit: Duration) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut b = [0u8; 1];
        let _ = tx.send(matches!(f.read(&mut b), Ok(1)));
    });
    rx.recv_timeout(limit).unwrap_or(false)
}

/// Connects the network namespace at `netns` (a path) and publishes `ports` into it; `dir`
/// is the container's directory (the helper's log and API socket go there).
pub fn publish(
    helper: &Path,
    dir: &Path,
    netns: &Path,
    ports: &[PortBinding],
) -> Result<Published> {
    let mut ports = ports.to_vec();
    for p in &mut ports {
        if p.host_port == 0 {
            p.host_port = free_port(&p.proto, &p.host_ip)?;
        }
    }
    slirp4netns(helper, dir, netns, ports)
}

fn log_file(dir: &Path, name: &str) -> Result<File> {
    let p = dir.join(name);
    File::create(&p).map_err(|source| Error::Create { path: p, source })
}

fn tail_of(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    text.lines().rev().take(3).collect::<Vec<_>>().join("; ")
}

fn slirp4netns(
    prog: &Path,
    dir: &Path,
    netns: &Path,
    ports: Vec<PortBinding>,
) -> Result<Published> {
    let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
    let (exit_r, exit_w) = nix::unistd::pipe2(cloexec).map_err(Error::os("pipe2"))?;
    let (ready_r, ready_w) = nix::unistd::pipe2(cloexec).map_err(Error::os("pipe2"))?;
    inheritable(&exit_r)?;
    inheritable(&ready_w)?;
    let _ = std::fs::remove_file(dir.join("slirp.sock"));
    let child = Command::new(prog)
        // Host loopback stays reachable at 10.0.2.2: it is `host-gateway` here.
        // Sandboxed (its own mount namespace, capabilities dropped) and seccomp-filtered, as
        // podman runs it.
        .args(["--configure", "--mtu=65520", "--netns-type=path"])
        .args(["--enable-sandbox", "--enable-seccomp"])
        .arg(format!("--macaddress={}", super::SLIRP_MAC))
        .arg(format!("--exit-fd={}", exit_r.as_raw_fd()))
        .arg(format!("--ready-fd={}", ready_w.as_raw_fd()))
        // Relative: the directory's path may be longer than a socket address holds.
        .arg("--api-socket=slirp.sock")
        .arg(netns)
        .arg("tap0")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log_file(dir, "slirp4netns.log")?)
        .stderr(log_file(dir, "slirp4netns.err")?)
        .spawn()
        .map_err(|source| Error::StartHelper {
            path: prog.to_path_buf(),
            source,
        })?;
    drop(exit_r);
    drop(ready_w);
    let published = Published {
        child,
        _exit: exit_w,
        ports: ports.clone(),
    };
    if !wait_ready(File::from(ready_r), Duration::from_secs(30)) {
        return Err(Error::Slirp(format!(
            "slirp4netns did not configure the container's network: {}",
            tail_of(dir, "slirp4netns.err")
        )));
    }
    for p in &ports {
        let request = serde_json::json!({
            "execute": "add_hostfwd",
            "arguments": {
                "proto": p.proto,
                "host_addr": if p.host_ip.is_empty() { "0.0.0.0" } else { &p.host_ip },
                "host_port": p.host_port,
                "guest_port": p.container_port,
            }
        });
        let reply = api_call(dir, &request)?;
        if let Some(err) = reply.get("error") {
            return Err(Error::Slirp(format!(
                "slirp4netns refused to publish {}:{}->{}/{}: {}",
                if p.host_ip.is_empty() {
                    "0.0.0.0"
                } else {
                    &p.host_ip
                },
                p.host_port,
                p.container_port,
                p.proto,
                err.get("desc").and_then(|d| d.as_str()).unwrap_or("error")
            )));
        }
    }
    Ok(published)
}

/// One request on slirp4netns's API socket (`dir/slirp.sock`).
fn api_call(dir: &Path, request: &serde_json::Value) -> Result<serde_json::Value> {
    let cwd = std::env::current_dir().ok();
    std::env::set_current_dir(dir).map_err(|source| Error::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let conn = UnixStream::connect("slirp.sock");
    if let Some(d) = cwd {
        let _ = std::env::set_current_dir(d);
    }
    let mut conn = conn.map_err(Error::SlirpSocket)?;
    let mut reply = Vec::new();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .and_then(|_| conn.write_all(request.to_string().as_bytes()))
        .and_then(|_| conn.shutdown(std::net::Shutdown::Write))
        .and_then(|_| conn.read_to_end(&mut reply))
        .map_err(Error::SlirpSocket)?;
    serde_json::from_slice(&reply)
        .map_err(|e| Error::SlirpReply(format!("{:?}", String::from_utf8_lossy(&reply)), e))
}
