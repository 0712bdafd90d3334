//! FUSE over io_uring (kernel `Documentation/filesystems/fuse-io-uring.rst`, ABI 7.42): one
//! queue per possible CPU, each served by a thread pinned to that CPU with a ring of its own.
//!
//! ```text
//!   INIT (read from /dev/fuse) ── reply grants FUSE_OVER_IO_URING ──► Gate opens
//!   queue thread q (CPU q):  REGISTER × DEPTH entries ── header + payload buffers ─┐
//!        ▲                                                                          │
//!        └── COMMIT_AND_FETCH (reply to request N, and wait for the next) ◄── CQE ──┘
//! ```
//!
//! A request made on CPU q is handed to queue q's thread, which runs there: no wake-up of
//! another CPU, and the reply and the next fetch are one submission. The kernel keeps
//! sending FORGET and INTERRUPT through `/dev/fuse`, and does the same for everything until
//! every queue has an entry; so `/dev/fuse` readers run beside the queues. If the kernel
//! refuses a registration, it serves the connection over `/dev/fuse` from then on, and so
//! does this server. A request's bytes are put back together as a `/dev/fuse` read would
//! give them (header, per-op header, payload), so the server answers both alike (`Server::respond`).

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::{abi, sys, Server};

/// Ring entries (requests in flight) per queue. Each holds a payload buffer of the largest
/// request, touched only as far as requests fill it.
const DEPTH: usize = 4;
/// `sizeof(struct fuse_uring_req_header)`: `in_out[128]`, `op_in[128]`, `ring_ent_in_out`.
const HEADER: usize = 288;
/// Where `op_in` and `ring_ent_in_out.payload_sz` are in that header.
const OP_IN: usize = 128;
const OP_IN_SIZE: usize = 128;
const PAYLOAD_SZ: usize = 256 + 16;
/// `enum fuse_uring_cmd`.
const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;

/// Why the io_uring transport cannot serve a mount.
#[derive(Debug, thiserror::Error)]
pub enum UringError {
    #[error("the kernel has FUSE over io_uring off (/sys/module/fuse/parameters/enable_uring is not Y; root may write Y)")]
    Disabled,
    #[error("this kernel has no FUSE over io_uring (no /sys/module/fuse/parameters/enable_uring)")]
    Missing,
    #[error("setting up io_uring queue {qid}: {source}")]
    Setup {
        qid: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the possible CPUs ({path}): {source}")]
    Cpus {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
}

const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// Whether the kernel lets FUSE servers use io_uring (`enable_uring=Y`).
pub fn enabled() -> Result<(), UringError> {
    match std::fs::read_to_string(ENABLE_URING) {
        Ok(v) if v.trim() == "Y" => Ok(()),
        Ok(_) => Err(UringError::Disabled),
        Err(_) => Err(UringError::Missing),
    }
}

/// A CPU list as sysfs writes it (`0-3,6`).
fn cpu_list(path: &'static str) -> Result<Vec<usize>, UringError> {
    let text = std::fs::read_to_string(path).map_err(|source| UringError::Cpus { path, source })?;
    let bad = || UringError::Cpus {
        path,
        source: std::io::Error::other(format!("unreadable list {:?}", text.trim())),
    };
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        cpus.extend(a..=b);
    }
    Ok(cpus)
}

/// Whether INIT granted the ring, told to the queue threads once it is answered.
#[derive(Default)]
pub(super) struct Gate {
    wanted: AtomicBool,
    granted: AtomicBool,
    settled: Mutex<Option<bool>>,
    cv: Condvar,
}

impl Gate {
    /// Rings are set up: INIT may ask for FUSE_OVER_IO_URING.
    fn want(&self) {
        self.wanted.store(true, Ordering::Relaxed);
    }

    pub(super) fn wanted(&self) -> bool {
        self.wanted.load(Ordering::Relaxed)
    }

    /// INIT's reply grants the ring.
    pub(super) fn grant(&self) {
        self.granted.store(true, Ordering::Relaxed);
    }

    pub(super) fn granted(&self) -> bool {
        self.granted.load(Ordering::Relaxed)
    }

    /// INIT was answered (`go`: with the ring) or the connection ended first; the first
    /// word stands.
    pub(super) fn settle(&self, go: bool) {
        let mut s = self.settled.lock().expect("gate");
        if s.is_none() {
            *s = Some(go);
            self.cv.notify_all();
        }
    }

    fn wait(&self) -> bool {
        let mut s = self.settled.lock().expect("gate");
        loop {
            if let Some(go) = *s {
                return go;
            }
            s = self.cv.wait(s).expect("gate");
        }
    }
}

/// One ring entry: the buffers the kernel writes a request into and reads the reply from.
/// They are boxed so their addresses, given to the kernel at registration, never move.
struct Ent {
    header: Box<[u8]>,
    payload: Box<[u8]>,
    /// Two `struct iovec` (base, length) naming the buffers above, as integers: pointer and
    /// `size_t` have the width of `usize`.
    iov: Box<[usize; 4]>,
}

impl Ent {
    fn new(payload: usize) -> Ent {
        let mut header = vec![0u8; HEADER].into_boxed_slice();
        let mut payload = vec![0u8; payload].into_boxed_slice();
        let iov = Box::new([
            header.as_mut_ptr() as usize,
            header.len(),
            payload.as_mut_ptr() as usize,
            payload.len(),
        ]);
        Ent {
            header,
            payload,
            iov,
        }
    }

    fn u32_at(&self, at: usize) -> usize {
        u32::from_ne_bytes(self.header[at..at + 4].try_into().expect("4 bytes")) as usize
    }

    /// The request as a `/dev/fuse` read gives it: `in_header.len` counts the header, the
    /// per-op header (in `op_in`) and the payload, whose size the ring states.
    fn request(&self, out: &mut Vec<u8>) -> Option<()> {
        let len = self.u32_at(0);
        let payload = self.u32_at(PAYLOAD_SZ);
        let op = len.checked_sub(abi::IN_HEADER + payload)?;
        if op > OP_IN_SIZE || payload > self.payload.len() {
            return None;
        }
        out.clear();
        out.extend_from_slice(&self.header[..abi::IN_HEADER]);
        out.extend_from_slice(&self.header[OP_IN..OP_IN + op]);
        out.extend_from_slice(&self.payload[..payload]);
        Some(())
    }

    /// Puts a reply in place: the out header in `in_out`, the body in the payload buffer.
    fn reply(&mut self, unique: u64, error: i32, body: &[u8]) {
        let (error, body) = match self.payload.get_mut(..body.len()) {
            Some(dst) => {
                dst.copy_from_slice(body);
                (error, body)
            }
            None => (-libc::EIO, &[][..]),
        };
        let header = abi::out_header(unique, error, body.len());
        self.header[..abi::OUT_HEADER].copy_from_slice(&header);
        self.header[PAYLOAD_SZ..PAYLOAD_SZ + 4].copy_from_slice(&(body.len() as u32).to_ne_bytes());
    }
}

/// One per-CPU queue: its ring and entries. The ring is declared first so it is dropped
/// (and the kernel lets go of the buffers) before the entries are.
struct Queue {
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    qid: usize,
    online: bool,
    ents: Vec<Ent>,
}

/// The queues of a connection, set up before INIT so that INIT asks for the ring only when
/// it can be served.
pub struct Rings {
    queues: Vec<Queue>,
}

impl Rings {
    /// One queue per possible CPU (the kernel's `num_possible_cpus()`: it is ready only once
    /// every one has an entry), with `DEPTH` entries of `payload` bytes each.
    pub fn new(payload: usize) -> Result<Rings, UringError> {
        enabled()?;
        let possible = cpu_list("/sys/devices/system/cpu/possible")?;
        let online = cpu_list("/sys/devices/system/cpu/online")?;
        let mut queues = Vec::new();
        for qid in 0..possible.len() {
            let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
                .build(DEPTH as u32)
                .map_err(|source| UringError::Setup { qid, source })?;
            queues.push(Queue {
                ring,
                qid,
                online: online.contains(&qid),
                ents: (0..DEPTH).map(|_| Ent::new(payload)).collect(),
            });
        }
        Ok(Rings { queues })
    }

    pub fn len(&self) -> usize {
        self.queues.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Serves every queue until the connection ends or the kernel refuses the ring; waits
    /// for INIT's answer first (registrations before it are refused).
    pub(super) fn serve(self, server: &Server, dev: BorrowedFd<'_>) -> std::io::Result<()> {
        std::thread::scope(|s| {
            let threads: Vec<_> = self
                .queues
                .into_iter()
                .map(|mut q| s.spawn(move || q.serve(server, dev)))
                .collect();
            let mut result = Ok(());
            for t in threads {
                let r = t
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("panic")));
                if result.is_ok() {
                    result = r;
                }
            }
            result
        })
    }
}

/// The SQE of a ring command on `/dev/fuse`: `cmd_op`, entry `i`'s two buffers (`addr`
/// points at their iovecs, `len` counts them) and `struct fuse_uring_cmd_req`.
fn command(
    dev: BorrowedFd<'_>,
    cmd_op: u32,
    ent: &Ent,
    i: usize,
    commit_id: u64,
    qid: usize,
) -> squeue::Entry128 {
    let mut cmd = [0u8; 80];
    cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    cmd[16..18].copy_from_slice(&(qid as u16).to_ne_bytes());
    let sqe = opcode::UringCmd80::new(types::Fd(dev.as_raw_fd()), cmd_op)
        .cmd(cmd)
        .addr(Some(ent.iov.as_ptr() as u64))
        .build()
        .user_data(i as u64);
    sys::sqe_with_len(sqe, 2)
}

impl Queue {
    fn serve(&mut self, server: &Server, dev: BorrowedFd<'_>) -> std::io::Result<()> {
        if !server.uring.wait() {
            return Ok(());
        }
        if self.online {
            // Served on the CPU whose requests this queue gets: no cross-CPU wake-up.
            let mut set = nix::sched::CpuSet::new();
            if set.set(self.qid).is_ok() {
                let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
            }
        }
        if self.qid == 0 {
            log::info!("FUSE transport: io_uring, one queue per CPU ({DEPTH} entries each)");
        }
        for i in 0..self.ents.len() {
            let sqe = command(dev, CMD_REGISTER, &self.ents[i], i, 0, self.qid);
            self.push(&sqe)?;
        }
        let mut live = self.ents.len();
        let mut request = Vec::with_capacity(super::BUF_SIZE);
        let mut body = Vec::new();
        while live > 0 {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
            let done: Vec<(usize, i32)> = self
                .ring
                .completion()
                .map(|c| (c.user_data() as usize, c.result()))
                .collect();
            for (i, res) in done {
                if res < 0 {
                    // ENOTCONN/ECANCELED: the connection ended. Anything else: the kernel
                    // refused the ring and serves over /dev/fuse.
                    if res != -libc::ENOTCONN && res != -libc::ECANCELED && res != -libc::ENODEV {
                        log::warn!(
                            "FUSE io_uring queue {}: {}; requests go through /dev/fuse",
                            self.qid,
                            std::io::Error::from_raw_os_error(-res)
                        );
                    }
                    live -= 1;
                    continue;
                }
                let Some(ent) = self.ents.get_mut(i) else {
                    continue;
                };
                let (unique, error) = match ent.request(&mut request) {
                    Some(()) => {
                        match server.respond(&request, &mut body, super::Via::Ring(self.qid)) {
                            Some(r) => (r.unique, r.error),
                            // No reply wanted (FORGET comes through /dev/fuse, but an entry
                            // must be committed to be fetched again).
                            None => (unique_of(&ent.header), -libc::ENOSYS),
                        }
                    }
                    None => {
                        log::warn!("FUSE io_uring queue {}: a malformed request", self.qid);
                        body.clear();
                        (unique_of(&ent.header), -libc::EIO)
                    }
                };
                let reply: &[u8] = if error == 0 { &body } else { &[] };
                ent.reply(unique, error, reply);
                let sqe = command(dev, CMD_COMMIT_AND_FETCH, ent, i, unique, self.qid);
                self.push(&sqe)?;
            }
        }
        Ok(())
    }

    fn push(&mut self, sqe: &squeue::Entry128) -> std::io::Result<()> {
        if self.ring.submission().is_full() {
            self.ring.submit()?;
        }
        sys::push(&mut self.ring, sqe)
    }
}

/// The unique id of the request in a ring header.
fn unique_of(header: &[u8]) -> u64 {
    u64::from_ne_bytes(header[8..16].try_into().expect("8 bytes"))
}

/// Serves `server` over io_uring queues, with `readers` threads reading `/dev/fuse` beside
/// them: idle while the ring serves (FORGET and INTERRUPT come that way), the whole load if
/// the kernel refuses the ring.
pub(super) fn serve(
    server: &Server,
    dev: &dyn super::Transport,
    rings: Rings,
    readers: usize,
) -> std::io::Result<()> {
    server.uring.want();
    std::thread::scope(|s| {
        let reader = s.spawn(|| server.run(dev, readers));
        let queues = rings.serve(server, dev.device());
        let reader = reader
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("panic")));
        queues.and(reader)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_request_reads_as_a_dev_fuse_request() {
        let mut ent = Ent::new(64);
        // LOOKUP of "name": no per-op header, the name in the payload.
        let mut h = Vec::new();
        abi::Out(&mut h)
            .u32((abi::IN_HEADER + 5) as u32)
            .u32(abi::op::LOOKUP)
            .u64(9)
            .u64(1)
            .u32(0)
            .u32(0)
            .u32(1)
            .u32(0);
        ent.header[..abi::IN_HEADER].copy_from_slice(&h);
        ent.payload[..5].copy_from_slice(b"name\0");
        ent.header[PAYLOAD_SZ..PAYLOAD_SZ + 4].copy_from_slice(&5u32.to_ne_bytes());
        let mut out = Vec::new();
        ent.request(&mut out).unwrap();
        let (hdr, args) = abi::parse(&out).unwrap();
        assert_eq!(
            (hdr.opcode, hdr.unique, args),
            (abi::op::LOOKUP, 9, &b"name\0"[..])
        );
        // A length that does not add up is refused, not read past.
        ent.header[0..4].copy_from_slice(&(abi::IN_HEADER as u32 + 300).to_ne_bytes());
        assert!(ent.request(&mut out).is_none());
        // A reply larger than the payload buffer becomes EIO.
        ent.reply(9, 0, &[1u8; 100]);
        assert_eq!(
            i32::from_ne_bytes(ent.header[4..8].try_into().unwrap()),
            -libc::EIO
        );
        ent.reply(9, 0, b"abc");
        assert_eq!(&ent.payload[..3], b"abc");
        assert_eq!(
            u32::from_ne_bytes(ent.header[PAYLOAD_SZ..PAYLOAD_SZ + 4].try_into().unwrap()),
            3
        );
    }

    #[test]
    fn cpu_lists_parse() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("possible");
        std::fs::write(&p, "0-3,6\n").unwrap();
        let p: &'static str = Box::leak(p.to_string_lossy().into_owned().into_boxed_str());
        assert_eq!(cpu_list(p).unwrap(), [0, 1, 2, 3, 6]);
    }
}
