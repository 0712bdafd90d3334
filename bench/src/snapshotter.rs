//! Workload 14, **snapshotter**: `ctr run --rm IMAGE true` of a busybox image through one
//! private containerd 1.6, with strata-snapshotter + strata-runtime against containerd's own
//! overlayfs snapshotter + runc, and strata-snapshotter + runc to tell the two parts apart.
//! The image is pulled from a loopback registry into both snapshotters first; the rows
//! alternate run by run so load changes hit them alike. Medians of `runs` (at least 10).
//!
//! Then a lazy start: the pull workload's image (busybox under 4 layers of incompressible
//! files, about 200 MiB) converted by `ctr-remote image convert --estargz` and pushed back,
//! started as `ctr-remote image rpull --snapshotter strata` + `ctr run --rm … cat FILE`
//! against `ctr image pull` (overlayfs) + the same `ctr run`, each from nothing (images
//! removed, containerd's GC done, the chunk cache emptied). Loopback registry, no throttle.

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

/// Runs the workload; its markdown tables.
pub fn run_snapshotter(dir: &Path, runs: usize, quick: bool) -> Result<String> {
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
    t.push('\n');
    t.push_str(&lazy_start(
        dir,
        &registry,
        &ctd,
        &snap,
        runs.min(3),
        quick,
    )?);
    Ok(t)
}

/// `ctr`, which must succeed.
fn ctr(ctd: &Containerd, args: &[&str]) -> Result<()> {
    let out = ctd.ctr(args);
    if out.code != 0 {
        bail!("ctr {args:?}: {}", out.stderr.trim());
    }
    Ok(())
}

/// `ctr-remote` against the same containerd, which must succeed.
fn ctr_remote(ctd: &Containerd, args: &[&str]) -> Result<()> {
    let out = ctd.ctr_remote(args);
    if out.code != 0 {
        bail!("ctr-remote {args:?}: {}", out.stderr.trim());
    }
    Ok(())
}

fn lazy_start(
    dir: &Path,
    registry: &Registry,
    ctd: &Containerd,
    snap: &Snapshotter,
    runs: usize,
    quick: bool,
) -> Result<String> {
    let (files, mean) = crate::pull::shape(quick);
    eprintln!("strata-bench: snapshotter: building the lazy-start image");
    let mut image = ImageBuilder::new().layer(&busybox_layer()?)?;
    for l in 0..crate::pull::LAYERS {
        image = image.layer(&crate::pull::image_layer(l, files, mean))?;
    }
    let layout = dir.join("lazy-layout");
    let built = image.write_layout(&layout, "big")?;
    let full = registry.push(&layout, "big", "bench/big:v1")?;
    let esgz = format!("{full}-esgz");
    ctd.push_estargz(&full, &esgz)?;
    let cache = snap.root().join("chunks");
    // Both images gone (their snapshots with them, by containerd's GC) and no chunk cached.
    let reset = || {
        let _ = ctd.ctr(&["image", "rm", "--sync", &full, &esgz]);
        let _ = std::fs::remove_dir_all(&cache);
    };
    let file = "/l0/d0/f1";
    let (mut lazy, mut eager) = (Vec::new(), Vec::new());
    for i in 0..runs {
        reset();
        let (_, l) = timed(|| {
            ctr_remote(
                ctd,
                &[
                    "image",
                    "rpull",
                    "--plain-http",
                    "--snapshotter",
                    "strata",
                    &esgz,
                ],
            )?;
            ctr(
                ctd,
                &[
                    "run",
                    "--rm",
                    "--snapshotter",
                    "strata",
                    &esgz,
                    &format!("lz{i}"),
                    "cat",
                    file,
                ],
            )
        })?;
        reset();
        let (_, e) = timed(|| {
            ctr(ctd, &["image", "pull", "--plain-http", &full])?;
            ctr(ctd, &["run", "--rm", &full, &format!("ea{i}"), "cat", file])
        })?;
        eprintln!(
            "  lazy start {}/{runs}: rpull + run {l:.2} s, pull + run {e:.2} s",
            i + 1
        );
        lazy.push(l);
        eager.push(e);
    }
    reset();
    let l = median(&lazy).context("no rounds")?;
    let e = median(&eager).context("no rounds")?;
    let mib = built.layers_size as f64 / (1 << 20) as f64;
    let mut t = String::new();
    writeln!(
        t,
        "| start of a {mib:.0} MiB image, `cat` of one file (median of {runs}) | s | ×full pull |"
    )?;
    writeln!(t, "|---|---:|---:|")?;
    writeln!(
        t,
        "| eStargz: `ctr-remote image rpull` (strata) + `ctr run --rm` | {l:.2} | {:.2} |",
        l / e
    )?;
    writeln!(
        t,
        "| `ctr image pull` (overlayfs) + `ctr run --rm` | {e:.2} | 1.00 |"
    )?;
    Ok(t)
}
