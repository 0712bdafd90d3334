//! `create` and `run`: from docker's flags and the image config to a stored container
//! (`store::containers::Record`), then, for `run`, its start.
//!
//! The work is strata-engine's [`create`](strata_engine::create); this file holds
//! the flags and prints.
//!
//! Exit status as docker's: 125 when strata fails (bad flags, unknown image, …), 126 when
//! the command cannot be run, 127 when it is not found, else the container's own.

use std::path::PathBuf;

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use clap::Args;
use strata_engine::attach::{DetachKeys, ToMonitor};
use strata_engine::containers::{Containers, Record};
use strata_engine::create::CreateOptions;

use crate::store::Store;
use crate::Global;

/// The flags `create` and `run` share.
#[derive(Args, Clone, Debug, Default)]
pub struct CreateOpts {
    /// Keep STDIN open even if not attached
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    pub tty: bool,
    /// Automatically remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// Assign a name to the container
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container
    #[arg(short, long = "workdir")]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short, long)]
    pub user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container host name
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Bind mount a volume (HOST:CTR, HOST:CTR:ro, NAME:CTR, or CTR for an anonymous volume)
    #[arg(short, long = "volume", value_name = "SPEC")]
    pub volume: Vec<String>,
    /// Mount a tmpfs directory (PATH or PATH:OPTIONS)
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Mount the container's root filesystem as read only
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Connect a container to a network (none, host; default: a private one with loopback)
    #[arg(long, alias = "net", value_name = "MODE")]
    pub network: Option<String>,
    /// Publish a container's port(s) to the host (HOST:CTR, IP:HOST:CTR, CTR; /udp after CTR)
    #[arg(short, long = "publish", value_name = "SPEC")]
    pub publish: Vec<String>,
    /// Publish all exposed ports to random ports
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Expose a port or a range of ports
    #[arg(long)]
    pub expose: Vec<String>,
    /// Memory limit (e.g. 512m, 1g)
    #[arg(short, long)]
    pub memory: Option<String>,
    /// Tune container pids limit (-1 for unlimited)
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Number of CPUs
    #[arg(long)]
    pub cpus: Option<String>,
    /// Add Linux capabilities
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// Give extended privileges to this container
    #[arg(long)]
    pub privileged: bool,
    /// Run an init inside the container that forwards signals and reaps processes
    #[arg(long)]
    pub init: bool,
    /// Security options (no-new-privileges)
    #[arg(long = "security-opt")]
    pub security_opt: Vec<String>,
    /// Ulimit options (e.g. nofile=1024:2048)
    #[arg(long)]
    pub ulimit: Vec<String>,
    /// Set metadata on a container
    #[arg(short, long = "label")]
    pub label: Vec<String>,
    /// Signal to stop the container (default: the image's StopSignal, else SIGTERM)
    #[arg(long = "stop-signal")]
    pub stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container before SIGKILL
    #[arg(long = "stop-timeout", allow_hyphen_values = true)]
    pub stop_timeout: Option<i64>,
    /// Print help
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// IMAGE [COMMAND [ARG...]]
    #[arg(
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "IMAGE [COMMAND [ARG...]]"
    )]
    pub argv: Vec<String>,
}

#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    /// Run container in background and print container ID
    #[arg(short, long)]
    pub detach: bool,
    /// Override the key sequence for detaching a container (default ctrl-p,ctrl-q)
    #[arg(long = "detach-keys", value_name = "KEYS")]
    pub detach_keys: Option<String>,
    #[command(flatten)]
    pub opts: CreateOpts,
}

impl CreateOpts {
    /// The request for the engine: the flags as given.
    fn options(&self) -> CreateOptions {
        CreateOptions {
            interactive: self.interactive,
            tty: self.tty,
            rm: self.rm,
            name: self.name.clone(),
            env: self.env.clone(),
            env_file: self.env_file.clone(),
            workdir: self.workdir.clone(),
            user: self.user.clone(),
            entrypoint: self.entrypoint.clone(),
            hostname: self.hostname.clone(),
            volume: self.volume.clone(),
            tmpfs: self.tmpfs.clone(),
            read_only: self.read_only,
            network: self.network.clone(),
            publish: self.publish.clone(),
            publish_all: self.publish_all,
            expose: self.expose.clone(),
            memory: self.memory.clone(),
            pids_limit: self.pids_limit,
            cpus: self.cpus.clone(),
            cap_add: self.cap_add.clone(),
            cap_drop: self.cap_drop.clone(),
            privileged: self.privileged,
            init: self.init,
            security_opt: self.security_opt.clone(),
            ulimit: self.ulimit.clone(),
            label: self.label.clone(),
            stop_signal: self.stop_signal.clone(),
            stop_timeout: self.stop_timeout,
            argv: self.argv.clone(),
        }
    }
}

/// Prints `Error: …` and gives docker's 125.
fn fail(e: strata_engine::Error) -> i32 {
    eprintln!("Error: {}", e.chain());
    125
}

/// Stores the container (pulling its image when missing, quietly, as docker does for `run`:
/// stdout is the container's).
fn create_container(global: &Global, opts: &CreateOpts) -> Result<Record, strata_engine::Error> {
    strata_engine::create::create(
        &Store::new(&global.root),
        &opts.options(),
        &strata_image::pull::Silent,
        &|reference| eprintln!("Unable to find image '{}' locally", reference.familiar()),
    )
}

/// `create`: prints the new container's id.
pub fn create(global: &Global, opts: CreateOpts) -> i32 {
    match create_container(global, &opts) {
        Ok(rec) => {
            println!("{}", rec.id);
            0
        }
        Err(e) => fail(e),
    }
}

/// `run`: create, then start (in this process unless `-d`, or under a monitor of its own
/// with `-it` on a terminal, so that it can detach).
pub fn run(global: &Global, args: RunArgs) -> i32 {
    let opts = args.opts;
    // Checked before anything is made.
    let keys = match args.detach_keys.as_deref().map(DetachKeys::parse) {
        None => DetachKeys::default(),
        Some(Ok(k)) => k,
        Some(Err(e)) => return fail(e),
    };
    let rec = match create_container(global, &opts) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if args.detach {
        return match crate::monitor::spawn_detached(&global.root, &rec.id) {
            Ok(()) => {
                println!("{}", rec.id);
                0
            }
            Err(e) => {
                eprintln!("Error: {}", e.message);
                e.code
            }
        };
    }
    if opts.tty && opts.interactive && nix::unistd::isatty(0).unwrap_or(false) {
        return run_attached(global, &rec, keys);
    }
    crate::monitor::run_foreground(&global.root, &rec.id, opts.interactive)
}

/// `run -it` (and `start -ai`) on a terminal: this process can give the shell back only by
/// exiting, so the
/// container gets a monitor of its own (as `run -d`) and this process is its first attached
/// client, connected before the start (no output missed). The detach keys leave the
/// container running; otherwise its status is run's, once the monitor has cleaned up.
pub fn run_attached(global: &Global, rec: &Record, keys: DetachKeys) -> i32 {
    let (mut client, monitor_end) = match UnixStream::pair() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("Error: connecting to the container's monitor: {e}");
            return 125;
        }
    };
    // The terminal's size first: the monitor sizes the pty with it before the start.
    let ws = strata_runtime::pty::window_size(std::io::stdin().as_fd());
    let (rows, cols) = ws.map_or((0, 0), |w| (w.rows, w.cols));
    let _ = ToMonitor::Resize { rows, cols }.send(&mut client);
    if let Err(e) = crate::monitor::spawn_attached(&global.root, &rec.id, monitor_end) {
        eprintln!("Error: {}", e.message);
        return e.code;
    }
    let containers = Containers::new(&Store::new(&global.root));
    match super::exec::session(&containers, rec, client, true, keys, true) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            125
        }
    }
}
