//! Workload 9, **run**: a container's start and exec latency, end to end, on a busybox root.
//! - `strata run --rm demo true` (the built-in demo image: busybox-static; FUSE root served
//!   by the container's monitor);
//! - runc: mount fuse-overlayfs over the same busybox tree, `runc run` of a bundle whose
//!   root is that mount (runc's default spec, process `true`), unmount: what a runc user
//!   pays for a FUSE root;
//! - `podman run --rm --network none` of the same tree (`--runtime runc`) imported as an image (podman's own
//!   storage; `--ulimit` as DESIGN.md says podman needs on this host).
//!
//! And `exec true` into a running container of each. Medians of `runs` (at least 10).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::machine::podman;
use crate::ops::timed;
use crate::report::median;
use crate::scratch::run;

const PODMAN_ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=1000:1000",
];

/// One row: a figure per tool, or why there is none.
struct Row {
    label: &'static str,
    strata: Result<f64>,
    runc: Result<f64>,
    podman: Result<f64>,
}

fn med(samples: Result<Vec<f64>>) -> Result<f64> {
    median(&samples?).context("no samples")
}

fn repeat(runs: usize, mut once: impl FnMut(usize) -> Result<()>) -> Result<Vec<f64>> {
    (0..runs)
        .map(|i| timed(|| once(i)).map(|(_, s)| s))
        .collect()
}

fn busybox_tree(dir: &Path) -> Result<()> {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::copy("/bin/busybox", bin.join("busybox")).context("copying /bin/busybox")?;
    for applet in ["sh", "true", "sleep", "echo"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet))?;
    }
    for d in ["etc", "tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    Ok(())
}

/// A runc bundle from `runc spec`, running `args`, root at `bundle/rootfs`.
fn runc_bundle(bundle: &Path, args: &[&str]) -> Result<()> {
    std::fs::create_dir_all(bundle.join("rootfs"))?;
    run(Command::new("runc").arg("spec").current_dir(bundle))?;
    let path = bundle.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    config["process"]["terminal"] = false.into();
    config["process"]["args"] = serde_json::json!(args);
    config["root"]["readonly"] = false.into();
    std::fs::write(&path, serde_json::to_vec(&config)?)?;
    Ok(())
}

fn fuse_overlayfs(dir: &Path, lower: &Path, target: &Path) -> Result<()> {
    let (upper, work) = (dir.join("upper"), dir.join("work"));
    let _ = std::fs::remove_dir_all(&upper);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&upper)?;
    std::fs::create_dir_all(&work)?;
    run(Command::new("fuse-overlayfs")
        .arg("-o")
        .arg(format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        ))
        .arg(target))
}

fn unmount(target: &Path) -> Result<()> {
    run(Command::new("fusermount3").arg("-u").arg(target))
}

fn strata(store: &Path, args: &[&str]) -> Result<String> {
    let bin = strata_tests::mounts::workspace_bin("strata", "STRATA_BIN")?;
    crate::scratch::output(Command::new(bin).arg("--root").arg(store).args(args))
}

fn strata_rows(dir: &Path, runs: usize) -> (Result<f64>, Result<f64>) {
    let store = dir.join("strata-store");
    // The first run makes the demo image.
    if let Err(e) = strata(&store, &["run", "--rm", "demo", "true"]) {
        let msg = format!("{e:#}");
        return (Err(anyhow::anyhow!("{msg}")), Err(anyhow::anyhow!("{msg}")));
    }
    // `--network none`, as the peers' rows: runc's bundle and podman get no network, while
    // strata's default is now the bridge (its cost is measured apart, README).
    let start = med(repeat(runs, |_| {
        strata(
            &store,
            &["run", "--rm", "--network", "none", "demo", "true"],
        )
        .map(drop)
    }));
    let exec = (|| -> Result<f64> {
        strata(
            &store,
            &["run", "-d", "--name", "bench-exec", "demo", "sleep", "1000"],
        )?;
        let r = med(repeat(runs, |_| {
            strata(&store, &["exec", "bench-exec", "true"]).map(drop)
        }));
        strata(&store, &["rm", "-f", "bench-exec"])?;
        r
    })();
    (start, exec)
}

/// `run --rm demo true` under docker's default seccomp filter and unconfined, the two
/// alternating so drift in the machine's load falls on both: (filtered, unconfined).
fn seccomp_rows(dir: &Path, runs: usize) -> Result<(f64, f64)> {
    let store = dir.join("strata-store");
    let run = |extra: &[&str]| {
        let mut a = vec!["run", "--rm", "--network", "none"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["demo", "true"]);
        strata(&store, &a).map(drop)
    };
    let (mut filtered, mut unconfined) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        filtered.push(timed(|| run(&[]))?.1);
        unconfined.push(timed(|| run(&["--security-opt", "seccomp=unconfined"]))?.1);
    }
    Ok((med(Ok(filtered))?, med(Ok(unconfined))?))
}

fn runc_rows(dir: &Path, lower: &Path, runs: usize) -> (Result<f64>, Result<f64>) {
    let start = (|| -> Result<f64> {
        let bundle = dir.join("runc-true");
        runc_bundle(&bundle, &["true"])?;
        let rootfs = bundle.join("rootfs");
        med(repeat(runs, |i| {
            fuse_overlayfs(dir, lower, &rootfs)?;
            let r = run(Command::new("runc")
                .args(["run", "-b"])
                .arg(&bundle)
                .arg(format!("strata-bench-{i}")));
            unmount(&rootfs)?;
            r
        }))
    })();
    let exec = (|| -> Result<f64> {
        let bundle = dir.join("runc-sleep");
        runc_bundle(&bundle, &["sleep", "1000"])?;
        let rootfs = bundle.join("rootfs");
        fuse_overlayfs(dir, lower, &rootfs)?;
        // A container left by an interrupted run would make the name taken.
        let _ = run(Command::new("runc").args(["delete", "-f", "strata-bench-exec"]));
        // The detached container keeps its stdio: not pipes we would wait on.
        let status = Command::new("runc")
            .args(["run", "-d", "-b"])
            .arg(&bundle)
            .arg("strata-bench-exec")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()?;
        if !status.success() {
            bail!("runc run -d failed: {status}");
        }
        let r = med(repeat(runs, |_| {
            run(Command::new("runc").args(["exec", "strata-bench-exec", "true"]))
        }));
        let _ = run(Command::new("runc").args(["delete", "-f", "strata-bench-exec"]));
        unmount(&rootfs)?;
        r
    })();
    (start, exec)
}

fn podman_rows(dir: &Path, lower: &Path, runs: usize) -> (Result<f64>, Result<f64>) {
    let image = "localhost/strata-bench-busybox";
    let setup = (|| -> Result<()> {
        let tar = dir.join("busybox.tar");
        run(Command::new("tar")
            .arg("-cf")
            .arg(&tar)
            .arg("-C")
            .arg(lower)
            .arg("."))?;
        run(podman().arg("import").arg(&tar).arg(image))?;
        // Warm-up: podman's first run sets up its storage.
        run(podman()
            .args(["run", "--rm", "--network", "none"])
            .args(PODMAN_ULIMITS)
            .args([image, "true"]))
    })();
    if let Err(e) = setup {
        let msg = format!("{e:#}");
        return (Err(anyhow::anyhow!("{msg}")), Err(anyhow::anyhow!("{msg}")));
    }
    let start = med(repeat(runs, |_| {
        run(podman()
            .args(["run", "--rm", "--network", "none"])
            .args(PODMAN_ULIMITS)
            .args([image, "true"]))
    }));
    let exec = (|| -> Result<f64> {
        let _ = run(podman().args(["rm", "-f", "-t", "0", "strata-bench-exec"]));
        run(podman()
            .args([
                "run",
                "-d",
                "--name",
                "strata-bench-exec",
                "--network",
                "none",
            ])
            .args(PODMAN_ULIMITS)
            .args([image, "sleep", "1000"]))?;
        let r = med(repeat(runs, |_| {
            run(podman().args(["exec", "strata-bench-exec", "true"]))
        }));
        let _ = run(podman().args(["rm", "-f", "-t", "0", "strata-bench-exec"]));
        r
    })();
    let _ = run(podman().args(["rmi", image]));
    (start, exec)
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
pub fn run_run(dir: &Path, runs: usize) -> Result<String> {
    for tool in ["runc", "fuse-overlayfs", "fusermount3"] {
        crate::machine::which(tool)?;
    }
    let runs = runs.max(10);
    let lower = dir.join("busybox");
    std::fs::create_dir_all(dir)?;
    busybox_tree(&lower)?;
    eprintln!("strata-bench: run: {runs} runs each of strata, runc + fuse-overlayfs, podman");
    let (s_start, s_exec) = strata_rows(dir, runs);
    let (r_start, r_exec) = runc_rows(dir, &lower, runs);
    let (p_start, p_exec) = match crate::machine::which("podman") {
        Ok(()) => podman_rows(dir, &lower, runs),
        Err(e) => {
            let msg = format!("{e:#}");
            (Err(anyhow::anyhow!("{msg}")), Err(anyhow::anyhow!("{msg}")))
        }
    };
    let rows = [
        Row {
            label: "`run --rm IMAGE true`, end to end",
            strata: s_start,
            runc: r_start,
            podman: p_start,
        },
        Row {
            label: "`exec CONTAINER true`",
            strata: s_exec,
            runc: r_exec,
            podman: p_exec,
        },
    ];
    let mut out = String::new();
    writeln!(
        out,
        "| containers (busybox root, median of {runs}) | strata | runc + fuse-overlayfs | podman --network none | strata/runc | strata/podman |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|")?;
    let mut failures = Vec::new();
    for r in &rows {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            r.label,
            cell(&r.strata),
            cell(&r.runc),
            cell(&r.podman),
            ratio(&r.strata, &r.runc),
            ratio(&r.strata, &r.podman)
        )?;
        for (who, res) in [
            ("strata", &r.strata),
            ("runc", &r.runc),
            ("podman", &r.podman),
        ] {
            if let Err(e) = res {
                failures.push(format!("{} {who}: {e:#}", r.label));
            }
        }
    }
    if !failures.is_empty() {
        writeln!(out)?;
        for f in failures {
            writeln!(out, "- failed: {f}")?;
        }
    }
    match seccomp_rows(dir, runs) {
        Ok((on, off)) => writeln!(
            out,
            "\nseccomp (strata `run --rm demo true`, alternating, median of {runs}): docker's \
             default filter {:.1} ms, unconfined {:.1} ms, cost {:+.1} ms",
            on * 1e3,
            off * 1e3,
            (on - off) * 1e3
        )?,
        Err(e) => writeln!(out, "\n- failed: seccomp rows: {e:#}")?,
    }
    if rows.iter().all(|r| r.runc.is_err()) {
        bail!("runc could not run here:\n{out}");
    }
    Ok(out)
}
