//! `strata-fs`: mounts a union of directories, with fuse-overlayfs's command line.
//!
//! ```text
//! strata-fs [-f] [-d] -o lowerdir=L3:L2:L1|layers=I2:I1[,upperdir=U,workdir=W][,…] [SOURCE] MOUNTPOINT
//! ```
//! Without `-f` it returns once the mount is ready and serves it from a background
//! process (re-executed with `STRATA_FS_DAEMON=1`; its first line on stdout says "ready").
//! SIGTERM, SIGINT or SIGHUP unmount cleanly. Once the mount has left the daemon's mount
//! namespace, the daemon exits within [`mount::UNMOUNTED_GRACE`] even if the kernel still
//! holds the connection (a lazy unmount with open files, a copy in another namespace).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use strata_fs::mount;
use strata_fs::options::MountOptions;

const USAGE: &str = "usage: strata-fs [-f] [-d] -o lowerdir=DIR[:DIR...]|layers=DIR[:DIR...][,upperdir=DIR,workdir=DIR][,OPTION...] [SOURCE] MOUNTPOINT";
const DAEMON_ENV: &str = "STRATA_FS_DAEMON";

struct Args {
    opts: MountOptions,
    source: Option<String>,
    mountpoint: PathBuf,
    foreground: bool,
    debug: bool,
}

fn parse_args(raw: &[OsString]) -> Result<Args, String> {
    let mut opts = MountOptions::default();
    let mut positional = Vec::new();
    let mut foreground = false;
    let mut debug = false;
    let mut it = raw.iter();
    while let Some(arg) = it.next() {
        let s = arg
            .to_str()
            .ok_or_else(|| format!("argument {arg:?} is not valid UTF-8"))?;
        match s {
            "-f" | "--foreground" => foreground = true,
            "-d" | "--debug" => {
                debug = true;
                foreground = true;
            }
            "-o" => {
                let v = it.next().ok_or("-o needs a value")?;
                opts.apply(v.to_str().ok_or("-o value is not valid UTF-8")?)
                    .map_err(|e| e.to_string())?;
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            "-V" | "--version" => {
                println!("strata-fs {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            o if o.starts_with("-o") => opts.apply(&o[2..]).map_err(|e| e.to_string())?,
            o if o.starts_with('-') && o.len() > 1 => {
                return Err(format!("unknown flag {o:?}\n{USAGE}"))
            }
            _ => positional.push(s.to_string()),
        }
    }
    let (source, mountpoint) = match positional.len() {
        1 => (None, positional.remove(0)),
        2 => {
            let mp = positional.remove(1);
            (Some(positional.remove(0)), mp)
        }
        0 => return Err(format!("no mount point given\n{USAGE}")),
        _ => return Err(format!("too many arguments: {positional:?}\n{USAGE}")),
    };
    opts.validate().map_err(|e| e.to_string())?;
    Ok(Args {
        opts,
        source,
        mountpoint: PathBuf::from(mountpoint),
        foreground,
        debug,
    })
}

/// Starts the serving process and waits until it reports the mount ready.
fn daemonize(raw: &[OsString]) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("strata-fs: cannot find own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    match mount::start_server(
        Command::new(exe)
            .args(raw)
            .env(DAEMON_ENV, "1")
            .stdin(std::process::Stdio::null()),
    ) {
        Ok(_) => ExitCode::SUCCESS,
        // It said why on the stderr it shares with us.
        Err(mount::MountError::Server { status, .. }) => {
            ExitCode::from(status.code().unwrap_or(1).clamp(1, 255) as u8)
        }
        Err(e) => {
            eprintln!("strata-fs: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the foreground process again with [`mount::MALLOC_TUNING`] in its environment
/// (glibc reads it at start); a daemon got it from [`mount::start_server`].
fn reexec_with_malloc_tuning() {
    use std::os::unix::process::CommandExt;
    if mount::MALLOC_TUNING
        .iter()
        .all(|(k, _)| std::env::var_os(k).is_some())
    {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = Command::new(exe);
    cmd.args(std::env::args_os().skip(1));
    for (k, v) in mount::MALLOC_TUNING {
        if std::env::var_os(k).is_none() {
            cmd.env(k, v);
        }
    }
    // Only returns on failure; running untuned is still correct.
    let _ = cmd.exec();
}

fn main() -> ExitCode {
    reexec_with_malloc_tuning();
    let raw: Vec<OsString> = std::env::args_os().skip(1).collect();
    let args = match parse_args(&raw) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("strata-fs: {e}");
            return ExitCode::from(2);
        }
    };
    let daemon = std::env::var_os(DAEMON_ENV).is_some();
    if !args.foreground && !daemon {
        return daemonize(&raw);
    }
    env_logger::Builder::new()
        .filter_level(if args.debug {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Warn
        })
        .init();
    rustix::process::umask(rustix::fs::Mode::empty());
    if daemon {
        let _ = rustix::process::setsid();
    }
    let signals = match mount::block_end_signals() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("strata-fs: cannot block signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let union = match mount::open_lowers(&args.opts)
        .and_then(|lowers| mount::build_union(lowers, &args.opts))
    {
        Ok(u) => u,
        Err(e) => {
            eprintln!("strata-fs: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mounted = match mount::mount(union, &args.opts, args.source.as_deref(), &args.mountpoint) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("strata-fs: {e}");
            return ExitCode::FAILURE;
        }
    };
    let debug = args.debug;
    let ready = move || {
        if daemon {
            mount::report_ready(debug);
        }
    };
    match mounted.serve(signals, ready) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata-fs: {e}");
            ExitCode::FAILURE
        }
    }
}
