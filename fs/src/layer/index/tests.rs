//! Index building and reading, over tars written here byte by byte (so hostile names can
//! be spelled exactly as an attacker would).

use std::ffi::OsStr;
use std::path::Path;

use ::tar::{EntryType, Header};

use super::*;
use crate::attr::FileKind;
use crate::errno::Errno;
use crate::layer::{Layer, LayerDirEntry, LayerPath, Lookup};

/// A tar written entry by entry with names as raw bytes.
struct Tar(::tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Tar {
        Tar(::tar::Builder::new(Vec::new()))
    }

    fn header(path: &[u8], kind: EntryType, mode: u32, size: u64) -> Header {
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..path.len()].copy_from_slice(path);
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h
    }

    fn append(mut self, mut h: Header, data: &[u8]) -> Tar {
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    fn file(self, path: &str, data: &str) -> Tar {
        let h = Tar::header(
            path.as_bytes(),
            EntryType::Regular,
            0o644,
            data.len() as u64,
        );
        self.append(h, data.as_bytes())
    }

    fn dir(self, path: &str, mode: u32) -> Tar {
        let h = Tar::header(path.as_bytes(), EntryType::Directory, mode, 0);
        self.append(h, b"")
    }

    fn link(self, kind: EntryType, path: &str, target: &str) -> Tar {
        let mut h = Tar::header(path.as_bytes(), kind, 0o777, 0);
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
        self.append(h, b"")
    }

    fn symlink(self, path: &str, target: &str) -> Tar {
        self.link(EntryType::Symlink, path, target)
    }

    fn hardlink(self, path: &str, target: &str) -> Tar {
        self.link(EntryType::Link, path, target)
    }

    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

fn build(
    tar: &[u8],
) -> (
    tempfile::TempDir,
    std::result::Result<IndexSummary, IndexError>,
) {
    build_with(tar, &IndexLimits::default())
}

fn build_with(
    tar: &[u8],
    limits: &IndexLimits,
) -> (
    tempfile::TempDir,
    std::result::Result<IndexSummary, IndexError>,
) {
    let dir = tempfile::tempdir().unwrap();
    let r = build_index(&mut &tar[..], dir.path(), limits);
    (dir, r)
}

fn open(tar: &[u8]) -> (tempfile::TempDir, IndexedLayer) {
    let (dir, r) = build(tar);
    r.unwrap();
    let layer = IndexedLayer::open(dir.path()).unwrap();
    (dir, layer)
}

fn p(s: &str) -> LayerPath {
    LayerPath::from_bytes(s.as_bytes())
}

fn read(layer: &IndexedLayer, path: &str) -> Vec<u8> {
    let f = layer.open(&p(path)).unwrap();
    assert!(f.host_fd().is_none(), "a range of the tar is no host file");
    let mut buf = vec![0u8; f.len() as usize + 1];
    let n = f.read_at(&mut buf, 0).unwrap();
    assert_eq!(n as u64, f.len(), "reads stop at the file's end");
    buf.truncate(n);
    buf
}

fn names(layer: &IndexedLayer, dir: &str) -> Vec<String> {
    layer
        .read_dir(&p(dir))
        .unwrap()
        .into_iter()
        .map(|e| match e {
            LayerDirEntry::Entry { name, .. } => name.to_string_lossy().into_owned(),
            LayerDirEntry::Whiteout(n) => format!("-{}", n.to_string_lossy()),
        })
        .collect()
}

#[test]
fn serves_what_the_tar_holds() {
    let mut t = Tar::new()
        .dir("./", 0o755)
        .dir("etc/", 0o750)
        .file("etc/hosts", "127.0.0.1 localhost\n")
        .symlink("etc/link", "/etc/hosts")
        .hardlink("etc/hard", "etc/hosts");
    let mut dev = Tar::header(b"dev/null", EntryType::Char, 0o666, 0);
    dev.set_device_major(1).unwrap();
    dev.set_device_minor(3).unwrap();
    dev.set_uid(7);
    dev.set_gid(8);
    t = t.dir("dev/", 0o755).append(dev, b"");
    let fifo = Tar::header(b"dev/fifo", EntryType::Fifo, 0o600, 0);
    t = t.append(fifo, b"");
    // A PAX long name and an xattr.
    let long = format!("etc/{}", "n".repeat(200));
    let mut h = Header::new_ustar();
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o4755);
    h.set_size(2);
    let mut b = t.0;
    b.append_pax_extensions([
        ("path", long.as_bytes()),
        ("SCHILY.xattr.user.k", &b"v\0x"[..]),
    ])
    .unwrap();
    h.set_cksum();
    b.append(&h, &b"hi"[..]).unwrap();
    let tar = Tar(b).bytes();

    let (dir, layer) = open(&tar);
    assert_eq!(std::fs::read(dir.path().join(DATA_FILE)).unwrap(), tar);
    assert_eq!(names(&layer, ""), ["dev", "etc"]);
    let mut etc = names(&layer, "etc");
    etc.sort();
    let mut want = vec!["hard", "hosts", "link", &long[4..]];
    want.sort();
    assert_eq!(etc, want);
    assert_eq!(read(&layer, "etc/hosts"), b"127.0.0.1 localhost\n");
    assert_eq!(read(&layer, &long), b"hi");
    let hosts = layer.stat(&p("etc/hosts")).unwrap();
    let hard = layer.stat(&p("etc/hard")).unwrap();
    assert_eq!((hosts.ino, hosts.nlink), (hard.ino, 2));
    assert_eq!(layer.stat(&p("etc")).unwrap().perm, 0o750);
    assert_eq!(layer.read_link(&p("etc/link")).unwrap(), b"/etc/hosts");
    let null = layer.stat(&p("dev/null")).unwrap();
    assert_eq!(null.kind, FileKind::CharDevice);
    assert_eq!(null.rdev, libc::makedev(1, 3));
    assert_eq!((null.uid, null.gid), (7, 8));
    assert_eq!(layer.stat(&p("dev/fifo")).unwrap().kind, FileKind::Fifo);
    let xa = layer.stat(&p(&long)).unwrap();
    assert_eq!(xa.perm, 0o4755);
    assert_eq!(
        layer.get_xattr(&p(&long), OsStr::new("user.k")).unwrap(),
        Some(b"v\0x".to_vec())
    );
    assert_eq!(layer.list_xattrs(&p(&long)).unwrap(), ["user.k"]);
    assert_eq!(layer.stat(&p("nope")).unwrap_err(), Errno::ENOENT);
    assert!(matches!(
        layer.lookup(&p("etc/hosts"), OsStr::new("x")).unwrap(),
        Lookup::Missing
    ));
    assert_eq!(layer.stat(&p("")).unwrap().nlink, 4);
}

#[test]
fn whiteouts_and_opaque_markers_decode() {
    let tar = Tar::new()
        .dir("a/", 0o755)
        .file("a/.wh..wh..opq", "")
        .file(".wh.gone", "")
        .file("b/.wh.old", "")
        // whited out and recreated in the same layer: the new directory hides the lower one
        .file(".wh.re", "")
        .dir("re/", 0o755)
        // a name of this layer survives its own whiteout
        .file("kept", "k")
        .file(".wh.kept", "")
        .bytes();
    let (_d, layer) = open(&tar);
    let root = LayerPath::root();
    assert!(matches!(
        layer.lookup(&root, OsStr::new("gone")).unwrap(),
        Lookup::Whiteout
    ));
    assert!(matches!(
        layer.lookup(&root, OsStr::new("a")).unwrap(),
        Lookup::Found { opaque: true, .. }
    ));
    assert!(matches!(
        layer.lookup(&root, OsStr::new("b")).unwrap(),
        Lookup::Found { opaque: false, .. }
    ));
    assert!(matches!(
        layer.lookup(&root, OsStr::new("re")).unwrap(),
        Lookup::Found { opaque: true, .. }
    ));
    assert_eq!(read(&layer, "kept"), b"k");
    assert_eq!(names(&layer, "b"), ["-old"]);
    assert!(names(&layer, "a").is_empty());
}

#[test]
fn names_are_cleaned_and_duplicates_last_win() {
    let tar = Tar::new()
        .file("/abs/file", "1")
        .file("./abs//file", "2")
        .file("x/../y", "y")
        .dir("d/", 0o700)
        .file("d/child", "c")
        .dir("d/", 0o711)
        .file("swap", "file")
        .dir("swap/", 0o755)
        .bytes();
    let (_d, layer) = open(&tar);
    assert_eq!(read(&layer, "abs/file"), b"2");
    assert_eq!(read(&layer, "y"), b"y");
    // a directory again: new mode, children kept
    assert_eq!(layer.stat(&p("d")).unwrap().perm, 0o711);
    assert_eq!(read(&layer, "d/child"), b"c");
    assert_eq!(layer.stat(&p("swap")).unwrap().kind, FileKind::Directory);
    // names are cleaned lexically: `x/..` never makes `x`
    assert_eq!(layer.stat(&p("x")).unwrap_err(), Errno::ENOENT);
}

#[test]
fn hostile_archives_are_refused_with_the_entry_named() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (Tar::new().file("../evil", "x").bytes(), "../evil"),
        (Tar::new().file("a/../../evil", "x").bytes(), "a/../../evil"),
        (
            Tar::new()
                .symlink("etc", "/etc")
                .file("etc/passwd", "root::0:0::/:/bin/sh\n")
                .bytes(),
            "below etc, a symlink",
        ),
        (
            Tar::new().hardlink("h", "../../etc/shadow").bytes(),
            "outside the layer",
        ),
        (
            Tar::new().hardlink("h", "/etc/shadow").bytes(),
            "not an earlier entry",
        ),
        (
            Tar::new().file("f", "x").file("f/g", "y").bytes(),
            "below f, which is not a directory",
        ),
        (
            Tar::new().dir("d/", 0o755).hardlink("h", "d").bytes(),
            "is a directory",
        ),
    ];
    for (tar, want) in cases {
        let (dir, r) = build(&tar);
        let e = r.expect_err(want).to_string();
        assert!(e.contains(want), "{e:?} should mention {want:?}");
        assert!(
            !dir.path().join(INDEX_FILE).exists() && !dir.path().join(DATA_FILE).exists(),
            "nothing committed for {want}"
        );
    }
}

#[test]
fn limits_and_truncation_are_errors() {
    let tar = Tar::new().file("a", &"x".repeat(10_000)).bytes();
    let (_d, r) = build_with(
        &tar,
        &IndexLimits {
            max_bytes: 4096,
            ..IndexLimits::default()
        },
    );
    let e = r.unwrap_err();
    assert!(
        matches!(
            e,
            IndexError::TooLarge {
                max_bytes: 4096,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("4096 bytes"), "{e}");

    let tar = Tar::new()
        .file("a", "1")
        .file("b", "2")
        .file("c", "3")
        .bytes();
    let (_d, r) = build_with(
        &tar,
        &IndexLimits {
            max_entries: 2,
            ..IndexLimits::default()
        },
    );
    assert!(matches!(
        r,
        Err(IndexError::TooManyEntries { max_entries: 2 })
    ));

    let (_d, r) = build(&tar[..700]);
    let e = r.unwrap_err().to_string();
    assert!(e.contains("ends in the middle of entry a"), "{e}");
}

#[test]
fn a_damaged_index_is_refused_at_open() {
    let tar = Tar::new().file("a", "1").bytes();
    let (dir, r) = build(&tar);
    r.unwrap();
    let data = dir.path().join(DATA_FILE);
    std::fs::write(&data, b"short").unwrap();
    let e = IndexedLayer::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("the index was built over"), "{e}");
    std::fs::write(&data, &tar).unwrap();
    std::fs::write(dir.path().join(INDEX_FILE), b"STRATAIX\x09\0\0\0").unwrap();
    let e = IndexedLayer::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("not a layer index"), "{e}");
    assert!(IndexedLayer::open(Path::new("/nonexistent")).is_err());
}

/// Every entry below `dir`, read through the layer: stat, list, read, readlink, xattrs.
fn walk_all(layer: &IndexedLayer, dir: &LayerPath, depth: usize) {
    let Ok(entries) = layer.read_dir(dir) else {
        return;
    };
    for e in entries {
        let LayerDirEntry::Entry { name, .. } = e else {
            continue;
        };
        let path = dir.join(&name);
        let _ = layer.lookup(dir, &name);
        let Ok(attr) = layer.stat(&path) else {
            continue;
        };
        let _ = layer.list_xattrs(&path);
        match attr.kind {
            FileKind::Directory if depth < 32 => walk_all(layer, &path, depth + 1),
            FileKind::Regular => {
                if let Ok(f) = layer.open(&path) {
                    let mut buf = vec![0u8; f.len().min(1 << 16) as usize];
                    let _ = f.read_at(&mut buf, 0);
                }
            }
            FileKind::Symlink => {
                let _ = layer.read_link(&path);
            }
            _ => {}
        }
    }
}

/// Damaged archives (bytes flipped, cut short) give errors or a layer that reads without
/// panicking; the index of a damaged build is never half-written.
#[test]
fn corrupted_archives_never_panic() {
    let mut t = Tar::new()
        .dir("a/", 0o755)
        .file("a/f", "hello")
        .symlink("a/l", "f")
        .hardlink("a/h", "a/f")
        .file(".wh.x", "")
        .file("a/.wh..wh..opq", "");
    let mut h = Header::new_ustar();
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(3);
    t.0.append_pax_extensions([
        ("path", &b"long/name/here"[..]),
        ("SCHILY.xattr.user.x", &b"1"[..]),
    ])
    .unwrap();
    h.set_cksum();
    t.0.append(&h, &b"abc"[..]).unwrap();
    let good = t.bytes();
    let mut seed: u64 = 0x5eed_1dea;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..1500 {
        let mut bad = good.clone();
        for _ in 0..(1 + next() % 4) {
            let at = (next() % bad.len() as u64) as usize;
            bad[at] = next() as u8;
        }
        if round % 5 == 0 {
            let cut = (next() % bad.len() as u64) as usize;
            bad.truncate(cut);
        }
        let (dir, r) = build(&bad);
        match r {
            Ok(_) => {
                let layer = IndexedLayer::open(dir.path()).unwrap();
                walk_all(&layer, &LayerPath::root(), 0);
            }
            Err(_) => assert!(!dir.path().join(INDEX_FILE).exists()),
        }
    }
}

/// A damaged index (bytes flipped on disk) gives errors, never a panic or a read outside
/// the layer's data.
#[test]
fn corrupted_indexes_never_panic() {
    let tar = Tar::new()
        .dir("a/", 0o755)
        .file("a/f", "hello")
        .symlink("a/l", "f")
        .hardlink("a/h", "a/f")
        .file("b", "x")
        .bytes();
    let (dir, r) = build(&tar);
    r.unwrap();
    let index_path = dir.path().join(INDEX_FILE);
    let good = std::fs::read(&index_path).unwrap();
    let mut seed: u64 = 0xbad_1de5;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..1500 {
        let mut bad = good.clone();
        for _ in 0..(1 + next() % 3) {
            let at = (next() % bad.len() as u64) as usize;
            bad[at] = next() as u8;
        }
        std::fs::write(&index_path, &bad).unwrap();
        if let Ok(layer) = IndexedLayer::open(dir.path()) {
            walk_all(&layer, &LayerPath::root(), 0);
        }
    }
}

/// A source with no host file, as a remote one: the tar in memory, counting reads.
#[derive(Debug)]
struct MemSource {
    tar: Vec<u8>,
    reads: std::sync::atomic::AtomicUsize,
}

impl DataSource for MemSource {
    fn len(&self) -> u64 {
        self.tar.len() as u64
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> crate::errno::Result<usize> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let start = (offset as usize).min(self.tar.len());
        let n = buf.len().min(self.tar.len() - start);
        buf[..n].copy_from_slice(&self.tar[start..start + n]);
        Ok(n)
    }

    fn statfs(&self) -> crate::errno::Result<crate::layer::StatVfs> {
        Err(Errno::ENOSYS)
    }
}

#[test]
fn an_index_serves_any_data_source() {
    let tar = Tar::new()
        .file("a", "first")
        .file("d/b", &"b".repeat(3000))
        .bytes();
    let (dir, r) = build(&tar);
    r.unwrap();
    let source = MemSource {
        tar: tar.clone(),
        reads: Default::default(),
    };
    let layer = IndexedLayer::with_source(&dir.path().join(INDEX_FILE), source).unwrap();
    let f = layer.open(&p("d/b")).unwrap();
    assert!(f.host_fd().is_none());
    let mut buf = [0u8; 8];
    assert_eq!(f.read_at(&mut buf, 2996).unwrap(), 4);
    assert_eq!(&buf[..4], b"bbbb");
    let out = dir.path().join("copied");
    let dst = std::fs::File::create(&out).unwrap();
    f.copy_to(std::os::fd::AsFd::as_fd(&dst)).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), "b".repeat(3000).as_bytes());
    assert!(matches!(layer.statfs(), Err(Errno::ENOSYS)));
    // The source must be the tar the index describes.
    let short = MemSource {
        tar: tar[..tar.len() - 1].to_vec(),
        reads: Default::default(),
    };
    assert!(matches!(
        IndexedLayer::with_source(&dir.path().join(INDEX_FILE), short),
        Err(IndexError::BadIndex { .. })
    ));
}

#[test]
fn hard_link_group_is_found_by_the_walk() {
    let tar = Tar::new()
        .file("a/f", "data")
        .hardlink("a/h", "a/f")
        .hardlink("b/h2", "a/f")
        .file("a/other", "x")
        .bytes();
    let (_dir, layer) = open(&tar);
    let mut group: Vec<Vec<u8>> = layer
        .hard_links(&p("b/h2"))
        .unwrap()
        .iter()
        .map(|l| l.as_bytes().to_vec())
        .collect();
    group.sort();
    assert_eq!(group, [&b"a/f"[..], b"a/h", b"b/h2"]);
    assert_eq!(layer.hard_links(&p("a/other")).unwrap(), [p("a/other")]);
}

#[test]
fn hidden_root_names_stay_out_of_the_index_but_not_out_of_the_data() {
    let tar = Tar::new()
        .file("a", "1")
        .file("./meta.json", "{}")
        .file("d/meta.json", "kept below the root")
        .bytes();
    let (dir, r) = build_with(
        &tar,
        &IndexLimits {
            hidden: &["meta.json"],
            ..IndexLimits::default()
        },
    );
    r.unwrap();
    let layer = IndexedLayer::open(dir.path()).unwrap();
    let mut root = names(&layer, "");
    root.sort();
    assert_eq!(root, ["a", "d"]);
    assert_eq!(names(&layer, "d"), ["meta.json"]);
    assert_eq!(read(&layer, "a"), b"1");
    // The data is the tar byte for byte (its diff-id is the tar's).
    assert_eq!(std::fs::read(dir.path().join("data")).unwrap(), tar);
}
