//! Workload 10, **push**: the pull workload's image (4 gzip layers, about 200 MiB of
//! incompressible files), held in a strata store, pushed to a fresh Debian docker-registry on
//! loopback by `strata push`, against `skopeo copy --preserve-digests` of the same bytes
//! (the store is an OCI layout: skopeo reads it as `oci:STORE:REF`) to another fresh registry
//! of the same kind. Fresh registries each round: no blob is there yet, and neither tool can
//! mount one from a repository of an earlier round. The two alternate which goes first.
//! Then the same as zstd:chunked: `strata push --compression-format zstd:chunked` against
//! `skopeo copy --dest-compress-format zstd:chunked` (both recompress every layer).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use strata_tests::oci::{Compression, ImageBuilder};
use strata_tests::registry::Registry;

use crate::ops::timed;
use crate::pull::{image_layer, shape, LAYERS};
use crate::report::median;
use crate::scratch::run;

/// Runs the workload in `dir`; returns the markdown section.
pub fn run_push(dir: &Path, runs: usize, quick: bool) -> Result<String> {
    for tool in ["skopeo", "docker-registry"] {
        crate::machine::which(tool)?;
    }
    let strata = strata_tests::mounts::workspace_bin("strata", "STRATA_BIN")?;
    let (files, mean) = shape(quick);
    eprintln!("strata-bench: push: building a {LAYERS}-layer image of {files} files per layer");
    let layout = dir.join("layout");
    let mut image = ImageBuilder::new();
    for l in 0..LAYERS {
        image = image.layer_with(&image_layer(l, files, mean), Compression::Gzip)?;
    }
    let built = image.write_layout(&layout, "push")?;
    let source = Registry::start()?;
    let reference = source.push(&layout, "push", "bench/push:v1")?;
    let store = dir.join("store");
    let strata_cmd = || {
        let mut c = Command::new(&strata);
        c.arg("--root").arg(&store);
        c
    };
    run(strata_cmd().args(["pull", "-q", &reference]))?;
    let no_auth = dir.join("no-auth.json");
    // One pair of timings per round: strata push with `strata_flags`, skopeo copy with
    // `skopeo_flags`, alternating which goes first.
    let rounds = |what: &str, strata_flags: &[&str], skopeo_flags: &[&str]| -> Result<(f64, f64)> {
        let mut strata_secs = Vec::new();
        let mut peer_secs = Vec::new();
        for round in 1..=runs {
            let time_strata = || -> Result<f64> {
                let registry = Registry::start()?;
                let target = format!("{}/bench/strata:v1", registry.host);
                run(strata_cmd().args(["tag", &reference, &target]))?;
                let ((), s) = timed(|| {
                    run(strata_cmd()
                        .args(["push", "-q"])
                        .args(strata_flags)
                        .arg(&target))
                })?;
                run(strata_cmd().args(["rmi", &target]))?;
                Ok(s)
            };
            let time_skopeo = || -> Result<f64> {
                let registry = Registry::start()?;
                let ((), s) = timed(|| {
                    run(Command::new("skopeo")
                        .env("REGISTRY_AUTH_FILE", &no_auth)
                        .args(["copy", "--quiet", "--dest-tls-verify=false"])
                        .args(skopeo_flags)
                        .arg(format!("oci:{}:{reference}", store.display()))
                        .arg(format!("docker://{}/bench/skopeo:v1", registry.host)))
                })?;
                Ok(s)
            };
            let (s, p) = if round % 2 == 1 {
                let s = time_strata()?;
                (s, time_skopeo()?)
            } else {
                let p = time_skopeo()?;
                (time_strata()?, p)
            };
            eprintln!("  push{what} {round}/{runs} strata push {s:.2} s, skopeo copy {p:.2} s");
            strata_secs.push(s);
            peer_secs.push(p);
        }
        Ok((
            median(&strata_secs).context("no push rounds")?,
            median(&peer_secs).context("no push rounds")?,
        ))
    };
    let (s, p) = rounds("", &[], &["--preserve-digests"])?;
    let (zs, zp) = rounds(
        " zstd:chunked",
        &["--compression-format", "zstd:chunked"],
        &["--dest-compress-format", "zstd:chunked"],
    )?;
    drop(source);
    let mut out = String::new();
    writeln!(
        out,
        "| push ({LAYERS} gzip layers, {} MiB) | strata | peer | strata/peer | bar |",
        built.layers_size >> 20
    )?;
    writeln!(out, "|---|---:|---:|---:|---|")?;
    writeln!(
        out,
        "| `strata push` vs `skopeo copy oci:STORE docker://…` | {s:.2} s | {p:.2} s | {:.2} | ≤ 1.0 {} |",
        s / p,
        if s / p <= 1.0 { "met" } else { "**missed**" }
    )?;
    writeln!(
        out,
        "| as zstd:chunked: `strata push --compression-format zstd:chunked` vs `skopeo copy --dest-compress-format zstd:chunked` | {zs:.2} s | {zp:.2} s | {:.2} | ≤ 1.0 {} |",
        zs / zp,
        if zs / zp <= 1.0 { "met" } else { "**missed**" }
    )?;
    Ok(out)
}
