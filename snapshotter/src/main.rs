//! `strata-snapshotter --address SOCKET --root DIR`: serves the snapshots API on a unix
//! socket for containerd's `[proxy_plugins]` (see the library docs for what a snapshot is).
//! `strata-snapshotter serve-union --cache DIR SPEC MOUNTPOINT` (hidden) serves one union
//! with lazy layers, as `strata-fs` serves the others: it returns once the mount is ready
//! and goes on in a daemonized process of its own.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use containerd_snapshots::tonic::transport::Server;
use strata_snapshotter::service::Service;
use strata_snapshotter::Snapshots;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

/// A containerd remote snapshotter over strata-fs.
#[derive(Parser)]
#[command(name = "strata-snapshotter", version)]
struct Args {
    /// Unix socket to serve the snapshots API on (a stale one is replaced).
    #[arg(
        long,
        default_value = "/run/strata-snapshotter/strata-snapshotter.sock"
    )]
    address: PathBuf,
    /// The strata store whose root holds the snapshots (under `snapshotter/`).
    #[arg(long, env = "STRATA_ROOT")]
    root: Option<PathBuf>,
    /// Log every request.
    #[arg(long)]
    debug: bool,
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Serve one union (JSON, as the snapshotter writes it) at MOUNTPOINT.
    #[command(hide = true)]
    ServeUnion {
        #[arg(long)]
        cache: PathBuf,
        spec: String,
        mountpoint: PathBuf,
    },
}

/// Set in the daemonized `serve-union` process.
const SERVE_ENV: &str = "STRATA_SNAPSHOTTER_SERVE";

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(Sub::ServeUnion {
        cache,
        spec,
        mountpoint,
    }) = &args.command
    {
        return serve_union(cache, spec, mountpoint);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(serve(args))
}

fn serve_union(cache: &std::path::Path, spec: &str, at: &std::path::Path) -> Result<()> {
    if std::env::var_os(SERVE_ENV).is_none() {
        let exe = std::env::current_exe().context("locating this program")?;
        strata_fs::mount::start_server(
            std::process::Command::new(exe)
                .args(std::env::args_os().skip(1))
                .env(SERVE_ENV, "1")
                .stdin(std::process::Stdio::null()),
        )
        .context("starting the union's server")?;
        return Ok(());
    }
    let _ = nix::unistd::setsid();
    let union: strata_snapshotter::mounter::Union =
        serde_json::from_str(spec).context("reading the union's spec")?;
    strata_snapshotter::mounter::serve_union(&union, at, cache, || {
        strata_fs::mount::report_ready(false)
    })
    .map_err(anyhow::Error::msg)
}

async fn serve(args: Args) -> Result<()> {
    env_logger::Builder::new()
        .filter_level(if args.debug {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Info
        })
        .init();
    let root = args
        .root
        .unwrap_or_else(strata_image::store::Store::default_root);
    let snapshots =
        Snapshots::open(&root).with_context(|| format!("opening {}", root.display()))?;
    if let Some(dir) = args.address.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // We hold the root's lock: a socket left at the address is a dead snapshotter's.
    match std::fs::remove_file(&args.address) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing {}", args.address.display()))
        }
        _ => {}
    }
    let listener = UnixListener::bind(&args.address)
        .with_context(|| format!("listening on {}", args.address.display()))?;
    log::info!("serving {} on {}", root.display(), args.address.display());
    let service = containerd_snapshots::server(Arc::new(Service::new(snapshots)));
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .context("serving the snapshots API")?;
    let _ = std::fs::remove_file(&args.address);
    Ok(())
}
