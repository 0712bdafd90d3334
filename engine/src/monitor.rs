//! The monitor: one process per running container, like conmon. `strata run -d` and
//! `strata start` spawn it as `strata __monitor ID` (a new session, detached from the
//! terminal); a foreground `strata run` (and `start -a`) is the monitor itself.
//!
//! ```text
//! monitor ── [rootless] user namespace (idmap), then a private mount namespace
//!   ├─ serves the union (strata-fs, in-process: layers + containers/<id>/upper) at
//!   │  containers/<id>/rootfs: nobody outside the namespace sees it, and it goes away
//!   │  with the monitor, even one killed by SIGKILL (with strata's own request loop, a
//!   │  server process the monitor restarts instead: `crate::fs_server`)
//!   ├─ strata_runtime::Container::start ─► pid 1 (its child), cgroup strata/<id>
//!   ├─ relays: the container's stdout/stderr (or pty) ─► ctr.log (docker json-file lines)
//!   │                                                  ─► the terminal (foreground)
//!   │                                                  ─► attach clients (attach.sock)
//!   ├─ forwards SIGINT/TERM/HUP/QUIT/USR1/USR2 to pid 1; SIGWINCH resizes the pty
//!   └─ on pid 1's exit: state.json (exit code, OOM), unmount, cgroup removed, --rm
//! ```
//!
//! State stays truthful when the monitor dies without recording anything: `state.json`
//! names it by pid and start time, readers see it gone ([`Containers::state`] says `dead`),
//! and [`cleanup_stale`], run by every container command, kills what is left of such a
//! container (its cgroup, its pid 1), detaches any mount and, for `--rm`, removes it.
//!
//! The attach protocol on `containers/<id>/attach.sock` is frames of `[kind u8][len u32
//! BE][bytes]`: to clients `OUT`, `ERR`, and `EXIT` (the status as text); from clients `IN`,
//! `CLOSE_IN` and `RESIZE` (rows, cols as u16 BE).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio as ProcStdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use strata_image::store::Store;
use strata_runtime::{cgroups::Cgroup, idmap, Container, Stdio};

use crate::attach::{Stream, ToClient, ToMonitor};
use crate::containers::{self, process_start, Containers, Record, State, Status};
use crate::rootfs::{container_union, layers, union_options};
use crate::terminal::RawTerminal;
use crate::volumes::Volumes;
use crate::{Error, Result};

/// Writes `spec` as `dir/config.json` (its OCI form) and returns the spec read back from
/// it, as `strata-runtime create` reads a bundle: what starts is what the file says.
fn through_bundle(
    dir: &Path,
    spec: &strata_runtime::ContainerSpec,
) -> strata_runtime::Result<strata_runtime::ContainerSpec> {
    let path = dir.join("config.json");
    strata_runtime::oci::to_oci(spec)?
        .save(&path)
        .map_err(|e| strata_runtime::Error::Bundle {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    let (read, _) = strata_runtime::oci::load_bundle(&spec.id, dir)?;
    Ok(read)
}

/// A start that failed: docker's status and the message.
#[derive(Debug)]
pub struct StartError {
    pub code: i32,
    pub message: String,
}

impl StartError {
    fn new(code: i32, e: impl std::fmt::Display) -> StartError {
        StartError {
            code,
            message: e.to_string(),
        }
    }
}

/// Signals the monitor forwards to pid 1.
const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Starts container `id` under a detached monitor; returns once its process runs (or with
/// why it could not start).
pub fn spawn_detached(root: &Path, id: &str) -> std::result::Result<(), StartError> {
    spawn(root, id, None)
}

/// Like [`spawn_detached`], with `client` (the other end is the caller's) attached from
/// before the container starts: no output is missed, and the caller can detach from the
/// container and exit while it runs on (a foreground `run -it`). With a terminal
/// (`-t`), the client's first message must be its window size.
pub fn spawn_attached(
    root: &Path,
    id: &str,
    client: UnixStream,
) -> std::result::Result<(), StartError> {
    spawn(root, id, Some(client))
}

fn spawn(root: &Path, id: &str, client: Option<UnixStream>) -> std::result::Result<(), StartError> {
    let fail = |e: Error| StartError::new(125, e.chain());
    let store = Store::new(root);
    let dir = Containers::new(&store).dir(id);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("monitor.log"))
        .map_err(|source| {
            fail(Error::Os {
                step: "opening monitor.log",
                source,
            })
        })?;
    let exe = std::env::current_exe().map_err(|e| StartError::new(125, e))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--root").arg(root).arg("__monitor").arg(id);
    // The client's socket is the monitor's stdin (it moves it off fd 0 at once).
    match client {
        Some(c) => cmd.arg("--attached").stdin(OwnedFd::from(c)),
        None => cmd.stdin(ProcStdio::null()),
    };
    let mut child = cmd
        .stdout(ProcStdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|source| {
            fail(Error::Os {
                step: "starting the monitor",
                source,
            })
        })?;
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped");
    let _ = BufReader::new(stdout).read_line(&mut line);
    let line = line.trim_end();
    if line == "ok" {
        return Ok(());
    }
    // The monitor exits after a failed start; reap it.
    let _ = child.wait();
    match line.strip_prefix("err ") {
        Some(rest) => {
            let (code, msg) = rest.split_once(' ').unwrap_or((rest, ""));
            Err(StartError::new(code.parse().unwrap_or(125), msg))
        }
        None => {
            let st = Containers::new(&store).raw_state(id).unwrap_or_default();
            Err(StartError::new(
                125,
                format!(
                    "the container's monitor exited before the start: {}",
                    st.error
                ),
            ))
        }
    }
}

/// `strata __monitor ID [--attached]`: the detached monitor. Reports the start on stdout
/// (`ok`, or `err CODE MESSAGE`) and then lets go of it. `attached`: stdin is a client's
/// attach socket ([`spawn_attached`]).
pub fn monitor_main(root: &Path, id: &str, attached: bool) -> i32 {
    let _ = nix::unistd::setsid();
    let client = attached
        .then(|| std::io::stdin().as_fd().try_clone_to_owned().ok())
        .flatten()
        .map(UnixStream::from);
    // fd 0 must not keep the client's socket open in what the monitor starts.
    if let Ok(null) = File::open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 0);
    }
    let mut ready = Some(File::from(
        std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .expect("stdout"),
    ));
    let code = supervise(root, id, Attach::Detached, client, &mut |r| {
        if let Some(mut f) = ready.take() {
            let line = match r {
                Ok(()) => "ok\n".to_string(),
                Err(e) => format!("err {} {}\n", e.code, e.message.replace('\n', " ")),
            };
            let _ = f.write_all(line.as_bytes());
        }
        // stdout must not keep the spawner's pipe open.
        if let Ok(null) = File::options().write(true).open("/dev/null") {
            let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
        }
    });
    code
}

/// A foreground `run` or `start -a`: this process is the monitor, attached to the terminal.
/// Returns the exit status (docker's).
pub fn run_foreground(root: &Path, id: &str, stdin: bool) -> i32 {
    supervise(root, id, Attach::Foreground { stdin }, None, &mut |r| {
        if let Err(e) = r {
            eprintln!("Error: {}", e.message);
        }
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Attach {
    Detached,
    /// Output to this process's stdout/stderr; `stdin`: this process's stdin to the
    /// container's.
    Foreground {
        stdin: bool,
    },
}

type Sinks = Arc<Mutex<Vec<UnixStream>>>;

/// Where the container's output goes.
#[derive(Clone)]
struct Output {
    log: Arc<Mutex<File>>,
    sinks: Sinks,
    foreground: bool,
}

impl Output {
    /// Output of the container: to the terminal (foreground) and every attached client.
    fn write(&self, stream: Stream, data: &[u8]) {
        if self.foreground {
            let _ = match stream {
                Stream::Err => std::io::stderr()
                    .write_all(data)
                    .and_then(|_| std::io::stderr().flush()),
                Stream::Out => std::io::stdout()
                    .write_all(data)
                    .and_then(|_| std::io::stdout().flush()),
            };
        }
        self.send(&ToClient::Output(stream, data.to_vec()));
    }

    /// A message to every attached client; those gone are dropped.
    fn send(&self, m: &ToClient) {
        let mut sinks = self.sinks.lock().expect("sinks");
        sinks.retain_mut(|s| m.send(s).is_ok());
    }

    fn log_line(&self, stream: &str, line: &[u8]) {
        let mut v = serde_json::to_vec(&serde_json::json!({
            "log": String::from_utf8_lossy(line),
            "stream": stream,
            "time": jiff::Timestamp::now().to_string(),
        }))
        .unwrap_or_default();
        v.push(b'\n');
        let _ = self.log.lock().expect("log").write_all(&v);
    }
}

/// Copies `from` to the outputs and the log (a line at a time) until EOF (or EIO: a pty
/// whose other side is closed).
fn relay(mut from: File, out: Output, stream: Stream) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        out.write(stream, &buf[..n]);
        partial.extend_from_slice(&buf[..n]);
        while let Some(i) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=i).collect();
            out.log_line(stream.name(), &line);
        }
    }
    if !partial.is_empty() {
        out.log_line(stream.name(), &partial);
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(Error::os("pipe2"))
}

/// Runs container `id` to its end; returns docker's exit status. `report` is called once,
/// when the container's process runs or the start failed.
fn supervise(
    root: &Path,
    id: &str,
    attach: Attach,
    client: Option<UnixStream>,
    report: &mut dyn FnMut(std::result::Result<(), &StartError>),
) -> i32 {
    let store = Store::new(root);
    let containers = Containers::new(&store);
    let dir = containers.dir(id);
    // One monitor per container: held for the monitor's life.
    let lock_path = dir.join("monitor.lock");
    let mut held = strata_image::store::lock::Lock::try_exclusive(&lock_path);
    if let (Ok(None), Ok(st)) = (&held, containers.raw_state(id)) {
        // A container that just ended still has its monitor tearing down (unmount, network
        // helpers): `stop` then `start` waits for it rather than calling it running.
        if !st.status.is_active() && st.wait_monitor_gone(Duration::from_secs(10)) {
            held = strata_image::store::lock::Lock::try_exclusive(&lock_path);
        }
    }
    let _running = match held {
        Ok(Some(l)) => l,
        Ok(None) => {
            let e = StartError::new(125, format!("container {id} is already running"));
            report(Err(&e));
            return e.code;
        }
        Err(e) => {
            let e = StartError::new(125, e.chain());
            report(Err(&e));
            return e.code;
        }
    };
    let rec = match containers.record(id) {
        Ok(r) => r,
        Err(e) => {
            let e = StartError::new(125, e.chain());
            report(Err(&e));
            return e.code;
        }
    };
    let me = std::process::id() as i32;
    let _ = containers.update_state(id, |st| {
        st.monitor_pid = me;
        st.monitor_start = process_start(me).unwrap_or(0);
    });
    // Room for the last state.json write, should the container fill the disk.
    containers.reserve_space(id);
    let mut session = Session::default();
    let result = start(&store, &rec, attach, client, &mut session);
    let code = match result {
        Err(e) => {
            crate::volume_mount::release(&store, &rec);
            let _ = containers.update_state(id, |st| {
                st.status = if st.starts == 0 {
                    Status::Created
                } else {
                    Status::Exited
                };
                st.exit_code = e.code;
                st.error = e.message.clone();
                st.pid = 0;
            });
            report(Err(&e));
            e.code
        }
        Ok(running) => {
            report(Ok(()));
            wait_for_exit(&store, &rec, running, &mut session)
        }
    };
    session.teardown();
    if rec.auto_remove {
        let _ = remove_container(&store, &rec, true);
    }
    code
}

/// What must be undone when the monitor ends.
#[derive(Default)]
struct Session {
    unmounter: Option<strata_fs::mount::Unmounter>,
    fs_thread: Option<std::thread::JoinHandle<()>>,
    cgroup: Option<Cgroup>,
    raw: Option<RawTerminal>,
    /// The container's network (helpers, bridge lease), given back when it ends.
    network: Option<crate::network::Network>,
}

/// How long the monitor waits, once it unmounted the container's root file system, for its
/// server to end. A lazy unmount ends the FUSE connection only when the last reference to
/// the mount goes; a file still open in it (through `/proc/PID/root`, or left by a disk
/// that filled up under a write) keeps it, and would keep the monitor, for ever.
const UNMOUNT_WAIT: Duration = Duration::from_secs(10);

/// How long the server may take to end once its connection was aborted.
const ABORT_WAIT: Duration = Duration::from_secs(5);

/// Whether `t` ended within `limit` (polled: a join cannot time out).
fn ended_within(t: &std::thread::JoinHandle<()>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !t.is_finished() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

impl Session {
    /// Undoes the session, bounded in time: a root file system whose server does not end
    /// after the unmount has its FUSE connection aborted, and the monitor says so (on its
    /// stderr: the terminal, or `monitor.log`) rather than hang.
    fn teardown(&mut self) {
        self.raw.take();
        self.network.take();
        let mut unmounter = self.unmounter.take();
        if let Some(u) = unmounter.as_mut() {
            if let Err(e) = u.unmount() {
                eprintln!("strata: unmounting the container's root file system: {e}");
            }
        }
        if let Some(t) = self.fs_thread.take() {
            if !ended_within(&t, UNMOUNT_WAIT) {
                let aborted = unmounter.as_ref().map(|u| u.abort());
                let how = match &aborted {
                    Some(Ok(())) => "aborted its FUSE connection".to_string(),
                    // This process's exit closes the last /dev/fuse descriptor, which
                    // ends the connection as an abort does.
                    Some(Err(e)) => {
                        format!("its FUSE connection ends with this process (aborting it: {e})")
                    }
                    None => "its FUSE connection ends with this process".to_string(),
                };
                eprintln!(
                    "strata: the container's root file system was still in use {}s after \
                     it was unmounted: {how}",
                    UNMOUNT_WAIT.as_secs()
                );
                if matches!(aborted, Some(Ok(()))) && !ended_within(&t, ABORT_WAIT) {
                    eprintln!("strata: its server did not end; it ends with this process");
                }
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        if let Some(cg) = self.cgroup.take() {
            cg.destroy();
        }
    }
}

struct Started {
    pid: i32,
    output: Output,
    relays: Vec<std::thread::JoinHandle<()>>,
    pty: Option<Arc<File>>,
}

/// Namespaces, the union mount, the container's process.
fn start(
    store: &Store,
    rec: &Record,
    attach: Attach,
    mut client: Option<UnixStream>,
    session: &mut Session,
) -> std::result::Result<Started, StartError> {
    let e125 = |e: Error| StartError::new(125, e.chain());
    let step = |step: &'static str| {
        move |source| StartError::new(125, Error::RuntimeStep { step, source }.chain())
    };
    let containers = Containers::new(store);
    let dir = containers.dir(&rec.id);
    // Before any thread exists: the user namespace needs a single thread, and forwarded
    // signals must reach only the thread that waits for them.
    let mut forwarded = SigSet::empty();
    for s in FORWARDED {
        forwarded.add(s);
    }
    forwarded.add(Signal::SIGWINCH);
    forwarded
        .thread_block()
        .map_err(|e| e125(Error::os("blocking signals")(e)))?;
    let rootless = !nix::unistd::geteuid().is_root();
    // Volumes with options: the volumes lock from here until they are mounted.
    let volumes = crate::volume_mount::plan(store, rec).map_err(e125)?;
    let holder = volumes.as_ref().and_then(|p| p.holder);
    if rootless {
        // A `container:` network is entered from its owner, the other monitor's namespace;
        // mounts of volumes another monitor holds, from that one's.
        let owner = crate::network::user_namespace_to_join(store, rec).map_err(e125)?;
        if let (Some(a), Some(b)) = (owner, holder) {
            let ns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/user")).ok();
            if ns(a) != ns(b) {
                return Err(StartError::new(
                    125,
                    "the container whose network this one shares and the one holding its \
                     volumes with options are in different user namespaces",
                ));
            }
        }
        match owner.or(holder) {
            Some(pid) => join_user_namespace(pid).map_err(e125)?,
            None => idmap::enter_user_namespace(&idmap::IdMapping::detect())
                .map_err(step("entering a user namespace"))?,
        }
    }
    if let Some(p) = &volumes {
        p.enter_holder_mount_namespace().map_err(e125)?;
    }
    idmap::enter_mount_namespace().map_err(step("entering a mount namespace"))?;
    if let Some(p) = volumes {
        p.finish().map_err(e125)?;
    }
    let rootfs = dir.join("rootfs");
    let init = crate::network::init_layer(&dir).map_err(e125)?;
    mount_root(store, rec, &rootfs, Some(&init), session)
        .map_err(|e| e125(Error::MountRoot(Box::new(e))))?;

    let mut spec = rec.spec.clone();
    spec.rootfs = rootfs.clone();
    let net = crate::network::start(store, rec, &dir)
        .map_err(|e| e125(Error::NetworkSetup(Box::new(e))))?;
    spec.netns = net.netns.clone();
    spec.mounts = net.mounts.iter().chain(&rec.spec.mounts).cloned().collect();
    if let Some(h) = &net.hostname {
        spec.hostname = Some(h.clone());
    }
    let published = net.published.clone();
    let address = net.address.clone();
    session.network = Some(net);
    spec.process.user = strata_runtime::user::resolve(&rootfs, &rec.user)
        .map_err(|e| StartError::new(e.exit_code(), e))?;
    // One way a container starts: the spec becomes a bundle's config.json beside the
    // container (runc could run it too), and is read back as strata-runtime reads one.
    let spec = through_bundle(&dir, &spec).map_err(|e| StartError::new(e.exit_code(), e))?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("ctr.log"))
        .map_err(|source| {
            e125(Error::Os {
                step: "opening ctr.log",
                source,
            })
        })?;
    let output = Output {
        log: Arc::new(Mutex::new(log)),
        sinks: Arc::new(Mutex::new(Vec::new())),
        foreground: matches!(attach, Attach::Foreground { .. }),
    };
    // A client started with the monitor: output from the first byte, and with a
    // terminal, the size it sent first.
    let mut size = None;
    if let Some(c) = client.as_mut() {
        if rec.tty {
            if let Ok(Some(ToMonitor::Resize { rows, cols })) = ToMonitor::recv(c) {
                size = (rows > 0 && cols > 0).then_some(strata_runtime::WindowSize { rows, cols });
            }
        }
        if let Ok(w) = c.try_clone() {
            output.sinks.lock().expect("sinks").push(w);
        }
    }
    let foreground_stdin = matches!(attach, Attach::Foreground { stdin: true });
    // The container's stdin: our end, to write to.
    let mut stdin_w: Option<File> = None;
    let mut pipes: Vec<(Stream, File)> = Vec::new();
    let stdio = if rec.tty {
        if foreground_stdin && nix::unistd::isatty(0).unwrap_or(false) {
            session.raw = Some(RawTerminal::enter());
        }
        Stdio::Pty { size }
    } else {
        let stdin = if rec.interactive {
            let (r, w) = pipe().map_err(e125)?;
            stdin_w = Some(File::from(w));
            r
        } else {
            File::open("/dev/null")
                .map_err(|source| {
                    e125(Error::Os {
                        step: "opening /dev/null",
                        source,
                    })
                })?
                .into()
        };
        let (out_r, out_w) = pipe().map_err(e125)?;
        let (err_r, err_w) = pipe().map_err(e125)?;
        pipes.push((Stream::Out, File::from(out_r)));
        pipes.push((Stream::Err, File::from(err_r)));
        Stdio::Fds {
            stdin,
            stdout: out_w,
            stderr: err_w,
        }
    };
    let running = Container::start(&spec, stdio).map_err(|e| StartError::new(e.exit_code(), e))?;
    session.cgroup = running.cgroup.clone();
    let pid = running.pid;
    let _ = containers.update_state(&rec.id, |st| {
        st.status = Status::Running;
        st.pid = pid;
        st.pid_start = process_start(pid).unwrap_or(0);
        st.started_at = jiff::Timestamp::now().to_string();
        st.finished_at.clear();
        st.exit_code = 0;
        st.oom_killed = false;
        st.error.clear();
        st.starts += 1;
        st.published = published;
        st.address = address;
    });

    let mut relays = Vec::new();
    let pty = running.pty_master.map(|m| Arc::new(File::from(m)));
    if let Some(master) = &pty {
        if let Ok(f) = master.try_clone() {
            let o = output.clone();
            relays.push(std::thread::spawn(move || relay(f, o, Stream::Out)));
        }
    }
    for (kind, f) in pipes {
        let o = output.clone();
        relays.push(std::thread::spawn(move || relay(f, o, kind)));
    }
    // Input: from the terminal (foreground) and attach clients.
    let input: Arc<Mutex<Option<File>>> = Arc::new(Mutex::new(match &pty {
        Some(m) if rec.interactive => m.try_clone().ok(),
        Some(_) => None,
        None => stdin_w,
    }));
    if foreground_stdin && rec.interactive {
        let input = input.clone();
        let pty_stdin = pty.is_some();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let mut stdin = std::io::stdin();
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if let Some(f) = input.lock().expect("stdin").as_mut() {
                            if f.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            }
            // EOF: the process's stdin pipe is closed (it reads EOF). A pty stays open:
            // its user ends the input with ^D.
            if pty_stdin {
                return;
            }
            input.lock().expect("stdin").take();
        });
    }
    if let Some(c) = client {
        serve_client(c, input.clone(), pty.clone());
    }
    serve_attach(&dir, output.clone(), input, pty.clone());
    // Signals: forwarded to pid 1; SIGWINCH resizes the pty from our terminal.
    {
        let pty = pty.clone();
        let fg = matches!(attach, Attach::Foreground { .. });
        std::thread::spawn(move || loop {
            let Ok(sig) = forwarded.wait() else { continue };
            if sig == Signal::SIGWINCH {
                if let (Some(m), true) = (&pty, fg) {
                    if let Some(ws) = strata_runtime::pty::window_size(std::io::stdin().as_fd()) {
                        let _ = strata_runtime::pty::resize(m.as_fd(), ws.rows, ws.cols);
                    }
                }
                continue;
            }
            let _ = strata_runtime::process::signal(pid, sig);
        });
    }
    // pid 1 is ours to wait for (not through Running, which we no longer hold).
    Ok(Started {
        pid,
        output,
        relays,
        pty,
    })
}

/// The attach socket: `attach.sock` in the container's directory, bound by a relative name
/// (the directory's path may be longer than a socket address holds).
fn serve_attach(
    dir: &Path,
    output: Output,
    input: Arc<Mutex<Option<File>>>,
    pty: Option<Arc<File>>,
) {
    let sock = dir.join("attach.sock");
    let _ = std::fs::remove_file(&sock);
    if std::env::set_current_dir(dir).is_err() {
        return;
    }
    let Ok(listener) = UnixListener::bind("attach.sock") else {
        return;
    };
    let _ = std::env::set_current_dir("/");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            if let Ok(w) = conn.try_clone() {
                output.sinks.lock().expect("sinks").push(w);
            }
            serve_client(conn, input.clone(), pty.clone());
        }
    });
}

/// An attached client's messages: its input to the container's, its terminal's size to the
/// pty. Its output sink is registered by the caller.
fn serve_client(conn: UnixStream, input: Arc<Mutex<Option<File>>>, pty: Option<Arc<File>>) {
    std::thread::spawn(move || {
        let mut conn = conn;
        while let Ok(Some(m)) = ToMonitor::recv(&mut conn) {
            match m {
                ToMonitor::Input(data) => {
                    if let Some(f) = input.lock().expect("stdin").as_mut() {
                        let _ = f.write_all(&data);
                    }
                }
                // A pty's input ends with ^D from its user, not with the client.
                ToMonitor::CloseInput if pty.is_none() => {
                    input.lock().expect("stdin").take();
                }
                ToMonitor::CloseInput => {}
                ToMonitor::Resize { rows, cols } => {
                    if let Some(m) = &pty {
                        let _ = strata_runtime::pty::resize(m.as_fd(), rows, cols);
                    }
                }
            }
        }
    });
}

/// Mounts the container's union at `rootfs`: its image's layers, under `init` (the init
/// layer, for a running container) and its upper. A running container's union is served by
/// a process of its own that strata restarts if it dies ([`crate::fs_server`]) when the
/// options choose strata's request loop; otherwise by a thread of this process.
fn mount_root(
    store: &Store,
    rec: &Record,
    rootfs: &Path,
    init: Option<&Path>,
    session: &mut Session,
) -> Result<()> {
    use strata_fs::options::ServerKind;
    let dir = rootfs.parent().unwrap_or(rootfs);
    let source = format!("strata:{}", &rec.id[..12]);
    if init.is_some() {
        let opts = union_options(dir)?;
        if strata_fs::mount::server_kind(&opts) == ServerKind::Strata {
            // Opened here first so a missing layer is named in this process's error; the
            // server opens them again.
            layers(store, rec)?;
            let (unmounter, thread) = crate::fs_server::start(store, rec, rootfs, &opts, &source)?;
            session.unmounter = Some(unmounter);
            session.fs_thread = Some(thread);
            return Ok(());
        }
    }
    if init.is_some() {
        strata_image::store::lazy::serve_mounts();
    }
    let (union, opts) = container_union(store, rec, dir, init)?;
    let mounted = strata_fs::mount::mount(union, &opts, Some(&source), rootfs)?;
    session.unmounter = Some(mounted.unmounter());
    let s = mounted.session;
    session.fs_thread = Some(std::thread::spawn(move || {
        let _ = s.run();
    }));
    Ok(())
}

/// A stopped container's union, mounted for this process alone (for `cp`).
pub struct PrivateRoot {
    pub path: std::path::PathBuf,
    session: Session,
}

impl Drop for PrivateRoot {
    fn drop(&mut self) {
        self.session.teardown();
    }
}

/// Mounts a stopped container's union at its `rootfs/` in a new mount (and, rootless, user)
/// namespace of the calling process, which must be single-threaded.
pub fn mount_private(store: &Store, rec: &Record) -> Result<PrivateRoot> {
    if !nix::unistd::geteuid().is_root() {
        idmap::enter_user_namespace(&idmap::IdMapping::detect()).map_err(|source| {
            Error::RuntimeStep {
                step: "entering a user namespace",
                source,
            }
        })?;
    }
    idmap::enter_mount_namespace().map_err(|source| Error::RuntimeStep {
        step: "entering a mount namespace",
        source,
    })?;
    let path = Containers::new(store).dir(&rec.id).join("rootfs");
    let mut session = Session::default();
    mount_root(store, rec, &path, None, &mut session)?;
    Ok(PrivateRoot { path, session })
}

/// Waits for pid 1, records how it ended, and returns its status.
fn wait_for_exit(store: &Store, rec: &Record, started: Started, session: &mut Session) -> i32 {
    let status = strata_runtime::process::wait(started.pid);
    let code = match status {
        Ok(s) => s.code(),
        Err(_) => 255,
    };
    // Output still in the pipes: the relays end at EOF, which comes once every process of
    // the container is gone (the pid namespace died with pid 1). A pty master reads EIO.
    let deadline = Instant::now() + Duration::from_secs(5);
    for r in started.relays {
        while !r.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if r.is_finished() {
            let _ = r.join();
        }
    }
    drop(started.pty);
    crate::volume_mount::release(store, rec);
    let containers = Containers::new(store);
    let oom = session.cgroup.as_ref().is_some_and(|c| c.oom_killed());
    let _ = containers.update_state(&rec.id, |st| {
        st.status = Status::Exited;
        st.exit_code = code;
        st.oom_killed = oom;
        st.pid = 0;
        st.published.clear();
        st.address = Default::default();
        st.finished_at = jiff::Timestamp::now().to_string();
    });
    started.output.send(&ToClient::Exit(code));
    code
}

/// Removes a stopped container: its directory (upper included) and, with `volumes`, its
/// anonymous volumes.
pub fn remove_container(store: &Store, rec: &Record, volumes: bool) -> Result<()> {
    let containers = Containers::new(store);
    Cgroup::of(&rec.id).destroy();
    crate::network::release(rec);
    containers.remove(&rec.id)?;
    if volumes {
        // One another container also mounts (by its name) stays, as under docker.
        let v = Volumes::new(store);
        for name in &rec.anonymous_volumes {
            let _ = v.remove_unused(name, &containers, true);
        }
    }
    Ok(())
}

/// Kills what is left of a container whose monitor is gone: the cgroup's processes, else
/// its pid 1 when it is still the recorded process.
pub fn kill_leftovers(rec: &Record, st: &State) {
    let cg = Cgroup::of(&rec.id);
    if st.pid > 0 && process_start(st.pid) == Some(st.pid_start) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(st.pid), Signal::SIGKILL);
    }
    cg.destroy();
}

/// Cleans up after monitors that died (SIGKILL, a crash): marks their containers dead,
/// kills what is left of them, detaches mounts, removes `--rm` ones and interrupted
/// removals. Every container command runs it first.
pub fn cleanup_stale(store: &Store) {
    let containers = Containers::new(store);
    for dir in containers.leftovers() {
        let _ = containers::remove_tree(&dir);
    }
    let Ok(records) = containers.records() else {
        return;
    };
    for rec in records {
        let Ok(st) = containers.raw_state(&rec.id) else {
            continue;
        };
        if !st.status.is_active() || st.monitor_alive() {
            continue;
        }
        kill_leftovers(&rec, &st);
        crate::network::release(&rec);
        let rootfs = containers.dir(&rec.id).join("rootfs");
        if containers::is_mount_point(&rootfs) {
            let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = containers.update_state(&rec.id, |s| {
            if s.status.is_active() && !s.monitor_alive() {
                s.status = Status::Dead;
                s.pid = 0;
                s.error = "its monitor process died without recording an exit".into();
                s.finished_at = jiff::Timestamp::now().to_string();
            }
        });
        if rec.auto_remove {
            let _ = remove_container(store, &rec, true);
        }
    }
}

/// Joins the user namespace of `pid` (a rootless monitor sharing another container's
/// network); the process must be single-threaded.
fn join_user_namespace(pid: i32) -> Result<()> {
    let path = format!("/proc/{pid}/ns/user");
    let f = File::open(&path).map_err(|source| Error::Read {
        path: path.into(),
        source,
    })?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWUSER)
        .map_err(Error::os("joining the other container's user namespace"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_logs_json_file_lines_and_feeds_attach_clients() {
        let dir = tempfile::tempdir().unwrap();
        let log = File::create(dir.path().join("ctr.log")).unwrap();
        let (client, server) = UnixStream::pair().unwrap();
        let out = Output {
            log: Arc::new(Mutex::new(log)),
            sinks: Arc::new(Mutex::new(vec![server])),
            foreground: false,
        };
        let (r, w) = pipe().unwrap();
        let mut w = File::from(w);
        w.write_all(b"one\ntwo\nunfinished").unwrap();
        drop(w);
        relay(File::from(r), out.clone(), Stream::Err);
        drop(out);
        let text = std::fs::read_to_string(dir.path().join("ctr.log")).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["log"], "one\n");
        assert_eq!(lines[2]["log"], "unfinished");
        assert!(lines.iter().all(|l| l["stream"] == "stderr"));
        assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'));
        let mut c = client;
        assert_eq!(
            ToClient::recv(&mut c).unwrap(),
            Some(ToClient::Output(
                Stream::Err,
                b"one\ntwo\nunfinished".to_vec()
            ))
        );
    }
}
