//! zstd:chunked through the `strata` binary and a real registry: images converted by
//! skopeo (`--dest-compress-format zstd:chunked`, Debian's 1.9 writes the older
//! `io.containers.zstd-chunked.*` annotations) pull lazily and mount and run like a full
//! pull; images strata pushes as zstd:chunked are read whole by skopeo and lazily by strata.

use std::io::Read;
use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use strata_image::lazy::zstd_chunked;
use strata_tests::mounts::{unmount, Driver};
use strata_tests::registry::Registry;
use strata_tests::strata::Strata;
use strata_tests::tree::{diff, snapshot_with_times, Tree};
use strata_tests::users::have_root;

use super::env;

/// A credential file that cannot exist: skopeo then uses none.
const NO_AUTH: &str = "/proc/strata-no-auth.json";

fn skopeo(args: &[&str]) -> Result<String> {
    let out = Command::new("skopeo")
        .env("REGISTRY_AUTH_FILE", NO_AUTH)
        .args(args)
        .output()
        .context("running skopeo")?;
    ensure!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `strata ARGS`, required to succeed; returns stdout.
fn strata_ok(strata: &Strata, args: &[&str]) -> Result<String> {
    let out = strata.command(args).output()?;
    ensure!(
        out.status.success(),
        "strata {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The manifest `reference` has in the registry.
fn remote_manifest(reference: &str) -> Result<Value> {
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ])?;
    Ok(serde_json::from_str(&raw)?)
}

/// The layers of `manifest` with the zstd media type and a zstd:chunked checksum in the
/// annotation form `key`.
fn chunked_layers(manifest: &Value, key: &str) -> usize {
    manifest["layers"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .filter(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd")
                .filter(|l| l["annotations"][key].as_str().is_some())
                .count()
        })
        .unwrap_or(0)
}

/// The merged tree of `image` in `strata`'s store, through `strata mount`.
fn mounted_view(strata: &Strata, image: &str, mnt: &Path) -> Result<Tree> {
    std::fs::create_dir_all(mnt)?;
    strata_ok(strata, &["mount", image, mnt.to_str().unwrap()])?;
    let view = snapshot_with_times(mnt);
    unmount(mnt, Driver::Strata)?;
    view
}

#[track_caller]
fn assert_same(full: &Tree, lazy: &Tree, what: &str) {
    let differences = diff(full, lazy);
    assert!(
        differences.is_empty(),
        "{what} differs from a full pull's (- full only, + lazy only):\n{}",
        differences.join("\n")
    );
}

#[test]
fn skopeo_zstd_chunked_image_pulls_lazily_and_mounts_and_runs_like_a_full_pull() -> Result<()> {
    if !have_root("skopeo_zstd_chunked_image_pulls_lazily_and_mounts_and_runs_like_a_full_pull") {
        return Ok(());
    }
    let env = env();
    // busybox, a zstd layer and the nasty one (a 3 MiB sparse file, xattrs, devices, hard
    // links, a whiteout and an opaque directory), each rewritten by skopeo as zstd:chunked.
    // A registry of its own: one that holds the layers already has skopeo reuse them
    // rather than convert them.
    let target = Registry::start()?;
    let image = format!("{}/test/zc:v1", target.host);
    skopeo(&[
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--dest-compress-format",
        "zstd:chunked",
        // The layout env() pushed the image from.
        &format!("oci:{}:layers", env.tmp.path().join("layout").display()),
        &format!("docker://{image}"),
    ])?;
    let manifest = remote_manifest(&image)?;
    assert_eq!(
        chunked_layers(&manifest, zstd_chunked::OLD_MANIFEST_CHECKSUM_ANNOTATION),
        3,
        "{manifest}"
    );

    let lazy = &env.strata;
    let out = strata_ok(lazy, &["pull", &image])?;
    assert_eq!(out.matches("(zstd:chunked): 0B of").count(), 3, "{out}");
    let full = Strata::new(&env.tmp.path().join("full-store"))?;
    let out = strata_ok(&full, &["pull", "--full", &image])?;
    assert!(!out.contains("zstd:chunked"), "{out}");

    let full_view = mounted_view(&full, &image, &env.tmp.path().join("full-mnt"))?;
    let lazy_view = mounted_view(lazy, &image, &env.tmp.path().join("lazy-mnt"))?;
    assert_same(
        &full_view,
        &lazy_view,
        "a lazy mount of skopeo's zstd:chunked image",
    );
    assert!(lazy_view.contains_key(Path::new("data/sparse")));
    assert!(lazy_view.contains_key(Path::new("bin/busybox")));

    // A container over the lazy layers: busybox itself is read through them.
    let out = strata_ok(
        lazy,
        &[
            "run",
            "--rm",
            &image,
            "sh",
            "-c",
            "wc -c < /data/sparse; cat /data/hard2 /old/new",
        ],
    )?;
    assert_eq!(out, format!("{}\nhardnew", 3 << 20));
    Ok(())
}

/// gunzips `blob`; returns the sha256 of the result.
fn gunzip_digest(blob: &Path) -> Result<String> {
    let mut tar = Vec::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(blob)?).read_to_end(&mut tar)?;
    Ok(strata_tests::oci::digest(&tar))
}

#[test]
fn strata_pushed_zstd_chunked_is_read_whole_by_skopeo_and_lazily_by_strata() -> Result<()> {
    let env = env();
    let target = Registry::start()?;
    let s = &env.strata;
    strata_ok(s, &["pull", "-q", &env.layers])?;
    let image = format!("{}/test/pushed-zc:v1", target.host);
    strata_ok(s, &["tag", &env.layers, &image])?;
    strata_ok(s, &["push", "--compression-format", "zstd:chunked", &image])?;
    let manifest = remote_manifest(&image)?;
    for key in [
        zstd_chunked::MANIFEST_CHECKSUM_ANNOTATION,
        zstd_chunked::OLD_MANIFEST_CHECKSUM_ANNOTATION,
    ] {
        assert_eq!(chunked_layers(&manifest, key), 3, "{key}: {manifest}");
    }

    // skopeo (Go's zstd decoder, skipping the TOC's and the footer's skippable frames)
    // recompresses each layer to gzip: every one decompresses to its diff-id.
    let oci = env.tmp.path().join("from-skopeo");
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--dest-compress-format",
        "gzip",
        &format!("docker://{image}"),
        &format!("oci:{}:v1", oci.display()),
    ])?;
    let blob = |d: &str| oci.join("blobs/sha256").join(&d["sha256:".len()..]);
    let index: Value = serde_json::from_slice(&std::fs::read(oci.join("index.json"))?)?;
    let m: Value = serde_json::from_slice(&std::fs::read(blob(
        index["manifests"][0]["digest"].as_str().unwrap(),
    ))?)?;
    let config: Value = serde_json::from_slice(&std::fs::read(blob(
        m["config"]["digest"].as_str().unwrap(),
    ))?)?;
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    for (layer, diff_id) in layers
        .iter()
        .zip(config["rootfs"]["diff_ids"].as_array().unwrap())
    {
        assert_eq!(
            layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip",
            "{m}"
        );
        assert_eq!(
            gunzip_digest(&blob(layer["digest"].as_str().unwrap()))?,
            diff_id.as_str().unwrap()
        );
    }

    // Another store pulls strata's zstd:chunked layers lazily; mounted, they show what
    // the image showed before it was pushed.
    let other = Strata::new(&env.tmp.path().join("other-store"))?;
    let out = strata_ok(&other, &["pull", &image])?;
    assert_eq!(out.matches("(zstd:chunked): 0B of").count(), 3, "{out}");
    if have_root("strata_pushed_zstd_chunked_is_read_whole_by_skopeo_and_lazily_by_strata") {
        let before = mounted_view(s, &env.layers, &env.tmp.path().join("before-mnt"))?;
        let lazy = mounted_view(&other, &image, &env.tmp.path().join("lazy-mnt"))?;
        assert_same(&before, &lazy, "a lazy mount of strata's zstd:chunked push");
    }
    Ok(())
}
