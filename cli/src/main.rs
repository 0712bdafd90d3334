//! The `strata` command: the clap tree and dispatch. Each command family lives in
//! `commands/<family>.rs`; the store, the registry client and the output helpers are
//! modules beside them.
//!
//! Exit status: 0 on success, 1 on an error (printed as `Error: …` on stderr), 2 on a usage
//! error.

mod commands;
mod digest;
mod filter;
mod format;
mod oci;
mod progress;
mod pull;
mod reference;
mod registry;
mod store;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Containers on a FUSE union root filesystem"
)]
struct Cli {
    /// Store root (default: /var/lib/strata as root, $XDG_DATA_HOME/strata otherwise)
    #[arg(long, global = true, env = "STRATA_ROOT", value_name = "DIR")]
    root: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download an image from a registry
    Pull(commands::pull::PullArgs),
    /// List images
    Images(commands::images::ListArgs),
    /// Manage images
    #[command(subcommand)]
    Image(ImageCommand),
    /// Create a tag TARGET that refers to SOURCE
    Tag(commands::images::TagArgs),
    /// Remove one or more images
    Rmi(commands::images::RmiArgs),
    /// Show low-level information on images (JSON)
    Inspect(commands::inspect::InspectArgs),
    /// Show the history of an image
    History(commands::inspect::HistoryArgs),
    /// Log in to a registry
    Login(commands::auth::LoginArgs),
    /// Log out from a registry
    Logout(commands::auth::LogoutArgs),
    /// Mount an image's layers at a directory (read-only unless --upper)
    Mount(commands::mount::MountArgs),
    /// Unmount a directory mounted by `strata mount`
    #[command(alias = "unmount")]
    Umount(commands::mount::UmountArgs),
    /// Show the version
    Version,
}

#[derive(Subcommand)]
enum ImageCommand {
    /// List images
    #[command(visible_alias = "list")]
    Ls(commands::images::ListArgs),
    /// Download an image from a registry
    Pull(commands::pull::PullArgs),
    /// Remove one or more images
    #[command(visible_alias = "remove")]
    Rm(commands::images::RmiArgs),
    /// Create a tag TARGET that refers to SOURCE
    Tag(commands::images::TagArgs),
    /// Show low-level information on images (JSON)
    Inspect(commands::inspect::InspectArgs),
    /// Show the history of an image
    History(commands::inspect::HistoryArgs),
}

/// What every command gets: where the store is.
#[derive(Clone)]
pub struct Global {
    pub root: PathBuf,
}

fn main() {
    let cli = Cli::parse();
    let global = Global {
        root: cli.root.unwrap_or_else(store::Store::default_root),
    };
    let result = match cli.command {
        Command::Pull(a) | Command::Image(ImageCommand::Pull(a)) => commands::pull::run(&global, a),
        Command::Images(a) | Command::Image(ImageCommand::Ls(a)) => {
            commands::images::list(&global, a)
        }
        Command::Tag(a) | Command::Image(ImageCommand::Tag(a)) => commands::images::tag(&global, a),
        Command::Rmi(a) | Command::Image(ImageCommand::Rm(a)) => commands::images::rmi(&global, a),
        Command::Inspect(a) | Command::Image(ImageCommand::Inspect(a)) => {
            commands::inspect::inspect(&global, a)
        }
        Command::History(a) | Command::Image(ImageCommand::History(a)) => {
            commands::inspect::history(&global, a)
        }
        Command::Login(a) => commands::auth::login(&global, a),
        Command::Logout(a) => commands::auth::logout(&global, a),
        Command::Mount(a) => commands::mount::mount(&global, a),
        Command::Umount(a) => commands::mount::umount(&global, a),
        Command::Version => {
            println!("strata {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}
