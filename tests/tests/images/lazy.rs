//! Lazy pulling: an eStargz layer (written by strata) read chunk by chunk from the real
//! registry with Range requests, against the same tar indexed whole; then through the
//! `strata` binary: `pull` (lazy) and `pull --full`, mounts and containers over them.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;

use anyhow::Result;
use std::time::Duration;
use strata_fs::layer::index::{build_index, build_index_from_entries, IndexLimits, IndexedLayer};
use strata_fs::layer::{Layer, LayerDirEntry, LayerPath};
use strata_fs::Errno;
use strata_image::digest::Digest;
use strata_image::lazy::cache::{BlobCache, ChunkCache};
use strata_image::lazy::{estargz, Format, LazyData, RegistryChunks};
use strata_image::registry::Client;
use strata_tests::containerd::Containerd;
use strata_tests::fake_registry::{FakeRegistry, Faults};
use strata_tests::fixture::LayerBuilder;
use strata_tests::mounts::{unmount, wait_for, Driver};
use strata_tests::oci::{busybox_layer, ImageBuilder};
use strata_tests::registry::Registry;
use strata_tests::strata::Strata;
use strata_tests::throttle::Throttle;
use strata_tests::tree::{diff, snapshot_with_times};
use strata_tests::users::{have_root, is_child, run_test_as_user, Rootless};

/// Everything a layer shows under `dir`, as lines: name, attributes, link, xattrs, bytes.
fn walk(layer: &dyn Layer, dir: &LayerPath, out: &mut Vec<String>) -> Result<()> {
    let mut entries = layer.read_dir(dir).map_err(errno)?;
    entries.sort_by(|a, b| name(a).cmp(name(b)));
    for e in entries {
        let LayerDirEntry::Entry { name, .. } = e else {
            out.push(format!("whiteout {:?}", name(&e)));
            continue;
        };
        let path = dir.join(&name);
        let a = layer.stat(&path).map_err(errno)?;
        let mut line = format!(
            "{name:?} {:?} {:o} {}:{} size={} nlink={} rdev={} mtime={}",
            a.kind, a.perm, a.uid, a.gid, a.size, a.nlink, a.rdev, a.mtime.sec
        );
        let mut keys = layer.list_xattrs(&path).map_err(errno)?;
        keys.sort();
        for k in keys {
            let v = layer.get_xattr(&path, &k).map_err(errno)?;
            line.push_str(&format!(" {k:?}={v:?}"));
        }
        match a.kind {
            strata_fs::attr::FileKind::Directory => {
                out.push(line);
                walk(layer, &path, out)?;
                continue;
            }
            strata_fs::attr::FileKind::Symlink => {
                let t = layer.read_link(&path).map_err(errno)?;
                line.push_str(&format!(" -> {:?}", String::from_utf8_lossy(&t)));
            }
            strata_fs::attr::FileKind::Regular => {
                let f = layer.open(&path).map_err(errno)?;
                let mut buf = vec![0; f.len() as usize];
                let n = f.read_at(&mut buf, 0).map_err(errno)?;
                line.push_str(&format!(" sha={}", Digest::of(&buf[..n])));
            }
            _ => {}
        }
        out.push(line);
    }
    Ok(())
}

fn name(e: &LayerDirEntry) -> &OsStr {
    match e {
        LayerDirEntry::Entry { name, .. } | LayerDirEntry::Whiteout(name) => name,
    }
}

fn errno(e: Errno) -> anyhow::Error {
    anyhow::anyhow!("layer call failed: {e:?}")
}

#[test]
fn estargz_layer_reads_from_the_registry_like_the_whole_tar_and_survives_a_registry_restart(
) -> Result<()> {
    let mut registry = Registry::start()?;
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    let tar = super::nasty_layer()
        .file("big/one", &big)
        .file("big/two", b"two")
        .tar_bytes(1_700_000_000)?;
    let mut blob = Vec::new();
    let written = estargz::write(&tar[..], &mut blob, 64 << 10)?;
    let digest = Digest::of(&blob);
    let size = blob.len() as u64;
    let repo = "test/lazy";
    let client = || Client::for_repo(&registry.host, &registry.host, repo, false, None);
    let push = client()?.for_push();
    let location = push.start_upload(&digest)?;
    push.finish_upload(&location, &digest, size, &blob[..])?;

    // Footer and TOC: two Range requests; the TOC checked against its digest.
    let fetcher = RegistryChunks::new(client()?, digest.clone());
    let opened = estargz::open(&fetcher, &digest, size, written.toc_digest.as_str())?;
    let dir = tempfile::tempdir()?;
    let index = opened.index;
    build_index_from_entries(
        index.entries,
        index.data_len,
        dir.path(),
        &IndexLimits::default(),
    )?;
    let index_path = dir.path().join("index");
    // A cache far smaller than the layer.
    let cache = ChunkCache::open(&dir.path().join("chunks"), 128 << 10)?;
    let blob_cache = BlobCache::open(&cache, digest.hex(), &index.chunks)?;
    let data = LazyData::new(
        Format::Estargz,
        index.chunks,
        index.data_len,
        fetcher,
        File::open(&index_path)?,
    )?
    .with_cache(blob_cache);
    let lazy = IndexedLayer::with_source(&index_path, data)?;

    let whole = tempfile::tempdir()?;
    build_index(&mut &tar[..], whole.path(), &IndexLimits::default())?;
    let whole = IndexedLayer::open(whole.path())?;

    let (mut lazy_view, mut whole_view) = (Vec::new(), Vec::new());
    walk(&lazy, &LayerPath::root(), &mut lazy_view)?;
    walk(&whole, &LayerPath::root(), &mut whole_view)?;
    assert_eq!(lazy_view, whole_view);
    assert!(lazy_view.iter().any(|l| l.contains("\"one\"")));
    assert!(!lazy_view.iter().any(|l| l.contains(estargz::TOC_NAME)));

    // Through a cache of 128 KiB, the walk's 300 KB file evicted its own first chunks
    // (chunks of one read are released in order, and evicted as they go).
    assert!(cache.used() <= 128 << 10);
    let two = lazy
        .open(&LayerPath::from_bytes(b"big/two"))
        .map_err(errno)?;
    let mut buf = [0u8; 8];
    assert_eq!(two.read_at(&mut buf, 0).map_err(errno)?, 3);

    registry.kill()?;
    // What is local keeps working; what is not is EIO, at once (not after a hang).
    let mut buf = [0u8; 8];
    assert_eq!(two.read_at(&mut buf, 0).map_err(errno)?, 3);
    assert_eq!(&buf[..3], b"two");
    let one = lazy
        .open(&LayerPath::from_bytes(b"big/one"))
        .map_err(errno)?;
    let mut buf = vec![0u8; 1000];
    assert_eq!(one.read_at(&mut buf, 1000), Err(Errno::EIO));
    // The registry back: the same read works, with the right bytes.
    registry.restart()?;
    assert_eq!(one.read_at(&mut buf, 1000).map_err(errno)?, 1000);
    assert_eq!(buf, big[1000..2000]);
    Ok(())
}

/// Bytes of a file that is no run of one byte: a chunk cut in the wrong place shows.
fn patterned(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

/// Bytes that do not compress (xorshift).
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Chunks of the eStargz layers these tests write: small, so one file is many chunks.
const TEST_CHUNK: u64 = 256 << 10;

/// An image whose top layer is eStargz (strata's writer): busybox (gzip, pulled whole)
/// under the nasty tree with two large files, pushed as `REGISTRY/test/lazy:v1`.
fn lazy_image(registry: &Registry, tmp: &std::path::Path) -> Result<String> {
    let top = super::nasty_layer()
        .file("big/one", patterned(3 << 20, 1))
        .file("big/two", patterned(700_000, 2))
        .mode(0o640)
        .owner(1000, 1000);
    let layout = tmp.join("layout");
    ImageBuilder::new()
        .layer(&busybox_layer()?)?
        .estargz_layer(&top, TEST_CHUNK)?
        .config("Cmd", serde_json::json!(["/bin/sh"]))
        .config("Env", serde_json::json!(["PATH=/bin"]))
        .write_layout(&layout, "lazy")?;
    registry.push(&layout, "lazy", "test/lazy:v1")
}

/// Runs `strata ARGS` with `env`, requiring success; returns stdout.
fn strata_ok(strata: &Strata, env: &[(&str, &str)], args: &[&str]) -> Result<String> {
    let out = strata.command(args).envs(env.iter().copied()).output()?;
    anyhow::ensure!(
        out.status.success(),
        "strata {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The lazy layer's chunk files in a store (there is one lazy layer in these tests).
fn chunk_dir(store: &std::path::Path) -> Result<std::path::PathBuf> {
    let mut dirs: Vec<_> = std::fs::read_dir(store.join("chunks"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    anyhow::ensure!(dirs.len() == 1, "chunk directories: {dirs:?}");
    Ok(dirs.remove(0))
}

/// Bytes of the chunks a cache directory marks present.
fn chunks_present(dir: &std::path::Path) -> Result<usize> {
    let ready = std::fs::read(dir.join("ready"))?;
    Ok(ready.iter().filter(|b| **b == 1).count())
}

#[test]
fn lazy_pull_mounts_and_runs_like_a_full_pull_and_full_completes_it() -> Result<()> {
    if !have_root("lazy_pull_mounts_and_runs_like_a_full_pull_and_full_completes_it") {
        return Ok(());
    }
    let registry = Registry::start()?;
    let tmp = tempfile::tempdir()?;
    let image = lazy_image(&registry, tmp.path())?;
    let lazy = Strata::new(&tmp.path().join("lazy-store"))?;
    let full = Strata::new(&tmp.path().join("full-store"))?;

    let out = strata_ok(&lazy, &[], &["pull", &image])?;
    assert!(out.contains("Lazy layer"), "{out}");
    assert!(out.contains("(estargz): 0B of"), "{out}");
    let out = strata_ok(&full, &[], &["pull", "--full", &image])?;
    assert!(!out.contains("Lazy layer"), "{out}");
    // Nothing of the lazy layer's files is local yet.
    assert_eq!(
        chunks_present(&chunk_dir(lazy.root()).unwrap_or_default()).unwrap_or(0),
        0
    );

    // ps shows a container whose image is still being fetched (no background fetch
    // here: it would make the whole layer local meanwhile).
    let off = [("STRATA_LAZY_BACKGROUND", "off")];
    let id = strata_ok(&lazy, &off, &["run", "-d", &image, "sleep", "1000"])?;
    let ps = strata_ok(&lazy, &[], &["ps"])?;
    strata_ok(&lazy, &[], &["rm", "-f", id.trim()])?;
    assert!(ps.contains("(fetching, 0% local)"), "{ps}");

    // The two views, byte for byte, owners, modes, times and xattrs.
    let (lazy_mnt, full_mnt) = (tmp.path().join("lazy-mnt"), tmp.path().join("full-mnt"));
    std::fs::create_dir(&lazy_mnt)?;
    std::fs::create_dir(&full_mnt)?;
    strata_ok(&lazy, &[], &["mount", &image, lazy_mnt.to_str().unwrap()])?;
    strata_ok(&full, &[], &["mount", &image, full_mnt.to_str().unwrap()])?;
    let lazy_view = snapshot_with_times(&lazy_mnt)?;
    let full_view = snapshot_with_times(&full_mnt)?;
    let differences = diff(&full_view, &lazy_view);
    assert!(
        differences.is_empty(),
        "a lazy mount differs from a full pull's (- full only, + lazy only):\n{}",
        differences.join("\n")
    );
    for hidden in estargz::HIDDEN {
        assert!(!lazy_mnt.join(hidden).exists(), "{hidden} shows lazily");
        assert!(
            !full_mnt.join(hidden).exists(),
            "{hidden} shows in a full pull"
        );
    }
    assert_eq!(
        std::fs::read(lazy_mnt.join("big/one"))?,
        patterned(3 << 20, 1)
    );
    // The files read are local now, and inspect says so.
    let chunks = chunk_dir(lazy.root())?;
    assert!(
        chunks_present(&chunks)? > 12,
        "3 MiB of 256 KiB chunks read"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&strata_ok(&lazy, &[], &["inspect", &image])?)?;
    let layers = inspect[0]["LazyLayers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(layers.len(), 1, "{inspect}");
    assert!(
        layers[0]["Local"].as_u64().unwrap_or(0) >= 3 << 20,
        "{inspect}"
    );
    assert!(
        layers[0]["Size"].as_u64().unwrap_or(0) >= 3_700_000,
        "{inspect}"
    );
    let df = strata_ok(
        &lazy,
        &[("STRATA_LAZY_CACHE_SIZE", "1G")],
        &["system", "df", "-v"],
    )?;
    assert!(
        df.contains("Lazy layers space usage (chunk cache") && df.contains("of 1.07GB)"),
        "{df}"
    );
    assert!(df.contains("estargz"), "{df}");
    let df = strata_ok(&full, &[], &["system", "df", "-v"])?;
    assert!(!df.contains("Lazy layers"), "{df}");
    unmount(&lazy_mnt, Driver::Strata)?;
    unmount(&full_mnt, Driver::Strata)?;

    // A container over the lazy layer reads the same bytes.
    let out = strata_ok(
        &lazy,
        &[],
        &[
            "run",
            "--rm",
            &image,
            "sh",
            "-c",
            "wc -c /big/two; cat /data/xattr",
        ],
    )?;
    assert_eq!(out, "700000 /big/two\nx");

    // What needs the blob says so, and how to get it.
    let elsewhere = format!("{}/test/elsewhere:v1", registry.host);
    strata_ok(&lazy, &[], &["tag", &image, &elsewhere])?;
    let err = lazy.run(&["push", &elsewhere]).fails(1);
    assert!(
        err.contains("pulled lazily") && err.contains("pull --full"),
        "{err}"
    );
    let archive = tmp.path().join("lazy.tar");
    let err = lazy
        .run(&["save", "-o", archive.to_str().unwrap(), &image])
        .fails(1);
    assert!(err.contains("pulled lazily"), "{err}");

    // --full completes the lazy image: the layer becomes a local one, its chunks go.
    let out = strata_ok(&lazy, &[], &["pull", "--full", &image])?;
    assert!(!out.contains("Lazy layer"), "{out}");
    assert!(!chunks.exists(), "the completed layer's chunks are kept");
    std::fs::create_dir_all(&lazy_mnt)?;
    strata_ok(&lazy, &[], &["mount", &image, lazy_mnt.to_str().unwrap()])?;
    let completed = snapshot_with_times(&lazy_mnt)?;
    unmount(&lazy_mnt, Driver::Strata)?;
    assert!(diff(&full_view, &completed).is_empty());
    let inspect: serde_json::Value =
        serde_json::from_str(&strata_ok(&lazy, &[], &["inspect", &image])?)?;
    assert_eq!(inspect[0]["LazyLayers"], serde_json::json!([]), "{inspect}");
    Ok(())
}

/// Bytes of the chunks a cache directory marks present (its `chunks` table: offset and
/// length of each chunk, 8 bytes each, little-endian).
fn bytes_present(dir: &std::path::Path) -> Result<u64> {
    let ready = std::fs::read(dir.join("ready"))?;
    let table = std::fs::read(dir.join("chunks"))?;
    Ok(ready
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == 1)
        .map(|(n, _)| u64::from_le_bytes(table[n * 16 + 8..n * 16 + 16].try_into().unwrap()))
        .sum())
}

#[test]
fn a_lazy_mount_reads_through_a_small_cache_and_outlives_its_registry() -> Result<()> {
    if !have_root("a_lazy_mount_reads_through_a_small_cache_and_outlives_its_registry") {
        return Ok(());
    }
    let mut registry = Registry::start()?;
    let tmp = tempfile::tempdir()?;
    let image = lazy_image(&registry, tmp.path())?;
    let strata = Strata::new(&tmp.path().join("store"))?;
    strata_ok(&strata, &[], &["pull", &image])?;
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt)?;
    // 512 KiB of cache for a 3 MiB file in 256 KiB chunks.
    let bound = 512u64 << 10;
    let env = [
        ("STRATA_LAZY_CACHE_SIZE", "512K"),
        ("STRATA_LAZY_TIMEOUT", "5"),
    ];
    strata_ok(&strata, &env, &["mount", &image, mnt.to_str().unwrap()])?;
    let one = patterned(3 << 20, 1);
    for _ in 0..2 {
        assert!(
            std::fs::read(mnt.join("big/one"))? == one,
            "big/one differs"
        );
    }
    let chunks = chunk_dir(strata.root())?;
    let present = bytes_present(&chunks)?;
    assert!(present <= bound, "{present} bytes cached, bound {bound}");
    let allocated = std::fs::metadata(chunks.join("data"))?.blocks() * 512;
    assert!(allocated <= 2 * bound, "{allocated} bytes allocated");

    // Files read last are local; with the registry gone it still reads, while the
    // beginning of big/one (evicted) fails with EIO rather than hang or come back wrong.
    assert_eq!(std::fs::read(mnt.join("data/xattr"))?, b"x");
    assert_eq!(std::fs::read_to_string(mnt.join("old/new"))?, "new");
    registry.kill()?;
    assert_eq!(std::fs::read(mnt.join("data/xattr"))?, b"x");
    assert_eq!(std::fs::read_to_string(mnt.join("old/new"))?, "new");
    // Out of the kernel's page cache, so that the read reaches the mount.
    let f = File::open(mnt.join("big/one"))?;
    nix::fcntl::posix_fadvise(
        std::os::fd::AsRawFd::as_raw_fd(&f),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )?;
    drop(f);
    let err = std::fs::read(mnt.join("big/one"))
        .map(|b| b.len())
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    registry.restart()?;
    assert!(
        std::fs::read(mnt.join("big/one"))? == one,
        "big/one differs"
    );
    unmount(&mnt, Driver::Strata)?;

    // rmi: the image's chunks go with it.
    strata_ok(&strata, &[], &["rmi", &image])?;
    assert!(!chunks.exists(), "chunks of a removed image are kept");
    Ok(())
}

#[test]
fn push_estargz_writes_an_image_that_pulls_lazily_and_shows_the_same_tree() -> Result<()> {
    if !have_root("push_estargz_writes_an_image_that_pulls_lazily_and_shows_the_same_tree") {
        return Ok(());
    }
    let registry = Registry::start()?;
    let tmp = tempfile::tempdir()?;
    // An ordinary gzip image: busybox under the nasty tree.
    let layout = tmp.path().join("layout");
    let top = super::nasty_layer().file("big/one", patterned(5 << 20, 3));
    ImageBuilder::new()
        .layer(&busybox_layer()?)?
        .layer(&top)?
        .config("Cmd", serde_json::json!(["/bin/sh"]))
        .config("Env", serde_json::json!(["PATH=/bin"]))
        .write_layout(&layout, "plain")?;
    let plain = registry.push(&layout, "plain", "test/plain:v1")?;
    let here = Strata::new(&tmp.path().join("here"))?;
    strata_ok(&here, &[], &["pull", "--full", &plain])?;
    let esgz = format!("{}/test/esgz:v1", registry.host);
    strata_ok(&here, &[], &["tag", &plain, &esgz])?;
    strata_ok(
        &here,
        &[],
        &["push", "--compression-format", "estargz", &esgz],
    )?;

    // Elsewhere, the pushed image pulls lazily (both layers) and shows the same tree.
    let there = Strata::new(&tmp.path().join("there"))?;
    let out = strata_ok(&there, &[], &["pull", &esgz])?;
    assert_eq!(out.matches("Lazy layer").count(), 2, "{out}");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir(&a)?;
    std::fs::create_dir(&b)?;
    strata_ok(&here, &[], &["mount", &plain, a.to_str().unwrap()])?;
    strata_ok(&there, &[], &["mount", &esgz, b.to_str().unwrap()])?;
    let (full_view, lazy_view) = (snapshot_with_times(&a)?, snapshot_with_times(&b)?);
    unmount(&a, Driver::Strata)?;
    unmount(&b, Driver::Strata)?;
    let differences = diff(&full_view, &lazy_view);
    assert!(
        differences.is_empty(),
        "the eStargz push differs from its source (- source only, + pushed only):\n{}",
        differences.join("\n")
    );
    let out = strata_ok(&there, &[], &["run", "--rm", &esgz, "cat", "/data/owned"])?;
    assert_eq!(out, "o");
    Ok(())
}

#[test]
fn rootless_lazy_pull_runs_like_a_full_pull() {
    if !have_root("rootless_lazy_pull_runs_like_a_full_pull") {
        return;
    }
    run_test_as_user(
        "images::lazy::rootless_lazy_pull_runs_like_a_full_pull_child",
        Rootless::Host,
    )
    .unwrap();
}

#[test]
#[ignore = "run by rootless_lazy_pull_runs_like_a_full_pull"]
fn rootless_lazy_pull_runs_like_a_full_pull_child() -> Result<()> {
    assert!(is_child());
    let registry = Registry::start()?;
    let tmp = tempfile::tempdir()?;
    let image = lazy_image(&registry, tmp.path())?;
    let lazy = Strata::new(&tmp.path().join("lazy-store"))?;
    let full = Strata::new(&tmp.path().join("full-store"))?;
    let out = strata_ok(&lazy, &[], &["pull", &image])?;
    assert!(out.contains("Lazy layer"), "{out}");
    strata_ok(&full, &[], &["pull", "--full", &image])?;
    let script = "wc -c < /big/one; cat /data/xattr /old/new; ls /";
    let run = |s: &Strata| strata_ok(s, &[], &["run", "--rm", &image, "sh", "-c", script]);
    let (from_lazy, from_full) = (run(&lazy)?, run(&full)?);
    assert_eq!(from_lazy, from_full);
    assert!(from_lazy.starts_with("3145728\nxnew"), "{from_lazy}");
    assert!(!from_lazy.contains(estargz::TOC_NAME), "{from_lazy}");
    Ok(())
}

/// Fails with the command's output unless it exited 0.
#[track_caller]
fn ok(what: &str, run: strata_tests::containerd::Out) -> String {
    assert_eq!(run.code, 0, "{what}: {}{}", run.stdout, run.stderr);
    run.stdout
}

#[test]
fn ctr_remote_estargz_images_pull_lazily_and_strata_estargz_reads_in_ctr_remote() -> Result<()> {
    if !have_root("ctr_remote_estargz_images_pull_lazily_and_strata_estargz_reads_in_ctr_remote") {
        return Ok(());
    }
    let registry = Registry::start()?;
    let tmp = tempfile::Builder::new().prefix("strata-esgz").tempdir()?;
    let layout = tmp.path().join("layout");
    let top = super::nasty_layer().file("big/one", patterned(5 << 20, 4));
    ImageBuilder::new()
        .layer(&busybox_layer()?)?
        .layer(&top)?
        .config("Cmd", serde_json::json!(["/bin/sh"]))
        .config("Env", serde_json::json!(["PATH=/bin"]))
        .write_layout(&layout, "plain")?;
    let plain = registry.push(&layout, "plain", "test/plain:v1")?;
    let converted = format!("{}/test/converted:v1", registry.host);

    // containerd's converter (the Go estargz package) writes the eStargz image.
    let ctd = Containerd::start(&tmp.path().join("containerd"))?;
    ok(
        "pull",
        ctd.ctr_remote(&["images", "pull", "--plain-http", &plain]),
    );
    ok(
        "convert",
        ctd.ctr_remote(&[
            "images",
            "convert",
            "--estargz",
            "--oci",
            &plain,
            &converted,
        ]),
    );
    ok(
        "push",
        ctd.ctr_remote(&["images", "push", "--plain-http", &converted]),
    );

    let lazy = Strata::new(&tmp.path().join("lazy"))?;
    let full = Strata::new(&tmp.path().join("full"))?;
    let out = strata_ok(&lazy, &[], &["pull", &converted])?;
    assert_eq!(out.matches("Lazy layer").count(), 2, "{out}");
    strata_ok(&full, &[], &["pull", "--full", &plain])?;
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir(&a)?;
    std::fs::create_dir(&b)?;
    strata_ok(&full, &[], &["mount", &plain, a.to_str().unwrap()])?;
    strata_ok(&lazy, &[], &["mount", &converted, b.to_str().unwrap()])?;
    let (full_view, lazy_view) = (snapshot_with_times(&a)?, snapshot_with_times(&b)?);
    unmount(&a, Driver::Strata)?;
    unmount(&b, Driver::Strata)?;
    let differences = diff(&full_view, &lazy_view);
    assert!(
        differences.is_empty(),
        "ctr-remote's eStargz differs from its source (- source only, + lazy only):\n{}",
        differences.join("\n")
    );
    let out = strata_ok(&lazy, &[], &["run", "--rm", &converted, "cat", "/old/new"])?;
    assert_eq!(out, "new");

    // The other way: what strata's push writes, the Go package reads (its TOC digest
    // is the one strata annotated).
    let ours = format!("{}/test/ours:v1", registry.host);
    strata_ok(&full, &[], &["tag", &plain, &ours])?;
    strata_ok(
        &full,
        &[],
        &["push", "--compression-format", "estargz", &ours],
    )?;
    ok(
        "pull ours",
        ctd.ctr_remote(&["images", "pull", "--plain-http", &ours]),
    );
    let manifest: serde_json::Value = serde_json::from_str(&ok(
        "manifest",
        ctd.ctr(&["content", "get", &manifest_digest(&ctd, &ours)]),
    ))?;
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    assert_eq!(layers.len(), 2, "{manifest}");
    for l in layers {
        let digest = l["digest"].as_str().unwrap_or_default();
        let toc = ok(
            "get-toc-digest",
            ctd.ctr_remote(&["images", "get-toc-digest", digest]),
        );
        assert_eq!(
            toc.trim(),
            l["annotations"][estargz::TOC_DIGEST_ANNOTATION]
                .as_str()
                .unwrap_or("(none)"),
            "{l}"
        );
    }
    Ok(())
}

/// The manifest digest containerd has for `reference` (`ctr images ls`: REF TYPE DIGEST …).
fn manifest_digest(ctd: &Containerd, reference: &str) -> String {
    let out = ok("images ls", ctd.ctr(&["images", "ls"]));
    out.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&reference)).then(|| f.get(2).unwrap_or(&"").to_string())
        })
        .unwrap_or_else(|| panic!("{reference} not in ctr images ls:\n{out}"))
}

#[test]
fn a_lazy_mount_prefetches_the_landmark_region_then_fetches_the_rest_in_the_background(
) -> Result<()> {
    if !have_root(
        "a_lazy_mount_prefetches_the_landmark_region_then_fetches_the_rest_in_the_background",
    ) {
        return Ok(());
    }
    let mut registry = Registry::start()?;
    let tmp = tempfile::tempdir()?;
    // Files before the landmark are the prefetch region.
    let early = patterned(300_000, 5);
    let late = patterned(2 << 20, 6);
    let top = LayerBuilder::new()
        .file("early", &early)
        .file(estargz::LANDMARKS[0], [0xf])
        .file("late", &late);
    let layout = tmp.path().join("layout");
    ImageBuilder::new()
        .estargz_layer(&top, TEST_CHUNK)?
        .write_layout(&layout, "landmark")?;
    let image = registry.push(&layout, "landmark", "test/landmark:v1")?;
    let strata = Strata::new(&tmp.path().join("store"))?;
    strata_ok(&strata, &[], &["pull", &image])?;
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt)?;

    // Without the background fetch: the mount is ready with the region local, nothing
    // else, before any read.
    let off = [("STRATA_LAZY_BACKGROUND", "off")];
    strata_ok(&strata, &off, &["mount", &image, mnt.to_str().unwrap()])?;
    let chunks = chunk_dir(strata.root())?;
    assert_eq!(bytes_present(&chunks)?, early.len() as u64);
    assert!(!mnt.join(estargz::LANDMARKS[0]).exists());
    unmount(&mnt, Driver::Strata)?;

    // With it: the rest comes without a read, and then the registry is not needed.
    strata_ok(&strata, &[], &["mount", &image, mnt.to_str().unwrap()])?;
    let total = (early.len() + late.len()) as u64;
    let all_local = wait_for(Duration::from_secs(120), "the background fetch", || {
        bytes_present(&chunks).is_ok_and(|n| n == total)
    });
    registry.kill()?;
    all_local?;
    assert!(std::fs::read(mnt.join("late"))? == late, "late differs");
    assert!(std::fs::read(mnt.join("early"))? == early, "early differs");
    unmount(&mnt, Driver::Strata)?;
    Ok(())
}

#[test]
fn a_corrupt_chunk_is_eio_and_never_cached_while_its_neighbours_read() -> Result<()> {
    if !have_root("a_corrupt_chunk_is_eio_and_never_cached_while_its_neighbours_read") {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let good = patterned(100_000, 7);
    let bad = patterned(100_000, 8);
    let after = patterned(100_000, 9);
    let top = LayerBuilder::new()
        .file("good", &good)
        .file("bad", &bad)
        .file("after", &after);
    let layout = tmp.path().join("layout");
    let built = ImageBuilder::new()
        .estargz_layer(&top, TEST_CHUNK)?
        .write_layout(&layout, "corrupt")?;
    // The blob with a byte of `bad`'s gzip member flipped (its TOC and footer intact).
    let digest = built.layer_digests[0].clone();
    let mut blob = std::fs::read(layout.join("blobs/sha256").join(&digest[7..]))?;
    let n = blob.len() as u64;
    let toc_offset = estargz::parse_footer(&blob[(n - estargz::FOOTER_LEN) as usize..])
        .map_err(anyhow::Error::msg)?;
    let json =
        estargz::extract_toc(&blob[toc_offset as usize..(n - estargz::FOOTER_LEN) as usize])?;
    let toc = estargz::decode_toc(&json)?;
    let at = toc
        .entries
        .iter()
        .find(|e| e.name == "bad")
        .map(|e| e.offset)
        .expect("bad in the TOC");
    blob[at as usize + 40] ^= 0xff;
    let registry = FakeRegistry::serve(
        &layout,
        "corrupt",
        Faults {
            wrong_blob: Some((digest, blob)),
            ..Faults::default()
        },
    )?;
    let image = format!("{}/test/corrupt:v1", registry.host);
    let strata = Strata::new(&tmp.path().join("store"))?;
    strata_ok(&strata, &[], &["pull", "--insecure", &image])?;
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt)?;
    let off = [("STRATA_LAZY_BACKGROUND", "off")];
    strata_ok(&strata, &off, &["mount", &image, mnt.to_str().unwrap()])?;
    // `good` reads (the corrupt chunk it reads ahead is only left out), `bad` is EIO every
    // time, and `after` reads.
    assert!(std::fs::read(mnt.join("good"))? == good, "good differs");
    for _ in 0..2 {
        let err = std::fs::read(mnt.join("bad")).map(|b| b.len()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    }
    assert!(std::fs::read(mnt.join("after"))? == after, "after differs");
    unmount(&mnt, Driver::Strata)?;
    // Only the good chunks are in the cache.
    let present = bytes_present(&chunk_dir(strata.root())?)?;
    assert_eq!(present, (good.len() + after.len()) as u64);
    Ok(())
}

#[test]
fn a_mount_server_killed_mid_fetch_leaves_no_torn_chunk() -> Result<()> {
    if !have_root("a_mount_server_killed_mid_fetch_leaves_no_torn_chunk") {
        return Ok(());
    }
    let registry = Registry::start()?;
    let tmp = tempfile::tempdir()?;
    // Bytes that do not compress, so that the link paces their chunks.
    let one = noise(3 << 20);
    let layout = tmp.path().join("layout");
    ImageBuilder::new()
        .estargz_layer(&LayerBuilder::new().file("big/one", &one), TEST_CHUNK)?
        .write_layout(&layout, "noise")?;
    registry.push(&layout, "noise", "test/noise:v1")?;
    // 1 MB/s: reading the 3 MiB file takes seconds, time to kill the server in it.
    let slow = Throttle::start(&registry.host, 1_000_000, Duration::from_millis(5))?;
    let image = format!("{}/test/noise:v1", slow.addr);
    let strata = Strata::new(&tmp.path().join("store"))?;
    strata_ok(&strata, &[], &["pull", &image])?;
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt)?;
    let off = [("STRATA_LAZY_BACKGROUND", "off")];
    strata_ok(&strata, &off, &["mount", &image, mnt.to_str().unwrap()])?;
    let servers = super::mount::mount_servers(&mnt);
    assert_eq!(servers.len(), 1, "mount servers: {servers:?}");
    let path = mnt.join("big/one");
    let reader = std::thread::spawn(move || std::fs::read(path).map(|b| b.len()));
    let chunks = chunk_dir(strata.root())?;
    wait_for(Duration::from_secs(60), "a first chunk", || {
        chunks_present(&chunks).is_ok_and(|n| n > 0)
    })?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(servers[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    // It fails (its server is gone), unless it was done already.
    let _ = reader.join().expect("reader");
    std::process::Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(&mnt)
        .status()?;

    // A new server: what the cache marks present is whole (served from it), the rest is
    // fetched; the file is right.
    strata_ok(&strata, &off, &["mount", &image, mnt.to_str().unwrap()])?;
    assert!(
        std::fs::read(mnt.join("big/one"))? == one,
        "big/one differs"
    );
    unmount(&mnt, Driver::Strata)?;
    Ok(())
}

#[test]
fn two_mounts_reading_the_same_file_at_once_fetch_it_once() -> Result<()> {
    if !have_root("two_mounts_reading_the_same_file_at_once_fetch_it_once") {
        return Ok(());
    }
    let registry = Registry::start()?;
    let tmp = tempfile::tempdir()?;
    let one = noise(2 << 20);
    let layout = tmp.path().join("layout");
    ImageBuilder::new()
        .estargz_layer(&LayerBuilder::new().file("one", &one), TEST_CHUNK)?
        .write_layout(&layout, "noise")?;
    registry.push(&layout, "noise", "test/noise:v1")?;
    let slow = Throttle::start(&registry.host, 2_000_000, Duration::from_millis(5))?;
    let image = format!("{}/test/noise:v1", slow.addr);
    let strata = Strata::new(&tmp.path().join("store"))?;
    strata_ok(&strata, &[], &["pull", &image])?;
    let off = [("STRATA_LAZY_BACKGROUND", "off")];
    let mnts = [tmp.path().join("a"), tmp.path().join("b")];
    for m in &mnts {
        std::fs::create_dir(m)?;
        strata_ok(&strata, &off, &["mount", &image, m.to_str().unwrap()])?;
    }
    // Two processes (the mounts' servers) read it at once.
    let before = slow.bytes();
    let readers: Vec<_> = mnts
        .iter()
        .map(|m| {
            let path = m.join("one");
            std::thread::spawn(move || std::fs::read(path))
        })
        .collect();
    for r in readers {
        assert!(r.join().expect("reader")? == one, "one differs");
    }
    let fetched = slow.bytes() - before;
    for m in &mnts {
        unmount(m, Driver::Strata)?;
    }
    assert!(
        fetched < one.len() as u64 * 3 / 2,
        "{fetched} bytes fetched for a file of {}",
        one.len()
    );
    Ok(())
}

#[test]
fn a_lazy_mount_renews_its_expired_token_and_keeps_reading() -> Result<()> {
    if !have_root("a_lazy_mount_renews_its_expired_token_and_keeps_reading") {
        return Ok(());
    }
    // Refused with 401 and a challenge, then with 403 and none.
    renews_expired_token(false)?;
    renews_expired_token(true)
}

fn renews_expired_token(expired_is_forbidden: bool) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    // Incompressible, so that reading `first` does not read `second` ahead.
    let bytes = noise(2 << 20);
    let (first, second) = bytes.split_at(1 << 20);
    let layout = tmp.path().join("layout");
    ImageBuilder::new()
        .estargz_layer(
            &LayerBuilder::new()
                .file("first", first)
                .file("second", second),
            TEST_CHUNK,
        )?
        .write_layout(&layout, "token")?;
    let lifetime = Duration::from_secs(2);
    let registry = FakeRegistry::serve(
        &layout,
        "token",
        Faults {
            token_lifetime: Some(lifetime),
            expired_is_forbidden,
            ..Faults::default()
        },
    )?;
    let image = format!("{}/test/token:v1", registry.host);
    let strata = Strata::new(&tmp.path().join("store"))?;
    strata_ok(&strata, &[], &["pull", "--insecure", &image])?;
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt)?;
    let off = [("STRATA_LAZY_BACKGROUND", "off")];
    strata_ok(&strata, &off, &["mount", &image, mnt.to_str().unwrap()])?;
    assert!(std::fs::read(mnt.join("first"))? == first, "first differs");
    let tokens = |r: &FakeRegistry| {
        r.seen()
            .requests
            .iter()
            .filter(|q| q.starts_with("GET /token"))
            .count()
    };
    let before = tokens(&registry);
    // The mount's token is now refused: the next chunk needs a new one.
    std::thread::sleep(lifetime + Duration::from_millis(500));
    assert!(
        std::fs::read(mnt.join("second"))? == second,
        "second differs"
    );
    unmount(&mnt, Driver::Strata)?;
    assert!(
        tokens(&registry) > before,
        "no new token after expiry: {:?}",
        registry.seen().requests
    );
    Ok(())
}

#[test]
fn a_second_mount_prefetches_what_the_first_read_in_that_order() -> Result<()> {
    if !have_root("a_second_mount_prefetches_what_the_first_read_in_that_order") {
        return Ok(());
    }
    let registry = Registry::start()?;
    let tmp = tempfile::tempdir()?;
    // Incompressible, so that reading one file reads no other ahead.
    let bytes = noise(3 << 20);
    let (a, rest) = bytes.split_at(1 << 20);
    let (b, c) = rest.split_at(1 << 20);
    let layout = tmp.path().join("layout");
    ImageBuilder::new()
        .estargz_layer(
            &LayerBuilder::new().file("a", a).file("b", b).file("c", c),
            TEST_CHUNK,
        )?
        .write_layout(&layout, "order")?;
    let image = registry.push(&layout, "order", "test/order:v1")?;
    let strata = Strata::new(&tmp.path().join("store"))?;
    strata_ok(&strata, &[], &["pull", &image])?;
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt)?;
    let off = [("STRATA_LAZY_BACKGROUND", "off")];

    // The first mount reads c, then the start of b.
    strata_ok(&strata, &off, &["mount", &image, mnt.to_str().unwrap()])?;
    let chunks = chunk_dir(strata.root())?;
    assert_eq!(bytes_present(&chunks)?, 0, "fetched before any read");
    assert!(std::fs::read(mnt.join("c"))? == c, "c differs");
    let mut head = vec![0; 1000];
    File::open(mnt.join("b"))?.read_exact(&mut head)?;
    assert!(head == b[..1000], "b differs");
    unmount(&mnt, Driver::Strata)?;
    let read_first = bytes_present(&chunks)?;
    assert!(read_first >= c.len() as u64, "{read_first} bytes local");
    // The record: c's chunks, then b's first (which comes before c's in the blob).
    let layers: Vec<_> = std::fs::read_dir(strata.root().join("layers"))?
        .map(|e| e.map(|e| e.path().join("access-order")))
        .filter(|p| p.as_ref().map_or(true, |p| p.exists()))
        .collect::<std::io::Result<_>>()?;
    anyhow::ensure!(layers.len() == 1, "access orders: {layers:?}");
    let recorded: Vec<u32> = std::fs::read(&layers[0])?
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let in_c = (c.len() as u64).div_ceil(TEST_CHUNK) as usize;
    assert_eq!(recorded.len(), in_c + 1, "{recorded:?}");
    assert!(
        recorded[..in_c].iter().all(|n| *n > recorded[in_c]),
        "{recorded:?}"
    );

    // With the cache emptied, the next mount has them local before anything reads.
    std::fs::remove_dir_all(&chunks)?;
    strata_ok(&strata, &off, &["mount", &image, mnt.to_str().unwrap()])?;
    assert_eq!(bytes_present(&chunk_dir(strata.root())?)?, read_first);
    assert!(std::fs::read(mnt.join("c"))? == c, "c differs");
    assert!(std::fs::read(mnt.join("a"))? == a, "a differs");
    unmount(&mnt, Driver::Strata)?;
    Ok(())
}
