//! The merge without a mount: a union over temporary directory layers, driven through its
//! API. The FUSE-level suite (tests/) runs the same semantics through the kernel.

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::layer::DirLayer;
use crate::union::{Caller, NewKind, SetAttr};

struct Fixture {
    dir: tempfile::TempDir,
    union: Union,
}

fn layer(root: &Path, name: &str, files: &[(&str, Option<&str>)]) -> Arc<dyn Layer> {
    let base = root.join(name);
    fs::create_dir_all(&base).unwrap();
    for (path, content) in files {
        let p = base.join(path);
        match content {
            Some(c) => {
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(&p, c).unwrap();
            }
            None => fs::create_dir_all(&p).unwrap(),
        }
    }
    Arc::new(DirLayer::open(&base, 64).unwrap())
}

/// Top layer: `a` (file), `d/x`, OCI whiteout of `gone`, opaque `o/` with `o/new`.
/// Bottom layer: `b`, `d/y`, `gone`, `o/old`.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let top = layer(
        dir.path(),
        "top",
        &[
            ("a", Some("top-a")),
            ("d/x", Some("x")),
            (".wh.gone", Some("")),
            ("o/new", Some("n")),
            ("o/.wh..wh..opq", Some("")),
        ],
    );
    let bottom = layer(
        dir.path(),
        "bottom",
        &[
            ("a", Some("bottom-a")),
            ("b", Some("b")),
            ("d/y", Some("y")),
            ("gone", Some("g")),
            ("o/old", Some("o")),
        ],
    );
    fs::create_dir_all(dir.path().join("upper")).unwrap();
    fs::create_dir_all(dir.path().join("work")).unwrap();
    let upper = Upper::open(
        &dir.path().join("upper"),
        &dir.path().join("work"),
        crate::mount::privileged(),
        false,
    )
    .unwrap();
    let union = Union::new(UnionConfig {
        lowers: vec![top, bottom],
        upper: Some(upper),
        ids: IdMapper::default(),
        read_override: false,
        fd_cache: 64,
    });
    Fixture { dir, union }
}

fn names(u: &Union, ino: Ino) -> Vec<String> {
    let node = u.node(ino).unwrap();
    let mut v: Vec<String> = u
        .merged_listing(ino, &node)
        .unwrap()
        .into_iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn read_all(u: &Union, ino: Ino) -> String {
    let (fh, _) = u.open(ino, libc::O_RDONLY).unwrap();
    let mut buf = Vec::new();
    u.read(fh, 0, 4096, &mut buf).unwrap();
    u.release(fh);
    String::from_utf8(buf).unwrap()
}

fn me() -> Caller {
    Caller {
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
    }
}

#[test]
fn merged_listing_hides_whiteouts_and_respects_opaque_dirs() {
    let f = fixture();
    assert_eq!(names(&f.union, ROOT), ["a", "b", "d", "o"]);
    let d = f.union.lookup(ROOT, OsStr::new("d")).unwrap().attr.ino;
    assert_eq!(names(&f.union, d), ["x", "y"]);
    let o = f.union.lookup(ROOT, OsStr::new("o")).unwrap().attr.ino;
    assert_eq!(names(&f.union, o), ["new"]);
    assert_eq!(
        f.union.lookup(ROOT, OsStr::new("gone")).unwrap_err(),
        Errno::ENOENT
    );
    assert_eq!(
        f.union.lookup(ROOT, OsStr::new(".wh.gone")).unwrap_err(),
        Errno::ENOENT
    );
}

#[test]
fn top_layer_wins_and_write_copies_up() {
    let f = fixture();
    let a = f.union.lookup(ROOT, OsStr::new("a")).unwrap().attr.ino;
    assert_eq!(read_all(&f.union, a), "top-a");
    let (fh, _) = f.union.open(a, libc::O_WRONLY).unwrap();
    f.union.write(fh, 0, b"TOP").unwrap();
    f.union.release(fh);
    assert_eq!(read_all(&f.union, a), "TOP-a");
    assert_eq!(
        fs::read_to_string(f.dir.path().join("upper/a")).unwrap(),
        "TOP-a"
    );
    assert_eq!(
        fs::read_to_string(f.dir.path().join("top/a")).unwrap(),
        "top-a",
        "lower untouched"
    );
    // The number survives copy-up.
    assert_eq!(f.union.lookup(ROOT, OsStr::new("a")).unwrap().attr.ino, a);
}

#[test]
fn chmod_of_a_lower_file_copies_metadata_only() {
    let f = fixture();
    let b = f.union.lookup(ROOT, OsStr::new("b")).unwrap().attr.ino;
    let attr = f
        .union
        .setattr(
            b,
            SetAttr {
                mode: Some(0o600),
                ..SetAttr::default()
            },
        )
        .unwrap();
    assert_eq!(attr.perm, 0o600);
    assert_eq!(attr.size, 1);
    assert!(f.union.node(b).unwrap().place.metacopy);
    assert_eq!(read_all(&f.union, b), "b", "data still read from the lower");
    let (fh, _) = f.union.open(b, libc::O_RDWR).unwrap();
    f.union.release(fh);
    assert!(!f.union.node(b).unwrap().place.metacopy);
    assert_eq!(
        fs::read_to_string(f.dir.path().join("upper/b")).unwrap(),
        "b"
    );
}

#[test]
fn unlink_writes_a_whiteout_only_over_lower_names() {
    let f = fixture();
    f.union.unlink(ROOT, OsStr::new("b")).unwrap();
    assert_eq!(
        f.union.lookup(ROOT, OsStr::new("b")).unwrap_err(),
        Errno::ENOENT
    );
    assert_eq!(names(&f.union, ROOT), ["a", "d", "o"]);
    let (e, _) = f
        .union
        .create(
            ROOT,
            OsStr::new("fresh"),
            NewKind::Regular {
                flags: libc::O_WRONLY,
            },
            0o644,
            me(),
        )
        .unwrap();
    assert_eq!(e.attr.kind, FileKind::Regular);
    f.union.unlink(ROOT, OsStr::new("fresh")).unwrap();
    let left: Vec<_> = fs::read_dir(f.dir.path().join("upper"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !left.iter().any(|n| n.contains("fresh")),
        "no whiteout for an upper-only name: {left:?}"
    );
}

#[test]
fn recreated_directory_is_opaque() {
    let f = fixture();
    let d = f.union.lookup(ROOT, OsStr::new("d")).unwrap().attr.ino;
    f.union.unlink(d, OsStr::new("x")).unwrap();
    f.union.unlink(d, OsStr::new("y")).unwrap();
    f.union.rmdir(ROOT, OsStr::new("d")).unwrap();
    let (e, _) = f
        .union
        .create(ROOT, OsStr::new("d"), NewKind::Directory, 0o755, me())
        .unwrap();
    assert!(
        names(&f.union, e.attr.ino).is_empty(),
        "old lower children must not come back"
    );
}

#[test]
fn renamed_lower_directory_keeps_its_content() {
    let f = fixture();
    f.union
        .rename(ROOT, OsStr::new("d"), ROOT, OsStr::new("moved"), 0)
        .unwrap();
    assert_eq!(
        f.union.lookup(ROOT, OsStr::new("d")).unwrap_err(),
        Errno::ENOENT
    );
    let m = f.union.lookup(ROOT, OsStr::new("moved")).unwrap().attr.ino;
    assert_eq!(names(&f.union, m), ["x", "y"]);
    // A fresh union over the same layers and upper sees the same (redirect on disk).
    let upper = Upper::open(
        &f.dir.path().join("upper"),
        &f.dir.path().join("work"),
        crate::mount::privileged(),
        false,
    )
    .unwrap();
    let lowers = vec![
        Arc::new(DirLayer::open(&f.dir.path().join("top"), 64).unwrap()) as Arc<dyn Layer>,
        Arc::new(DirLayer::open(&f.dir.path().join("bottom"), 64).unwrap()),
    ];
    let again = Union::new(UnionConfig {
        lowers,
        upper: Some(upper),
        ids: IdMapper::default(),
        read_override: false,
        fd_cache: 64,
    });
    let m2 = again.lookup(ROOT, OsStr::new("moved")).unwrap().attr.ino;
    assert_eq!(m2, m, "inode number stable across remount");
    assert_eq!(names(&again, m2), ["x", "y"]);
    assert_eq!(
        again.lookup(ROOT, OsStr::new("d")).unwrap_err(),
        Errno::ENOENT
    );
}

#[test]
fn rename_noreplace_and_exchange() {
    let f = fixture();
    assert_eq!(
        f.union
            .rename(
                ROOT,
                OsStr::new("a"),
                ROOT,
                OsStr::new("b"),
                libc::RENAME_NOREPLACE
            )
            .unwrap_err(),
        Errno::EEXIST
    );
    f.union
        .rename(
            ROOT,
            OsStr::new("a"),
            ROOT,
            OsStr::new("b"),
            libc::RENAME_EXCHANGE,
        )
        .unwrap();
    let a = f.union.lookup(ROOT, OsStr::new("a")).unwrap().attr.ino;
    let b = f.union.lookup(ROOT, OsStr::new("b")).unwrap().attr.ino;
    assert_eq!(read_all(&f.union, a), "b");
    assert_eq!(read_all(&f.union, b), "top-a");
}

#[test]
fn names_too_long_or_malformed_are_refused() {
    let f = fixture();
    let long = "n".repeat(256);
    assert_eq!(
        f.union.lookup(ROOT, OsStr::new(&long)).unwrap_err(),
        Errno::ENAMETOOLONG
    );
    assert_eq!(
        f.union
            .create(ROOT, OsStr::new(&long), NewKind::Directory, 0o755, me())
            .unwrap_err(),
        Errno::ENAMETOOLONG
    );
    assert_eq!(
        f.union.lookup(ROOT, OsStr::new("a/b")).unwrap_err(),
        Errno::EINVAL
    );
}

#[test]
fn read_only_union_refuses_changes() {
    let dir = tempfile::tempdir().unwrap();
    let l = layer(dir.path(), "l", &[("f", Some("x"))]);
    let u = Union::new(UnionConfig {
        lowers: vec![l],
        upper: None,
        ids: IdMapper::default(),
        read_override: false,
        fd_cache: 16,
    });
    let f = u.lookup(ROOT, OsStr::new("f")).unwrap().attr.ino;
    assert_eq!(u.open(f, libc::O_WRONLY).unwrap_err(), Errno::EROFS);
    assert_eq!(u.unlink(ROOT, OsStr::new("f")).unwrap_err(), Errno::EROFS);
    assert_eq!(read_all(&u, f), "x");
}

#[test]
fn readlink_of_a_symlink_that_lost_a_hard_link() {
    let f = fixture();
    let (s, _) = f
        .union
        .create(ROOT, OsStr::new("s"), NewKind::Symlink(b"a"), 0o777, me())
        .unwrap();
    f.union.link(s.attr.ino, ROOT, OsStr::new("t")).unwrap();
    f.union.unlink(ROOT, OsStr::new("t")).unwrap();
    assert_eq!(f.union.readlink(s.attr.ino).unwrap(), b"a");
}

/// A union whose bottom layer has one file with three names, `h1`, `h2` and `r/h3`, under a
/// top layer holding `a`.
fn linked_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let top = layer(dir.path(), "top", &[("a", Some("top-a"))]);
    let bottom = dir.path().join("bottom");
    fs::create_dir_all(bottom.join("r")).unwrap();
    fs::write(bottom.join("h1"), "hard").unwrap();
    fs::hard_link(bottom.join("h1"), bottom.join("h2")).unwrap();
    fs::hard_link(bottom.join("h1"), bottom.join("r/h3")).unwrap();
    let bottom = Arc::new(DirLayer::open(&bottom, 64).unwrap());
    fs::create_dir_all(dir.path().join("upper")).unwrap();
    fs::create_dir_all(dir.path().join("work")).unwrap();
    let upper = Upper::open(
        &dir.path().join("upper"),
        &dir.path().join("work"),
        crate::mount::privileged(),
        false,
    )
    .unwrap();
    let union = Union::new(UnionConfig {
        lowers: vec![top, bottom],
        upper: Some(upper),
        ids: IdMapper::default(),
        read_override: false,
        fd_cache: 64,
    });
    Fixture { dir, union }
}

#[test]
fn lookup_of_a_lower_hard_link_shows_the_copied_up_file() {
    let f = linked_fixture();
    let h1 = f.union.lookup(ROOT, OsStr::new("h1")).unwrap().attr.ino;
    let (fh, _) = f.union.open(h1, libc::O_WRONLY).unwrap();
    f.union.write(fh, 0, b"harder!").unwrap();
    f.union.release(fh);
    let h2 = f.union.lookup(ROOT, OsStr::new("h2")).unwrap().attr;
    assert_eq!(h2.ino, h1);
    assert_eq!(h2.size, 7, "the lookup answered the lower file's size");
}

fn chmod(u: &Union, ino: Ino, mode: u32) -> Result<Attr> {
    u.setattr(
        ino,
        SetAttr {
            mode: Some(mode),
            ..SetAttr::default()
        },
    )
}

#[test]
fn removing_a_name_of_a_lower_hard_link_keeps_its_node_usable() {
    let f = linked_fixture();
    let n = f.union.lookup(ROOT, OsStr::new("h1")).unwrap().attr.ino;
    // The node answers to the name looked up last, which then goes.
    assert_eq!(f.union.lookup(ROOT, OsStr::new("h2")).unwrap().attr.ino, n);
    f.union.unlink(ROOT, OsStr::new("h2")).unwrap();
    let new = f.union.link(n, ROOT, OsStr::new("new")).unwrap();
    assert_eq!(new.attr.ino, n);
    assert_eq!(read_all(&f.union, n), "hard");
    assert_eq!(names(&f.union, ROOT), ["a", "h1", "new", "r"]);
    // A rename over the name the node answers to, likewise.
    let r = f.union.lookup(ROOT, OsStr::new("r")).unwrap().attr.ino;
    assert_eq!(f.union.lookup(r, OsStr::new("h3")).unwrap().attr.ino, n);
    f.union
        .rename(ROOT, OsStr::new("a"), r, OsStr::new("h3"), 0)
        .unwrap();
    assert_eq!(chmod(&f.union, n, 0o600).unwrap().perm, 0o600);
    let h1 = f.union.lookup(ROOT, OsStr::new("h1")).unwrap().attr;
    assert_eq!((h1.ino, h1.perm), (n, 0o600));
    let h3 = f.union.lookup(r, OsStr::new("h3")).unwrap().attr.ino;
    assert_eq!(read_all(&f.union, h3), "top-a");
}

#[test]
fn link_count_of_a_copied_up_hard_link_counts_its_lower_names() {
    let f = linked_fixture();
    let n = f.union.lookup(ROOT, OsStr::new("h1")).unwrap().attr.ino;
    assert_eq!(chmod(&f.union, n, 0o600).unwrap().nlink, 3);
    assert_eq!(f.union.getattr(n, None).unwrap().nlink, 3);
    f.union.unlink(ROOT, OsStr::new("h2")).unwrap();
    assert_eq!(
        f.union.lookup(ROOT, OsStr::new("h1")).unwrap().attr.nlink,
        2
    );
    let r = f.union.lookup(ROOT, OsStr::new("r")).unwrap().attr.ino;
    // Not copied up yet: answered from the index.
    assert_eq!(f.union.lookup(r, OsStr::new("h3")).unwrap().attr.nlink, 2);
    f.union.link(n, ROOT, OsStr::new("h4")).unwrap();
    assert_eq!(f.union.getattr(n, None).unwrap().nlink, 3);
}

#[test]
fn hard_link_outlives_the_forget_of_a_directory_it_was_named_in() {
    let f = linked_fixture();
    let n = f.union.lookup(ROOT, OsStr::new("h1")).unwrap().attr.ino;
    let r = f.union.lookup(ROOT, OsStr::new("r")).unwrap().attr.ino;
    assert_eq!(f.union.lookup(r, OsStr::new("h3")).unwrap().attr.ino, n);
    // The kernel drops r/h3 and r, and keeps the inode through h1.
    f.union.forget(r, 1);
    assert_eq!(chmod(&f.union, n, 0o600).unwrap().perm, 0o600);
    assert_eq!(
        f.union.lookup(ROOT, OsStr::new("h2")).unwrap().attr.perm,
        0o600
    );
}

/// A read-only union of `tops` (top first) over the fixture's two layers.
fn stacked(f: &Fixture, tops: &[&str]) -> Union {
    let mut lowers: Vec<Arc<dyn Layer>> = Vec::new();
    for name in tops.iter().chain(&["top", "bottom"]) {
        lowers.push(Arc::new(
            DirLayer::open(&f.dir.path().join(name), 64).unwrap(),
        ));
    }
    Union::new(UnionConfig {
        lowers,
        upper: None,
        ids: IdMapper::default(),
        read_override: false,
        fd_cache: 64,
    })
}

#[test]
fn renamed_directory_keeps_its_content_once_the_upper_is_a_lower() {
    let f = fixture();
    let n = f
        .union
        .create(ROOT, OsStr::new("n"), NewKind::Directory, 0o755, me())
        .unwrap()
        .0
        .attr
        .ino;
    f.union
        .rename(ROOT, OsStr::new("d"), n, OsStr::new("moved"), 0)
        .unwrap();
    let below = stacked(&f, &["upper"]);
    let n = below.lookup(ROOT, OsStr::new("n")).unwrap().attr.ino;
    let m = below.lookup(n, OsStr::new("moved")).unwrap().attr.ino;
    assert_eq!(names(&below, m), ["x", "y"]);
    assert_eq!(
        below.lookup(ROOT, OsStr::new("d")).unwrap_err(),
        Errno::ENOENT
    );
}

#[test]
fn relative_redirect_in_a_lower_is_a_name_in_the_same_parent() {
    let f = fixture();
    // As the kernel writes `mv d e` in the upper of a userxattr mount.
    let rel = f.dir.path().join("rel");
    fs::create_dir_all(rel.join("e")).unwrap();
    fs::write(rel.join("e/own"), "o").unwrap();
    let e = fs::File::open(rel.join("e")).unwrap();
    host::set_xattr(
        e.as_fd(),
        None,
        OsStr::new("user.overlay.redirect"),
        b"d",
        0,
    )
    .unwrap();
    let u = stacked(&f, &["rel"]);
    let e = u.lookup(ROOT, OsStr::new("e")).unwrap().attr.ino;
    assert_eq!(names(&u, e), ["own", "x", "y"]);
}

#[test]
fn first_copy_up_of_a_hard_link_puts_every_shown_name_in_the_upper() {
    use std::os::unix::fs::MetadataExt;
    let f = fixture();
    let bottom = f.dir.path().join("bottom");
    fs::write(bottom.join("h1"), "old").unwrap();
    fs::hard_link(bottom.join("h1"), bottom.join("d/h2")).unwrap();
    fs::hard_link(bottom.join("h1"), bottom.join("o/h3")).unwrap(); // hidden: `o` is opaque
                                                                    // Nothing was looked up yet: the layers have no listing of these directories cached.
    let h1 = f.union.lookup(ROOT, OsStr::new("h1")).unwrap().attr.ino;
    let (fh, _) = f.union.open(h1, libc::O_WRONLY).unwrap();
    f.union.write(fh, 0, b"new").unwrap();
    f.union.release(fh);
    let up = f.dir.path().join("upper");
    let ino = |p: &str| fs::metadata(up.join(p)).unwrap().ino();
    assert_eq!(
        ino("h1"),
        ino("d/h2"),
        "both shown names are one upper file"
    );
    assert!(
        !up.join("o/h3").exists(),
        "a name the union hides stays out"
    );
    assert_eq!(fs::read(up.join("d/h2")).unwrap(), b"new");
}

#[test]
fn tmpfile_has_no_name_until_linked() {
    let f = fixture();
    let u = &f.union;
    let (e, (fh, _)) = u.tmpfile(ROOT, libc::O_RDWR, 0o600, me()).unwrap();
    assert_eq!(e.attr.nlink, 0);
    assert_eq!(u.write(fh, 0, b"tmp").unwrap(), 3);
    assert!(!names(u, ROOT).iter().any(|n| n.is_empty() || n == "/"));
    assert_eq!(u.getattr(e.attr.ino, Some(fh)).unwrap().size, 3);
    let named = u.link(e.attr.ino, ROOT, OsStr::new("named")).unwrap();
    assert_eq!(named.attr.ino, e.attr.ino, "the link names the same node");
    assert_eq!(named.attr.nlink, 1);
    let found = u.lookup(ROOT, OsStr::new("named")).unwrap();
    assert_eq!(found.attr.ino, e.attr.ino);
    assert_eq!(read_all(u, found.attr.ino), "tmp");
}
