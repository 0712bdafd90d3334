//! Lazy pulling: an eStargz layer (written by strata) read chunk by chunk from the real
//! registry with Range requests, against the same tar indexed whole.

use std::ffi::OsStr;
use std::fs::File;

use anyhow::Result;
use strata_fs::layer::index::{build_index, build_index_from_entries, IndexLimits, IndexedLayer};
use strata_fs::layer::{Layer, LayerDirEntry, LayerPath};
use strata_fs::Errno;
use strata_image::digest::Digest;
use strata_image::lazy::cache::{BlobCache, ChunkCache};
use strata_image::lazy::{estargz, Format, LazyData, RegistryChunks};
use strata_image::registry::Client;
use strata_tests::registry::Registry;

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
