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
use strata_tests::registry::Registry;
use strata_tests::strata::Strata;
use strata_tests::tree::{diff, snapshot_with_times, Tree};
use strata_tests::users::{have_root, is_child, run_test_as_user, Rootless};

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
    strata_env(strata, &[], args)
}

/// [`strata_ok`] with `env` set.
fn strata_env(strata: &Strata, env: &[(&str, &str)], args: &[&str]) -> Result<String> {
    let out = strata.command(args).envs(env.iter().copied()).output()?;
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

/// The merged tree of `image` in `strata`'s store, through `strata mount` (run with `env`).
fn mounted_view(strata: &Strata, env: &[(&str, &str)], image: &str, mnt: &Path) -> Result<Tree> {
    std::fs::create_dir_all(mnt)?;
    strata_env(strata, env, &["mount", image, mnt.to_str().unwrap()])?;
    let _left = Unmount(mnt);
    let view = snapshot_with_times(mnt);
    strata_ok(strata, &["umount", mnt.to_str().unwrap()])?;
    view
}

/// Unmounts a mount a failed step left behind, so the temporary directory can go.
struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        if strata_tests::mounts::is_mounted(self.0) {
            let _ = strata_tests::mounts::unmount(self.0, strata_tests::mounts::Driver::Strata);
        }
    }
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
    skopeo_image_round(true)
}

#[test]
fn rootless_skopeo_zstd_chunked_image_pulls_lazily_and_runs_like_a_full_pull() {
    if have_root("rootless_skopeo_zstd_chunked_image_pulls_lazily_and_runs") {
        run_test_as_user(
            "images::zstd_chunked::rootless_skopeo_zstd_chunked_image_child",
            Rootless::Host,
        )
        .unwrap();
    }
}

#[test]
#[ignore = "run by rootless_skopeo_zstd_chunked_image_pulls_lazily_and_runs_like_a_full_pull"]
fn rootless_skopeo_zstd_chunked_image_child() -> Result<()> {
    assert!(is_child() && !nix::unistd::getuid().is_root());
    // Not through `strata mount`: the user may not read the image's root-only directories.
    skopeo_image_round(false)
}

/// skopeo converts the `layers` image to zstd:chunked; strata pulls it lazily, and a
/// container over it (and, `with_mounts`, its mount and `inspect`) is checked against a
/// full pull.
fn skopeo_image_round(with_mounts: bool) -> Result<()> {
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

    if with_mounts {
        // The mounts first, with the background fetch off: what is local is then exactly what
        // was read.
        let quiet = [("STRATA_LAZY_BACKGROUND", "off")];
        let full_view = mounted_view(&full, &[], &image, &env.tmp.path().join("full-mnt"))?;
        let lazy_view = mounted_view(lazy, &quiet, &image, &env.tmp.path().join("lazy-mnt"))?;
        assert_same(
            &full_view,
            &lazy_view,
            "a lazy mount of skopeo's zstd:chunked image",
        );
        assert!(lazy_view.contains_key(Path::new("data/sparse")));
        assert!(lazy_view.contains_key(Path::new("bin/busybox")));
        // The walk read every file the view shows: the nasty layer's bytes are all local,
        // busybox's but its /etc/group (whited out above), the middle layer's none (its files
        // are under the nasty layer's opaque directory).
        let inspect: Value = serde_json::from_str(&strata_ok(lazy, &["inspect", &image])?)?;
        let progress: Vec<(u64, u64)> = inspect[0]["LazyLayers"]
            .as_array()
            .context("LazyLayers")?
            .iter()
            .map(|l| (l["Local"].as_u64().unwrap(), l["Size"].as_u64().unwrap()))
            .collect();
        assert_eq!(progress.len(), 3, "{inspect}");
        let group = "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n".len() as u64;
        assert!(
            progress[0].0 + group == progress[0].1 && progress[0].1 > 1 << 20,
            "{inspect}"
        );
        assert_eq!(progress[1], (0, 2), "{inspect}");
        assert!(
            progress[2].0 == progress[2].1 && progress[2].1 > 3 << 20,
            "{inspect}"
        );
        // A mount left alone fetches the rest in the background, the middle layer's hidden
        // files too, until every lazy layer is local.
        let mnt = env.tmp.path().join("background-mnt");
        std::fs::create_dir_all(&mnt)?;
        strata_ok(lazy, &["mount", &image, mnt.to_str().unwrap()])?;
        let complete = || -> Result<bool> {
            let inspect: Value = serde_json::from_str(&strata_ok(lazy, &["inspect", &image])?)?;
            Ok(inspect[0]["LazyLayers"]
                .as_array()
                .is_some_and(|ls| ls.len() == 3 && ls.iter().all(|l| l["Local"] == l["Size"])))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !complete()? && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        strata_ok(lazy, &["umount", mnt.to_str().unwrap()])?;
        assert!(
            complete()?,
            "the background fetch did not complete the lazy layers"
        );
    }

    // A container over the lazy layers (busybox itself is read through them) sees what
    // one over the full pull sees.
    let script = "wc -c < /data/sparse; cat /data/hard2 /old/new; ls -lnR /data /old; \
                  find /data /old /bin -type f -exec sha256sum {} +";
    let run = |s: &Strata| strata_ok(s, &["run", "--rm", &image, "sh", "-c", script]);
    let out = run(lazy)?;
    assert!(
        out.starts_with(&format!("{}\nhardnew", 3 << 20)) && out.contains("/bin/busybox"),
        "{out}"
    );
    assert_eq!(out, run(&full)?);

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
        let before = mounted_view(s, &[], &env.layers, &env.tmp.path().join("before-mnt"))?;
        let lazy = mounted_view(&other, &[], &image, &env.tmp.path().join("lazy-mnt"))?;
        assert_same(&before, &lazy, "a lazy mount of strata's zstd:chunked push");
    }
    Ok(())
}

/// podman with its own overlay store under `dir`, partial pulls (containers/storage reads
/// the TOC and fetches file chunks by range) turned on.
fn podman(dir: &Path) -> Result<Command> {
    let conf = dir.join("storage.conf");
    if !conf.exists() {
        std::fs::create_dir_all(dir)?;
        // The store's paths are podman::command's flags; the file must name them too.
        let conf_text = format!(
            "[storage]\ndriver = \"overlay\"\nrunroot = {:?}\ngraphroot = {:?}\n\
             [storage.options]\npull_options = {{enable_partial_images = \"true\", \
             use_hard_links = \"false\", ostree_repos = \"\"}}\n",
            dir.join("run"),
            dir.join("root")
        );
        std::fs::write(&conf, conf_text)?;
        // No credentials (podman, unlike skopeo, wants the file to exist).
        std::fs::write(dir.join("auth.json"), "{\"auths\": {}}")?;
    }
    let mut c = strata_tests::podman::command(dir, "overlay");
    c.env("CONTAINERS_STORAGE_CONF", conf)
        .env("REGISTRY_AUTH_FILE", dir.join("auth.json"));
    Ok(c)
}

/// Detaches the mount containers/storage's overlay driver leaves on its own directory, so
/// the test's temporary directory can go.
struct PodmanStore<'a>(&'a Path);

impl Drop for PodmanStore<'_> {
    fn drop(&mut self) {
        let overlay = self.0.join("root/overlay");
        let _ = nix::mount::umount2(&overlay, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Pulls `image` into podman's store under `dir` (requiring a partial pull of each of its
/// `layers` layers) and returns the tree its `image mount` shows.
fn podman_partial_view(dir: &Path, image: &str, layers: usize) -> Result<Tree> {
    let _store = PodmanStore(dir);
    let out = podman(dir)?
        .args(["--log-level", "debug", "pull", "--tls-verify=false", image])
        .output()?;
    let log = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "podman pull {image}: {log}");
    ensure!(
        log.matches("Retrieved partial blob").count() == layers,
        "podman pulled {image} without partial pulls:\n{log}"
    );
    let out = podman(dir)?.args(["image", "mount", image]).output()?;
    ensure!(
        out.status.success(),
        "podman image mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mnt = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let view = strata_tests::tree::snapshot(Path::new(&mnt));
    let out = podman(dir)?.args(["image", "umount", "-a"]).output()?;
    ensure!(out.status.success(), "podman image umount");
    view
}

/// containers/storage (podman 4.3's partial pull) reads strata's TOC and frames: the tree
/// it builds from strata's push equals the one it builds from skopeo's conversion of the
/// same image (Debian's containers/storage 1.43 drops fifos and file times in partial
/// pulls of either, hence a comparison with skopeo's, not with a full pull).
#[test]
fn podman_partial_pull_of_strata_zstd_chunked_equals_skopeos() -> Result<()> {
    if !have_root("podman_partial_pull_of_strata_zstd_chunked_equals_skopeos") {
        return Ok(());
    }
    let env = env();
    let target = Registry::start()?;
    let from_skopeo = format!("{}/test/skopeo-zc:v1", target.host);
    skopeo(&[
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--dest-compress-format",
        "zstd:chunked",
        &format!("oci:{}:layers", env.tmp.path().join("layout").display()),
        &format!("docker://{from_skopeo}"),
    ])?;
    let s = &env.strata;
    strata_ok(s, &["pull", "-q", &env.layers])?;
    let from_strata = format!("{}/test/strata-zc:v1", target.host);
    strata_ok(s, &["tag", &env.layers, &from_strata])?;
    strata_ok(
        s,
        &["push", "--compression-format", "zstd:chunked", &from_strata],
    )?;

    // Two stores: in one, the second pull would reuse the first one's layers.
    let skopeo_view = podman_partial_view(&env.tmp.path().join("podman-a"), &from_skopeo, 3)?;
    let strata_view = podman_partial_view(&env.tmp.path().join("podman-b"), &from_strata, 3)?;
    assert!(skopeo_view.contains_key(Path::new("bin/busybox")));
    let differences = diff(&skopeo_view, &strata_view);
    assert!(
        differences.is_empty(),
        "podman's partial pull of strata's push differs from skopeo's (- skopeo, + strata):\n{}",
        differences.join("\n")
    );
    Ok(())
}
