//! The upper's format and its typed operations, on a temporary directory.

use super::*;

#[test]
fn override_stat_round_trips() {
    let v = format_override(1000, 100, 0o4755);
    assert_eq!(v, b"1000:100:04755");
    assert_eq!(parse_override(&v), Some((1000, 100, 0o4755)));
    assert_eq!(parse_override(b"0:0:0100644"), Some((0, 0, 0o644)));
    assert_eq!(parse_override(b"junk"), None);
}

#[test]
fn whiteout_names_respect_name_max() {
    assert_eq!(whiteout_file_name(OsStr::new("a")).unwrap(), ".wh.a");
    assert!(whiteout_file_name(OsStr::new(&"x".repeat(252))).is_none());
}

fn upper_in(dir: &Path) -> Upper {
    std::fs::create_dir_all(dir.join("upper")).unwrap();
    std::fs::create_dir_all(dir.join("work")).unwrap();
    Upper::open(
        &dir.join("upper"),
        &dir.join("work"),
        crate::mount::privileged(),
        false,
    )
    .unwrap()
}

#[test]
fn entry_reads_what_the_typed_operations_wrote() {
    use crate::attr::Timestamp;
    let tmp = tempfile::tempdir().unwrap();
    let upper = upper_in(tmp.path());
    let root = upper.root.clone();
    let lower = Attr {
        ino: 7,
        kind: FileKind::Regular,
        perm: 0o640,
        nlink: 3,
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
        rdev: 0,
        size: 5,
        blocks: 1,
        blksize: 4096,
        atime: Timestamp { sec: 10, nsec: 0 },
        mtime: Timestamp { sec: 20, nsec: 0 },
        ctime: Timestamp { sec: 20, nsec: 0 },
    };
    let copy = CopyIn {
        attr: lower,
        content: Content::MetaOnly,
        xattrs: vec![("user.k".into(), b"v".to_vec())],
        origin_ino: 42,
        index_key: Some(42),
        may_override: true,
    };
    upper.copy_in(copy, &root, OsStr::new("f")).unwrap();
    let e = Upper::entry(root.as_fd(), OsStr::new("f"))
        .unwrap()
        .unwrap();
    assert!(e.metacopy && !e.whiteout && !e.opaque);
    assert_eq!((e.origin_ino, e.nlink_diff), (Some(42), Some(1)));
    assert_eq!((e.attr.perm, e.attr.size, e.attr.mtime.sec), (0o640, 5, 20));
    assert!(upper.is_indexed(42).unwrap());
    // Host links: the name and the index; the union count is the lower one.
    let f = UpperRef::at(root.clone(), "f".into());
    assert_eq!(upper.stat(&f).unwrap().nlink, 3);
    assert_eq!(upper.stat(&upper.index_ref(42)).unwrap().nlink, 3);
    // Another name links to the index entry and moves from the lower count.
    upper.link_from_index(42, &root, OsStr::new("g")).unwrap();
    assert_eq!(upper.stat(&f).unwrap().nlink, 3);

    std::fs::create_dir(tmp.path().join("upper/d")).unwrap();
    upper.set_opaque(root.as_fd(), OsStr::new("d")).unwrap();
    upper
        .set_redirect(root.as_fd(), OsStr::new("d"), b"old/d")
        .unwrap();
    let d = Upper::entry(root.as_fd(), OsStr::new("d"))
        .unwrap()
        .unwrap();
    assert!(d.opaque);
    assert_eq!(d.redirect.as_deref(), Some(&b"/old/d"[..]));

    upper
        .create_whiteout(root.as_fd(), OsStr::new("gone"))
        .unwrap();
    let listed = Upper::read_dir(root.as_fd(), true).unwrap();
    assert!(listed
        .iter()
        .any(|e| matches!(e, UpperDirEntry::Whiteout(n) if n == "gone")));
    assert!(Upper::entry(root.as_fd(), OsStr::new("missing"))
        .unwrap()
        .is_none());
    // fuse-overlayfs marks a directory opaque with a marker file where xattrs fail.
    std::fs::create_dir(tmp.path().join("upper/m")).unwrap();
    let m = Upper::entry(root.as_fd(), OsStr::new("m"))
        .unwrap()
        .unwrap();
    assert!(!m.opaque);
    std::fs::write(tmp.path().join("upper/m/.wh..wh..opq"), "").unwrap();
    let m = Upper::entry(root.as_fd(), OsStr::new("m"))
        .unwrap()
        .unwrap();
    assert!(m.opaque);
}

#[test]
fn bookkeeping_xattrs_are_recognised() {
    for key in [
        "trusted.overlay.opaque",
        "user.overlay.redirect",
        "user.strata.ino",
    ] {
        assert!(is_bookkeeping_xattr(OsStr::new(key), false), "{key}");
    }
    assert!(!is_bookkeeping_xattr(OsStr::new("user.k"), true));
    assert!(!is_bookkeeping_xattr(OsStr::new(OVERRIDE_STAT), false));
    assert!(is_bookkeeping_xattr(OsStr::new(OVERRIDE_STAT), true));
}

#[test]
fn index_entries_of_an_earlier_strata_move_out_of_the_kernels_index_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (upper, work) = (dir.path().join("upper"), dir.path().join("work"));
    std::fs::create_dir_all(work.join("index")).unwrap();
    std::fs::create_dir(&upper).unwrap();
    std::fs::write(work.join("index/20000009a01b8"), "ours").unwrap();
    let kernel = "00fb2100".to_string() + &"ab".repeat(30);
    std::fs::write(work.join("index").join(&kernel), "the kernel's").unwrap();
    Upper::open(&upper, &work, false, false).unwrap();
    let moved = work.join(INDEX_DIR).join("20000009a01b8");
    assert_eq!(std::fs::read_to_string(moved).unwrap(), "ours");
    assert!(!work.join("index/20000009a01b8").exists());
    assert!(work.join("index").join(&kernel).exists());
}
