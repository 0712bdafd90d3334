//! The `strata` command: the clap tree and dispatch. Each command family lives in
//! `commands/<family>.rs` and parses, calls strata-image or strata-engine, and prints;
//! `format/`, `filter.rs` and `progress.rs` (the libraries' `PullObserver` as bars or
//! docker's lines) are the output helpers beside them. Library errors are printed here once.
//!
//! Exit status: 0 on success, 1 on an error (printed as `Error: …` on stderr), 2 on a usage
//! error.

mod commands;
mod filter;
mod format;
mod progress;

use strata_engine::{attach, monitor, terminal};
use strata_image::{digest, oci, pull, reference, registry, store};

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
    /// Upload an image to a registry
    Push(commands::push::PushArgs),
    /// Search a registry for images (Docker Hub, or REGISTRY/TERM in a registry's catalog)
    Search(commands::push::SearchArgs),
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
    /// List containers
    Ps(commands::ps::PsArgs),
    /// The container verbs, here as under `strata container`
    #[command(flatten)]
    Verb(ContainerVerb),
    /// Manage containers
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Manage strata: disk usage
    #[command(subcommand)]
    System(SystemCommand),
    /// Display system-wide information
    Info(commands::info::InfoArgs),
    /// Manage volumes
    #[command(subcommand)]
    Volume(commands::volume::VolumeCommand),
    /// Save images to a tar archive (docker and OCI layout in one)
    Save(commands::archive::SaveArgs),
    /// Load images from a tar archive (docker archive or OCI archive)
    Load(commands::archive::LoadArgs),
    /// Build an image from a Dockerfile
    Build(commands::build::BuildArgs),
    /// Import the contents from a tarball to create a filesystem image
    Import(commands::commit::ImportArgs),
    /// The monitor of a container (internal)
    #[command(name = "__monitor", hide = true)]
    Monitor {
        id: String,
        /// stdin is a client's attach socket
        #[arg(long)]
        attached: bool,
    },
    /// Serve an image's mount (internal)
    #[command(name = "__mount", hide = true)]
    MountServer(commands::mount::ServeArgs),
    /// Serve a running container's root file system (internal)
    #[command(name = "__fs-server", hide = true)]
    FsServer { id: String },
    /// Copy with a stopped container's root mounted (internal)
    #[command(name = "__rootfs", hide = true)]
    Rootfs(commands::files::RootfsArgs),
    /// Write a container's changes or filesystem as a tar to stdout (internal)
    #[command(name = "__tar", hide = true)]
    Tar(commands::commit::TarHelperArgs),
    /// Show the version
    Version,
}

/// The container verbs, declared once: `strata VERB` and `strata container VERB` are the
/// same command.
#[derive(Subcommand)]
enum ContainerVerb {
    /// Create and run a new container from an image
    #[command(disable_help_flag = true)]
    Run(commands::run::RunArgs),
    /// Create a new container
    #[command(disable_help_flag = true)]
    Create(commands::run::CreateOpts),
    /// Start one or more stopped containers
    Start(commands::containers::StartArgs),
    /// Stop one or more running containers
    Stop(commands::containers::StopArgs),
    /// Restart one or more containers
    Restart(commands::containers::StopArgs),
    /// Kill one or more running containers
    Kill(commands::containers::KillArgs),
    /// Remove one or more containers
    #[command(visible_alias = "remove")]
    Rm(commands::containers::RmArgs),
    /// Fetch the logs of a container
    Logs(commands::ps::LogsArgs),
    /// Execute a command in a running container
    Exec(commands::exec::ExecArgs),
    /// Attach to a running container's input and output (ctrl-p ctrl-q detaches)
    Attach(commands::exec::AttachArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(commands::containers::NamesArgs),
    /// Pause all processes within one or more containers
    Pause(commands::containers::NamesArgs),
    /// Unpause all processes within one or more containers
    Unpause(commands::containers::NamesArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff(commands::files::DiffArgs),
    /// Copy files/folders between a container and the local filesystem
    Cp(commands::files::CpArgs),
    /// Rename a container
    Rename(commands::containers::RenameArgs),
    /// List port mappings of a container
    Port(commands::ps::PortArgs),
    /// Display the running processes of a container
    Top(commands::ps::TopArgs),
    /// Create a new image from a container's changes
    Commit(commands::commit::CommitArgs),
    /// Export a container's filesystem as a tar archive
    Export(commands::commit::ExportArgs),
}

/// `strata container …`: the shared verbs and those that exist only here.
// Parsed once per process: the size of the `run` flags in one variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum ContainerCommand {
    /// List containers
    #[command(visible_aliases = ["ps", "list"])]
    Ls(commands::ps::PsArgs),
    /// Remove all stopped containers
    Prune(commands::containers::PruneArgs),
    /// Show low-level information on containers (JSON)
    Inspect(commands::inspect::InspectArgs),
    #[command(flatten)]
    Verb(ContainerVerb),
}

/// A container verb: its exit status (docker's).
fn container_verb(global: &Global, v: ContainerVerb) -> i32 {
    use commands::{containers, exec, files, ps, run};
    match v {
        ContainerVerb::Run(a) => run::run(global, a),
        ContainerVerb::Create(a) => run::create(global, a),
        ContainerVerb::Start(a) => containers::start(global, a),
        ContainerVerb::Stop(a) => containers::stop(global, a),
        ContainerVerb::Restart(a) => containers::restart(global, a),
        ContainerVerb::Kill(a) => containers::kill(global, a),
        ContainerVerb::Rm(a) => containers::rm(global, a),
        ContainerVerb::Logs(a) => ps::logs(global, a),
        ContainerVerb::Exec(a) => exec::exec(global, a),
        ContainerVerb::Attach(a) => exec::attach(global, a),
        ContainerVerb::Wait(a) => containers::wait(global, a),
        ContainerVerb::Pause(a) => containers::pause(global, a),
        ContainerVerb::Unpause(a) => containers::unpause(global, a),
        ContainerVerb::Diff(a) => files::diff(global, a),
        ContainerVerb::Cp(a) => files::cp(global, a),
        ContainerVerb::Rename(a) => containers::rename(global, a),
        ContainerVerb::Port(a) => ps::port(global, a),
        ContainerVerb::Top(a) => ps::top(global, a),
        ContainerVerb::Commit(a) => commands::commit::commit(global, a),
        ContainerVerb::Export(a) => commands::commit::export(global, a),
    }
}

/// `strata container …`: its exit status.
fn container_command(global: &Global, c: ContainerCommand) -> i32 {
    match c {
        ContainerCommand::Ls(a) => commands::ps::ps(global, a),
        ContainerCommand::Prune(a) => commands::containers::prune(global, a),
        ContainerCommand::Inspect(mut a) => {
            a.kind = Some("container".into());
            match commands::inspect::inspect(global, a) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("Error: {e:#}");
                    1
                }
            }
        }
        ContainerCommand::Verb(v) => container_verb(global, v),
    }
}

#[derive(Subcommand)]
enum ImageCommand {
    /// List images
    #[command(visible_alias = "list")]
    Ls(commands::images::ListArgs),
    /// Download an image from a registry
    Pull(commands::pull::PullArgs),
    /// Upload an image to a registry
    Push(commands::push::PushArgs),
    /// Remove one or more images
    #[command(visible_alias = "remove")]
    Rm(commands::images::RmiArgs),
    /// Create a tag TARGET that refers to SOURCE
    Tag(commands::images::TagArgs),
    /// Show low-level information on images (JSON)
    Inspect(commands::inspect::InspectArgs),
    /// Show the history of an image
    History(commands::inspect::HistoryArgs),
    /// Remove unused images
    Prune(commands::system::PruneArgs),
    /// Save images to a tar archive
    Save(commands::archive::SaveArgs),
    /// Load images from a tar archive
    Load(commands::archive::LoadArgs),
    /// Import the contents from a tarball to create a filesystem image
    Import(commands::commit::ImportArgs),
}

#[derive(Subcommand)]
enum SystemCommand {
    /// Show strata disk usage
    Df(commands::system::DfArgs),
    /// Display system-wide information
    Info(commands::info::InfoArgs),
    /// Remove unused data (stopped containers, dangling or unused images, anonymous volumes)
    Prune(commands::system::SystemPruneArgs),
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
        Command::Push(a) | Command::Image(ImageCommand::Push(a)) => {
            commands::push::push(&global, a)
        }
        Command::Search(a) => commands::push::search(&global, a),
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
        Command::Image(ImageCommand::Prune(a)) => commands::system::image_prune(&global, a),
        Command::Save(a) | Command::Image(ImageCommand::Save(a)) => {
            commands::archive::save(&global, a)
        }
        Command::Load(a) | Command::Image(ImageCommand::Load(a)) => {
            commands::archive::load(&global, a)
        }
        Command::Import(a) | Command::Image(ImageCommand::Import(a)) => {
            std::process::exit(commands::commit::import(&global, a))
        }
        Command::System(SystemCommand::Df(a)) => commands::system::df(&global, a),
        Command::Info(a) | Command::System(SystemCommand::Info(a)) => {
            commands::info::info(&global, a)
        }
        Command::System(SystemCommand::Prune(a)) => commands::system::system_prune(&global, a),
        Command::Build(a) => std::process::exit(commands::build::build(&global, a)),
        Command::Login(a) => commands::auth::login(&global, a),
        Command::Logout(a) => commands::auth::logout(&global, a),
        Command::Mount(a) => commands::mount::mount(&global, a),
        Command::Umount(a) => commands::mount::umount(&global, a),
        Command::MountServer(a) => commands::mount::serve(&global, a),
        Command::Ps(a) => std::process::exit(commands::ps::ps(&global, a)),
        Command::Verb(v) => std::process::exit(container_verb(&global, v)),
        Command::Container(c) => std::process::exit(container_command(&global, c)),
        Command::Volume(c) => std::process::exit(commands::volume::run(&global, c)),
        Command::Monitor { id, attached } => {
            std::process::exit(monitor::monitor_main(&global.root, &id, attached))
        }
        Command::FsServer { id } => {
            strata_engine::fs_server::serve_main(&global.root, &id).map_err(Into::into)
        }
        Command::Rootfs(a) => std::process::exit(commands::files::rootfs_helper(&global, a)),
        Command::Tar(a) => std::process::exit(commands::commit::tar_helper(&global, a)),
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
