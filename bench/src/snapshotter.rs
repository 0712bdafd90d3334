//! Workload 14, **snapshotter**: `ctr run --rm IMAGE true` of a busybox image through one
//! private containerd 1.6, with strata-snapshotter + strata-runtime against containerd's own
//! overlayfs snapshotter + runc, and strata-snapshotter + runc to tell the two parts apart.
//! The image is pulled from a loopback registry into both snapshotters first; the rows
//! alternate run by run so load changes hit them alike. Medians of `runs` (at least 10).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};
use strata_tests::containerd::{Containerd, Snapshotter};
use strata_tests::oci::{busybox_layer, ImageBuilder};
use strata_tests::registry::Registry;

use crate::ops::timed;
use crate::report::median;

/// One row: which snapshotter, and strata-runtime or the shim's runc.
struct Row {
    label: &'static str,
    snapshotter: &'static str,
    strata_runtime: bool,
}

const ROWS: [Row; 3] = [
    Row {
        label: "strata-snapshotter + strata-runtime",
        snapshotter: "strata",
        strata_runtime: true,
    },
    Row {
        label: "strata-snapshotter + runc",
        snapshotter: "strata",
        strata_runtime: false,
    },
    Row {
        label: "overlayfs + runc (containerd's defaults)",
        snapshotter: "overlayfs",
        strata_runtime: false,
    },
];

/// Runs the workload; its markdown table.
pub fn run_snapshotter(dir: &Path, runs: usize) -> Result<String> {
    let runs = runs.max(10);
    std::fs::create_dir_all(dir)?;
    let registry = Registry::start()?;
    let layout = dir.join("layout");
    ImageBuilder::new()
        .layer(&busybox_layer()?)?
        .write_layout(&layout, "busybox")?;
    let image = registry.push(&layout, "busybox", "bench/busybox:latest")?;
    let snap = Snapshotter::start(dir, &dir.join("store"))?;
    let ctd = Containerd::start_with(&dir.join("containerd"), &snap.proxy_config("strata"), None)?;
    let runtime = strata_tests::mounts::workspace_bin("strata-runtime", "STRATA_RUNTIME_BIN")?;
    for sn in ["strata", "overlayfs"] {
        let out = ctd.ctr(&["image", "pull", "--plain-http", "--snapshotter", sn, &image]);
        if out.code != 0 {
            bail!("pulling into {sn}: {}", out.stderr.trim());
        }
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); ROWS.len()];
    for i in 0..runs {
        for (r, row) in ROWS.iter().enumerate() {
            let id = format!("bench-{r}-{i}");
            let mut args = vec!["run", "--rm", "--snapshotter", row.snapshotter];
            let rt = runtime.to_string_lossy();
            if row.strata_runtime {
                args.extend_from_slice(&["--runc-binary", &rt]);
            }
            args.extend_from_slice(&[&image, &id, "true"]);
            let (_, secs) = timed(|| {
                let out = ctd.ctr(&args);
                if out.code != 0 {
                    bail!("{}: ctr run: {}", row.label, out.stderr.trim());
                }
                Ok(())
            })?;
            samples[r].push(secs);
        }
    }
    let medians: Vec<f64> = samples
        .iter()
        .map(|s| median(s).context("no samples"))
        .collect::<Result<_>>()?;
    let base = medians[2];
    let mut t = String::new();
    writeln!(
        t,
        "| containerd 1.6 `ctr run --rm` busybox `true` (median of {runs}) | ms | ×overlayfs+runc |"
    )?;
    writeln!(t, "|---|---:|---:|")?;
    for (row, m) in ROWS.iter().zip(&medians) {
        writeln!(t, "| {} | {:.1} | {:.2} |", row.label, m * 1e3, m / base)?;
    }
    Ok(t)
}
