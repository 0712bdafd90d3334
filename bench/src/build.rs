//! Workload 10, **build**: `strata build` of a 10-step Dockerfile (3 RUNs, 2 COPYs of a
//! small context, metadata steps) on the demo image (busybox-static), cold (`--no-cache`)
//! and cached (the same build again), against `podman build` of the same Dockerfile and
//! context on the same image, copied into podman's storage with skopeo. Medians of `runs`
//! (at least 3).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::machine::podman;
use crate::ops::timed;
use crate::report::median;
use crate::scratch::run;

const DOCKERFILE: &str = "FROM localhost/demo:latest
ENV APP=/app
RUN mkdir -p /app/logs && echo built > /app/stamp
COPY src /app/src
RUN for i in 1 2 3 4 5 6 7 8 9 10; do echo $i >> /app/count; done
COPY config.txt /etc/app.conf
WORKDIR /app
RUN cat /etc/app.conf > /app/conf.copy
LABEL bench=strata
CMD [\"cat\", \"/app/stamp\"]
";

const IMAGE: &str = "localhost/strata-bench-build";

fn context(dir: &Path) -> Result<()> {
    let src = dir.join("src");
    std::fs::create_dir_all(&src)?;
    for i in 0..50 {
        std::fs::write(
            src.join(format!("f{i}.txt")),
            format!("file {i}\n").repeat(20),
        )?;
    }
    std::fs::write(dir.join("config.txt"), "key=value\n")?;
    std::fs::write(dir.join("Dockerfile"), DOCKERFILE)?;
    Ok(())
}

fn strata(store: &Path, args: &[&str]) -> Result<()> {
    let bin = strata_tests::mounts::workspace_bin("strata", "STRATA_BIN")?;
    run(Command::new(bin).arg("--root").arg(store).args(args))
}

fn med(samples: Result<Vec<f64>>) -> Result<f64> {
    median(&samples?).context("no samples")
}

fn repeat(runs: usize, mut once: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    (0..runs)
        .map(|_| timed(&mut once).map(|(_, s)| s))
        .collect()
}

/// Cold and cached medians of `build` (a closure building with or without the cache).
fn rows(runs: usize, build: impl Fn(bool) -> Result<()>) -> (Result<f64>, Result<f64>) {
    let cold = med(repeat(runs, || build(false)));
    // The cache holds the last cold build's steps.
    let cached = med(repeat(runs, || build(true)));
    (cold, cached)
}

fn cell(r: &Result<f64>) -> String {
    match r {
        Ok(s) => format!("{:.1} ms", s * 1e3),
        Err(_) => "failed".into(),
    }
}

fn ratio(a: &Result<f64>, b: &Result<f64>) -> String {
    match (a, b) {
        (Ok(a), Ok(b)) => format!("{:.2}", a / b),
        _ => "—".into(),
    }
}

/// Runs the workload in `dir`; returns the markdown section.
pub fn run_build(dir: &Path, runs: usize) -> Result<String> {
    let runs = runs.max(3);
    let ctx = dir.join("ctx");
    context(&ctx)?;
    let store = dir.join("strata-store");
    let ctx_s = ctx.to_str().context("context path")?.to_string();
    eprintln!("strata-bench: build: {runs} cold and {runs} cached builds each, strata and podman");
    // The demo image is made on first use; the first build also warms the binary's pages.
    strata(&store, &["run", "--rm", "demo", "true"])?;
    strata(&store, &["build", "-q", "-t", IMAGE, &ctx_s])?;
    let (s_cold, s_cached) = rows(runs, |cached| {
        let mut a = vec!["build", "-q", "-t", IMAGE];
        if !cached {
            a.push("--no-cache");
        }
        a.push(&ctx_s);
        strata(&store, &a)
    });
    let podman_setup = (|| -> Result<()> {
        crate::machine::which("podman")?;
        run(Command::new("skopeo")
            .arg("copy")
            .arg("-q")
            .arg(format!("oci:{}:localhost/demo:latest", store.display()))
            .arg("containers-storage:localhost/demo:latest"))?;
        run(podman().args(["build", "-q", "-t", IMAGE, &ctx_s]))
    })();
    let (p_cold, p_cached) = match podman_setup {
        Ok(()) => rows(runs, |cached| {
            let mut c = podman();
            c.args(["build", "-q", "-t", IMAGE]);
            if !cached {
                c.arg("--no-cache");
            }
            run(c.arg(&ctx_s))
        }),
        Err(e) => {
            let msg = format!("{e:#}");
            (Err(anyhow::anyhow!("{msg}")), Err(anyhow::anyhow!("{msg}")))
        }
    };
    let _ = run(podman().args(["rmi", "-f", IMAGE, "localhost/demo:latest"]));
    let _ = run(podman().args(["image", "prune", "-f"]));

    let mut out = String::new();
    writeln!(
        out,
        "| build (10-step Dockerfile on the demo image, median of {runs}) | strata | podman build | strata/podman | bar |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---|")?;
    let bar = |r: &Result<f64>, p: &Result<f64>| match (r, p) {
        (Ok(a), Ok(b)) if a / b <= 0.2 => "≤ 0.2: met",
        (Ok(_), Ok(_)) => "≤ 0.2: **missed**",
        _ => "—",
    };
    writeln!(
        out,
        "| cold (`--no-cache`) | {} | {} | {} | |",
        cell(&s_cold),
        cell(&p_cold),
        ratio(&s_cold, &p_cold)
    )?;
    writeln!(
        out,
        "| cached (every step from the cache) | {} | {} | {} | {} |",
        cell(&s_cached),
        cell(&p_cached),
        ratio(&s_cached, &p_cached),
        bar(&s_cached, &p_cached)
    )?;
    let failures: Vec<String> = [
        ("strata cold", &s_cold),
        ("strata cached", &s_cached),
        ("podman cold", &p_cold),
        ("podman cached", &p_cached),
    ]
    .iter()
    .filter_map(|(w, r)| r.as_ref().err().map(|e| format!("- failed: {w}: {e:#}")))
    .collect();
    if !failures.is_empty() {
        writeln!(out, "\n{}", failures.join("\n"))?;
    }
    if s_cold.is_err() || s_cached.is_err() {
        anyhow::bail!("strata build failed:\n{out}");
    }
    Ok(out)
}
