//! Hostile layer tars through `strata pull` (served by the small test registry): each is
//! refused with an error naming the entry, nothing is stored, nothing outside the store is
//! touched; the tricks that are harmless (absolute names, duplicates) give tar's result.

use std::path::Path;

use strata_tests::fake_registry::{FakeRegistry, Faults};
use strata_tests::mounts::{is_mounted, unmount, Driver};
use strata_tests::oci::{busybox_layer, Compression, ImageBuilder};
use strata_tests::strata::Strata;
use strata_tests::users::have_root;
use tar::{EntryType, Header};
use tempfile::TempDir;

/// A tar written entry by entry, names as raw bytes (the tar crate refuses to write `..`).
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Tar {
        Tar(tar::Builder::new(Vec::new()))
    }

    fn entry(mut self, path: &str, kind: EntryType, link: &str, data: &[u8]) -> Tar {
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(if kind == EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    fn file(self, path: &str, data: &str) -> Tar {
        self.entry(path, EntryType::Regular, "", data.as_bytes())
    }

    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

struct Served {
    tmp: TempDir,
    strata: Strata,
    _registry: FakeRegistry,
    reference: String,
}

/// An image of busybox plus `top`, served by the test registry; an empty store.
fn serve(top: Vec<u8>, compression: Compression) -> Served {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    ImageBuilder::new()
        .layer(&busybox_layer().unwrap())
        .unwrap()
        .raw_layer(top, compression)
        .write_layout(&layout, "t")
        .unwrap();
    let registry = FakeRegistry::serve(&layout, "t", Faults::default()).unwrap();
    let strata = Strata::new(&tmp.path().join("store")).unwrap();
    let reference = format!("{}/hostile/image:t", registry.host);
    Served {
        tmp,
        strata,
        _registry: registry,
        reference,
    }
}

/// Names under `dir`, recursively; empty when it does not exist.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

impl Served {
    /// `strata pull` fails naming `want`; no image, blob, layer index or temp file is left.
    #[track_caller]
    fn refused(&self, want: &[&str]) {
        let err = self.strata.run(&["pull", &self.reference]).fails(1);
        for w in want {
            assert!(err.contains(w), "the error should say {w:?}: {err}");
        }
        assert_eq!(self.strata.run(&["images", "-aq"]).ok().trim(), "");
        let root = self.strata.root();
        for dir in ["blobs", "layers", "tmp"] {
            let left = files_under(&root.join(dir));
            assert!(left.is_empty(), "left in {dir}/: {left:?}");
        }
    }

    /// Pulls and mounts the image read-only; the guard unmounts.
    fn mounted(&self) -> Mount {
        self.strata.run(&["pull", "-q", &self.reference]).ok();
        let dir = self.tmp.path().join("mnt");
        std::fs::create_dir_all(&dir).unwrap();
        self.strata
            .run(&["mount", &self.reference, dir.to_str().unwrap()])
            .ok();
        assert!(is_mounted(&dir));
        Mount(dir)
    }
}

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = unmount(&self.0, Driver::Strata);
    }
}

#[test]
fn dot_dot_names_are_refused() {
    for name in ["../escaped", "a/../../escaped", "./../../../../tmp/escaped"] {
        let s = serve(Tar::new().file(name, "x").bytes(), Compression::Gzip);
        s.refused(&[name, "leaves the layer"]);
    }
}

#[test]
fn writing_through_a_symlink_of_the_layer_is_refused() {
    let victim = tempfile::tempdir().unwrap();
    let target = victim.path().to_str().unwrap().to_string();
    let tar = Tar::new()
        .entry("etc", EntryType::Symlink, &target, b"")
        .file("etc/planted", "owned")
        .bytes();
    let s = serve(tar, Compression::Gzip);
    s.refused(&["etc/planted", "below etc, a symlink"]);
    assert!(!victim.path().join("planted").exists());
}

#[test]
fn hard_links_out_of_the_layer_are_refused() {
    for (target, why) in [
        ("/etc/shadow", "not an earlier entry of the layer"),
        ("../../../../etc/shadow", "outside the layer"),
        ("later", "not an earlier entry of the layer"),
    ] {
        let tar = Tar::new()
            .entry("h", EntryType::Link, target, b"")
            .file("later", "l")
            .bytes();
        let s = serve(tar, Compression::None);
        s.refused(&["entry h: hard link to", target, why]);
    }
}

#[test]
fn a_decompression_bomb_stops_at_the_size_cap() {
    // 64 MiB of zeros: a few KiB of zstd.
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = Header::new_gnu();
    h.set_size(64 << 20);
    h.set_mode(0o644);
    h.set_cksum();
    let zeros = std::io::Read::take(std::io::repeat(0), 64 << 20);
    tar.append_data(&mut h, "zeros", zeros).unwrap();
    let s = serve(tar.into_inner().unwrap(), Compression::Zstd);
    let err = s
        .strata
        .command(&["pull", &s.reference])
        .env("STRATA_MAX_LAYER_BYTES", (8u64 << 20).to_string())
        .output()
        .unwrap();
    assert_eq!(err.status.code(), Some(1));
    let err = String::from_utf8_lossy(&err.stderr);
    assert!(
        err.contains("larger than the limit of 8388608 bytes"),
        "{err}"
    );
    assert!(err.contains("zeros"), "the entry is named: {err}");
    assert_eq!(s.strata.run(&["images", "-aq"]).ok().trim(), "");
    assert!(files_under(&s.strata.root().join("layers")).is_empty());
}

#[test]
fn absolute_names_stay_in_the_layer_and_the_last_duplicate_wins() {
    if !have_root("absolute_names_stay_in_the_layer_and_the_last_duplicate_wins") {
        return;
    }
    let outside = tempfile::tempdir().unwrap();
    let abs = format!("{}/abs", outside.path().display());
    let tar = Tar::new()
        .file(&abs, "inside")
        .file("dup", "first")
        .file("dup", "second")
        .entry("d", EntryType::Directory, "", b"")
        .file("d/child", "c")
        .entry("d", EntryType::Directory, "", b"")
        .bytes();
    let s = serve(tar, Compression::Gzip);
    let m = s.mounted();
    assert!(!outside.path().join("abs").exists(), "written outside");
    assert_eq!(
        std::fs::read_to_string(m.0.join(abs.trim_start_matches('/'))).unwrap(),
        "inside"
    );
    assert_eq!(std::fs::read_to_string(m.0.join("dup")).unwrap(), "second");
    assert_eq!(std::fs::read_to_string(m.0.join("d/child")).unwrap(), "c");
    // busybox from the layer below is still there
    assert!(m.0.join("bin/busybox").is_file());
}
