//! The container lifecycle commands: `start`, `stop`, `restart`, `kill`, `rm`, `wait`,
//! `pause`, `unpause`, `rename`, `container prune`. Each addresses containers by name, full
//! id or unique id prefix, and first cleans up after monitors that died
//! ([`crate::monitor::cleanup_stale`]).
//!
//! A container's pid 1 is signalled directly (its host pid is in state.json); its monitor
//! notices the exit and records it. `stop` sends SIGTERM (or the image's StopSignal) and,
//! after the timeout, SIGKILL, as docker.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use strata_runtime::cgroups::Cgroup;

use super::{open, report, Prefix};
use crate::monitor;
use crate::Global;
use strata_engine::attach::DetachKeys;
use strata_engine::containers::Status;
use strata_engine::lifecycle;

#[derive(Args)]
pub struct StartArgs {
    /// Attach STDOUT/STDERR and forward signals
    #[arg(short, long)]
    pub attach: bool,
    /// Attach container's STDIN
    #[arg(short, long)]
    pub interactive: bool,
    /// Override the key sequence for detaching a container (default ctrl-p,ctrl-q)
    #[arg(long = "detach-keys", value_name = "KEYS")]
    pub detach_keys: Option<String>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args)]
pub struct StopArgs {
    /// Seconds to wait before killing the container (default: its --stop-timeout, else 10)
    #[arg(short, long = "time", alias = "timeout", allow_hyphen_values = true)]
    pub time: Option<i64>,
    /// Signal to send to the container
    #[arg(short, long)]
    pub signal: Option<String>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args)]
pub struct KillArgs {
    /// Signal to send to the container
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short, long)]
    pub force: bool,
    /// Remove anonymous volumes associated with the container
    #[arg(short, long)]
    pub volumes: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args)]
pub struct NamesArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args)]
pub struct RenameArgs {
    pub container: String,
    pub new_name: String,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
    /// Provide filter values (e.g. until=24h, label=KEY)
    #[arg(long = "filter")]
    pub filters: Vec<String>,
}

/// Containers one command acts on at the same time (docker's CLI runs its per-container
/// requests in parallel too): a batch of `stop -t 1` then takes about one grace period.
const PARALLEL: usize = 64;

/// Runs `f` for each named container, concurrently; `f` returns the line to print. Lines and
/// errors come out in the order the names were given, as docker prints them (one error per
/// container), and the status is 1 when any failed.
fn each(names: &[String], f: impl Fn(&str) -> Result<String> + Sync) -> i32 {
    let mut code = 0;
    for batch in names.chunks(PARALLEL) {
        std::thread::scope(|s| {
            let f = &f;
            let running: Vec<_> = batch.iter().map(|n| s.spawn(move || f(n))).collect();
            for handle in running {
                match handle.join() {
                    Ok(Ok(line)) => println!("{line}"),
                    Ok(Err(e)) => {
                        eprintln!("Error response from daemon: {e:#}");
                        code = 1;
                    }
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        });
    }
    code
}

pub fn start(global: &Global, args: StartArgs) -> i32 {
    let keys = match args.detach_keys.as_deref().map(DetachKeys::parse) {
        None => DetachKeys::default(),
        Some(Ok(k)) => k,
        Some(Err(e)) => {
            eprintln!("Error: {e}");
            return 1;
        }
    };
    let (_store, c) = open(global);
    if args.attach || args.interactive {
        if args.containers.len() > 1 {
            eprintln!("Error: you cannot start and attach multiple containers at once");
            return 1;
        }
        let rec = match c.find(&args.containers[0]) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("Error response from daemon: {e:#}");
                return 1;
            }
        };
        if c.state(&rec.id).is_ok_and(|s| s.status.is_active()) {
            return super::exec::attach_with(&c, &rec, args.interactive, keys);
        }
        // With a terminal it can detach from, as `run -it`.
        if rec.tty && rec.interactive && args.interactive && nix::unistd::isatty(0).unwrap_or(false)
        {
            return super::run::run_attached(global, &rec, keys);
        }
        return monitor::run_foreground(&global.root, &rec.id, args.interactive);
    }
    let mut code = 0;
    for name in &args.containers {
        let rec = match c.find(name) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("Error response from daemon: {e:#}");
                code = 1;
                continue;
            }
        };
        if c.state(&rec.id).is_ok_and(|s| s.status.is_active()) {
            println!("{name}");
            continue;
        }
        match monitor::spawn_detached(&global.root, &rec.id) {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("Error response from daemon: {}", e.message);
                code = 1;
            }
        }
    }
    code
}

pub fn stop(global: &Global, args: StopArgs) -> i32 {
    let (_store, c) = open(global);
    each(&args.containers, |name| {
        let rec = c.find(name)?;
        lifecycle::stop(&c, &rec, args.time, args.signal.as_deref())?;
        Ok(name.to_string())
    })
}

pub fn restart(global: &Global, args: StopArgs) -> i32 {
    let (_store, c) = open(global);
    each(&args.containers, |name| {
        let rec = c.find(name)?;
        lifecycle::stop(&c, &rec, args.time, args.signal.as_deref())?;
        let st = c.state(&rec.id)?;
        st.wait_monitor_gone(Duration::from_secs(10));
        monitor::spawn_detached(&global.root, &rec.id).map_err(|e| anyhow::anyhow!(e.message))?;
        Ok(name.to_string())
    })
}

pub fn kill(global: &Global, args: KillArgs) -> i32 {
    let (_store, c) = open(global);
    let sig = match strata_runtime::process::parse_signal(&args.signal) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("Error: invalid signal: {e}");
            return 1;
        }
    };
    each(&args.containers, |name| {
        let rec = c.find(name)?;
        lifecycle::kill(&c, &rec, name, sig)?;
        Ok(name.to_string())
    })
}

pub fn rm(global: &Global, args: RmArgs) -> i32 {
    let (store, c) = open(global);
    each(&args.containers, |name| {
        let rec = c.find(name)?;
        lifecycle::remove(&store, &c, &rec, args.force, args.volumes)?;
        Ok(name.to_string())
    })
}

pub fn wait(global: &Global, args: NamesArgs) -> i32 {
    let (_store, c) = open(global);
    each(&args.containers, |name| {
        let rec = c.find(name)?;
        loop {
            match c.state(&rec.id) {
                Ok(st) if st.status.is_active() => {}
                Ok(st) => return Ok(st.exit_code.to_string()),
                // Removed meanwhile (--rm).
                Err(_) => return Ok("0".to_string()),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

fn set_paused(global: &Global, args: NamesArgs, pause: bool) -> i32 {
    let (_store, c) = open(global);
    each(&args.containers, |name| {
        let rec = c.find(name)?;
        let st = c.state(&rec.id)?;
        match (pause, st.status) {
            (true, Status::Running) | (false, Status::Paused) => {}
            (true, Status::Paused) => bail!("container {} is already paused", rec.id),
            (false, Status::Running) => bail!("container {} is not paused", rec.id),
            _ => bail!("container {} is not running", rec.id),
        }
        let cg = Cgroup::of(&rec.id);
        if !cg.exists() {
            bail!(
                "{} needs the container's cgroup (the freezer), and this container has none: \
                 strata may not manage cgroups here (rootless without a delegated cgroup)",
                if pause { "pause" } else { "unpause" }
            );
        }
        if pause {
            cg.freeze().context("freezing the container")?;
        } else {
            cg.thaw().context("thawing the container")?;
        }
        c.update_state(&rec.id, |s| {
            if s.status.is_active() {
                s.status = if pause {
                    Status::Paused
                } else {
                    Status::Running
                };
            }
        })?;
        Ok(name.to_string())
    })
}

pub fn pause(global: &Global, args: NamesArgs) -> i32 {
    set_paused(global, args, true)
}

pub fn unpause(global: &Global, args: NamesArgs) -> i32 {
    set_paused(global, args, false)
}

pub fn rename(global: &Global, args: RenameArgs) -> i32 {
    let (_store, c) = open(global);
    let r = (|| -> Result<()> {
        let rec = c.find(&args.container)?;
        Ok(c.rename(&rec.id, args.new_name.trim_start_matches('/'))?)
    })();
    report(r, Prefix::Daemon)
}

pub fn prune(global: &Global, args: PruneArgs) -> i32 {
    let (store, c) = open(global);
    let r = (|| -> Result<()> {
        let mut until: Option<i64> = None;
        let mut labels: Vec<(String, Option<String>)> = Vec::new();
        for f in &args.filters {
            match f.split_once('=') {
                Some(("until", v)) => until = Some(parse_until(v)?),
                Some(("label", v)) => labels.push(match v.split_once('=') {
                    Some((k, v)) => (k.into(), Some(v.into())),
                    None => (v.into(), None),
                }),
                _ => bail!("invalid filter '{f}'"),
            }
        }
        if !args.force {
            eprint!(
                "WARNING! This will remove all stopped containers.\n\
                 Are you sure you want to continue? [y/N] "
            );
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            if !matches!(line.trim(), "y" | "Y" | "yes") {
                return Ok(());
            }
        }
        let mut deleted = Vec::new();
        let mut reclaimed = 0u64;
        for rec in c.records()? {
            let st = c.state(&rec.id)?;
            if st.status.is_active() {
                continue;
            }
            if let Some(u) = until {
                if crate::format::parse_time(&rec.created).is_some_and(|t| t >= u) {
                    continue;
                }
            }
            if !labels.iter().all(|(k, v)| match v {
                Some(v) => rec.labels.get(k) == Some(v),
                None => rec.labels.contains_key(k),
            }) {
                continue;
            }
            reclaimed += strata_engine::containers::dir_size(&c.dir(&rec.id).join("upper"));
            lifecycle::remove(&store, &c, &rec, false, false)?;
            deleted.push(rec.id);
        }
        let mut out = String::new();
        if !deleted.is_empty() {
            out.push_str("Deleted Containers:\n");
            for d in &deleted {
                out.push_str(d);
                out.push('\n');
            }
            out.push('\n');
        }
        out.push_str(&format!(
            "Total reclaimed space: {}\n",
            crate::format::human_size(reclaimed)
        ));
        super::print(out.as_bytes())
    })();
    report(r, Prefix::Plain)
}

/// `until=` of prune: a duration before now (`24h`, `10m`, `30s`) or a timestamp.
fn parse_until(v: &str) -> Result<i64> {
    if let Some(t) = crate::format::parse_time(v) {
        return Ok(t);
    }
    if let Ok(n) = v.parse::<i64>() {
        return Ok(n);
    }
    let (num, unit) = v.split_at(v.len().saturating_sub(1));
    let n: i64 = num
        .parse()
        .with_context(|| format!("invalid until filter {v:?}"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => bail!("invalid until filter {v:?}"),
    };
    Ok(crate::format::now_unix() - secs)
}

#[cfg(test)]
mod tests {
    use super::parse_until;

    #[test]
    fn prune_until_takes_durations_and_times() {
        let now = crate::format::now_unix();
        let h = parse_until("24h").unwrap();
        assert!((now - 24 * 3600 - h).abs() <= 2, "{h}");
        let m = parse_until("10m").unwrap();
        assert!((now - 600 - m).abs() <= 2, "{m}");
        assert_eq!(parse_until("2024-01-01T00:00:00Z").unwrap(), 1704067200);
        assert_eq!(parse_until("1704067200").unwrap(), 1704067200);
        assert!(parse_until("soon").is_err());
        assert!(parse_until("5w").is_err());
    }
}
