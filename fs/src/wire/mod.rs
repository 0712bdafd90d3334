//! strata's own FUSE request loop, beside the fuser adapter (`fuse.rs`): reads requests
//! from a [`Transport`], answers them from the same [`Union`] calls, and writes the replies.
//!
//! Why a loop of our own: a server started on a connection whose INIT was answered by a
//! server that died gets no INIT, and fuser's session refuses every request before one. This
//! loop answers whatever comes: INIT when it comes, any other request at any time. The
//! transport is a trait so the read/write of `/dev/fuse` can be swapped (FUSE over io_uring).
//!
//! ```text
//!   Transport (DevFuse: read/writev on /dev/fuse)
//!        │ request bytes            ▲ reply bytes
//!        ▼                          │
//!   abi::parse ──► Server::dispatch ──► Union (lookup, open, read, ...)
//! ```
//!
//! File I/O goes through FUSE passthrough where the kernel allows it (as root): the open
//! reply names a backing file registered on the device, as the fuser loop does.

pub mod abi;
pub mod handoff;
pub mod journal;
mod sys;
pub mod uring;

use std::ffi::OsStr;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::attr::{Attr, FileKind, Timestamp};
use crate::errno::Errno;
use crate::passthrough::Backings;
use crate::union::{Caller, NewKind, OpenFile, SetAttr, SetTime, Union};
use abi::{fattr, fopen, op, Args, InHeader, Out};
use journal::{Journal, Open};

/// Moves requests and replies between the kernel and the server.
pub trait Transport: Send + Sync {
    /// Reads one request into `buf`; `Ok(None)` when the connection has ended.
    fn receive(&self, buf: &mut [u8]) -> std::io::Result<Option<usize>>;
    /// Writes one reply (header and body slices) in one go.
    fn send(&self, parts: &[IoSlice<'_>]) -> std::io::Result<()>;
    /// The connection's `/dev/fuse` descriptor (passthrough registrations are made on it).
    fn device(&self) -> BorrowedFd<'_>;
    /// A transport of the same connection for one more reading thread, if it can have its
    /// own descriptor; `None`: the thread shares this one.
    fn clone_for_thread(&self) -> Option<Box<dyn Transport>> {
        None
    }
}

/// The `/dev/fuse` descriptor of a mount, read and written with plain syscalls.
pub struct DevFuse(pub OwnedFd);

impl Transport for DevFuse {
    fn receive(&self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        loop {
            match rustix::io::read(self.0.as_fd(), &mut *buf) {
                Ok(n) => return Ok(Some(n)),
                // The request was interrupted before we read it, or a signal came.
                Err(rustix::io::Errno::NOENT | rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => continue,
                // Unmounted (or aborted through fusectl).
                Err(rustix::io::Errno::NODEV) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn send(&self, parts: &[IoSlice<'_>]) -> std::io::Result<()> {
        match rustix::io::writev(self.0.as_fd(), parts) {
            // ENOENT: the request was interrupted and is gone; nothing to answer.
            Ok(_) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn device(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    fn clone_for_thread(&self) -> Option<Box<dyn Transport>> {
        match sys::clone_device(self.0.as_fd()) {
            Ok(fd) => Some(Box::new(DevFuse(fd))),
            Err(e) => {
                log::debug!("FUSE: /dev/fuse not cloned ({e}); threads share one descriptor");
                None
            }
        }
    }
}

/// Serves `server` on the connection `dev` over the transport `kind` asks for: io_uring
/// queues where the kernel has them on (`Auto`, `Uring`), else `threads` readers of
/// `/dev/fuse`. The choice is logged (`-d` shows it).
pub fn serve(
    server: &Server,
    dev: &DevFuse,
    threads: usize,
    kind: crate::options::TransportKind,
) -> std::io::Result<()> {
    use crate::options::TransportKind;
    let rings = match kind {
        TransportKind::Dev => None,
        TransportKind::Auto | TransportKind::Uring => match uring::Rings::new(MAX_WRITE as usize) {
            Ok(r) => Some(r),
            Err(e) if kind == TransportKind::Auto => {
                log::info!("FUSE transport: /dev/fuse ({e})");
                None
            }
            Err(e) => return Err(std::io::Error::other(e)),
        },
    };
    let served = match rings {
        Some(rings) => {
            server.attach(dev)?;
            uring::serve(server, dev, rings, threads)
        }
        None => {
            log::info!("FUSE transport: /dev/fuse, {threads} reading threads");
            server.run(dev, threads)
        }
    };
    server.report_counts();
    served
}

/// A passthrough backing registration, closed with the kernel when dropped (at the last
/// release of its inode).
pub struct WireBacking {
    id: u32,
    dev: Arc<OwnedFd>,
}

impl Drop for WireBacking {
    fn drop(&mut self) {
        if let Err(e) = sys::backing_close(self.dev.as_fd(), self.id) {
            log::debug!("FUSE passthrough: closing backing {}: {e}", self.id);
        }
    }
}

/// Who besides the mount's owner may make requests (fuser's `SessionACL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acl {
    All,
    RootAndOwner,
    Owner,
}

/// The largest WRITE payload asked for at INIT; a request buffer holds it and its headers.
const MAX_WRITE: u32 = 1 << 20;
const BUF_SIZE: usize = MAX_WRITE as usize + 4096;

/// Serves a [`Union`] over a [`Transport`].
pub struct Server {
    union: Arc<Union>,
    ttl: Duration,
    acl: Acl,
    owner: u32,
    /// Where the nodes and handles handed to the kernel are written down, when a server
    /// may take this connection over later.
    journal: Option<Journal>,
    backing: Backings<WireBacking>,
    /// The connection's device, for passthrough registrations (set when serving starts).
    device: OnceLock<Arc<OwnedFd>>,
    /// Whether INIT asks for FUSE over io_uring, and what it got.
    uring: uring::Gate,
    /// Requests served, by opcode (the last slot counts opcodes past it).
    counts: [AtomicU64; COUNTED_OPS],
}

/// Opcodes counted one by one (every opcode served is below it).
const COUNTED_OPS: usize = 64;

/// Where a server writes its request counts when it ends (`OPCODE count` lines), for the
/// bench's requests per file.
pub const REQUEST_COUNTS_ENV: &str = "STRATA_FS_REQUEST_COUNTS";

impl Server {
    /// A server of `union`; `passthrough` asks for FUSE passthrough at INIT (the kernel
    /// grants it to root only).
    pub fn new(union: Arc<Union>, ttl: Duration, acl: Acl, passthrough: bool) -> Server {
        Server {
            union,
            ttl,
            acl,
            owner: rustix::process::geteuid().as_raw(),
            journal: None,
            backing: Backings::new(passthrough),
            device: OnceLock::new(),
            uring: uring::Gate::default(),
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// The requests served so far, by opcode name, most frequent first.
    pub fn request_counts(&self) -> Vec<(&'static str, u64)> {
        let mut counts: Vec<(&'static str, u64)> = self
            .counts
            .iter()
            .enumerate()
            .map(|(op, n)| (abi::op_name(op as u32), n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        counts
    }

    /// Tells the request counts: in the log (`-d` shows it), and in the file
    /// [`REQUEST_COUNTS_ENV`] names, if set.
    fn report_counts(&self) {
        let counts = self.request_counts();
        let total: u64 = counts.iter().map(|(_, n)| n).sum();
        let list: Vec<String> = counts.iter().map(|(op, n)| format!("{op} {n}")).collect();
        log::info!("FUSE requests served: {total} ({})", list.join(", "));
        if let Some(path) = std::env::var_os(REQUEST_COUNTS_ENV) {
            let text: String = counts.iter().map(|(op, n)| format!("{op} {n}\n")).collect();
            let path = std::path::PathBuf::from(path);
            let tmp = path.with_extension("tmp");
            if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path)) {
                log::warn!("writing the request counts to {}: {e}", path.display());
            }
        }
    }

    /// Keeps a descriptor of the connection's device for passthrough registrations.
    fn attach(&self, transport: &dyn Transport) -> std::io::Result<()> {
        if self.device.get().is_none() {
            let dup = rustix::io::fcntl_dupfd_cloexec(transport.device(), 3)?;
            let _ = self.device.set(Arc::new(dup));
        }
        Ok(())
    }

    /// The open reply's flags and backing id for open file `of` (handle `fh`): passed
    /// through when the kernel takes its backing file.
    fn open_reply(&self, body: &mut Vec<u8>, fh: u64, of: &OpenFile) {
        let dev = self.device.get();
        let backing = dev.and_then(|dev| {
            self.backing.open(fh, of, |file| {
                let id = sys::backing_open(dev.as_fd(), file)?;
                Ok(WireBacking {
                    id,
                    dev: dev.clone(),
                })
            })
        });
        match backing {
            // The page cache belongs to the backing file under passthrough.
            Some(b) => Out(body).open_backing(fh, fopen::PASSTHROUGH, b.id),
            None => Out(body).open(fh, open_flags(of.upper)),
        };
    }

    /// Writes the nodes and handles handed out to `journal` (and serves those a previous
    /// server wrote there, see [`Server::take_over`]).
    pub fn with_journal(mut self, journal: Journal) -> Server {
        self.journal = Some(journal);
        self
    }

    /// Takes over a connection whose server died: re-opens the handles the journal holds
    /// under their numbers, keeps new handles clear of them, and asks the kernel to send
    /// again the requests the dead server had read but not answered (`FUSE_NOTIFY_RESEND`).
    /// A handle that cannot be opened again is left out (the kernel's next use of it gets
    /// EBADF).
    pub fn take_over(&self, transport: &dyn Transport) -> std::io::Result<()> {
        let state = self
            .journal
            .as_ref()
            .map(Journal::state)
            .unwrap_or_default();
        let next = state.handles.keys().max().map_or(1, |m| m + 1);
        self.union.skip_handles(next);
        for (fh, open) in &state.handles {
            let (ino, flags) = match *open {
                Open::File { ino, flags } => (ino, Some(flags)),
                Open::Dir { ino } => (ino, None),
            };
            self.ensure(ino, &state);
            if let Err(e) = self.union.reopen_handle(*fh, ino, flags) {
                log::warn!("FUSE take-over: handle {fh} of node {ino} not reopened: {e:?}");
            }
        }
        let header = abi::out_header(0, abi::NOTIFY_RESEND, 0);
        transport.send(&[IoSlice::new(&header)])
    }

    /// Makes node `ino` known again if a previous server handed it out (its parents first).
    fn ensure(&self, ino: u64, state: &journal::State) {
        let mut chain = Vec::new();
        let mut at = ino;
        // Bounded: a corrupt journal must not loop.
        while at != crate::inode::ROOT && !self.union.knows(at) && chain.len() < 4096 {
            let Some((parent, name)) = state.nodes.get(&at) else {
                return;
            };
            chain.push((at, *parent, name));
            at = *parent;
        }
        for (ino, parent, name) in chain.into_iter().rev() {
            if let Err(e) = self.union.revive(parent, name, ino) {
                log::warn!("FUSE take-over: node {ino} ({name:?} in {parent}): {e:?}");
                return;
            }
        }
    }

    /// Writes down a node handed out (a failure to write costs only a later take-over).
    fn note_node(&self, ino: u64, parent: u64, name: &OsStr) {
        if let Some(j) = &self.journal {
            if let Err(e) = j.node(ino, parent, name) {
                log::warn!("FUSE journal: {e}");
            }
        }
    }

    fn note_open(&self, fh: u64, open: Option<Open>) {
        if let Some(j) = &self.journal {
            let r = match open {
                Some(o) => j.opened(fh, o),
                None => j.closed(fh),
            };
            if let Err(e) = r {
                log::warn!("FUSE journal: {e}");
            }
        }
    }

    /// Before a request on nodes a previous server handed out: makes them known again.
    fn revive_for(&self, h: &InHeader, args: &[u8]) {
        let Some(j) = &self.journal else {
            return;
        };
        if matches!(
            h.opcode,
            op::INIT | op::FORGET | op::BATCH_FORGET | op::INTERRUPT | op::DESTROY
        ) {
            return;
        }
        // LINK's node and RENAME's new directory come first in the arguments.
        let other = matches!(h.opcode, op::LINK | op::RENAME | op::RENAME2)
            .then(|| Args::new(args).u64())
            .flatten();
        let unknown = |ino: u64| ino != 0 && !self.union.knows(ino);
        if !unknown(h.nodeid) && !other.is_some_and(unknown) {
            return;
        }
        let state = j.state();
        self.ensure(h.nodeid, &state);
        if let Some(other) = other {
            self.ensure(other, &state);
        }
    }

    /// Serves until the connection ends, with `threads` threads reading requests.
    pub fn run(&self, transport: &dyn Transport, threads: usize) -> std::io::Result<()> {
        self.attach(transport)?;
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads.max(1))
                .map(|i| {
                    // Each thread past the first reads its own clone of the device, unless
                    // the connection must outlive this server: a clone closed by a server
                    // that dies takes its unanswered requests with it (the kernel ends
                    // them with ECONNABORTED), where on the supervisor's descriptor they
                    // wait for the next server to ask for them again.
                    let own = (i > 0 && self.journal.is_none())
                        .then(|| transport.clone_for_thread())
                        .flatten();
                    s.spawn(move || self.worker(own.as_deref().unwrap_or(transport)))
                })
                .collect();
            let mut result = Ok(());
            for w in workers {
                let r = w
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("panic")));
                if result.is_ok() {
                    result = r;
                }
            }
            result
        })
    }

    fn worker(&self, transport: &dyn Transport) -> std::io::Result<()> {
        let mut buf = vec![0u8; BUF_SIZE];
        let mut body = Vec::new();
        let result = self.read_loop(transport, &mut buf, &mut body);
        // The connection ended (or failed) before INIT: no ring is to be registered.
        self.uring.settle(false);
        result
    }

    fn read_loop(
        &self,
        transport: &dyn Transport,
        buf: &mut [u8],
        body: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        while let Some(n) = transport.receive(buf)? {
            let Some(replied) = self.respond(&buf[..n], body, Via::Dev) else {
                continue;
            };
            let header = abi::out_header(replied.unique, replied.error, body.len());
            transport.send(&[IoSlice::new(&header), IoSlice::new(body)])?;
            match replied.opcode {
                // INIT is answered: the kernel takes ring registrations from now on.
                op::INIT => self.uring.settle(self.uring.granted()),
                op::DESTROY => return Ok(()),
                _ => {}
            }
        }
        Ok(())
    }

    /// Answers one request as the kernel sent it (`struct fuse_in_header` and arguments):
    /// the reply's body is left in `body`; `None` when the request takes no reply (FORGET,
    /// INTERRUPT, or one too malformed to answer).
    fn respond(&self, request: &[u8], body: &mut Vec<u8>, via: Via) -> Option<Replied> {
        let Some((h, args)) = abi::parse(request) else {
            log::warn!(
                "FUSE: a malformed request of {} bytes; ignored",
                request.len()
            );
            return None;
        };
        self.counts[(h.opcode as usize).min(COUNTED_OPS - 1)].fetch_add(1, Ordering::Relaxed);
        log::debug!(
            "FUSE({}) {} ino {} ({} bytes of arguments, {via})",
            h.unique,
            abi::op_name(h.opcode),
            h.nodeid,
            args.len()
        );
        body.clear();
        let error = match self.dispatch(&h, args, body) {
            Reply::None => return None,
            Reply::Ok => 0,
            Reply::Err(e) => {
                body.clear();
                -e.code()
            }
        };
        Some(Replied {
            unique: h.unique,
            error,
            opcode: h.opcode,
        })
    }

    /// Whether the caller may make this request (as fuser's ACL check: the kernel itself
    /// sends some requests without a meaningful caller).
    fn allowed(&self, h: &InHeader) -> bool {
        let exempt = matches!(
            h.opcode,
            op::INIT
                | op::DESTROY
                | op::READ
                | op::READDIR
                | op::READDIRPLUS
                | op::FORGET
                | op::BATCH_FORGET
                | op::WRITE
                | op::FSYNC
                | op::FSYNCDIR
                | op::RELEASE
                | op::RELEASEDIR
        );
        exempt
            || match self.acl {
                Acl::All => true,
                Acl::RootAndOwner => h.uid == self.owner || h.uid == 0,
                Acl::Owner => h.uid == self.owner,
            }
    }

    fn dispatch(&self, h: &InHeader, args: &[u8], body: &mut Vec<u8>) -> Reply {
        if !self.allowed(h) {
            return Reply::Err(Errno::EACCES);
        }
        self.revive_for(h, args);
        let original = h.unique & !abi::UNIQUE_RESEND;
        let changes = matches!(
            h.opcode,
            op::MKNOD
                | op::MKDIR
                | op::SYMLINK
                | op::UNLINK
                | op::RMDIR
                | op::RENAME
                | op::RENAME2
                | op::LINK
                | op::CREATE
                | op::SETXATTR
                | op::REMOVEXATTR
        );
        let again = changes
            && h.unique & abi::UNIQUE_RESEND != 0
            && self.journal.as_ref().is_some_and(|j| j.was_done(original));
        let resent = h.unique & abi::UNIQUE_RESEND != 0;
        let r = if again {
            self.answer_again(h, args, body)
        } else {
            match self.answer(h, Args::new(args), body) {
                // Sent again, and the dead server had done it but not yet written so: what
                // it made is there, what it removed is gone.
                Err(Errno::EEXIST) if resent && changes => {
                    body.clear();
                    self.answer_again(h, args, body)
                }
                Err(Errno::ENOENT | Errno::ENODATA)
                    if resent
                        && matches!(
                            h.opcode,
                            op::UNLINK | op::RMDIR | op::RENAME | op::RENAME2 | op::REMOVEXATTR
                        ) =>
                {
                    Ok(Reply::Ok)
                }
                r => r,
            }
        };
        match r {
            Ok(r) => {
                if changes && !again {
                    if let Some(Err(e)) = self.journal.as_ref().map(|j| j.done(original)) {
                        log::warn!("FUSE journal: {e}");
                    }
                }
                r
            }
            Err(e) => Reply::Err(e),
        }
    }

    /// Answers a request the kernel sent again which a server that died had done (but not
    /// answered): with what it did, found again, rather than doing it twice.
    fn answer_again(&self, h: &InHeader, args: &[u8], body: &mut Vec<u8>) -> Result<Reply, Errno> {
        let u = &*self.union;
        let bad = || Errno::EINVAL;
        let mut a = Args::new(args);
        let name = match h.opcode {
            op::MKNOD | op::CREATE => a.skip(16).and_then(|_| a.name()),
            op::MKDIR => a.skip(8).and_then(|_| a.name()),
            op::SYMLINK => a.name(),
            op::LINK => a.skip(8).and_then(|_| a.name()),
            // Nothing to send back but success.
            _ => return Ok(Reply::Ok),
        }
        .ok_or_else(bad)?;
        let e = u.lookup(h.nodeid, name)?;
        self.note_node(e.attr.ino, h.nodeid, name);
        Out(body).entry(e.attr.ino, e.generation, self.ttl, &e.attr);
        if h.opcode == op::CREATE {
            // The dead server's open never reached the kernel: open it anew, as it asked
            // less what creates or truncates (done the first time).
            let flags = Args::new(args).u32().ok_or_else(bad)? as i32;
            let flags = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC);
            let (fh, of) = u.open(e.attr.ino, flags)?;
            let ino = e.attr.ino;
            self.note_open(fh, Some(Open::File { ino, flags }));
            self.open_reply(body, fh, &of);
        }
        Ok(Reply::Ok)
    }

    fn answer(&self, h: &InHeader, mut a: Args<'_>, body: &mut Vec<u8>) -> Result<Reply, Errno> {
        let u = &*self.union;
        let ino = h.nodeid;
        let caller = Caller {
            uid: h.uid,
            gid: h.gid,
        };
        let bad = || Errno::EINVAL;
        match h.opcode {
            op::INIT => return self.init(a, body),
            op::DESTROY => {}
            op::INTERRUPT => return Ok(Reply::None),
            op::FORGET => {
                u.forget(ino, a.u64().ok_or_else(bad)?);
                return Ok(Reply::None);
            }
            op::BATCH_FORGET => {
                let count = a.u32().ok_or_else(bad)?;
                a.skip(4).ok_or_else(bad)?;
                for _ in 0..count {
                    let (Some(node), Some(n)) = (a.u64(), a.u64()) else {
                        break;
                    };
                    u.forget(node, n);
                }
                return Ok(Reply::None);
            }
            op::LOOKUP => {
                let name = a.name().ok_or_else(bad)?;
                match u.lookup(ino, name) {
                    Ok(e) => {
                        self.note_node(e.attr.ino, ino, name);
                        Out(body).entry(e.attr.ino, e.generation, self.ttl, &e.attr);
                    }
                    // A negative entry the kernel may cache: our own creations go through it.
                    Err(Errno::ENOENT) if name.len() <= crate::host::NAME_MAX => {
                        Out(body).entry(0, 0, self.ttl, &negative_attr(0));
                    }
                    Err(e) => return Err(e),
                }
            }
            op::GETATTR => {
                let flags = a.u32().ok_or_else(bad)?;
                a.skip(4).ok_or_else(bad)?;
                let fh = a.u64().ok_or_else(bad)?;
                let fh = (flags & abi::GETATTR_FH != 0).then_some(fh);
                Out(body).attr_out(self.ttl, &u.getattr(ino, fh)?);
            }
            op::SETATTR => {
                let set = setattr(a).ok_or_else(bad)?;
                Out(body).attr_out(self.ttl, &u.setattr(ino, set)?);
            }
            op::READLINK => body.extend_from_slice(&u.readlink(ino)?),
            op::MKNOD => {
                let (mode, rdev, umask) = (a.u32(), a.u32(), a.u32());
                let (mode, rdev, umask) = (mode.ok_or_else(bad)?, rdev, umask.ok_or_else(bad)?);
                a.skip(4).ok_or_else(bad)?;
                let name = a.name().ok_or_else(bad)?;
                let kind = FileKind::from_mode(mode).ok_or(Errno::EINVAL)?;
                let new = match kind {
                    FileKind::Regular => NewKind::Regular {
                        flags: libc::O_RDONLY,
                    },
                    FileKind::Directory => NewKind::Directory,
                    other => NewKind::Node {
                        kind: other,
                        rdev: rdev.unwrap_or(0).into(),
                    },
                };
                let (e, _) = u.create(ino, name, new, mode & !umask, caller)?;
                self.note_node(e.attr.ino, ino, name);
                Out(body).entry(e.attr.ino, e.generation, self.ttl, &e.attr);
            }
            op::MKDIR => {
                let mode = a.u32().ok_or_else(bad)?;
                let umask = a.u32().ok_or_else(bad)?;
                let name = a.name().ok_or_else(bad)?;
                let (e, _) = u.create(ino, name, NewKind::Directory, mode & !umask, caller)?;
                self.note_node(e.attr.ino, ino, name);
                Out(body).entry(e.attr.ino, e.generation, self.ttl, &e.attr);
            }
            op::SYMLINK => {
                let name = a.name().ok_or_else(bad)?;
                let target = a.name().ok_or_else(bad)?;
                let new = NewKind::Symlink(std::os::unix::ffi::OsStrExt::as_bytes(target));
                let (e, _) = u.create(ino, name, new, 0o777, caller)?;
                self.note_node(e.attr.ino, ino, name);
                Out(body).entry(e.attr.ino, e.generation, self.ttl, &e.attr);
            }
            op::UNLINK => u.unlink(ino, a.name().ok_or_else(bad)?)?,
            op::RMDIR => u.rmdir(ino, a.name().ok_or_else(bad)?)?,
            op::RENAME | op::RENAME2 => {
                let newdir = a.u64().ok_or_else(bad)?;
                let flags = if h.opcode == op::RENAME2 {
                    let f = a.u32().ok_or_else(bad)?;
                    a.skip(4).ok_or_else(bad)?;
                    f
                } else {
                    0
                };
                let name = a.name().ok_or_else(bad)?;
                let newname = a.name().ok_or_else(bad)?;
                u.rename(ino, name, newdir, newname, flags)?;
                if self.journal.is_some() {
                    // The moved node's new name, for a later take-over (the exchanged one
                    // of RENAME_EXCHANGE too).
                    for (dir, n) in [(newdir, newname), (ino, name)] {
                        if let Ok(e) = u.lookup(dir, n) {
                            self.note_node(e.attr.ino, dir, n);
                            u.forget(e.attr.ino, 1);
                        }
                    }
                }
            }
            op::LINK => {
                let old = a.u64().ok_or_else(bad)?;
                let name = a.name().ok_or_else(bad)?;
                let e = u.link(old, ino, name)?;
                self.note_node(e.attr.ino, ino, name);
                Out(body).entry(e.attr.ino, e.generation, self.ttl, &e.attr);
            }
            op::OPEN => {
                let flags = a.u32().ok_or_else(bad)?;
                let (fh, of) = u.open(ino, flags as i32)?;
                let flags = flags as i32;
                self.note_open(fh, Some(Open::File { ino, flags }));
                self.open_reply(body, fh, &of);
            }
            op::READ => {
                let fh = a.u64().ok_or_else(bad)?;
                let offset = a.u64().ok_or_else(bad)?;
                let size = a.u32().ok_or_else(bad)?;
                u.read(fh, offset, size, body)?;
            }
            op::WRITE => {
                let fh = a.u64().ok_or_else(bad)?;
                let offset = a.u64().ok_or_else(bad)?;
                let size = a.u32().ok_or_else(bad)? as usize;
                a.skip(20).ok_or_else(bad)?;
                let data = a.rest();
                let data = data.get(..size).ok_or_else(bad)?;
                let n = u.write(fh, offset, data)?;
                Out(body).u32(n).u32(0);
            }
            op::STATFS => {
                let s = u.statfs()?;
                Out(body)
                    .u64(s.f_blocks)
                    .u64(s.f_bfree)
                    .u64(s.f_bavail)
                    .u64(s.f_files)
                    .u64(s.f_ffree)
                    .u32(s.f_bsize as u32)
                    .u32(s.f_namemax as u32)
                    .u32(s.f_frsize as u32)
                    .zeros(4 + 6 * 4);
            }
            op::RELEASE | op::RELEASEDIR => {
                let fh = a.u64().ok_or_else(bad)?;
                self.backing.release(fh);
                u.release(fh);
                self.note_open(fh, None);
            }
            op::FSYNC => {
                let fh = a.u64().ok_or_else(bad)?;
                let flags = a.u32().ok_or_else(bad)?;
                u.fsync(fh, flags & abi::FSYNC_FDATASYNC != 0)?;
            }
            // Writes reach the host at once, so close(2) has nothing to report. ENOSYS makes
            // the kernel stop sending FLUSH: one round trip less for every close.
            op::FLUSH => return Err(Errno::ENOSYS),
            op::FSYNCDIR => {}
            // default_permissions: the kernel checks; this is reached only without it.
            op::ACCESS => {}
            op::SETXATTR => {
                let size = a.u32().ok_or_else(bad)? as usize;
                let flags = a.u32().ok_or_else(bad)?;
                let name = a.name().ok_or_else(bad)?;
                let value = a.rest().get(..size).ok_or_else(bad)?;
                u.setxattr(ino, name, value, flags as i32)?;
            }
            op::GETXATTR => {
                let size = a.u32().ok_or_else(bad)? as usize;
                a.skip(4).ok_or_else(bad)?;
                let v = u.getxattr(ino, a.name().ok_or_else(bad)?)?;
                sized(body, &v, size)?;
            }
            op::LISTXATTR => {
                let size = a.u32().ok_or_else(bad)? as usize;
                let mut list = Vec::new();
                for n in u.listxattr(ino)? {
                    list.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(&*n));
                    list.push(0);
                }
                sized(body, &list, size)?;
            }
            op::REMOVEXATTR => u.removexattr(ino, a.name().ok_or_else(bad)?)?,
            op::OPENDIR => {
                // The kernel may cache listings: every change to a directory goes through
                // us, and the kernel drops its cache on each one.
                let fh = u.opendir(ino)?;
                self.note_open(fh, Some(Open::Dir { ino }));
                Out(body).open(fh, fopen::CACHE_DIR | fopen::KEEP_CACHE);
            }
            op::READDIR | op::READDIRPLUS => {
                let fh = a.u64().ok_or_else(bad)?;
                let offset = a.u64().ok_or_else(bad)?;
                let size = a.u32().ok_or_else(bad)? as usize;
                self.readdir(ino, fh, offset, size, h.opcode == op::READDIRPLUS, body)?;
            }
            op::CREATE => {
                let flags = a.u32().ok_or_else(bad)?;
                let mode = a.u32().ok_or_else(bad)?;
                let umask = a.u32().ok_or_else(bad)?;
                a.skip(4).ok_or_else(bad)?;
                let name = a.name().ok_or_else(bad)?;
                let new = NewKind::Regular {
                    flags: flags as i32,
                };
                let (e, opened) = u.create(ino, name, new, mode & !umask, caller)?;
                let (fh, of) = opened.ok_or(Errno::EIO)?;
                self.note_node(e.attr.ino, ino, name);
                let node = e.attr.ino;
                self.note_open(
                    fh,
                    Some(Open::File {
                        ino: node,
                        flags: flags as i32,
                    }),
                );
                Out(body).entry(e.attr.ino, e.generation, self.ttl, &e.attr);
                self.open_reply(body, fh, &of);
            }
            op::TMPFILE => {
                let flags = a.u32().ok_or_else(bad)?;
                let mode = a.u32().ok_or_else(bad)?;
                let umask = a.u32().ok_or_else(bad)?;
                // The name (the kernel's "/") names nothing: the file has none.
                let (e, (fh, of)) = u.tmpfile(ino, flags as i32, mode & !umask, caller)?;
                Out(body).entry(e.attr.ino, e.generation, self.ttl, &e.attr);
                self.open_reply(body, fh, &of);
            }
            op::FALLOCATE => {
                let fh = a.u64().ok_or_else(bad)?;
                let offset = a.u64().ok_or_else(bad)?;
                let length = a.u64().ok_or_else(bad)?;
                let mode = a.u32().ok_or_else(bad)?;
                u.fallocate(fh, offset, length, mode as i32)?;
            }
            op::LSEEK => {
                let fh = a.u64().ok_or_else(bad)?;
                let offset = a.u64().ok_or_else(bad)?;
                let whence = a.u32().ok_or_else(bad)?;
                let o = u.lseek(fh, offset as i64, whence as i32)?;
                Out(body).u64(o as u64);
            }
            _ => return Err(Errno::ENOSYS),
        }
        Ok(Reply::Ok)
    }

    /// Answers INIT: the kernel's ABI must be 7.31 or later; asks for what `fuse.rs` asks.
    /// Passthrough is granted to root only: the kernel refuses the registrations otherwise.
    fn init(&self, mut a: Args<'_>, body: &mut Vec<u8>) -> Result<Reply, Errno> {
        let bad = || Errno::EINVAL;
        let major = a.u32().ok_or_else(bad)?;
        let minor = a.u32().ok_or_else(bad)?;
        let max_readahead = a.u32().ok_or_else(bad)?;
        let flags = u64::from(a.u32().ok_or_else(bad)?);
        let flags2 = a.u32().map_or(0, u64::from);
        if major != abi::MAJOR || minor < abi::MIN_MINOR {
            log::error!("FUSE: kernel ABI {major}.{minor} unsupported (7.31 or later needed)");
            return Err(Errno(libc::EPROTO));
        }
        let offered = if flags & abi::init::INIT_EXT != 0 {
            flags | flags2 << 32
        } else {
            flags
        };
        use abi::init::*;
        let wanted = ASYNC_READ
            | ATOMIC_O_TRUNC
            | BIG_WRITES
            | DO_READDIRPLUS
            | READDIRPLUS_AUTO
            | PARALLEL_DIROPS
            | MAX_PAGES
            | CACHE_SYMLINKS
            | INIT_EXT
            | if self.backing.enabled() {
                PASSTHROUGH
            } else {
                0
            }
            | if self.uring.wanted() {
                OVER_IO_URING
            } else {
                0
            };
        let granted = offered & wanted;
        if granted & PASSTHROUGH == 0 {
            self.backing.disable();
        }
        if granted & OVER_IO_URING != 0 {
            self.uring.grant();
        } else if self.uring.wanted() {
            log::info!("FUSE transport: /dev/fuse (the kernel offered no io_uring at INIT)");
        }
        Out(body)
            .u32(abi::MAJOR)
            .u32(abi::MINOR)
            .u32(max_readahead)
            .u32(granted as u32)
            .u16(0) // max_background: the kernel's default
            .u16(0) // congestion_threshold: the kernel's default
            .u32(MAX_WRITE)
            .u32(1) // time_gran: nanoseconds
            .u16((MAX_WRITE / 4096) as u16)
            .u16(0) // map_alignment
            .u32((granted >> 32) as u32)
            // max_stack_depth: a backing file's filesystem is no stack of its own.
            .u32(u32::from(granted & PASSTHROUGH != 0))
            .u16(0) // request_timeout
            .zeros(22);
        Ok(Reply::Ok)
    }

    fn readdir(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        size: usize,
        plus: bool,
        body: &mut Vec<u8>,
    ) -> Result<(), Errno> {
        let u = &*self.union;
        let entries = u.readdir(fh, ino, offset)?;
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            let next = (i + 1) as u64;
            let name = std::os::unix::ffi::OsStrExt::as_bytes(e.name.as_os_str());
            let need = abi::dirent_size(name.len()) + if plus { 128 } else { 0 };
            if body.len() + need > size {
                break;
            }
            if !plus {
                abi::dirent(body, e.ino, next, e.kind.mode_bits(), name);
                continue;
            }
            if e.name == "." || e.name == ".." {
                // The kernel takes no reference on these; their attributes go unused.
                let mut attr = negative_attr(e.ino);
                attr.kind = FileKind::Directory;
                Out(body).entry(e.ino, 0, Duration::ZERO, &attr);
                abi::dirent(body, e.ino, next, libc::S_IFDIR, name);
                continue;
            }
            // Each entry sent is a counted lookup, as LOOKUP would be; one that vanished
            // since the snapshot is left out.
            let Ok(entry) = u.lookup(ino, OsStr::new(&e.name)) else {
                continue;
            };
            let a = &entry.attr;
            self.note_node(a.ino, ino, OsStr::new(&e.name));
            Out(body).entry(a.ino, entry.generation, self.ttl, a);
            abi::dirent(body, a.ino, next, a.kind.mode_bits(), name);
        }
        Ok(())
    }
}

/// Where a request came from, for the debug log.
#[derive(Clone, Copy, Debug)]
enum Via {
    Dev,
    Ring(usize),
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Via::Dev => write!(f, "/dev/fuse"),
            Via::Ring(q) => write!(f, "io_uring queue {q}"),
        }
    }
}

/// A request answered: the reply's header fields (its body is the caller's buffer).
struct Replied {
    unique: u64,
    error: i32,
    opcode: u32,
}

/// What to send back for one request.
enum Reply {
    /// Nothing (FORGET, INTERRUPT).
    None,
    /// The body built.
    Ok,
    Err(Errno),
}

fn open_flags(upper: bool) -> u32 {
    // Lower files never change: the page cache may outlive this open.
    if upper {
        0
    } else {
        fopen::KEEP_CACHE
    }
}

/// A getxattr/listxattr answer: the size alone when asked with size 0, else the value.
fn sized(body: &mut Vec<u8>, v: &[u8], size: usize) -> Result<(), Errno> {
    if size == 0 {
        Out(body).u32(v.len() as u32).u32(0);
    } else if v.len() <= size {
        body.extend_from_slice(v);
    } else {
        return Err(Errno::ERANGE);
    }
    Ok(())
}

fn setattr(mut a: Args<'_>) -> Option<SetAttr> {
    let valid = a.u32()?;
    a.skip(4)?;
    let fh = a.u64()?;
    let size = a.u64()?;
    a.skip(8)?; // lock_owner
    let atime = a.u64()?;
    let mtime = a.u64()?;
    a.skip(8)?; // ctime
    let atimensec = a.u32()?;
    let mtimensec = a.u32()?;
    a.skip(4)?; // ctimensec
    let mode = a.u32()?;
    a.skip(4)?;
    let uid = a.u32()?;
    let gid = a.u32()?;
    let time = |now: u32, set: u32, sec: u64, nsec: u32| {
        if valid & now != 0 {
            Some(SetTime::Now)
        } else if valid & set != 0 {
            Some(SetTime::At(Timestamp {
                sec: sec as i64,
                nsec,
            }))
        } else {
            None
        }
    };
    let has = |bit: u32| valid & bit != 0;
    Some(SetAttr {
        mode: has(fattr::MODE).then_some(mode),
        uid: has(fattr::UID).then_some(uid),
        gid: has(fattr::GID).then_some(gid),
        size: has(fattr::SIZE).then_some(size),
        atime: time(fattr::ATIME_NOW, fattr::ATIME, atime, atimensec),
        mtime: time(fattr::MTIME_NOW, fattr::MTIME, mtime, mtimensec),
        fh: has(fattr::FH).then_some(fh),
    })
}

/// Attributes where only the node id matters to the kernel (negative entries, `.`, `..`).
fn negative_attr(ino: u64) -> Attr {
    Attr {
        ino,
        kind: FileKind::Regular,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        size: 0,
        blocks: 0,
        blksize: 4096,
        atime: Timestamp::default(),
        mtime: Timestamp::default(),
        ctime: Timestamp::default(),
    }
}
