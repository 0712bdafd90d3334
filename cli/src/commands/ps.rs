//! What containers are and did: `ps`, `logs`, `port`, `top`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};

use super::{open, report, Prefix};
use crate::format::{self, Format};
use crate::store::Store;
use crate::Global;
use strata_engine::containers::{Containers, Record, State, Status};

#[derive(Args)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    pub all: bool,
    /// Only display container IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Display total file sizes
    #[arg(short, long)]
    pub size: bool,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Filter output based on conditions provided (status=, name=, ancestor=, exited=, id=,
    /// label=)
    #[arg(short, long = "filter")]
    pub filters: Vec<String>,
    /// Format output using a Go template, table or json
    #[arg(long)]
    pub format: Option<String>,
    /// Show the latest created container
    #[arg(short, long)]
    pub latest: bool,
    /// Show n last created containers
    #[arg(short = 'n', long = "last", default_value_t = -1, allow_hyphen_values = true)]
    pub last: i64,
}

#[derive(Args)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short, long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs ("all" for every line)
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show timestamps
    #[arg(short, long)]
    pub timestamps: bool,
    pub container: String,
}

#[derive(Args)]
pub struct PortArgs {
    pub container: String,
    /// PRIVATE_PORT[/PROTO]
    pub port: Option<String>,
}

#[derive(Args)]
pub struct TopArgs {
    pub container: String,
    /// ps options
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

fn unix(t: &str) -> Option<i64> {
    format::parse_time(t)
}

/// `ps`'s STATUS column.
pub fn status_text(st: &State) -> String {
    let ago = |t: &str| format::human_duration(format::now_unix() - unix(t).unwrap_or(0));
    match st.status {
        Status::Created => "Created".into(),
        Status::Running => format!("Up {}", ago(&st.started_at)),
        Status::Paused => format!("Up {} (Paused)", ago(&st.started_at)),
        Status::Exited => format!("Exited ({}) {} ago", st.exit_code, ago(&st.finished_at)),
        Status::Dead => "Dead".into(),
    }
}

/// `0.0.0.0:8080->80/tcp, 443/tcp`.
fn ports_text(rec: &Record, st: &State) -> String {
    let ports = st.ports(rec);
    let mut v: Vec<String> = ports
        .iter()
        .map(|p| {
            let ip = if p.host_ip.is_empty() {
                "0.0.0.0"
            } else {
                &p.host_ip
            };
            format!("{ip}:{}->{}/{}", p.host_port, p.container_port, p.proto)
        })
        .collect();
    for e in &rec.exposed {
        if !ports
            .iter()
            .any(|p| format!("{}/{}", p.container_port, p.proto) == *e)
        {
            v.push(e.clone());
        }
    }
    v.join(", ")
}

pub fn command_text(rec: &Record, trunc: bool) -> String {
    let mut cmd = rec.path.clone();
    for a in &rec.args {
        cmd.push(' ');
        cmd.push_str(a);
    }
    let cmd = if trunc {
        format::ellipsis(&cmd, 20)
    } else {
        cmd
    };
    format!("\"{cmd}\"")
}

/// ` (fetching, 42% local)` for a running container whose image has lazy layers not yet
/// all local; empty otherwise.
fn fetching_text(store: &Store, rec: &Record, st: &State) -> String {
    if !st.status.is_active() {
        return String::new();
    }
    let (local, total) = rec
        .diff_ids
        .iter()
        .filter_map(|d| crate::digest::Digest::parse(d).ok())
        .filter_map(|d| store.lazy_progress(&d))
        .fold((0u64, 0u64), |(l, t), p| (l + p.local, t + p.data_len));
    if local >= total {
        return String::new();
    }
    format!(" (fetching, {}% local)", local * 100 / total)
}

/// A `ps` row: the fields docker's `--format` knows.
fn row(store: &Store, c: &Containers, rec: &Record, st: &State, trunc: bool, size: bool) -> Value {
    let created = unix(&rec.created);
    let mut r = json!({
        "ID": if trunc { rec.id[..12].to_string() } else { rec.id.clone() },
        "Image": rec.image,
        "Command": command_text(rec, trunc),
        "CreatedAt": created.map(format::go_time).unwrap_or_default(),
        "RunningFor": format::since(created),
        "Ports": ports_text(rec, st),
        "State": st.status.as_str(),
        "Status": status_text(st) + &fetching_text(store, rec, st),
        "Names": rec.name,
        "Labels": rec.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        "Mounts": rec.volumes.iter().filter(|v| v.kind != "tmpfs")
            .map(|v| if v.kind == "volume" { v.name.clone() } else { v.source.display().to_string() })
            .collect::<Vec<_>>().join(","),
        "Networks": strata_engine::network::mode_name(rec),
        "LocalVolumes": rec.volumes.iter().filter(|v| v.kind == "volume").count().to_string(),
        "Size": "",
    });
    if size {
        let upper = strata_engine::containers::dir_size(&c.dir(&rec.id).join("upper"));
        let virt = upper
            + rec
                .diff_ids
                .iter()
                .filter_map(|d| crate::digest::Digest::parse(d).ok())
                .filter_map(|d| store.layer_meta(&d))
                .map(|m| m.size)
                .sum::<u64>();
        r["Size"] = json!(format!(
            "{} (virtual {})",
            format::human_size(upper),
            format::human_size(virt)
        ));
    }
    r
}

fn headers() -> Value {
    json!({
        "ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
        "RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE", "Status": "STATUS",
        "Names": "NAMES", "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS",
        "LocalVolumes": "LOCAL VOLUMES", "Size": "SIZE",
    })
}

/// `ps -f` filters: one key's values are alternatives, different keys must all hold.
struct PsFilters {
    by_key: std::collections::BTreeMap<String, Vec<String>>,
}

impl PsFilters {
    fn parse(args: &[String]) -> Result<PsFilters> {
        let mut by_key: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for a in args {
            let Some((k, v)) = a.split_once('=') else {
                bail!("bad format of filter (expected name=value): {a}");
            };
            let k = k.trim().to_lowercase();
            match k.as_str() {
                "status" => {
                    const OK: [&str; 7] = [
                        "created",
                        "restarting",
                        "running",
                        "removing",
                        "paused",
                        "exited",
                        "dead",
                    ];
                    if !OK.contains(&v) {
                        bail!("invalid filter 'status={v}'");
                    }
                }
                "exited" => {
                    v.parse::<i32>()
                        .with_context(|| format!("invalid filter 'exited={v}'"))?;
                }
                "name" | "id" | "ancestor" | "label" | "before" | "since" | "volume" => {}
                other => bail!("invalid filter '{other}'"),
            }
            by_key.entry(k).or_default().push(v.to_string());
        }
        Ok(PsFilters { by_key })
    }

    fn has(&self, k: &str) -> bool {
        self.by_key.contains_key(k)
    }

    fn keep(&self, store: &Store, all: &[Record], rec: &Record, st: &State) -> bool {
        self.by_key.iter().all(|(k, vals)| {
            vals.iter().any(|v| match k.as_str() {
                "status" => st.status.as_str() == v,
                "exited" => {
                    st.status == Status::Exited && v.parse::<i32>().ok() == Some(st.exit_code)
                }
                "name" => rec.name.contains(v.trim_start_matches('/')),
                "id" => rec.id.starts_with(v.as_str()),
                "label" => match v.split_once('=') {
                    Some((k, val)) => rec.labels.get(k).is_some_and(|x| x == val),
                    None => rec.labels.contains_key(v),
                },
                "ancestor" => ancestor_matches(store, rec, v),
                "volume" => rec
                    .volumes
                    .iter()
                    .any(|m| m.name == *v || m.destination == *v || m.source == Path::new(v)),
                "before" | "since" => {
                    let Some(other) = all.iter().find(|o| {
                        o.name == *v || o.id == *v || (v.len() >= 3 && o.id.starts_with(v.as_str()))
                    }) else {
                        return false;
                    };
                    match k.as_str() {
                        "before" => rec.created < other.created,
                        _ => rec.created > other.created,
                    }
                }
                _ => false,
            })
        })
    }
}

/// `ancestor=IMAGE`: the container's image is IMAGE (by name as given, reference or ID).
fn ancestor_matches(store: &Store, rec: &Record, v: &str) -> bool {
    if rec.image == v {
        return true;
    }
    let hex = rec.image_id.trim_start_matches("sha256:");
    if v.len() >= 4 && (hex.starts_with(v.trim_start_matches("sha256:"))) {
        return true;
    }
    let name = if crate::store::demo::is_demo(v) {
        crate::store::demo::REFERENCE
    } else {
        v
    };
    store
        .table()
        .ok()
        .and_then(|t| store.find(&t, name).ok())
        .is_some_and(|f| f.image().id.to_string() == rec.image_id)
}

pub fn ps(global: &Global, args: PsArgs) -> i32 {
    report(ps_inner(global, args), Prefix::Plain)
}

fn ps_inner(global: &Global, args: PsArgs) -> Result<()> {
    let (store, c) = open(global);
    let filters = PsFilters::parse(&args.filters)?;
    let all_records = c.records()?;
    let mut rows = Vec::new();
    let mut recs: Vec<(Record, State)> = Vec::new();
    for rec in all_records.iter().rev() {
        let Ok(st) = c.state(&rec.id) else { continue };
        let shown = args.all
            || args.latest
            || args.last >= 0
            || st.status.is_active()
            || filters.has("status")
            || filters.has("exited");
        if !shown || !filters.keep(&store, &all_records, rec, &st) {
            continue;
        }
        recs.push((rec.clone(), st));
    }
    if args.latest {
        recs.truncate(1);
    } else if args.last >= 0 {
        recs.truncate(args.last as usize);
    }
    let trunc = !args.no_trunc;
    for (rec, st) in &recs {
        rows.push(row(&store, &c, rec, st, trunc, args.size));
    }
    let mut default =
        "{{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
            .to_string();
    if args.size {
        default.push_str("\t{{.Size}}");
    }
    let format = if args.quiet && args.format.is_none() {
        Format::Raw(format::Template::parse("{{.ID}}")?)
    } else {
        Format::parse(args.format.as_deref(), &default)?
    };
    let mut out = Vec::new();
    format.print(&mut out, &headers(), &rows)?;
    super::print(&out)
}

/// One line of ctr.log.
#[derive(serde::Deserialize)]
struct LogLine {
    log: String,
    stream: String,
    time: String,
}

fn print_line(l: &LogLine, timestamps: bool) {
    use std::io::Write;
    let text = if timestamps {
        format!("{} {}", format::rfc3339_nano_fixed(&l.time), l.log)
    } else {
        l.log.clone()
    };
    let _ = if l.stream == "stderr" {
        std::io::stderr().write_all(text.as_bytes())
    } else {
        let mut o = std::io::stdout().lock();
        o.write_all(text.as_bytes()).and_then(|_| o.flush())
    };
}

pub fn logs(global: &Global, args: LogsArgs) -> i32 {
    report(logs_inner(global, args), Prefix::Daemon)
}

/// The complete lines of the log after byte `pos`; `pos` moves past them (a line still
/// being written stays for the next read).
fn read_new_lines(file: &mut std::fs::File, pos: &mut u64) -> Result<Vec<LogLine>> {
    file.seek(SeekFrom::Start(*pos))?;
    let mut reader = BufReader::new(file);
    let mut lines = Vec::new();
    let mut buf = String::new();
    loop {
        buf.clear();
        let n = reader.read_line(&mut buf)?;
        if n == 0 || !buf.ends_with('\n') {
            return Ok(lines);
        }
        *pos += n as u64;
        if let Ok(l) = serde_json::from_str(&buf) {
            lines.push(l);
        }
    }
}

fn logs_inner(global: &Global, args: LogsArgs) -> Result<()> {
    let (_store, c) = open(global);
    let rec = c.find(&args.container)?;
    let path = c.dir(&rec.id).join("ctr.log");
    let tail: Option<usize> = match args.tail.as_str() {
        "all" | "-1" => None,
        n => Some(
            n.parse()
                .with_context(|| format!("invalid value for \"tail\": {n:?}"))?,
        ),
    };
    let mut pos = 0u64;
    let mut first = true;
    loop {
        // Checked before reading: what the container wrote before it ended is read below.
        let running = c.state(&rec.id).is_ok_and(|s| s.status.is_active());
        let lines = match std::fs::File::open(&path) {
            Ok(mut f) => read_new_lines(&mut f, &mut pos)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let skip = match (first, tail) {
            (true, Some(t)) => lines.len().saturating_sub(t),
            _ => 0,
        };
        for l in &lines[skip..] {
            print_line(l, args.timestamps);
        }
        first = false;
        if !args.follow || !running {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn port(global: &Global, args: PortArgs) -> i32 {
    let r = (|| -> Result<()> {
        let (_store, c) = open(global);
        let rec = c.find(&args.container)?;
        let st = c.state(&rec.id)?;
        let mut out = String::new();
        for p in &st.ports(&rec) {
            let key = format!("{}/{}", p.container_port, p.proto);
            if let Some(want) = &args.port {
                let want = if want.contains('/') {
                    want.clone()
                } else {
                    format!("{want}/tcp")
                };
                if want != key {
                    continue;
                }
            }
            let ip = if p.host_ip.is_empty() {
                "0.0.0.0"
            } else {
                &p.host_ip
            };
            if args.port.is_some() {
                out.push_str(&format!("{ip}:{}\n", p.host_port));
            } else {
                out.push_str(&format!("{key} -> {ip}:{}\n", p.host_port));
            }
        }
        if let (Some(p), true) = (&args.port, out.is_empty()) {
            bail!("No public port '{p}' published for {}", rec.name);
        }
        super::print(out.as_bytes())
    })();
    report(r, Prefix::Plain)
}

/// The host pids of every process in the pid namespace of `pid` (a container's pid 1).
pub fn container_pids(pid: i32) -> Vec<i32> {
    let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/pid")) else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| std::fs::read_link(format!("/proc/{p}/ns/pid")).is_ok_and(|n| n == ns))
        .collect();
    pids.sort();
    pids
}

pub fn top(global: &Global, args: TopArgs) -> i32 {
    let r = (|| -> Result<()> {
        let (_store, c) = open(global);
        let rec = c.find(&args.container)?;
        let st = c.state(&rec.id)?;
        if !st.status.is_active() {
            bail!("container {} is not running", rec.id);
        }
        let pids: BTreeSet<i32> = container_pids(st.pid).into_iter().collect();
        let ps_args: Vec<String> = if args.ps_args.is_empty() {
            vec!["-ef".into()]
        } else {
            args.ps_args.clone()
        };
        let out = std::process::Command::new("ps")
            .args(&ps_args)
            .output()
            .context("running ps")?;
        if !out.status.success() {
            bail!(
                "ps {}: {}",
                ps_args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default();
        let pid_col = header
            .split_whitespace()
            .position(|h| h == "PID")
            .context("ps printed no PID column")?;
        let mut rows = vec![header.split_whitespace().collect::<Vec<_>>().join("\t")];
        let ncols = header.split_whitespace().count();
        for l in lines {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let Some(pid) = fields.get(pid_col).and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            if !pids.contains(&pid) {
                continue;
            }
            // The last column (the command) may hold spaces.
            let mut cells: Vec<String> = fields[..(ncols - 1).min(fields.len())]
                .iter()
                .map(|s| s.to_string())
                .collect();
            if fields.len() >= ncols {
                cells.push(fields[ncols - 1..].join(" "));
            }
            rows.push(cells.join("\t"));
        }
        let mut s = format::tabwrite(&rows.join("\n"));
        s.push('\n');
        super::print(s.as_bytes())
    })();
    report(r, Prefix::Daemon)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_engine::containers::PortBinding;

    #[test]
    fn columns_read_as_docker_prints_them() {
        let rec = Record {
            path: "sh".into(),
            args: vec!["-c".into(), "while true; do sleep 1; done".into()],
            ports: vec![PortBinding {
                host_port: 8080,
                container_port: 80,
                proto: "tcp".into(),
                ..Default::default()
            }],
            exposed: vec!["80/tcp".into(), "443/tcp".into()],
            ..Default::default()
        };
        assert_eq!(command_text(&rec, true), "\"sh -c while true; d…\"");
        assert_eq!(
            command_text(&rec, false),
            "\"sh -c while true; do sleep 1; done\""
        );
        let mut st = State::default();
        assert_eq!(ports_text(&rec, &st), "0.0.0.0:8080->80/tcp, 443/tcp");
        assert_eq!(status_text(&st), "Created");
        st.status = Status::Exited;
        st.exit_code = 3;
        st.finished_at = jiff::Timestamp::now().to_string();
        assert_eq!(status_text(&st), "Exited (3) Less than a second ago");
        st.status = Status::Paused;
        st.started_at = st.finished_at.clone();
        assert_eq!(status_text(&st), "Up Less than a second (Paused)");
        st.status = Status::Dead;
        assert_eq!(status_text(&st), "Dead");
    }

    #[test]
    fn filters_check_their_values() {
        assert!(PsFilters::parse(&["status=running".into(), "exited=0".into()]).is_ok());
        assert!(PsFilters::parse(&["status=sleeping".into()]).is_err());
        assert!(PsFilters::parse(&["exited=x".into()]).is_err());
        assert!(PsFilters::parse(&["colour=red".into()]).is_err());
        assert!(PsFilters::parse(&["novalue".into()]).is_err());
    }
}
