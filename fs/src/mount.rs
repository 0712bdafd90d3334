//! Putting a mount together: build the union over its lowers and the options' upper, mount
//! it with fuser, serve it. The lowers come from the caller: the `strata-fs` command line
//! opens them from its `lowerdir=`/`layers=` paths ([`open_lowers`]); strata's engine takes
//! them from its image store (`Store::image_layers`, `Vec<Arc<dyn Layer>>`), and so never
//! opens an image's layers a second way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::signal::SigSet;

use crate::fuse::StrataFs;
use crate::layer::{DirLayer, IndexedLayer, Layer};
use crate::options::{MountOptions, ServerKind, TransportKind};
use crate::union::{Union, UnionConfig};
use crate::upper::Upper;

/// Why a mount could not be set up; each names the path or step that failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("lower directory {path}: {source}")]
    Lower {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("layer {path}: {source}")]
    Layer {
        path: PathBuf,
        source: crate::layer::index::IndexError,
    },
    #[error("upper directory {path}: {source}")]
    Upper {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("upperdir {upper} and workdir {work} must be on the same filesystem")]
    WorkOnOtherFs { upper: PathBuf, work: PathBuf },
    #[error("mount point {path}: {source}")]
    Mountpoint {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("starting the filesystem server {program}: {source}")]
    StartServer {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("transport=uring: {0}")]
    Uring(#[source] crate::wire::uring::UringError),
    #[error("transport=uring needs strata's own FUSE loop, and server=fuser was asked")]
    UringWithFuser,
    #[error("the filesystem server {program} failed ({status})")]
    Server {
        program: PathBuf,
        status: std::process::ExitStatus,
    },
}

/// Whether this process is root in the initial user namespace: it may then use `trusted.`
/// xattrs, mknod whiteouts and FUSE passthrough.
pub fn privileged() -> bool {
    if !rustix::process::geteuid().is_root() {
        return false;
    }
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"],
        Err(_) => false,
    }
}

/// The soft limit on open files after raising it to the hard limit (never above it: the
/// caller's hard limit is the bound, as DESIGN.md asks).
pub fn raise_nofile() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if let Some(max) = lim.maximum {
        lim.current = Some(max);
        let _ = setrlimit(Resource::Nofile, lim);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(1024)
}

fn same_fs(a: &Path, b: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(a)?.dev() == std::fs::metadata(b)?.dev())
}

/// The descriptors a mount may keep open in caches: half the open-file limit (raised to its
/// hard limit). Half of that goes to the upper's directories, the rest to `DirLayer`s.
fn fd_budget() -> usize {
    (raise_nofile() as usize / 2).max(64)
}

/// Opens the lowers the options name, top first: the `lowerdir=` directories as
/// [`DirLayer`]s, then the `layers=` index directories as [`IndexedLayer`]s.
pub fn open_lowers(opts: &MountOptions) -> Result<Vec<Arc<dyn Layer>>, MountError> {
    let per_lower = (fd_budget() / 2 / opts.lowerdirs.len().max(1)).max(16);
    let mut lowers: Vec<Arc<dyn Layer>> = Vec::new();
    for path in &opts.lowerdirs {
        let layer = DirLayer::open(path, per_lower).map_err(|source| MountError::Lower {
            path: path.clone(),
            source,
        })?;
        lowers.push(Arc::new(layer));
    }
    for path in &opts.layers {
        let layer = IndexedLayer::open(path).map_err(|source| MountError::Layer {
            path: path.clone(),
            source,
        })?;
        lowers.push(Arc::new(layer));
    }
    Ok(lowers)
}

/// The union of `lowers` (top first: any layers, opened by the caller) under the options'
/// upper and work directories, if they name them.
pub fn build_union(lowers: Vec<Arc<dyn Layer>>, opts: &MountOptions) -> Result<Union, MountError> {
    let privileged = privileged();
    let upper = match (&opts.upperdir, &opts.workdir) {
        (Some(u), Some(w)) => {
            let same = same_fs(u, w).map_err(|source| MountError::Upper {
                path: u.clone(),
                source,
            })?;
            if !same {
                return Err(MountError::WorkOnOtherFs {
                    upper: u.clone(),
                    work: w.clone(),
                });
            }
            Some(
                Upper::open(u, w, privileged, opts.fsync).map_err(|source| MountError::Upper {
                    path: u.clone(),
                    source,
                })?,
            )
        }
        _ => None,
    };
    Ok(Union::new(UnionConfig {
        lowers,
        upper,
        ids: opts.ids.clone(),
        read_override: !privileged,
        fd_cache: fd_budget() / 2,
    }))
}

/// The fuser session configuration the options describe.
pub fn fuser_config(opts: &MountOptions, source: Option<&str>) -> fuser::Config {
    use fuser::MountOption as M;
    let mut config = fuser::Config::default();
    let root = rustix::process::geteuid().is_root();
    let mut mo = vec![
        M::FSName(
            opts.fsname
                .clone()
                .or(source.map(str::to_string))
                .unwrap_or_else(|| "strata-fs".into()),
        ),
        M::Subtype("strata-fs".into()),
        M::DefaultPermissions,
    ];
    if opts.read_only {
        mo.push(M::RO);
    }
    // A container rootfs needs device nodes and setuid binaries: on by default as root.
    mo.push(if opts.dev.unwrap_or(root) {
        M::Dev
    } else {
        M::NoDev
    });
    mo.push(if opts.suid.unwrap_or(root) {
        M::Suid
    } else {
        M::NoSuid
    });
    if opts.exec == Some(false) {
        mo.push(M::NoExec);
    }
    if opts.noatime {
        mo.push(M::NoAtime);
    }
    config.mount_options = mo;
    config.acl = if admits_others(opts) {
        fuser::SessionACL::All
    } else if opts.allow_root {
        fuser::SessionACL::RootAndOwner
    } else {
        fuser::SessionACL::Owner
    };
    config.n_threads = Some(server_threads(opts));
    config.clone_fd = true;
    config
}

/// The request loop of a mount, ready to run.
#[allow(clippy::large_enum_variant)] // One per mount, never moved in a loop.
pub enum Session {
    Fuser(fuser::Session<StrataFs>),
    Strata {
        server: crate::wire::Server,
        dev: crate::wire::DevFuse,
        threads: usize,
        transport: TransportKind,
    },
}

impl Session {
    /// Serves requests until the connection ends.
    pub fn run(self) -> std::io::Result<()> {
        match self {
            Session::Fuser(s) => s.run(),
            Session::Strata {
                server,
                dev,
                threads,
                transport,
            } => crate::wire::serve(&server, &dev, threads, transport),
        }
    }
}

/// The loop `opts` asks for: its `server=`, else `STRATA_FS_SERVER` (`fuser` or `strata`),
/// else strata's own when io_uring is asked for (fuser has no such transport), else fuser.
pub fn server_kind(opts: &MountOptions) -> ServerKind {
    opts.server
        .unwrap_or_else(|| match std::env::var("STRATA_FS_SERVER").as_deref() {
            Ok("strata") => ServerKind::Strata,
            Ok("fuser") => ServerKind::Fuser,
            _ if transport_kind(opts) == TransportKind::Uring => ServerKind::Strata,
            _ => ServerKind::Fuser,
        })
}

/// The transport `opts` asks for: its `transport=`, else `STRATA_FS_TRANSPORT` (`auto`,
/// `uring` or `dev`), else auto.
pub fn transport_kind(opts: &MountOptions) -> TransportKind {
    opts.transport.unwrap_or_else(|| {
        std::env::var("STRATA_FS_TRANSPORT")
            .ok()
            .and_then(|v| TransportKind::parse(&v))
            .unwrap_or(TransportKind::Auto)
    })
}

/// A mounted union: the session that serves it, and how to end it.
pub struct Mounted {
    pub session: Session,
    mountpoint: PathBuf,
    /// The mount point resolved before mounting (resolving the mount's root would ask the
    /// server itself), to find the mount in mountinfo.
    canonical: Option<PathBuf>,
    by_fusermount: bool,
    connection: Option<u64>,
}

/// Ends a mount from another thread (the signal thread).
pub struct Unmounter {
    mountpoint: PathBuf,
    by_fusermount: bool,
    /// The FUSE connection's number (its device), read from mountinfo after mounting.
    connection: Option<u64>,
}

impl Unmounter {
    /// Detaches the mount (a busy one too); the session then reads ENODEV and ends.
    pub fn unmount(&mut self) -> std::io::Result<()> {
        if self.by_fusermount {
            let status = std::process::Command::new("fusermount3")
                .args(["-u", "-z", "--"])
                .arg(&self.mountpoint)
                .status()?;
            if !status.success() {
                return Err(std::io::Error::other(format!("fusermount3 -u: {status}")));
            }
            return Ok(());
        }
        rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::DETACH)
            .map_err(Into::into)
    }

    /// Aborts the FUSE connection through fusectl's `abort` file: every request pending or
    /// to come fails with ENOTCONN and the session ends. For a connection that a lazy
    /// unmount left alive (a file still open in it, a copy of the mount in another
    /// namespace) when its server must go anyway. fusectl is mounted first when the host
    /// has not (as root; a monitor does it in its private mount namespace); a user
    /// namespace may not mount it, so rootless this fails unless the host mounted it.
    pub fn abort(&self) -> std::io::Result<()> {
        let n = self.connection.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no FUSE connection known for {}", self.mountpoint.display()),
            )
        })?;
        let dir = Path::new("/sys/fs/fuse/connections");
        let abort = dir.join(n.to_string()).join("abort");
        if !abort.exists() {
            rustix::mount::mount(
                "fusectl",
                dir,
                "fusectl",
                rustix::mount::MountFlags::empty(),
                None,
            )
            .map_err(|e| std::io::Error::other(format!("mounting fusectl: {e}")))?;
        }
        std::fs::write(&abort, b"1")
            .map_err(|e| std::io::Error::new(e.kind(), format!("writing {}: {e}", abort.display())))
    }
}

/// The FUSE connection number of the mount at `mountpoint` (as [`mount_id`] finds it): the kernel's
/// `dev_t` of its superblock, which names its directory under `/sys/fs/fuse/connections`.
fn connection_of(mountpoint: &Path) -> Option<u64> {
    let id = mount_id(mountpoint)?.to_string();
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let line = info.lines().find(|l| l.split(' ').next() == Some(&id))?;
    let (major, minor) = line.split(' ').nth(2)?.split_once(':')?;
    let (major, minor): (u64, u64) = (major.parse().ok()?, minor.parse().ok()?);
    // The kernel's internal dev_t: major in the top 12 bits, minor in the low 20.
    Some((major << 20) | minor)
}

/// How long a daemon whose mount left its mount namespace keeps serving before it exits.
/// The kernel ends the connection only when the last reference to the mount goes: a lazy
/// unmount while a file is open, or a copy of the mount in another mount namespace (a
/// process that ran `unshare -m` meanwhile), keeps it, and the daemon with it, for as long as
/// they live. Once this passes, exiting ends the connection: those holders get ENOTCONN.
pub const UNMOUNTED_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The id of the mount at `mountpoint` (canonical: resolved before mounting, as resolving
/// the mount's root would ask the daemon itself) in this process's mount namespace (the
/// first field of `/proc/self/mountinfo`), of type `fuse.strata-fs`; the top one if stacked.
pub fn mount_id(mountpoint: &Path) -> Option<u64> {
    let wanted = escape_mountinfo(mountpoint.as_os_str().as_encoded_bytes());
    let info = std::fs::read("/proc/self/mountinfo").ok()?;
    info.rsplit(|b| *b == b'\n').find_map(|line| {
        let fields: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
        let sep = fields.iter().position(|f| *f == b"-")?;
        (fields.get(4) == Some(&wanted.as_slice())
            && fields.get(sep + 1) == Some(&&b"fuse.strata-fs"[..]))
        .then(|| std::str::from_utf8(fields[0]).ok()?.parse().ok())?
    })
}

/// Whether mount `id` is still in this process's mount namespace.
fn mount_id_present(id: u64) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return true;
    };
    let id = id.to_string();
    info.lines()
        .any(|line| line.split(' ').next() == Some(id.as_str()))
}

/// mountinfo's escaping of a path: space, tab, newline and backslash as `\ooo`.
fn escape_mountinfo(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for &b in path {
        match b {
            b' ' | b'\t' | b'\n' | b'\\' => out.extend_from_slice(format!("\\{b:03o}").as_bytes()),
            _ => out.push(b),
        }
    }
    out
}

/// Blocks until mount `id` has left this mount namespace (umount, `fusermount3 -u`, a lazy
/// unmount), waking on each mount table change (`/proc/self/mountinfo` polls POLLPRI).
pub fn wait_until_unmounted(id: u64) {
    use rustix::event::{poll, PollFd, PollFlags};
    let table = std::fs::File::open("/proc/self/mountinfo").ok();
    while mount_id_present(id) {
        match &table {
            Some(f) => {
                let mut fds = [PollFd::new(f, PollFlags::PRI)];
                // A bounded wait, so a missed change is seen on the next round anyway.
                let timeout = rustix::event::Timespec {
                    tv_sec: 1,
                    tv_nsec: 0,
                };
                let _ = poll(&mut fds, Some(&timeout));
            }
            None => std::thread::sleep(std::time::Duration::from_secs(1)),
        }
    }
}

impl Mounted {
    pub fn unmounter(&self) -> Unmounter {
        Unmounter {
            mountpoint: self.mountpoint.clone(),
            by_fusermount: self.by_fusermount,
            connection: self.connection,
        }
    }

    /// Serves the mount from this process, a server of its own (the `strata-fs` daemon,
    /// `strata mount`'s), until it is unmounted: a signal of `signals` (which the caller
    /// blocked before starting any thread) unmounts it; once the mount has left this mount
    /// namespace the process exits within [`UNMOUNTED_GRACE`], even if the kernel still
    /// holds the connection. `ready` runs once all is in place.
    pub fn serve(self, signals: SigSet, ready: impl FnOnce()) -> std::io::Result<()> {
        // The session ends when the kernel ends the connection, which a lazy unmount with a
        // file still open, or a copy of the mount in another namespace, can put off for as
        // long as they live.
        if let Some(id) = self.canonical.as_deref().and_then(mount_id) {
            std::thread::spawn(move || {
                wait_until_unmounted(id);
                std::thread::sleep(UNMOUNTED_GRACE);
                log::warn!("unmounted, but the kernel still holds the connection: exiting");
                std::process::exit(0);
            });
        }
        let mut unmounter = self.unmounter();
        std::thread::spawn(move || {
            if signals.wait().is_ok() {
                let _ = unmounter.unmount();
            }
        });
        ready();
        self.session.run()
    }
}

/// What a server started by [`start_server`] prints on stdout once its mount is ready.
const READY: &str = "ready";

/// glibc tuning for a mount's server (glibc reads it at start, so it is set in the server's
/// environment): one malloc arena, as the inode table is shared by the serving threads and
/// per-thread arenas only fragment it; and a fixed mmap threshold, as the dynamic one grows
/// past fuser's 16 MiB request buffers once one is freed, after which each new buffer is
/// carved from the heap and zeroed page by page (16 MiB resident per thread, measured).
pub const MALLOC_TUNING: [(&str, &str); 2] = [
    ("MALLOC_ARENA_MAX", "1"),
    ("MALLOC_MMAP_THRESHOLD_", "1048576"),
];

/// Starts `cmd`, a server that mounts, calls [`report_ready`] and serves (with
/// [`MALLOC_TUNING`] unless the caller's environment sets it), and waits until its mount is
/// ready. Its stdin is the caller's to set (see [`Command::stdin`](std::process::Command::stdin)).
/// The server shares the caller's stderr, where it says why it failed; a server that
/// exits before it is ready is [`MountError::Server`] with its exit status. Returns the
/// running server.
pub fn start_server(cmd: &mut std::process::Command) -> Result<std::process::Child, MountError> {
    use std::io::BufRead;
    use std::process::Stdio;
    let program = PathBuf::from(cmd.get_program());
    for (k, v) in MALLOC_TUNING {
        if std::env::var_os(k).is_none() {
            cmd.env(k, v);
        }
    }
    let mut child =
        cmd.stdout(Stdio::piped())
            .spawn()
            .map_err(|source| MountError::StartServer {
                program: program.clone(),
                source,
            })?;
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped");
    let _ = std::io::BufReader::new(stdout).read_line(&mut line);
    if line.trim() == READY {
        return Ok(child);
    }
    let status = child.wait().map_err(|source| MountError::StartServer {
        program: program.clone(),
        source,
    })?;
    Err(MountError::Server { program, status })
}

/// Tells the process waiting in [`start_server`] that the mount is ready, then points
/// stdout (and stderr unless `keep_stderr`) at /dev/null: nobody reads them any more.
pub fn report_ready(keep_stderr: bool) {
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{READY}");
    let _ = out.flush();
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = rustix::stdio::dup2_stdout(&null);
        if !keep_stderr {
            let _ = rustix::stdio::dup2_stderr(&null);
        }
    }
}

/// The signals that end a mount's server (SIGTERM, SIGINT, SIGHUP), blocked in the calling
/// thread and so in every thread it starts after: [`Mounted::serve`] takes them in one
/// thread, which unmounts; the serving threads never see them.
pub fn block_end_signals() -> nix::Result<SigSet> {
    use nix::sys::signal::Signal;
    let mut signals = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(s);
    }
    signals.thread_block()?;
    Ok(signals)
}

/// Mounts `union` at `mountpoint`; the returned session serves it when run.
///
/// We mount ourselves and hand fuser the `/dev/fuse` descriptor, for two reasons: the type
/// is `fuse.strata-fs` (fuser's own mount says only `fuse`), so mountinfo, `findmnt -t` and
/// umount(8) see it as fuse-overlayfs's is seen; and a session that ends because someone
/// unmounted it must not unmount again on drop (fuser's does, which takes down a new mount
/// made at the same place meanwhile). mount(2) first; an unprivileged user outside a user
/// namespace gets EPERM there and goes through the setuid fusermount3.
pub fn mount(
    union: Union,
    opts: &MountOptions,
    source: Option<&str>,
    mountpoint: &Path,
) -> Result<Mounted, MountError> {
    let union = Arc::new(union);
    let config = fuser_config(opts, source);
    let err = |source| MountError::Mountpoint {
        path: mountpoint.to_path_buf(),
        source,
    };
    let transport = transport_kind(opts);
    if transport == TransportKind::Uring {
        // Refused before mounting: a daemon that fails after the mount leaves it dead.
        if server_kind(opts) == ServerKind::Fuser {
            return Err(MountError::UringWithFuser);
        }
        crate::wire::uring::enabled().map_err(MountError::Uring)?;
    }
    let device = mount_device(opts, source, mountpoint)?;
    let session = match server_kind(opts) {
        ServerKind::Fuser => {
            let fs = StrataFs::new(union, opts.timeout, opts.passthrough && privileged());
            Session::Fuser(fuser::Session::from_fd(fs, device.fd, config.acl, config).map_err(err)?)
        }
        ServerKind::Strata => Session::Strata {
            server: wire_server(union, opts, opts.passthrough && privileged()),
            dev: crate::wire::DevFuse(device.fd),
            threads: config.n_threads.unwrap_or(1),
            transport,
        },
    };
    Ok(Mounted {
        session,
        mountpoint: device.mountpoint,
        canonical: device.canonical,
        by_fusermount: device.by_fusermount,
        connection: device.connection,
    })
}

/// strata's own request loop over `union`, with the options' cache time and access rule,
/// asking for passthrough if `passthrough`.
pub fn wire_server(
    union: Arc<Union>,
    opts: &MountOptions,
    passthrough: bool,
) -> crate::wire::Server {
    use crate::wire::Acl;
    let acl = if admits_others(opts) {
        Acl::All
    } else if opts.allow_root {
        Acl::RootAndOwner
    } else {
        Acl::Owner
    };
    crate::wire::Server::new(union, opts.timeout, acl, passthrough)
}

/// The request-serving threads a mount runs (the options' `threads=`, else 2 to 4).
pub fn server_threads(opts: &MountOptions) -> usize {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    opts.threads.unwrap_or(cpus.clamp(2, 4))
}

/// Serves a connection a supervisor handed over ([`crate::wire::handoff`]) with strata's
/// own loop, writing its journal; takes the connection over first if an earlier server
/// answered its INIT. `ready` runs once requests are about to be served.
pub fn serve_handed(
    union: Union,
    opts: &MountOptions,
    handoff: crate::wire::handoff::Handoff,
    ready: impl FnOnce(),
) -> std::io::Result<()> {
    let journal = crate::wire::journal::Journal::open(std::fs::File::from(handoff.journal))?;
    // No passthrough: a server that takes over would register a second backing file for an
    // inode the kernel still holds open on the first, which the kernel refuses (EBUSY).
    let server = wire_server(Arc::new(union), opts, false).with_journal(journal);
    let dev = crate::wire::DevFuse(handoff.device);
    if handoff.take_over {
        server.take_over(&dev)?;
    }
    ready();
    server.run(&dev, server_threads(opts))
}

/// A mount made but not served: its `/dev/fuse` descriptor, which whoever holds it keeps
/// the connection alive with (a supervisor that runs servers in other processes, each
/// taking the connection over from the last: [`crate::wire::Server::take_over`]).
pub struct Device {
    pub fd: std::os::fd::OwnedFd,
    mountpoint: PathBuf,
    canonical: Option<PathBuf>,
    by_fusermount: bool,
    connection: Option<u64>,
}

impl Device {
    pub fn unmounter(&self) -> Unmounter {
        Unmounter {
            mountpoint: self.mountpoint.clone(),
            by_fusermount: self.by_fusermount,
            connection: self.connection,
        }
    }
}

/// Mounts a FUSE file system of type `fuse.strata-fs` at `mountpoint` and returns its
/// device, unserved: requests wait until a server reads them.
pub fn mount_device(
    opts: &MountOptions,
    source: Option<&str>,
    mountpoint: &Path,
) -> Result<Device, MountError> {
    let err = |source| MountError::Mountpoint {
        path: mountpoint.to_path_buf(),
        source,
    };
    let fsname = opts
        .fsname
        .clone()
        .or(source.map(str::to_string))
        .unwrap_or_else(|| "strata-fs".into());
    let canonical = std::fs::canonicalize(mountpoint).ok();
    let (fd, by_fusermount) = match mount_directly(opts, &fsname, mountpoint).map_err(err)? {
        Some(fd) => (fd, false),
        None => (
            mount_with_fusermount(opts, &fsname, mountpoint).map_err(err)?,
            true,
        ),
    };
    let connection = canonical.as_deref().and_then(connection_of);
    Ok(Device {
        fd,
        mountpoint: mountpoint.to_path_buf(),
        canonical,
        by_fusermount,
        connection,
    })
}

/// Whether other users may use the mount: when asked, and always when run as root (also
/// root of a user namespace, whose container runs as many ids), as fuse-overlayfs adds
/// `allow_other` there. The kernel still checks every access (`default_permissions`).
pub fn admits_others(opts: &MountOptions) -> bool {
    opts.allow_other || rustix::process::geteuid().is_root()
}

/// The generic options both mount paths pass, besides the descriptor and ids.
fn generic_options(opts: &MountOptions) -> String {
    let mut data = String::from("default_permissions");
    if admits_others(opts) || opts.allow_root {
        data.push_str(",allow_other");
    }
    data
}

/// Mounts through the setuid `fusermount3`, which mounts and passes the `/dev/fuse`
/// descriptor back over a socket named by `_FUSE_COMMFD` (libfuse's protocol).
fn mount_with_fusermount(
    opts: &MountOptions,
    fsname: &str,
    mountpoint: &Path,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use rustix::net::{
        recvmsg, socketpair, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags,
        SocketFlags, SocketType,
    };
    use std::os::fd::AsRawFd;

    // Our end is close-on-exec; fusermount3 inherits the other.
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::empty(),
        None,
    )?;
    rustix::io::fcntl_setfd(&ours, rustix::io::FdFlags::CLOEXEC)?;
    let mut options = format!(
        "{},subtype=strata-fs,fsname={}",
        generic_options(opts),
        fsname.replace(',', "\\,")
    );
    for (on, name) in [
        (opts.read_only, "ro"),
        (opts.exec == Some(false), "noexec"),
        (opts.noatime, "noatime"),
    ] {
        if on {
            options.push(',');
            options.push_str(name);
        }
    }
    let child = std::process::Command::new("fusermount3")
        .arg("-o")
        .arg(&options)
        .arg("--")
        .arg(mountpoint)
        .env("_FUSE_COMMFD", theirs.as_raw_fd().to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    drop(theirs);
    let mut byte = [0u8; 1];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = RecvAncillaryBuffer::new(&mut space);
    let received = recvmsg(
        &ours,
        &mut [std::io::IoSliceMut::new(&mut byte)],
        &mut ancillary,
        RecvFlags::empty(),
    );
    let fd = ancillary.drain().find_map(|m| match m {
        RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
        _ => None,
    });
    drop(ours);
    let out = child.wait_with_output()?;
    match (fd, received) {
        (Some(fd), Ok(_)) => Ok(fd),
        _ => Err(std::io::Error::other(format!(
            "fusermount3 -o {options}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

/// mount(2) of `/dev/fuse` at `mountpoint`; `None` when the kernel says EPERM.
fn mount_directly(
    opts: &MountOptions,
    fsname: &str,
    mountpoint: &Path,
) -> std::io::Result<Option<std::os::fd::OwnedFd>> {
    use rustix::fs::{Mode, OFlags};
    use rustix::mount::MountFlags;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;

    let root_mode = std::fs::metadata(mountpoint)?.mode() & libc::S_IFMT;
    let fd = rustix::fs::open("/dev/fuse", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
    let root = rustix::process::geteuid().is_root();
    let mut flags = MountFlags::empty();
    if !opts.dev.unwrap_or(root) {
        flags |= MountFlags::NODEV;
    }
    if !opts.suid.unwrap_or(root) {
        flags |= MountFlags::NOSUID;
    }
    if opts.read_only {
        flags |= MountFlags::RDONLY;
    }
    if opts.exec == Some(false) {
        flags |= MountFlags::NOEXEC;
    }
    if opts.noatime {
        flags |= MountFlags::NOATIME;
    }
    let data = format!(
        "fd={},rootmode={root_mode:o},user_id={},group_id={},{}",
        fd.as_raw_fd(),
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
        generic_options(opts),
    );
    let data = std::ffi::CString::new(data).map_err(std::io::Error::other)?;
    match rustix::mount::mount(
        fsname,
        mountpoint,
        "fuse.strata-fs",
        flags,
        Some(data.as_c_str()),
    ) {
        Ok(()) => Ok(Some(fd)),
        Err(rustix::io::Errno::PERM) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escaping() {
        assert_eq!(escape_mountinfo(b"/tmp/a b\\c"), b"/tmp/a\\040b\\134c");
        assert_eq!(escape_mountinfo(b"/plain"), b"/plain");
    }
}
