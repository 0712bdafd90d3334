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

use super::containers::open;
use crate::monitor::{self, RawTerminal};
use crate::store::containers::{Containers, Record, Status};

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
    let rec = c.find(name).map_err(|e| (1, e))?;
    let st = c.state(&rec.id).map_err(e125)?;
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
            monitor::on_window_change(move |ws| {
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
    let (_store, c) = open(global);
    let rec = match c.find(&args.container) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error response from daemon: {e:#}");
            return 1;
        }
    };
    attach_to(&c, &rec, !args.no_stdin, false)
}

/// Attaches to a running container's monitor: its output here, this terminal's input
/// there (when `stdin`). ctrl-p ctrl-q detaches (under a terminal); the container's end
/// ends the attach with its status.
pub fn attach_to(c: &Containers, rec: &Record, stdin: bool, _from_start: bool) -> i32 {
    match attach_inner(c, rec, stdin) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error response from daemon: {e:#}");
            1
        }
    }
}

fn attach_inner(c: &Containers, rec: &Record, stdin: bool) -> Result<i32> {
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
    let conn = conn.context("connecting to the container's monitor")?;
    let tty = rec.tty && nix::unistd::isatty(0).unwrap_or(false);
    let raw = (stdin && tty).then(RawTerminal::enter);
    if rec.tty {
        let resize = |w: &mut UnixStream, ws: strata_runtime::WindowSize| {
            let mut b = Vec::new();
            b.extend_from_slice(&ws.rows.to_be_bytes());
            b.extend_from_slice(&ws.cols.to_be_bytes());
            let _ = monitor::send(w, monitor::RESIZE, &b);
        };
        let mut w = conn.try_clone()?;
        if let Some(ws) = strata_runtime::pty::window_size(std::io::stdin().as_fd()) {
            resize(&mut w, ws);
        }
        monitor::on_window_change(move |ws| resize(&mut w, ws));
    }
    let (tx, rx) = std::sync::mpsc::channel::<Option<i32>>();
    if stdin && rec.interactive {
        let mut w = conn.try_clone()?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut prev_ctrl_p = false;
            let mut stdin = std::io::stdin();
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = monitor::send(&mut w, monitor::CLOSE_IN, b"");
                        return;
                    }
                    Ok(n) => n,
                };
                let data = &buf[..n];
                if tty {
                    // The detach sequence: ctrl-p ctrl-q.
                    let mut out = Vec::new();
                    for &b in data {
                        if prev_ctrl_p && b == 0x11 {
                            let _ = tx.send(None);
                            return;
                        }
                        if prev_ctrl_p {
                            out.push(0x10);
                        }
                        prev_ctrl_p = b == 0x10;
                        if !prev_ctrl_p {
                            out.push(b);
                        }
                    }
                    let _ = monitor::send(&mut w, monitor::IN, &out);
                    continue;
                }
                let _ = monitor::send(&mut w, monitor::IN, data);
            }
        });
    }
    {
        let mut r = conn.try_clone()?;
        std::thread::spawn(move || {
            let mut out = std::io::stdout();
            let mut err = std::io::stderr();
            loop {
                match monitor::recv(&mut r) {
                    Ok(Some((monitor::OUT, d))) => {
                        let _ = out.write_all(&d).and_then(|_| out.flush());
                    }
                    Ok(Some((monitor::ERR, d))) => {
                        let _ = err.write_all(&d);
                    }
                    Ok(Some((monitor::EXIT, d))) => {
                        let _ = tx.send(String::from_utf8_lossy(&d).parse().ok());
                        return;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => {
                        let _ = tx.send(Some(0));
                        return;
                    }
                }
            }
        });
    }
    let result = rx.recv().unwrap_or(Some(0));
    drop(raw);
    match result {
        Some(code) => Ok(code),
        None => {
            eprintln!("\r\nread escape sequence");
            Ok(0)
        }
    }
}
