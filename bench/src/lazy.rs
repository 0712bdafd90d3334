//! Workload **lazy**: the pull workload's image (4 layers of incompressible files, about
//! 200 MiB) as eStargz over busybox, behind a proxy that paces loopback to 10 MB/s with
//! 20 ms per response (tests/src/throttle.rs). A command reads about 5 % of it and prints
//! one line. Timed, from an empty store each round: `strata pull` (lazy) + `strata run`
//! until that line, against `strata pull --full` + the same run; the bytes the proxy
//! passed for each; then the same run again on each store (the files now local).
//!
//! The background fetch is off (`STRATA_LAZY_BACKGROUND=off`): it would compete with the
//! command's reads for the link and add bytes the command does not need.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use strata_tests::oci::{busybox_layer, ImageBuilder};
use strata_tests::registry::Registry;
use strata_tests::throttle::Throttle;

use crate::pull::{image_layer, shape, LAYERS};
use crate::report::median;
use crate::scratch::run;

/// The link the proxy makes of loopback.
const RATE: u64 = 10_000_000;
const LATENCY: Duration = Duration::from_millis(20);

/// Runs `strata run --rm` of `image` in `store`; returns seconds to its first line.
fn first_line(strata: &Path, store: &Path, image: &str, script: &str) -> Result<f64> {
    let start = Instant::now();
    let mut child = Command::new(strata)
        .arg("--root")
        .arg(store)
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            image,
            "sh",
            "-c",
            script,
        ])
        .env("STRATA_LAZY_BACKGROUND", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting strata run")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
    let secs = start.elapsed().as_secs_f64();
    let status = child.wait()?;
    ensure!(
        status.success() && line.trim() == "first",
        "strata run: {status}, printed {line:?}"
    );
    Ok(secs)
}

/// Runs the workload in `dir`; returns the markdown section.
pub fn run_lazy(dir: &Path, runs: usize, quick: bool) -> Result<String> {
    crate::machine::which("docker-registry")?;
    let strata = strata_tests::mounts::workspace_bin("strata", "STRATA_BIN")?;
    let (files, mean) = shape(quick);
    eprintln!("strata-bench: lazy: building an eStargz image of {LAYERS}×{files} files");
    let layout = dir.join("layout");
    let mut image = ImageBuilder::new().layer(&busybox_layer()?)?;
    for l in 0..LAYERS {
        image = image.estargz_layer(&image_layer(l, files, mean), 4 << 20)?;
    }
    let built = image.write_layout(&layout, "lazy")?;
    let registry = Registry::start()?;
    registry.push(&layout, "lazy", "bench/lazy:v1")?;
    let proxy = Throttle::start(&registry.host, RATE, LATENCY)?;
    let reference = format!("{}/bench/lazy:v1", proxy.addr);
    // About 5 % of the files: whole directories of layer 0 (100 files each).
    let dirs = (files * LAYERS).div_ceil(100) / 20;
    let globs: Vec<String> = (0..dirs.max(1)).map(|d| format!("/l0/d{d}/*")).collect();
    let script = format!("cat {} > /dev/null && echo first", globs.join(" "));

    let (mut lazy, mut full) = (Vec::new(), Vec::new());
    let (mut lazy_warm, mut full_warm) = (Vec::new(), Vec::new());
    let (mut lazy_bytes, mut full_bytes) = (0u64, 0u64);
    for round in 1..=runs {
        for (full_pull, times, warm) in [
            (false, &mut lazy, &mut lazy_warm),
            (true, &mut full, &mut full_warm),
        ] {
            let store = dir.join(format!("store-{round}-{full_pull}"));
            let before = proxy.bytes();
            let start = Instant::now();
            let mut pull = Command::new(&strata);
            pull.arg("--root").arg(&store).args(["pull", "-q"]);
            if full_pull {
                pull.arg("--full");
            }
            run(pull.arg(&reference))?;
            let pulled = start.elapsed().as_secs_f64();
            let secs = pulled + first_line(&strata, &store, &reference, &script)?;
            let fetched = proxy.bytes() - before;
            times.push(secs);
            warm.push(first_line(&strata, &store, &reference, &script)?);
            if full_pull {
                full_bytes = fetched;
            } else {
                lazy_bytes = fetched;
            }
            eprintln!(
                "  lazy {round}/{runs} {}: first output after {secs:.2} s (pull {pulled:.2} s), \
                 {} MiB fetched",
                if full_pull { "full pull" } else { "lazy pull" },
                fetched >> 20
            );
            std::fs::remove_dir_all(&store).ok();
        }
    }
    drop(proxy);
    drop(registry);
    let m = |v: &[f64]| median(v).unwrap_or(f64::NAN);
    let (l, f) = (m(&lazy), m(&full));
    let (lw, fw) = (m(&lazy_warm), m(&full_warm));
    let bytes_ratio = lazy_bytes as f64 / full_bytes.max(1) as f64;
    let mut out = String::new();
    writeln!(
        out,
        "| lazy pull ({LAYERS} eStargz layers, {} MiB, 10 MB/s + 20 ms) | lazy | full | lazy/full | bar |",
        built.layers_size >> 20
    )?;
    writeln!(out, "|---|---:|---:|---:|---|")?;
    writeln!(
        out,
        "| pull + `run` to first output | {l:.2} s | {f:.2} s | {:.2} | ≤ 0.2 {} |",
        l / f,
        if l / f <= 0.2 { "met" } else { "**missed**" }
    )?;
    writeln!(
        out,
        "| bytes fetched | {} MiB | {} MiB | {bytes_ratio:.2} | ≤ 0.2 {} |",
        lazy_bytes >> 20,
        full_bytes >> 20,
        if bytes_ratio <= 0.2 {
            "met"
        } else {
            "**missed**"
        }
    )?;
    writeln!(
        out,
        "| the same `run` again (files local) | {lw:.2} s | {fw:.2} s | {:.2} | ≤ 1.1 {} |",
        lw / fw,
        if lw / fw <= 1.1 { "met" } else { "**missed**" }
    )?;
    Ok(out)
}
