//! A TCP proxy that makes loopback look like a slow link (the kernel here has no netem):
//! what comes back from the upstream is paced to a byte rate shared by all connections,
//! and each response starts a fixed latency after its request. It counts the bytes it
//! passed back, so a test or a benchmark knows what a client fetched.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// The proxy; stops accepting when dropped.
pub struct Throttle {
    /// `127.0.0.1:PORT`, to use in place of the upstream.
    pub addr: String,
    bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

struct Link {
    upstream: String,
    rate: u64,
    latency: Duration,
    /// When the link is free again: transfers queue behind each other.
    free_at: Mutex<Instant>,
    bytes: Arc<AtomicU64>,
}

impl Throttle {
    /// Proxies to `upstream` (`host:port`) at `bytes_per_sec` with `latency` per response.
    pub fn start(upstream: &str, bytes_per_sec: u64, latency: Duration) -> Result<Throttle> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the proxy")?;
        let addr = listener.local_addr()?.to_string();
        let bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let link = Arc::new(Link {
            upstream: upstream.to_string(),
            rate: bytes_per_sec.max(1),
            latency,
            free_at: Mutex::new(Instant::now()),
            bytes: bytes.clone(),
        });
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let link = link.clone();
                std::thread::spawn(move || {
                    let _ = link.serve(client);
                });
            }
        });
        Ok(Throttle { addr, bytes, stop })
    }

    /// Bytes passed from the upstream to clients so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
    }
}

impl Link {
    fn serve(&self, client: TcpStream) -> std::io::Result<()> {
        let upstream = TcpStream::connect(&self.upstream)?;
        let (mut from_client, mut to_upstream) = (client.try_clone()?, upstream.try_clone()?);
        // Set by each request, cleared by the first byte of its response.
        let asked = Arc::new(AtomicBool::new(false));
        let asked_too = asked.clone();
        let requests = std::thread::spawn(move || {
            let mut buf = [0u8; 16 << 10];
            loop {
                match from_client.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        asked_too.store(true, Ordering::SeqCst);
                        if to_upstream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to_upstream.shutdown(Shutdown::Write);
        });
        let (mut from_upstream, mut to_client) = (upstream, client);
        let mut buf = [0u8; 16 << 10];
        loop {
            let n = match from_upstream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if asked.swap(false, Ordering::SeqCst) {
                std::thread::sleep(self.latency);
            }
            self.pace(n as u64);
            if to_client.write_all(&buf[..n]).is_err() {
                break;
            }
            self.bytes.fetch_add(n as u64, Ordering::SeqCst);
        }
        let _ = to_client.shutdown(Shutdown::Both);
        let _ = requests.join();
        Ok(())
    }

    /// Waits until `n` more bytes fit the rate.
    fn pace(&self, n: u64) {
        let wait = Duration::from_secs_f64(n as f64 / self.rate as f64);
        let done = {
            let mut free = self.free_at.lock().expect("not poisoned");
            let start = (*free).max(Instant::now());
            *free = start + wait;
            *free
        };
        if let Some(d) = done.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
}
