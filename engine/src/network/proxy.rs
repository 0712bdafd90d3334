//! `-p` on the bridge: a userspace TCP proxy in the monitor, as docker's `docker-proxy`
//! (host `IP:PORT` -> the container's `IP:PORT`). It lives as long as the monitor's
//! [`Proxy`]: dropping it shuts the listeners down, so the host ports are free again when
//! the container ends.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use crate::containers::PortBinding;
use crate::{Error, Result};

/// The listening sockets; shut down when dropped.
pub struct Proxy {
    listeners: Vec<TcpListener>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for l in &self.listeners {
            // Wakes the accept loop (EINVAL on a listening socket that was shut down).
            let _ = nix::sys::socket::shutdown(l.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }
    }
}

/// Copies one direction until EOF, then passes the EOF on.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Refuses what the proxy cannot forward: it forwards TCP only (slirp4netns does both).
pub fn check(ports: &[PortBinding]) -> Result<()> {
    match ports.iter().find(|p| p.proto != "tcp") {
        Some(p) => Err(Error::InvalidRequest(format!(
            "publishing {}/{} on the bridge network: only tcp is forwarded there \
             (use --network slirp4netns for udp)",
            p.container_port, p.proto
        ))),
        None => Ok(()),
    }
}

/// Listens on each binding's host address and forwards connections to `container_ip`.
pub fn start(container_ip: &str, ports: &[PortBinding]) -> Result<Proxy> {
    check(ports)?;
    let mut listeners = Vec::new();
    for p in ports {
        let host = if p.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            &p.host_ip
        };
        let addr = format!("{host}:{}", p.host_port);
        let l = TcpListener::bind(&addr).map_err(|source| Error::Os {
            step: "listening on a published port",
            source,
        })?;
        let target: SocketAddr = format!("{container_ip}:{}", p.container_port)
            .parse()
            .map_err(|_| Error::InvalidRequest(format!("bad container address {container_ip}")))?;
        let accept = l.try_clone().map_err(|source| Error::Os {
            step: "listening on a published port",
            source,
        })?;
        std::thread::spawn(move || {
            for conn in accept.incoming() {
                let client = match conn {
                    Ok(c) => c,
                    // The listener was shut down: the container ended.
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => break,
                    // A client gone before its accept, out of descriptors: go on.
                    Err(_) => continue,
                };
                std::thread::spawn(move || {
                    let Ok(server) = TcpStream::connect(target) else {
                        return;
                    };
                    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                        return;
                    };
                    let up = std::thread::spawn(move || pump(client, server));
                    pump(s2, c2);
                    let _ = up.join();
                });
            }
        });
        listeners.push(l);
    }
    Ok(Proxy { listeners })
}
