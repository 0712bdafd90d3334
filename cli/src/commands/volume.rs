//! `volume create | ls | inspect | rm | prune`: strata-engine's volumes, printed as docker
//! prints them. Refusals are the daemon's (`Error response from daemon: …`, status 1).

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{confirm, open, report, Prefix};
use crate::format::{human_size, Format, Template};
use crate::Global;
use strata_engine::volumes::{pairs, CreateOptions, Filter, Volume, Volumes};

#[derive(Subcommand)]
pub enum VolumeCommand {
    /// Create a volume
    Create(CreateArgs),
    /// List volumes
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more volumes
    Inspect(InspectArgs),
    /// Remove one or more volumes (never one a container uses)
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Remove unused anonymous volumes (with -a, all unused volumes)
    Prune(PruneArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// Specify volume driver name
    #[arg(short, long, default_value = "local")]
    pub driver: String,
    /// Set metadata for a volume
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Set driver specific options
    #[arg(short, long = "opt", value_name = "KEY=VALUE")]
    pub opt: Vec<String>,
    /// The volume's name (default: 64 random hex digits, an anonymous volume)
    pub name: Option<String>,
}

#[derive(Args)]
pub struct LsArgs {
    /// Only display volume names
    #[arg(short, long)]
    pub quiet: bool,
    /// Filter output (dangling=true|false, name=TEXT, label=KEY[=VALUE], driver=local)
    #[arg(short, long)]
    pub filter: Vec<String>,
    /// Format: table, json, or a Go template ({{.Name}} {{.Driver}} {{.Scope}}
    /// {{.Mountpoint}} {{.Labels}})
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args)]
pub struct InspectArgs {
    /// Format the output with a Go template ({{.Name}}, {{json .Labels}}, …)
    #[arg(short, long)]
    pub format: Option<String>,
    #[arg(required = true, value_name = "VOLUME")]
    pub names: Vec<String>,
}

#[derive(Args)]
pub struct RmArgs {
    /// Do not fail on a volume that does not exist (a volume in use is still refused)
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true, value_name = "VOLUME")]
    pub names: Vec<String>,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Remove all unused volumes, not just anonymous ones
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
}

/// `volume …`: its exit status.
pub fn run(global: &Global, c: VolumeCommand) -> i32 {
    match c {
        VolumeCommand::Create(a) => report(create(global, a), Prefix::Daemon),
        VolumeCommand::Ls(a) => report(ls(global, a), Prefix::Daemon),
        VolumeCommand::Inspect(a) => inspect(global, a),
        VolumeCommand::Rm(a) => rm(global, a),
        VolumeCommand::Prune(a) => report(prune(global, a), Prefix::Daemon),
    }
}

fn create(global: &Global, a: CreateArgs) -> Result<()> {
    let (store, _) = open(global);
    let v = Volumes::new(&store).create(&CreateOptions {
        name: a.name,
        driver: Some(a.driver),
        labels: a.label,
        options: a.opt,
    })?;
    super::print(format!("{}\n", v.name).as_bytes())
}

/// A row of `volume ls`: docker's formatter fields.
fn row(v: &Volume) -> Value {
    json!({
        "Availability": "N/A",
        "Driver": v.driver,
        "Group": "N/A",
        "Labels": pairs(&v.labels),
        "Links": "N/A",
        "Mountpoint": v.mountpoint,
        "Name": v.name,
        "Scope": v.scope,
        "Size": "N/A",
        "Status": "N/A",
    })
}

fn ls(global: &Global, a: LsArgs) -> Result<()> {
    let filter = Filter::parse(&a.filter)?;
    let (store, containers) = open(global);
    let used = Volumes::users(&containers.records()?);
    let volumes: Vec<Volume> = Volumes::new(&store)
        .list()?
        .into_iter()
        .filter(|v| filter.matches(v, used.contains_key(&v.name)))
        .collect();
    if a.quiet {
        let names: String = volumes.iter().map(|v| format!("{}\n", v.name)).collect();
        return super::print(names.as_bytes());
    }
    let headers = json!({"Driver": "DRIVER", "Name": "VOLUME NAME", "Scope": "SCOPE",
        "Mountpoint": "MOUNTPOINT", "Labels": "LABELS", "Links": "LINKS", "Size": "SIZE",
        "Group": "GROUP", "Availability": "AVAILABILITY", "Status": "STATUS"});
    let f = Format::parse(a.format.as_deref(), "{{.Driver}}\t{{.Name}}")?;
    let rows: Vec<Value> = volumes.iter().map(row).collect();
    let mut out = Vec::new();
    f.print(&mut out, &headers, &rows)?;
    super::print(&out)
}

fn inspect(global: &Global, a: InspectArgs) -> i32 {
    let (store, _) = open(global);
    let volumes = Volumes::new(&store);
    let template = match a.format.as_deref() {
        None | Some("") => None,
        Some(f) if f.trim() == "json" => None,
        Some(f) => match Template::parse(&f.replace("\\t", "\t").replace("\\n", "\n")) {
            Ok(t) => Some(t),
            Err(e) => return report(Err(e), Prefix::Plain),
        },
    };
    let mut docs = Vec::new();
    let mut failed = false;
    let mut errors = Vec::new();
    for name in &a.names {
        match volumes.get(name) {
            Ok(v) => docs.push(serde_json::to_value(&v).expect("a volume is JSON")),
            Err(e) => errors.push(e),
        }
    }
    let out = match &template {
        Some(t) => docs
            .iter()
            .map(|d| t.render(d).map(|s| s + "\n"))
            .collect::<Result<String>>(),
        None => super::inspect::to_json_indent(&Value::Array(docs)).map(|s| s + "\n"),
    };
    match out {
        Ok(text) => failed |= report(super::print(text.as_bytes()), Prefix::Plain) != 0,
        Err(e) => failed |= report(Err(e), Prefix::Plain) != 0,
    }
    for e in errors {
        eprintln!("Error response from daemon: {e}");
        failed = true;
    }
    i32::from(failed)
}

fn rm(global: &Global, a: RmArgs) -> i32 {
    let (store, containers) = open(global);
    let volumes = Volumes::new(&store);
    let mut code = 0;
    for name in &a.names {
        match volumes.remove_unused(name, &containers, a.force) {
            Ok(()) => {
                if super::print(format!("{name}\n").as_bytes()).is_err() {
                    code = 1;
                }
            }
            Err(e) => {
                eprintln!("Error response from daemon: {}", e.chain());
                code = 1;
            }
        }
    }
    code
}

fn prune(global: &Global, a: PruneArgs) -> Result<()> {
    if !a.force {
        let what = match a.all {
            true => "all local volumes",
            false => "anonymous local volumes",
        };
        if !confirm(&format!(
            "WARNING! This will remove {what} not used by at least one container.\n\
             Are you sure you want to continue?"
        ))? {
            return Ok(());
        }
    }
    let (store, containers) = open(global);
    let (names, bytes) = Volumes::new(&store).prune(&containers, a.all)?;
    let mut out = super::system::section("Deleted Volumes:", &names);
    out.push_str(&format!("Total reclaimed space: {}\n", human_size(bytes)));
    super::print(out.as_bytes())
}
