//! `strata-runtime`: the OCI runtime command line (runc's verbs and flags) over the
//! runtime library; the work is in `strata_runtime::oci` and `strata_runtime::container`.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use strata_runtime::oci::{self, Root, Saved, Status, Verb};
use strata_runtime::{process, Container, Error, Stdio};

#[derive(Parser)]
#[command(
    name = "strata-runtime",
    version,
    about = "strata's OCI container runtime"
)]
struct Cli {
    /// Where container state lives.
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Write errors to this file as well as stderr.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// text or json.
    #[arg(long, global = true, default_value = "text")]
    log_format: String,
    #[arg(long, global = true)]
    debug: bool,
    /// Unsupported: cgroups are managed through cgroupfs.
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a container from a bundle; its process waits for `start`.
    Create {
        #[arg(long, short, default_value = ".")]
        bundle: PathBuf,
        #[arg(long)]
        pid_file: Option<PathBuf>,
        #[arg(long)]
        console_socket: Option<PathBuf>,
        #[arg(long)]
        no_pivot: bool,
        #[arg(long)]
        no_new_keyring: bool,
        id: String,
    },
    /// Run the created container's process.
    Start { id: String },
    /// Print the container's state as JSON.
    State { id: String },
    /// Send a signal (default SIGTERM) to the container's process.
    Kill {
        #[arg(long, short)]
        all: bool,
        id: String,
        signal: Option<String>,
    },
    /// Remove a stopped container (`--force`: kill it first).
    Delete {
        #[arg(long, short)]
        force: bool,
        id: String,
    },
    /// List the containers under the root.
    List {
        #[arg(long, short, default_value = "table")]
        format: String,
        #[arg(long, short)]
        quiet: bool,
    },
    /// List the container's processes.
    Ps {
        #[arg(long, short, default_value = "table")]
        format: String,
        id: String,
    },
    /// Freeze every process of the container.
    Pause { id: String },
    /// Change the container's cgroup limits.
    Update {
        /// An OCI `linux.resources` JSON object (`-` for stdin).
        #[arg(long, short)]
        resources: PathBuf,
        id: String,
    },
    /// Thaw a paused container.
    Resume { id: String },
    /// Write a default config.json.
    Spec {
        #[arg(long, short, default_value = ".")]
        bundle: PathBuf,
        #[arg(long)]
        rootless: bool,
    },
    /// Print what this runtime supports, as JSON.
    Features,
    /// Run a process in a running container.
    Exec {
        /// An OCI process JSON (`-` for stdin); replaces CMD and the flags below.
        #[arg(long, short)]
        process: Option<PathBuf>,
        /// Return once the process started (it outlives this command).
        #[arg(long, short)]
        detach: bool,
        #[arg(long)]
        pid_file: Option<PathBuf>,
        #[arg(long)]
        console_socket: Option<PathBuf>,
        #[arg(long, short)]
        tty: bool,
        #[arg(long)]
        cwd: Option<String>,
        /// KEY=VALUE, repeatable.
        #[arg(long, short)]
        env: Vec<String>,
        /// UID[:GID].
        #[arg(long, short)]
        user: Option<String>,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
}

/// Where errors go: stderr, and the `--log` file in its format.
struct Logger {
    file: Option<PathBuf>,
    json: bool,
}

impl Logger {
    fn error(&self, msg: &str) {
        self.line("error", msg);
    }

    fn warn(&self, msg: &str) {
        self.line("warning", msg);
    }

    fn line(&self, level: &str, msg: &str) {
        eprintln!("strata-runtime: {msg}");
        let Some(path) = &self.file else { return };
        let line = match self.json {
            true => serde_json::json!({
                "level": level,
                "msg": msg,
                "time": jiff::Timestamp::now().to_string(),
            })
            .to_string(),
            false => format!("{} {level}: {msg}", jiff::Timestamp::now()),
        };
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logger = Logger {
        file: cli.log.clone(),
        json: cli.log_format == "json",
    };
    let outcome = match (cli.log_format.as_str(), cli.systemd_cgroup) {
        ("text" | "json", false) => run(&cli, &logger),
        (_, true) => Err(Error::Other(
            "--systemd-cgroup is not supported: strata-runtime manages cgroups through cgroupfs"
                .into(),
        )),
        (f, _) => Err(Error::Other(format!(
            "invalid --log-format {f:?}: text or json"
        ))),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            logger.error(&e.to_string());
            // runc: an exec that did not start its process exits 255.
            match cli.command {
                Command::Exec { .. } => ExitCode::from(255),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// `--root`, else runc's rule: `$XDG_RUNTIME_DIR/strata-runtime` for a rootless caller
/// (not root, or root of a user namespace and `$USER` not root, as rootless podman calls
/// it),
/// else [`oci::DEFAULT_ROOT`].
fn root_dir(cli: &Cli) -> PathBuf {
    if let Some(r) = &cli.root {
        return r.clone();
    }
    let rootless = !nix::unistd::geteuid().is_root()
        || (strata_runtime::idmap::in_user_namespace()
            && std::env::var("USER").map_or(true, |u| u != "root"));
    match (rootless, std::env::var_os("XDG_RUNTIME_DIR")) {
        (true, Some(dir)) => Path::new(&dir).join("strata-runtime"),
        _ => PathBuf::from(oci::DEFAULT_ROOT),
    }
}

fn run(cli: &Cli, logger: &Logger) -> Result<ExitCode, Error> {
    let root = Root::new(root_dir(cli));
    match &cli.command {
        Command::Create {
            bundle,
            pid_file,
            console_socket,
            no_pivot,
            id,
            ..
        } => {
            let fifo = root.prepare(id)?;
            let made = create(
                &root,
                id,
                bundle,
                pid_file.as_deref(),
                console_socket,
                *no_pivot,
            );
            if let Err(e) = made {
                // Nothing half-made stays: pid 1 blocked at the gate goes too.
                if let Ok(saved) = root.load(id) {
                    let _ = kill_and_wait(&root, &saved);
                }
                let _ = root.remove(id);
                return Err(e);
            }
            let _ = fifo;
        }
        Command::Start { id } => {
            let saved = root.load(id)?;
            oci::allowed(Verb::Start, id, root.status(&saved))?;
            strata_runtime::container::start_created(&root.fifo(id))?;
            let fifo = root.fifo(id);
            std::fs::remove_file(&fifo).map_err(|e| Error::Io {
                path: fifo,
                source: e,
            })?;
            let state = serde_json::to_string(&root.state(&saved)).unwrap_or_default();
            for hook in &saved.hooks.poststart {
                if let Err(e) = strata_runtime::hooks::run(hook, &state, "poststart") {
                    logger.warn(&e.to_string());
                }
            }
        }
        Command::State { id } => {
            let saved = root.load(id)?;
            print_json(&root.state(&saved));
        }
        Command::Kill { all, id, signal } => {
            let saved = root.load(id)?;
            let sig = process::parse_signal(signal.as_deref().unwrap_or("SIGTERM"))?;
            let status = root.status(&saved);
            match *all {
                // runc: --all of a stopped container is no error.
                true => saved.cgroup().kill_all(sig),
                false => {
                    oci::allowed(Verb::Kill, id, status)?;
                    process::signal(saved.pid, sig)?;
                }
            }
            if status == Status::Paused && sig == nix::sys::signal::Signal::SIGKILL {
                // A frozen task dies only once thawed: runc thaws, so the kill takes.
                let _ = saved.cgroup().thaw();
            }
        }
        Command::Delete { force, id } => {
            let saved = match root.load(id) {
                Err(Error::NoSuchContainer(_)) if *force => return Ok(ExitCode::SUCCESS),
                r => r?,
            };
            let status = root.status(&saved);
            if !force {
                oci::allowed(Verb::Delete, id, status)?;
            }
            if status != Status::Stopped {
                kill_and_wait(&root, &saved)?;
            }
            let state = serde_json::to_string(&root.state(&saved)).unwrap_or_default();
            root.remove(id)?;
            for hook in &saved.hooks.poststop {
                if let Err(e) = strata_runtime::hooks::run(hook, &state, "poststop") {
                    logger.warn(&e.to_string());
                }
            }
        }
        Command::List { format, quiet } => list(&root, format, *quiet),
        Command::Ps { format, id } => {
            let saved = root.load(id)?;
            let status = root.status(&saved);
            oci::allowed(Verb::Ps, id, status)?;
            // Stopped: runc prints the header alone (`null` as JSON).
            let mut pids = saved.cgroup().pids();
            if pids.is_empty() && status != Status::Stopped {
                pids.push(saved.pid);
            }
            if pids.is_empty() && format == "json" {
                println!("null");
                return Ok(ExitCode::SUCCESS);
            }
            match format.as_str() {
                "json" => println!("{}", serde_json::json!(pids)),
                _ => {
                    println!("PID   CMD");
                    for pid in pids {
                        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                        println!("{pid:<5} {}", cmd.trim_end());
                    }
                }
            }
        }
        Command::Pause { id } | Command::Resume { id } => {
            let saved = root.load(id)?;
            let status = root.status(&saved);
            let cg = saved.cgroup();
            match &cli.command {
                Command::Pause { .. } => {
                    oci::allowed(Verb::Pause, id, status)?;
                    cg.freeze()?
                }
                _ => {
                    oci::allowed(Verb::Resume, id, status)?;
                    cg.thaw()?
                }
            }
        }
        Command::Spec { bundle, rootless } => {
            let path = bundle.join("config.json");
            if path.exists() {
                return Err(Error::Other(format!(
                    "File {} exists. Remove it first",
                    path.display()
                )));
            }
            let spec = match rootless {
                true => oci_spec::runtime::Spec::rootless(
                    nix::unistd::geteuid().as_raw(),
                    nix::unistd::getegid().as_raw(),
                ),
                false => oci_spec::runtime::Spec::default(),
            };
            spec.save(&path).map_err(|e| Error::Bundle {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        }
        Command::Features => print_json(&serde_json::json!({
            "ociVersionMin": "1.0.0",
            "ociVersionMax": oci::OCI_VERSION,
            "hooks": [
                "prestart",
                "createRuntime",
                "createContainer",
                "startContainer",
                "poststart",
                "poststop"
            ],
            "mountOptions": ["bind", "rbind", "ro", "rw", "nosuid", "nodev", "noexec"],
            "linux": {
                "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
                "cgroup": {"v1": true, "v2": true, "systemd": false},
            },
        })),
        Command::Exec { .. } => return exec(&root, &cli.command),
        Command::Update { resources, id } => {
            let saved = root.load(id)?;
            oci::allowed(Verb::Update, id, root.status(&saved))?;
            let res = oci::load_resources(resources)?;
            let cg = saved.cgroup();
            if !cg.exists() {
                return Err(Error::CgroupsUnavailable { flag: res.flags() });
            }
            cg.update(&res)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn exec(root: &Root, command: &Command) -> Result<ExitCode, Error> {
    let Command::Exec {
        process,
        detach,
        pid_file,
        console_socket,
        tty,
        cwd,
        env,
        user,
        id,
        command,
    } = command
    else {
        unreachable!("exec called for another command")
    };
    let saved = root.load(id)?;
    oci::allowed(Verb::Exec, id, root.status(&saved))?;
    let (base, _) = oci::load_bundle(id, &saved.bundle)?;
    let mut spec = match process {
        Some(path) => oci::load_process(path)?,
        None => {
            // The container's own process gives the defaults (capabilities, env).
            let mut p = base.process;
            p.args = command.clone();
            p.env.extend(env.iter().cloned());
            p.terminal = *tty;
            if let Some(cwd) = cwd {
                p.cwd = cwd.clone();
            }
            if let Some(user) = user {
                let (uid, gid) = user.split_once(':').unwrap_or((user, "0"));
                let num = |s: &str| {
                    s.parse::<u32>()
                        .map_err(|_| Error::Other(format!("invalid --user {user:?}: UID[:GID]")))
                };
                p.user.uid = num(uid)?;
                p.user.gid = num(gid)?;
            }
            p
        }
    };
    // An exec'd process is confined as pid 1 is, as runc does.
    spec.seccomp = base.seccomp;
    let stdio = match (spec.terminal, console_socket) {
        (true, Some(_)) => Stdio::Pty { size: None },
        (true, None) => {
            return Err(Error::Other(
                "the process asks for a terminal: --console-socket is required".into(),
            ))
        }
        _ => Stdio::Inherit,
    };
    let running = strata_runtime::exec(saved.pid, &spec, stdio)?;
    if let (Some(master), Some(path)) = (&running.pty_master, console_socket) {
        send_console(path, master)?;
    }
    if let Some(path) = pid_file {
        write_pid_file(path, running.pid)?;
    }
    if *detach {
        return Ok(ExitCode::SUCCESS);
    }
    let status = running.wait()?;
    Ok(ExitCode::from(status.code() as u8))
}

fn send_console(path: &Path, master: &std::os::fd::OwnedFd) -> Result<(), Error> {
    let sock = UnixStream::connect(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    strata_runtime::pty::send_fd(&sock, master)
}

/// Written whole then renamed, so a reader never sees a partial pid.
fn write_pid_file(path: &Path, pid: i32) -> Result<(), Error> {
    let tmp = path.with_extension("tmp-strata");
    std::fs::write(&tmp, pid.to_string())
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })
}

fn create(
    root: &Root,
    id: &str,
    bundle: &Path,
    pid_file: Option<&Path>,
    console_socket: &Option<PathBuf>,
    no_pivot: bool,
) -> Result<(), Error> {
    let bundle = std::fs::canonicalize(bundle).map_err(|e| Error::Io {
        path: bundle.to_path_buf(),
        source: e,
    })?;
    let (mut spec, oci_spec) = oci::load_bundle(id, &bundle)?;
    spec.start_gate = Some(root.fifo(id));
    spec.no_pivot = no_pivot;
    let stdio = match (spec.process.terminal, console_socket) {
        (true, Some(_)) => Stdio::Pty { size: None },
        (true, None) => {
            return Err(Error::Other(
                "the process asks for a terminal: --console-socket is required".into(),
            ))
        }
        _ => Stdio::Inherit,
    };
    let hooks = oci::RuntimeHooks::of(&oci_spec);
    // prestart/createRuntime: in this process's namespaces, once pid 1 made its own and its
    // mounts, before it pivots (the spec's point), with the state as `creating`.
    let mut create_runtime = |pid: i32| {
        let state = serde_json::json!({
            "ociVersion": oci::OCI_VERSION,
            "id": id,
            "status": "creating",
            "pid": pid,
            "bundle": bundle,
            "annotations": oci_spec.annotations().clone().unwrap_or_default(),
        });
        strata_runtime::hooks::run_all(&hooks.create_runtime, &state.to_string(), "createRuntime")
    };
    let running = match hooks.create_runtime.is_empty() {
        true => Container::start(&spec, stdio)?,
        false => Container::start_with(&spec, stdio, Some(&mut create_runtime))?,
    };
    if let (Some(master), Some(path)) = (&running.pty_master, console_socket) {
        send_console(path, master)?;
    }
    let saved = Saved {
        id: id.to_string(),
        pid: running.pid,
        start_time: oci::start_time(running.pid).unwrap_or(0),
        bundle: bundle.clone(),
        rootfs: spec.rootfs.clone(),
        created: jiff::Timestamp::now().to_string(),
        owner: nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| nix::unistd::geteuid().to_string()),
        annotations: oci_spec.annotations().clone().unwrap_or_default(),
        cgroup_path: spec.cgroup_path.clone(),
        hooks: hooks.clone(),
    };
    root.save(&saved)?;
    if let Some(path) = pid_file {
        write_pid_file(path, running.pid)?;
    }
    Ok(())
}

/// SIGKILL to every process of the container, then waits (bounded) for pid 1 to be gone.
fn kill_and_wait(root: &Root, saved: &Saved) -> Result<(), Error> {
    let sig = nix::sys::signal::Signal::SIGKILL;
    saved.cgroup().kill_all(sig);
    let _ = process::signal(saved.pid, sig);
    let deadline = Instant::now() + Duration::from_secs(10);
    while root.status(saved) != Status::Stopped {
        if Instant::now() > deadline {
            return Err(Error::Other(format!(
                "container {} did not stop after SIGKILL",
                saved.id
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn list(root: &Root, format: &str, quiet: bool) {
    let states: Vec<oci::State> = root
        .ids()
        .iter()
        .filter_map(|id| root.load(id).ok())
        .map(|s| root.state(&s))
        .collect();
    if quiet {
        for s in &states {
            println!("{}", s.id);
        }
    } else if format == "json" {
        println!("{}", serde_json::json!(states));
    } else {
        println!("ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER");
        for s in &states {
            println!(
                "{}\t{}\t{}\t{}\t{}\t{}",
                s.id,
                s.pid,
                s.status,
                s.bundle.display(),
                s.created,
                s.owner
            );
        }
    }
}

fn print_json(v: &impl serde::Serialize) {
    if let Ok(text) = serde_json::to_string_pretty(v) {
        println!("{text}");
    }
}
