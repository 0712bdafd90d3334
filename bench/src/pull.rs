//! Workload 8, **pull**: an image of 4 gzip layers (about 200 MiB and 30k files, contents
//! that do not compress, like binaries) pushed to Debian's docker-registry on loopback, then
//! brought to a state a container could start from:
//! - `strata pull` into an empty store (download, verify, decompress, build the layer
//!   indexes: nothing more is needed to mount it);
//! - `skopeo copy docker://… oci:DIR` plus `umoci unpack` of it (download, verify, extract
//!   every file): the tools a runc user would chain.
//!
//! Then a cold metadata walk of that image's root: `strata mount` of the pulled image (the
//! indexed layers) against fuse-overlayfs and strata-fs over the same layers extracted to
//! directories (what a fuse-overlayfs user has after an unpack of each layer).
//!
//! Its own table: the targets are tools, not the union drivers of the other workloads.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use strata_tests::fixture::LayerBuilder;
use strata_tests::oci::{Compression, ImageBuilder};
use strata_tests::registry::Registry;

use crate::ops::{timed, walk};
use crate::report::median;
use crate::scratch::{drop_caches, output, run};

pub const LAYERS: usize = 4;

/// Files per layer and their mean size.
pub fn shape(quick: bool) -> (usize, usize) {
    match quick {
        false => (7_500, 7_000),
        true => (750, 7_000),
    }
}

/// Pseudo-random bytes (xorshift): incompressible, reproducible.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn image_layer(layer: usize, files: usize, mean: usize) -> LayerBuilder {
    let mut b = LayerBuilder::new();
    let dirs = files.div_ceil(100);
    for d in 0..dirs {
        b = b.dir(format!("l{layer}/d{d}"));
    }
    for f in 0..files {
        let seed = (layer * 1_000_000 + f) as u64;
        let len = (seed.wrapping_mul(2_654_435_761) % (2 * mean as u64)) as usize;
        b = b.file(format!("l{layer}/d{}/f{f}", f / 100), noise(seed, len));
    }
    b
}

struct Tools {
    strata: PathBuf,
    strata_fs: PathBuf,
}

/// Runs the workload in `dir` (on the benchmark's ext4 image); returns the markdown section.
pub fn run_pull(dir: &Path, strata_fs: &Path, runs: usize, quick: bool) -> Result<String> {
    for tool in ["skopeo", "umoci", "docker-registry", "fuse-overlayfs"] {
        crate::machine::which(tool)?;
    }
    let tools = Tools {
        strata: strata_tests::mounts::workspace_bin("strata", "STRATA_BIN")?,
        strata_fs: strata_fs.to_path_buf(),
    };
    let (files, mean) = shape(quick);
    eprintln!("strata-bench: pull: building a {LAYERS}-layer image of {files} files per layer");
    let layout = dir.join("layout");
    let mut image = ImageBuilder::new();
    for l in 0..LAYERS {
        image = image.layer_with(&image_layer(l, files, mean), Compression::Gzip)?;
    }
    let built = image.write_layout(&layout, "pull")?;
    let registry = Registry::start()?;
    let reference = registry.push(&layout, "pull", "bench/pull:v1")?;
    let mut strata_secs = Vec::new();
    let mut peer_secs = Vec::new();
    for round in 1..=runs {
        let work = dir.join(format!("round{round}"));
        std::fs::create_dir_all(&work)?;
        let store = work.join("store");
        let ((), s) = timed(|| {
            run(Command::new(&tools.strata)
                .arg("--root")
                .arg(&store)
                .args(["pull", "-q", &reference]))
        })?;
        let oci = work.join("oci");
        let bundle = work.join("bundle");
        let ((), p) = timed(|| {
            run(Command::new("skopeo")
                .args(["copy", "--quiet", "--src-tls-verify=false"])
                .arg(format!("docker://{reference}"))
                .arg(format!("oci:{}:pull", oci.display())))?;
            run(Command::new("umoci")
                .args(["unpack", "--image"])
                .arg(format!("{}:pull", oci.display()))
                .arg(&bundle))
        })?;
        eprintln!(
            "  pull {round}/{runs} strata pull {s:.2} s, skopeo copy + umoci unpack {p:.2} s"
        );
        strata_secs.push(s);
        peer_secs.push(p);
        if round < runs {
            std::fs::remove_dir_all(&work)?;
        }
    }
    let last = dir.join(format!("round{runs}"));
    let walks = walk_rounds(
        &tools,
        &reference,
        &last,
        &layout,
        &built.layer_digests,
        runs,
    )?;
    drop(registry);

    let s = median(&strata_secs).context("no pull rounds")?;
    let p = median(&peer_secs).context("no pull rounds")?;
    let mut out = String::new();
    let total_files = files * LAYERS;
    writeln!(
        out,
        "| pull ({LAYERS} gzip layers, {} MiB, {total_files} files) | strata | peer | strata/peer | bar |",
        built.layers_size >> 20
    )?;
    writeln!(out, "|---|---:|---:|---:|---|")?;
    writeln!(
        out,
        "| `strata pull` vs `skopeo copy` + `umoci unpack` | {s:.2} s | {p:.2} s | {:.2} | ≤ 0.5 {} |",
        s / p,
        if s / p <= 0.5 { "met" } else { "**missed**" }
    )?;
    for (label, strata, peer) in walks {
        writeln!(
            out,
            "| {label} | {strata:.3} s | {peer:.3} s | {:.2} | |",
            strata / peer
        )?;
    }
    Ok(out)
}

/// Cold walks: the pulled image under `strata mount` against fuse-overlayfs (and strata-fs)
/// over the layers extracted to directories. Returns (label, strata, peer) rows.
fn walk_rounds(
    tools: &Tools,
    reference: &str,
    work: &Path,
    layout: &Path,
    layer_digests: &[String],
    runs: usize,
) -> Result<Vec<(String, f64, f64)>> {
    // The layers as directories, bottom first, as `tar -x` (as root) extracts them.
    let mut dirs = Vec::new();
    for (i, digest) in layer_digests.iter().enumerate() {
        let d = work.join(format!("layer{i}"));
        std::fs::create_dir_all(&d)?;
        let blob = layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        run(Command::new("tar")
            .arg("-xzf")
            .arg(&blob)
            .arg("-C")
            .arg(&d)
            .arg("--same-owner"))?;
        dirs.push(d);
    }
    let lowerdir = dirs
        .iter()
        .rev()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let mnt = work.join("mnt");
    std::fs::create_dir_all(&mnt)?;
    let store = work.join("store");
    let mut indexed = Vec::new();
    let mut fuse_ov = Vec::new();
    let mut strata_dirs = Vec::new();
    let mut expected = None;
    for _ in 0..runs {
        for which in 0..3 {
            let mounted = match which {
                0 => Command::new(&tools.strata)
                    .arg("--root")
                    .arg(&store)
                    .args(["mount", reference])
                    .arg(&mnt)
                    .output()?,
                1 => Command::new("fuse-overlayfs")
                    .arg("-o")
                    .arg(format!("lowerdir={lowerdir}"))
                    .arg(&mnt)
                    .output()?,
                _ => Command::new(&tools.strata_fs)
                    .arg("-o")
                    .arg(format!("lowerdir={lowerdir}"))
                    .arg(&mnt)
                    .output()?,
            };
            ensure!(
                mounted.status.success(),
                "mount {which} failed: {}",
                String::from_utf8_lossy(&mounted.stderr)
            );
            drop_caches()?;
            let walked = timed(|| walk(&mnt));
            let _ = output(Command::new("fusermount3").arg("-u").arg(&mnt));
            let (counts, secs) = walked?;
            match &expected {
                None => expected = Some(counts),
                Some(e) => ensure!(*e == counts, "walks disagree: {e:?} vs {counts:?}"),
            }
            [&mut indexed, &mut fuse_ov, &mut strata_dirs][which].push(secs);
        }
    }
    let m = |v: &[f64]| median(v).unwrap_or(f64::NAN);
    Ok(vec![
        (
            "cold walk: `strata mount` (indexed layers) vs fuse-overlayfs (extracted layers)"
                .into(),
            m(&indexed),
            m(&fuse_ov),
        ),
        (
            "cold walk: strata-fs over the extracted layers vs fuse-overlayfs".into(),
            m(&strata_dirs),
            m(&fuse_ov),
        ),
    ])
}
