//! Workload 10, **commit**: `strata commit` of a container that wrote 20k small files (the
//! untar workload's archive, extracted inside the container from a read-only bind mount)
//! against `podman commit` of the same container in podman (its own store, overlay driver,
//! runc and cgroupfs as this host needs). Each tool's own default for pausing (strata:
//! paused, as docker; podman: not). The container is made once per tool; each timed run
//! commits it again (the layer is the same, the image a new one). Medians of `runs`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::ops::timed;
use crate::report::median;
use crate::scratch::{output, run};

/// What the container runs: extract the archive, then the commit reads what it wrote.
const WRITE: &str = "mkdir -p /work && tar -xf /files.tar -C /work";

fn strata(store: &Path, args: &[&str]) -> Result<String> {
    let bin = strata_tests::mounts::workspace_bin("strata", "STRATA_BIN")?;
    output(Command::new(bin).arg("--root").arg(store).args(args))
}

fn podman(dir: &Path) -> Command {
    strata_tests::podman::command(&dir.join("podman"), "overlay")
}

fn samples(runs: usize, mut once: impl FnMut() -> Result<()>) -> Result<f64> {
    let s: Vec<f64> = (0..runs)
        .map(|_| timed(&mut once).map(|(_, s)| s))
        .collect::<Result<_>>()?;
    median(&s).context("no samples")
}

fn strata_commit(dir: &Path, tar: &Path, runs: usize) -> Result<f64> {
    let store = dir.join("strata-store");
    let bind = format!("{}:/files.tar:ro", tar.display());
    strata(
        &store,
        &[
            "run",
            "--name",
            "bench-commit",
            "-v",
            &bind,
            "demo",
            "sh",
            "-c",
            WRITE,
        ],
    )?;
    let r = samples(runs, || {
        strata(&store, &["commit", "bench-commit", "bench-committed"]).map(drop)
    });
    let _ = strata(&store, &["rm", "-f", "bench-commit"]);
    r
}

fn podman_commit(dir: &Path, tar: &Path, runs: usize) -> Result<f64> {
    let store = dir.join("strata-store");
    // The same demo image, copied from strata's OCI layout.
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:localhost/demo:latest", store.display()))
        .arg(strata_tests::podman::storage_ref(
            &dir.join("podman"),
            "overlay",
            "localhost/demo:latest",
        )))?;
    let bind = format!("{}:/files.tar:ro", tar.display());
    run(podman(dir)
        .args([
            "run",
            "--network",
            "none",
            "--name",
            "bench-commit",
            "-v",
            &bind,
        ])
        .args(strata_tests::podman::ULIMITS)
        .args(["localhost/demo:latest", "sh", "-c", WRITE]))?;
    let r = samples(runs, || {
        run(podman(dir).args(["commit", "bench-commit", "localhost/bench-committed"]))
    });
    let _ = run(podman(dir).args(["rm", "-f", "bench-commit"]));
    let _ = run(podman(dir).args(["system", "reset", "-f"]));
    r
}

/// Runs the workload in `dir` with `files` small files; returns the markdown section.
pub fn run_commit(dir: &Path, files: usize, runs: usize) -> Result<String> {
    crate::machine::which("podman")?;
    crate::machine::which("skopeo")?;
    std::fs::create_dir_all(dir)?;
    let tar = dir.join("files.tar");
    crate::data::write_tar(&tar, files)?;
    let runs = runs.max(3);
    eprintln!("strata-bench: commit: {runs} commits of {files} files each by strata and podman");
    let s = strata_commit(dir, &tar, runs);
    let p = podman_commit(dir, &tar, runs);
    let cell = |r: &Result<f64>| match r {
        Ok(v) => format!("{:.2} s", v),
        Err(e) => format!("failed: {e:#}"),
    };
    let ratio = match (&s, &p) {
        (Ok(s), Ok(p)) => {
            let r = s / p;
            let verdict = if r <= 0.5 { "met" } else { "**missed**" };
            format!("{r:.2} | ≤ 0.5: {verdict}")
        }
        _ => "— | ≤ 0.5".into(),
    };
    let mut out = String::new();
    writeln!(
        out,
        "| commit (container wrote {files} small files, median of {runs}) | strata | podman | strata/podman | bar |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---|")?;
    writeln!(
        out,
        "| `commit CONTAINER IMAGE` | {} | {} | {ratio} |",
        cell(&s),
        cell(&p)
    )?;
    if s.is_err() && p.is_err() {
        anyhow::bail!("neither commit ran:\n{out}");
    }
    Ok(out)
}
