//! Workload 13, **runtime**: the OCI runtime lifecycle of one busybox bundle — `create`,
//! `start`, `delete --force` of a container whose process is `true` — by strata-runtime,
//! runc and crun in the same run, on the same bundle (`runc spec` with a busybox root, no
//! terminal). Each runtime keeps its state under a `--root` of its own. Medians of `runs`
//! (at least 10). crun may not run on this host's hybrid cgroups: its row then says why.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::ops::timed;
use crate::report::median;
use crate::scratch::run;

/// `runtime --root ROOT ARGS`, its stdio away from ours: the container created inherits
/// it, and a pipe held by it would keep a reader waiting.
fn oci(runtime: &Path, root: &Path, args: &[&str]) -> Result<()> {
    std::fs::create_dir_all(root)?;
    let err_path = root.join("stderr");
    let status = Command::new(runtime)
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path)?)
        .status()
        .with_context(|| format!("starting {}", runtime.display()))?;
    if !status.success() {
        let err = std::fs::read_to_string(&err_path).unwrap_or_default();
        bail!("{} {args:?}: {}", runtime.display(), err.trim());
    }
    Ok(())
}

fn bundle(dir: &Path) -> Result<PathBuf> {
    let bundle = dir.join("bundle");
    let rootfs = bundle.join("rootfs");
    strata_tests::oci::busybox_layer()?
        .write_dir(&rootfs, strata_tests::fixture::WhiteoutFormat::KERNEL)?;
    run(Command::new("runc").arg("spec").current_dir(&bundle))?;
    let path = bundle.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    config["process"]["terminal"] = false.into();
    config["process"]["args"] = serde_json::json!(["true"]);
    std::fs::write(&path, config.to_string())?;
    Ok(bundle)
}

/// The median seconds of `runs` create+start+delete cycles by `runtime`.
fn lifecycle(runtime: &Path, dir: &Path, bundle: &Path, runs: usize) -> Result<f64> {
    let name = runtime.file_name().unwrap_or_default().to_string_lossy();
    let root = dir.join(format!("root-{name}"));
    let bundle_s = bundle.to_str().context("bundle path")?;
    let samples = (0..runs)
        .map(|i| {
            let id = format!("bench-{i}");
            timed(|| {
                oci(runtime, &root, &["create", "--bundle", bundle_s, &id])?;
                oci(runtime, &root, &["start", &id])?;
                oci(runtime, &root, &["delete", "--force", &id])
            })
            .map(|(_, s)| s)
        })
        .collect::<Result<Vec<f64>>>()?;
    median(&samples).context("no samples")
}

/// Runs the workload; its markdown table.
pub fn run_runtime(dir: &Path, runs: usize) -> Result<String> {
    let runs = runs.max(10);
    std::fs::create_dir_all(dir)?;
    let bundle = bundle(dir)?;
    let strata = strata_tests::mounts::workspace_bin("strata-runtime", "STRATA_RUNTIME_BIN")?;
    let rows = [
        ("strata-runtime", lifecycle(&strata, dir, &bundle, runs)),
        ("runc", lifecycle(Path::new("runc"), dir, &bundle, runs)),
        ("crun", lifecycle(Path::new("crun"), dir, &bundle, runs)),
    ];
    let runc = rows[1].1.as_ref().ok().copied();
    let mut t = String::new();
    writeln!(
        t,
        "| OCI runtime: create+start+delete of a busybox `true` bundle (median of {runs}) | ms | ×runc | bar |"
    )?;
    writeln!(t, "|---|---:|---:|---|")?;
    for (label, r) in &rows {
        match r {
            Ok(s) => {
                let ratio = runc.map_or("—".into(), |b| format!("{:.2}", s / b));
                let bar = match *label {
                    "strata-runtime" => "≤ 0.5× runc",
                    _ => "",
                };
                writeln!(t, "| {label} | {:.1} | {ratio} | {bar} |", s * 1e3)?;
            }
            Err(e) => writeln!(t, "| {label} | n/a: {e:#} | | |")?,
        }
    }
    Ok(t)
}
