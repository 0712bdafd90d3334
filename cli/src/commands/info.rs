//! `info` (also `system info`): strata-engine's [`Info`] as docker prints it, or through
//! `--format`.

use std::fmt::Write as _;

use anyhow::Result;
use clap::Args;

use super::open;
use crate::format::{bytes_size, Template};
use crate::Global;
use strata_engine::info::Info;

#[derive(Args)]
pub struct InfoArgs {
    /// Format the output with a Go template ({{.Containers}}, {{.NCPU}}, {{json .}}, …)
    #[arg(short, long)]
    pub format: Option<String>,
}

pub fn info(global: &Global, a: InfoArgs) -> Result<()> {
    let (store, _) = open(global);
    let info = strata_engine::info::gather(&store)?;
    let out = match a.format.as_deref() {
        None | Some("") => text(&info),
        Some(f) => {
            let doc = serde_json::to_value(&info)?;
            let f = match f.trim() {
                "json" => "{{json .}}".to_string(),
                _ => f.replace("\\t", "\t").replace("\\n", "\n"),
            };
            Template::parse(&f)?.render(&doc)? + "\n"
        }
    };
    super::print(out.as_bytes())
}

/// docker's `info` text: a Client section, then the Server's fields.
fn text(i: &Info) -> String {
    let mut s = String::new();
    let version = env!("CARGO_PKG_VERSION");
    let _ = writeln!(s, "Client:\n Version:    {version}\n Context:    default");
    let _ = writeln!(s, " Debug Mode: false\n\nServer:");
    let _ = writeln!(s, " Containers: {}", i.containers);
    let _ = writeln!(s, "  Running: {}", i.containers_running);
    let _ = writeln!(s, "  Paused: {}", i.containers_paused);
    let _ = writeln!(s, "  Stopped: {}", i.containers_stopped);
    let _ = writeln!(s, " Images: {}", i.images);
    let _ = writeln!(s, " Server Version: {}", i.server_version);
    let _ = writeln!(s, " Storage Driver: {}", i.driver);
    for [k, v] in &i.driver_status {
        let _ = writeln!(s, "  {k}: {v}");
    }
    let _ = writeln!(s, " Logging Driver: {}", i.logging_driver);
    let _ = writeln!(s, " Cgroup Driver: {}", i.cgroup_driver);
    let _ = writeln!(s, " Cgroup Version: {}", i.cgroup_version);
    let runtimes: Vec<&str> = i.runtimes.keys().map(String::as_str).collect();
    let _ = writeln!(s, " Runtimes: {}", runtimes.join(" "));
    let _ = writeln!(s, " Default Runtime: {}", i.default_runtime);
    let _ = writeln!(s, " Security Options:");
    for o in &i.security_options {
        let _ = writeln!(s, "  {}", o.strip_prefix("name=").unwrap_or(o));
    }
    let _ = writeln!(s, " Kernel Version: {}", i.kernel_version);
    let _ = writeln!(s, " Operating System: {}", i.operating_system);
    let _ = writeln!(s, " OSType: {}", i.os_type);
    let _ = writeln!(s, " Architecture: {}", i.architecture);
    let _ = writeln!(s, " CPUs: {}", i.ncpu);
    let _ = writeln!(s, " Total Memory: {}", bytes_size(i.mem_total));
    let _ = writeln!(s, " Name: {}", i.name);
    let _ = writeln!(s, " ID: {}", i.id);
    let _ = writeln!(s, " Docker Root Dir: {}", i.docker_root_dir);
    let _ = writeln!(s, " Debug Mode: false");
    let _ = writeln!(s, " Experimental: false");
    let registries: Vec<&String> = i
        .registry_config
        .index_configs
        .keys()
        .filter(|k| *k != "docker.io")
        .collect();
    if !registries.is_empty() {
        let _ = writeln!(s, " Registries:");
        for r in registries {
            let _ = writeln!(s, "  {r}");
        }
    }
    let _ = writeln!(s, " Insecure Registries:");
    for c in &i.registry_config.insecure_registry_cidrs {
        let _ = writeln!(s, "  {c}");
    }
    let _ = writeln!(s, " Live Restore Enabled: false");
    for w in &i.warnings {
        let _ = writeln!(s, "WARNING: {w}");
    }
    s
}
