//! `exec` (a process in every namespace and the cgroup of a running container, through
//! `strata_runtime::exec`) and `attach` (to the monitor's attach socket; ctrl-p ctrl-q
//! detaches).

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Args;
use strata_runtime::{ProcessSpec, Stdio};

use super::open;
use crate::attach::{DetachKeys, Stream, ToClient, ToMonitor};
use crate::terminal::{self, RawTerminal};
use strata_engine::containers::{Containers, Record, Status};

#[derive(Args)]
pub struct ExecArgs {
    /// Detached mode: run command in the background
    #[arg(short, long)]
    pub detach: bool,
    /// Keep STDIN open even if not attached
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    pub tty: bool,
    /// Set environment variables
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long = "workdir")]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short, long)]
    pub user: Option<String>,
    /// Give extended privileges to the command
    #[arg(long)]
    pub privileged: bool,
    /// CONTAINER COMMAND [ARG...]
    #[arg(required = true, num_args = 2.., trailing_var_arg = true, allow_hyphen_values = true,
          value_name = "CONTAINER COMMAND [ARG...]")]
    pub argv: Vec<String>,
}

#[derive(Args)]
pub struct AttachArgs {
    /// Do not attach STDIN
    #[arg(long = "no-stdin")]
    pub no_stdin: bool,
    /// Override the key sequence for detaching a container (default ctrl-p,ctrl-q)
    #[arg(long = "detach-keys", value_name = "KEYS")]
    pub detach_keys: Option<String>,
    pub container: String,
}

pub fn exec(global: &crate::Global, args: ExecArgs) -> i32 {
    match exec_inner(global, args) {
        Ok(code) => code,
        Err((code, e)) => {
            eprintln!("Error response from daemon: {e:#}");
            code
        }
    }
}

fn exec_inner(
    global: &crate::Global,
    args: ExecArgs,
) -> std::result::Result<i32, (i32, anyhow::Error)> {
    let e125 = |e: anyhow::Error| (125, e);
    let (_store, c) = open(global);
    let (name, argv) = args.argv.split_first().expect("clap: two values");
    let rec = c.find(name).map_err(|e| (1, e.into()))?;
    let st = c.state(&rec.id).map_err(|e| e125(e.into()))?;
    match st.status {
        Status::Running => {}
        Status::Paused => {
            return Err((
                1,
                anyhow::anyhow!(
                    "Container {} is paused, unpause the container before exec",
                    rec.id
                ),
            ))
        }
        _ => return Err((1, anyhow::anyhow!("container {} is not running", rec.id))),
    }
    let root = Path::new("/proc").join(st.pid.to_string()).join("root");
    let user_name = args.user.clone().unwrap_or_else(|| rec.user.clone());
    let user = strata_runtime::user::resolve(&root, &user_name)
        .map_err(|e| (e.exit_code(), anyhow::Error::from(e)))?;
    let mut env = rec.spec.process.env.clone();
    for kv in &args.env {
        let kv = if kv.contains('=') {
            kv.clone()
        } else {
            match std::env::var(kv) {
                Ok(v) => format!("{kv}={v}"),
                Err(_) => continue,
            }
        };
        let key = kv.split('=').next().unwrap_or_default().to_string();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(kv);
    }
    let mut cap_add = rec.spec.process.cap_add.clone();
    if args.privileged || rec.spec.privileged {
        cap_add = vec!["ALL".into()];
    }
    let process = ProcessSpec {
        args: argv.to_vec(),
        env,
        cwd: args
            .workdir
            .clone()
            .unwrap_or_else(|| rec.spec.process.cwd.clone()),
        user,
        terminal: args.tty,
        no_new_privileges: rec.spec.process.no_new_privileges,
        cap_add,
        cap_drop: rec.spec.process.cap_drop.clone(),
        rlimits: rec.spec.process.rlimits.clone(),
        // docker: an exec'd process runs under the container's seccomp profile.
        seccomp: rec.spec.seccomp.clone(),
    };
    let null = || -> Result<std::os::fd::OwnedFd> {
        Ok(std::fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/null")?
            .into())
    };
    let stdio = if args.detach {
        let n = null().map_err(e125)?;
        Stdio::Fds {
            stdin: n.try_clone().map_err(|e| e125(e.into()))?,
            stdout: n.try_clone().map_err(|e| e125(e.into()))?,
            stderr: n,
        }
    } else if args.tty {
        Stdio::Pty { size: None }
    } else if args.interactive {
        Stdio::Inherit
    } else {
        Stdio::Fds {
            stdin: null().map_err(e125)?,
            stdout: std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| e125(e.into()))?,
            stderr: std::io::stderr()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| e125(e.into()))?,
        }
    };
    let running = strata_runtime::exec(st.pid, &process, stdio)
        .map_err(|e| (e.exit_code(), anyhow::Error::from(e)))?;
    if args.detach {
        return Ok(0);
    }
    if let Some(master) = running.pty_master.as_ref() {
        let master = std::fs::File::from(master.try_clone().map_err(|e| e125(e.into()))?);
        // The window size follows this terminal's.
        if let Ok(m) = master.try_clone() {
            terminal::on_window_change(move |ws| {
                let _ = strata_runtime::pty::resize(m.as_fd(), ws.rows, ws.cols);
            });
        }
        let _raw = args.interactive.then(RawTerminal::enter);
        if args.interactive {
            let mut to = master.try_clone().map_err(|e| e125(e.into()))?;
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut std::io::stdin(), &mut to);
            });
        }
        let mut from = master;
        let mut buf = [0u8; 8192];
        let mut out = std::io::stdout();
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let _ = out.write_all(&buf[..n]).and_then(|_| out.flush());
                }
            }
        }
    }
    let status = running.wait().map_err(|e| e125(e.into()))?;
    Ok(status.code())
}

pub fn attach(global: &crate::Global, args: AttachArgs) -> i32 {
    let keys = match args.detach_keys.as_deref().map(DetachKeys::parse) {
        None => DetachKeys::default(),
        Some(Ok(k)) => k,
        Some(Err(e)) => {
            eprintln!("Error: {e}");
            return 1;
        }
    };
    let (_store, c) = open(global);
    let rec = match c.find(&args.container) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error response from daemon: {e:#}");
            return 1;
        }
    };
    attach_with(&c, &rec, !args.no_stdin, keys)
}

/// Attaches to a running container's monitor: its output here, this terminal's input
/// there (when `stdin`). `keys` detach (under a terminal); the container's end ends the
/// attach with its status.
pub fn attach_with(c: &Containers, rec: &Record, stdin: bool, keys: DetachKeys) -> i32 {
    let conn = match connect(c, rec) {
        Ok(conn) => conn,
        Err(e) => {
            eprintln!("Error response from daemon: {e:#}");
            return 1;
        }
    };
    match session(c, rec, conn, stdin, keys, false) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error response from daemon: {e:#}");
            1
        }
    }
}

/// The running container's attach socket.
fn connect(c: &Containers, rec: &Record) -> Result<UnixStream> {
    let st = c.state(&rec.id)?;
    if !st.status.is_active() {
        bail!("You cannot attach to a stopped container, start it first");
    }
    let dir = c.dir(&rec.id);
    // Connect by a relative name: the path may be longer than a socket address holds.
    let cwd = std::env::current_dir().ok();
    std::env::set_current_dir(&dir).with_context(|| format!("{}", dir.display()))?;
    let conn = UnixStream::connect("attach.sock");
    if let Some(d) = cwd {
        let _ = std::env::set_current_dir(d);
    }
    conn.context("connecting to the container's monitor")
}

/// An attached session on `conn` until the container ends (its status) or the detach keys
/// are typed (0). `until_monitor_exits`: after the end, wait (a bounded time) for the
/// monitor to finish its cleanup (`run --rm` returns once the container is gone).
pub fn session(
    c: &Containers,
    rec: &Record,
    conn: UnixStream,
    stdin: bool,
    keys: DetachKeys,
    until_monitor_exits: bool,
) -> Result<i32> {
    let tty = rec.tty && nix::unistd::isatty(0).unwrap_or(false);
    let raw = (stdin && tty).then(RawTerminal::enter);
    if rec.tty {
        let resize = |w: &mut UnixStream, ws: strata_runtime::WindowSize| {
            let _ = ToMonitor::Resize {
                rows: ws.rows,
                cols: ws.cols,
            }
            .send(w);
        };
        let mut w = conn.try_clone()?;
        if let Some(ws) = strata_runtime::pty::window_size(std::io::stdin().as_fd()) {
            resize(&mut w, ws);
        }
        terminal::on_window_change(move |ws| resize(&mut w, ws));
    }
    // `None`: detached; `Some(status)`: the container ended.
    let (tx, rx) = std::sync::mpsc::channel::<Option<i32>>();
    if stdin && rec.interactive {
        let mut w = conn.try_clone()?;
        let tx = tx.clone();
        let mut keys = keys;
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut stdin = std::io::stdin();
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = ToMonitor::CloseInput.send(&mut w);
                        return;
                    }
                    Ok(n) => n,
                };
                let (data, detach) = match tty {
                    true => keys.filter(&buf[..n]),
                    false => (buf[..n].to_vec(), false),
                };
                if !data.is_empty() {
                    let _ = ToMonitor::Input(data).send(&mut w);
                }
                if detach {
                    let _ = tx.send(None);
                    return;
                }
            }
        });
    }
    {
        let mut r = conn.try_clone()?;
        std::thread::spawn(move || {
            let mut out = std::io::stdout();
            let mut err = std::io::stderr();
            loop {
                match ToClient::recv(&mut r) {
                    Ok(Some(ToClient::Output(Stream::Out, d))) => {
                        let _ = out.write_all(&d).and_then(|_| out.flush());
                    }
                    Ok(Some(ToClient::Output(Stream::Err, d))) => {
                        let _ = err.write_all(&d);
                    }
                    Ok(Some(ToClient::Exit(code))) => {
                        let _ = tx.send(Some(code));
                        return;
                    }
                    // The monitor went away without saying: the state tells.
                    Ok(None) | Err(_) => {
                        let _ = tx.send(Some(-1));
                        return;
                    }
                }
            }
        });
    }
    let result = rx.recv().unwrap_or(Some(-1));
    drop(raw);
    if until_monitor_exits && result.is_some() {
        // The monitor closes the socket when it exits, after unmounting and `--rm`.
        let mut r = conn;
        let _ = r.set_read_timeout(Some(std::time::Duration::from_secs(30)));
        let _ = std::io::copy(&mut r, &mut std::io::sink());
    }
    match result {
        Some(-1) => {
            let st = c.state(&rec.id)?;
            Ok(st.exit_code)
        }
        Some(code) => Ok(code),
        None => {
            eprintln!("\r\nread escape sequence");
            Ok(0)
        }
    }
}
