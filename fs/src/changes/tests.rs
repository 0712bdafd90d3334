//! The walk and the writer over uppers the in-process union wrote (so the format under test
//! is the one strata writes), and over a hand-made rootless upper (`.wh.NAME` whiteouts).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;
use crate::ids::IdMapper;
use crate::inode::{Ino, ROOT};
use crate::layer::DirLayer;
use crate::union::{Caller, NewKind, SetAttr, Union, UnionConfig};
use crate::upper::Upper;

struct Fixture {
    dir: tempfile::TempDir,
    lowers: Vec<Arc<dyn Layer>>,
    union: Union,
}

impl Fixture {
    fn upper(&self) -> PathBuf {
        self.dir.path().join("upper")
    }

    fn changes(&self) -> ChangeSet {
        changes(
            &self.upper(),
            Some(&self.dir.path().join("work")),
            &self.lowers,
        )
        .unwrap()
    }

    fn ino(&self, path: &str) -> Ino {
        let mut ino = ROOT;
        for name in path.split('/') {
            ino = self.union.lookup(ino, OsStr::new(name)).unwrap().attr.ino;
        }
        ino
    }

    fn write(&self, path: &str, data: &[u8]) {
        let (fh, _) = self.union.open(self.ino(path), libc::O_WRONLY).unwrap();
        self.union.write(fh, 0, data).unwrap();
        self.union.release(fh);
    }

    fn chmod(&self, path: &str, mode: u32) {
        self.union
            .setattr(
                self.ino(path),
                SetAttr {
                    mode: Some(mode),
                    ..SetAttr::default()
                },
            )
            .unwrap();
    }

    fn rename(&self, from: &str, to: &str) {
        let (fp, fname) = split(from);
        let (tp, tname) = split(to);
        let (fp, tp) = (self.dir_ino(fp), self.dir_ino(tp));
        self.union
            .rename(fp, OsStr::new(fname), tp, OsStr::new(tname), 0)
            .unwrap();
    }

    fn dir_ino(&self, path: &str) -> Ino {
        match path {
            "" => ROOT,
            p => self.ino(p),
        }
    }

    fn create(&self, path: &str, new: NewKind<'_>, perm: u32) {
        let (p, name) = split(path);
        let (_, opened) = self
            .union
            .create(self.dir_ino(p), OsStr::new(name), new, perm, me())
            .unwrap();
        if let Some((fh, _)) = opened {
            self.union.release(fh);
        }
    }
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

fn me() -> Caller {
    Caller {
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
    }
}

/// Lower layers from `(path, content)` lists (`None`: a directory), top first. `hl:TARGET`
/// content makes a hard link to an earlier path of the same layer.
fn fixture(layers: &[&[(&str, Option<&str>)]]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut lowers: Vec<Arc<dyn Layer>> = Vec::new();
    for (i, files) in layers.iter().enumerate() {
        let base = dir.path().join(format!("l{i}"));
        fs::create_dir_all(&base).unwrap();
        for (path, content) in *files {
            let p = base.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            match content {
                Some(c) if c.starts_with("hl:") => fs::hard_link(base.join(&c[3..]), &p).unwrap(),
                Some(c) => fs::write(&p, c).unwrap(),
                None => fs::create_dir_all(&p).unwrap(),
            }
        }
        lowers.push(Arc::new(DirLayer::open(&base, 64).unwrap()));
    }
    for d in ["upper", "work"] {
        fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    let upper = Upper::open(
        &dir.path().join("upper"),
        &dir.path().join("work"),
        crate::mount::privileged(),
        false,
    )
    .unwrap();
    let union = Union::new(UnionConfig {
        lowers: lowers.clone(),
        upper: Some(upper),
        ids: IdMapper::default(),
        read_override: false,
        fd_cache: 64,
    });
    Fixture { dir, lowers, union }
}

/// `K /path` lines, `+opaque` on opaque directories.
fn lines(set: &ChangeSet) -> Vec<String> {
    set.changes
        .iter()
        .map(|c| {
            format!(
                "{} {}{}",
                c.kind.letter(),
                String::from_utf8_lossy(&c.absolute()),
                if c.opaque { " +opaque" } else { "" }
            )
        })
        .collect()
}

fn change<'a>(set: &'a ChangeSet, path: &str) -> &'a Change {
    set.changes
        .iter()
        .find(|c| c.path.as_bytes() == path.as_bytes())
        .unwrap_or_else(|| panic!("no change at {path}"))
}

/// A tar entry as read back: type, mode, owner, size, link name, xattrs, data.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: ::tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    link: Option<PathBuf>,
    xattrs: BTreeMap<String, Vec<u8>>,
    data: Vec<u8>,
    rdev: (u32, u32),
}

fn read_tar(bytes: &[u8]) -> Vec<(String, Entry)> {
    let mut ar = ::tar::Archive::new(bytes);
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut xattrs = BTreeMap::new();
        if let Some(pax) = e.pax_extensions().unwrap() {
            for ext in pax {
                let ext = ext.unwrap();
                if let Some(k) = ext.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(k.to_string(), ext.value_bytes().to_vec());
                }
            }
        }
        let h = e.header().clone();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let link = e.link_name().unwrap().map(|l| l.into_owned());
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push((
            path,
            Entry {
                kind: h.entry_type(),
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                link,
                xattrs,
                data,
                rdev: (
                    h.device_major().unwrap().unwrap_or(0),
                    h.device_minor().unwrap().unwrap_or(0),
                ),
            },
        ));
    }
    out
}

fn tar_of(set: &ChangeSet, opts: &TarOptions) -> Vec<u8> {
    set.write_tar(opts, Vec::new()).unwrap()
}

#[test]
fn a_renamed_lower_directory_is_added_with_every_child_and_deleted_at_its_old_path() {
    let f = fixture(&[
        &[("etc/hosts", Some("h")), ("etc/sub/x", Some("x"))],
        &[
            ("etc/passwd", Some("root")),
            ("etc/hosts", Some("old")),
            ("etc/gone", Some("g")),
            ("keep", Some("k")),
        ],
    ]);
    f.union.unlink(f.ino("etc"), OsStr::new("gone")).unwrap();
    f.rename("etc", "etc2");
    f.write("etc2/hosts", b"H");
    let set = f.changes();
    assert_eq!(
        lines(&set),
        [
            "D /etc",
            "A /etc2",
            "A /etc2/hosts",
            "A /etc2/passwd",
            "A /etc2/sub",
            "A /etc2/sub/x",
        ]
    );
    // Children not copied up come from the lower the redirect names.
    assert_eq!(
        change(&set, "etc2/passwd").source,
        Some(Source::Lower(LowerEntry {
            layer: 1,
            path: LayerPath::from_bytes(b"etc/passwd"),
        }))
    );
    assert_eq!(
        change(&set, "etc2/hosts").source,
        Some(Source::Upper { data: None })
    );
    let tar = read_tar(&tar_of(&set, &TarOptions::default()));
    let names: Vec<&str> = tar.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        names,
        [
            ".wh.etc",
            "etc2",
            "etc2/hosts",
            "etc2/passwd",
            "etc2/sub",
            "etc2/sub/x"
        ]
    );
    let data = |p: &str| &tar.iter().find(|(n, _)| n == p).unwrap().1.data;
    assert_eq!(data("etc2/passwd"), b"root");
    assert_eq!(data("etc2/hosts"), b"H");
    assert_eq!(data("etc2/sub/x"), b"x");
}

#[test]
fn a_renamed_lower_directory_moved_inside_another_is_found_through_its_redirect() {
    let f = fixture(&[&[("a/d/f", Some("f")), ("b/keep", Some("k"))]]);
    f.rename("a/d", "b/d");
    assert_eq!(
        lines(&f.changes()),
        ["C /a", "D /a/d", "C /b", "A /b/d", "A /b/d/f"]
    );
}

#[test]
fn chmod_of_a_lower_file_is_a_change_whose_data_stays_in_the_lower() {
    let f = fixture(&[&[("bin/tool", Some("#!/bin/sh\n"))]]);
    f.chmod("bin/tool", 0o700);
    let set = f.changes();
    assert_eq!(lines(&set), ["C /bin", "C /bin/tool"]);
    // Only a metadata copy is in the upper: its data is the lower file's.
    assert_eq!(
        change(&set, "bin/tool").source,
        Some(Source::Upper {
            data: Some(LowerEntry {
                layer: 0,
                path: LayerPath::from_bytes(b"bin/tool"),
            })
        })
    );
    let tar = read_tar(&tar_of(&set, &TarOptions::default()));
    let (_, tool) = tar.iter().find(|(p, _)| p == "bin/tool").unwrap();
    assert_eq!(tool.data, b"#!/bin/sh\n");
    assert_eq!(tool.mode, 0o700);
}

#[test]
fn a_directory_deleted_and_made_again_is_opaque_and_holds_only_new_entries() {
    let f = fixture(&[&[("d/x", Some("x")), ("d/sub/y", Some("y"))]]);
    let d = f.ino("d");
    f.union.unlink(d, OsStr::new("x")).unwrap();
    let sub = f.ino("d/sub");
    f.union.unlink(sub, OsStr::new("y")).unwrap();
    f.union.rmdir(d, OsStr::new("sub")).unwrap();
    f.union.rmdir(ROOT, OsStr::new("d")).unwrap();
    f.create("d", NewKind::Directory, 0o755);
    f.create(
        "d/x",
        NewKind::Regular {
            flags: libc::O_WRONLY,
        },
        0o644,
    );
    let set = f.changes();
    assert_eq!(lines(&set), ["C /d +opaque", "A /d/x"]);
    let tar = read_tar(&tar_of(&set, &TarOptions::default()));
    let names: Vec<&str> = tar.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(names, ["d", "d/.wh..wh..opq", "d/x"]);
}

#[test]
fn kernel_format_whiteouts_are_deletions() {
    if !crate::mount::privileged() {
        // Only root may mknod the 0/0 device; the rootless format has its own test.
        return;
    }
    let f = fixture(&[&[("a", Some("a")), ("d/b", Some("b")), ("d/c", Some("c"))]]);
    f.union.unlink(ROOT, OsStr::new("a")).unwrap();
    f.union.unlink(f.ino("d"), OsStr::new("b")).unwrap();
    let meta = fs::symlink_metadata(f.upper().join("a")).unwrap();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert!(meta.file_type().is_char_device() && meta.rdev() == 0);
    let set = f.changes();
    assert_eq!(lines(&set), ["D /a", "C /d", "D /d/b"]);
    let tar = read_tar(&tar_of(&set, &TarOptions::default()));
    let names: Vec<&str> = tar.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(names, [".wh.a", "d", "d/.wh.b"]);
}

/// A rootless upper as fuse-overlayfs and strata write it without mknod: `.wh.NAME` files,
/// `user.overlay.opaque`, `user.containers.override_stat`.
#[test]
fn rootless_whiteout_files_opaque_xattrs_and_override_stat() {
    let dir = tempfile::tempdir().unwrap();
    let (lower, upper) = (dir.path().join("lower"), dir.path().join("upper"));
    for d in ["etc", "gone", "o/old"] {
        fs::create_dir_all(lower.join(d)).unwrap();
    }
    fs::write(lower.join("etc/passwd"), "root").unwrap();
    fs::write(lower.join("etc/hosts"), "h").unwrap();
    fs::create_dir_all(upper.join("etc")).unwrap();
    fs::write(upper.join("etc/passwd"), "root\nnew").unwrap();
    xattr_set(
        &upper.join("etc/passwd"),
        "user.containers.override_stat",
        b"0:42:0640",
    );
    xattr_set(&upper.join("etc/passwd"), "user.strata.ino", b"77");
    xattr_set(&upper.join("etc/passwd"), "user.mine", b"kept");
    fs::write(upper.join("etc/.wh.hosts"), "").unwrap();
    // A whiteout of a name no lower has deletes nothing.
    fs::write(upper.join("etc/.wh.never"), "").unwrap();
    fs::write(upper.join(".wh.gone"), "").unwrap();
    fs::create_dir_all(upper.join("o/new")).unwrap();
    xattr_set(&upper.join("o"), "user.overlay.opaque", b"y");
    let lowers: Vec<Arc<dyn Layer>> = vec![Arc::new(DirLayer::open(&lower, 16).unwrap())];
    let set = changes(&upper, None, &lowers).unwrap();
    assert_eq!(
        lines(&set),
        [
            "C /etc",
            "D /etc/hosts",
            "C /etc/passwd",
            "D /gone",
            "C /o +opaque",
            "A /o/new"
        ]
    );
    let opts = TarOptions {
        read_override: true,
        ids: IdMapper::default(),
    };
    let tar = read_tar(&tar_of(&set, &opts));
    let names: Vec<&str> = tar.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        names,
        [
            "etc",
            "etc/.wh.hosts",
            "etc/passwd",
            ".wh.gone",
            "o",
            "o/.wh..wh..opq",
            "o/new"
        ]
    );
    let (_, passwd) = tar.iter().find(|(p, _)| p == "etc/passwd").unwrap();
    assert_eq!((passwd.uid, passwd.gid, passwd.mode), (0, 42, 0o640));
    // The user's xattr goes as PAX; the upper's bookkeeping never does.
    assert_eq!(
        passwd.xattrs,
        BTreeMap::from([("user.mine".to_string(), b"kept".to_vec())])
    );
    let (_, o) = tar.iter().find(|(p, _)| p == "o").unwrap();
    assert!(o.xattrs.is_empty(), "{:?}", o.xattrs);
}

fn xattr_set(path: &Path, key: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, key, value, rustix::fs::XattrFlags::empty()).unwrap();
}

#[test]
fn a_write_through_one_name_of_a_lower_hard_link_carries_every_name() {
    let f = fixture(&[&[
        ("h1", Some("hard")),
        ("h2", Some("hl:h1")),
        ("r/h3", Some("hl:h1")),
        ("solo", Some("s")),
    ]]);
    f.write("h2", b"HARD");
    // A link made in the upper joins the group of the file it names.
    f.union
        .link(f.ino("solo"), ROOT, OsStr::new("solo2"))
        .unwrap();
    let set = f.changes();
    assert_eq!(
        lines(&set),
        ["C /h1", "C /h2", "C /r", "C /r/h3", "C /solo", "A /solo2"]
    );
    let ino = change(&set, "h2").ino;
    assert!(ino.is_some());
    assert_eq!(change(&set, "h1").ino, ino);
    assert_eq!(change(&set, "r/h3").ino, ino);
    let tar = read_tar(&tar_of(&set, &TarOptions::default()));
    let get = |p: &str| &tar.iter().find(|(n, _)| n == p).unwrap().1;
    // The first name holds the new data (from the index, not the old lower file).
    assert_eq!(get("h1").kind, ::tar::EntryType::Regular);
    assert_eq!(get("h1").data, b"HARD");
    for name in ["h2", "r/h3"] {
        assert_eq!(get(name).kind, ::tar::EntryType::Link, "{name}");
        assert_eq!(get(name).link.as_deref(), Some(Path::new("h1")));
    }
    assert_eq!(get("solo").kind, ::tar::EntryType::Regular);
    assert_eq!(get("solo2").kind, ::tar::EntryType::Link);
    assert_eq!(get("solo2").link.as_deref(), Some(Path::new("solo")));
}

#[test]
fn removing_one_name_of_a_lower_hard_link_changes_no_other_name() {
    let f = fixture(&[&[("h1", Some("hard")), ("h2", Some("hl:h1"))]]);
    // Known to the union, the file is copied up to the index before its name goes.
    f.ino("h2");
    f.union.unlink(ROOT, OsStr::new("h2")).unwrap();
    assert_eq!(
        fs::read_dir(f.dir.path().join("work").join(crate::upper::INDEX_DIR))
            .unwrap()
            .count(),
        1
    );
    assert_eq!(lines(&f.changes()), ["D /h2"]);
}

/// Written through one name, which is then removed: the other names show the new data,
/// which only the index holds.
#[test]
fn a_hard_link_written_then_removed_leaves_its_other_names_changed() {
    let f = fixture(&[&[
        ("h1", Some("hard")),
        ("h2", Some("hl:h1")),
        ("r/h3", Some("hl:h1")),
    ]]);
    f.write("h1", b"HARD");
    f.union.unlink(ROOT, OsStr::new("h1")).unwrap();
    let set = f.changes();
    assert_eq!(lines(&set), ["D /h1", "C /h2", "C /r", "C /r/h3"]);
    let tar = read_tar(&tar_of(&set, &TarOptions::default()));
    let get = |p: &str| &tar.iter().find(|(n, _)| n == p).unwrap().1;
    assert_eq!(get("h2").data, b"HARD");
    assert_eq!(get("r/h3").kind, ::tar::EntryType::Link);
}

#[test]
fn the_tar_carries_xattrs_devices_symlinks_fifos_and_mtimes_and_is_the_same_every_time() {
    let f = fixture(&[&[("f", Some("f"))]]);
    f.create("link", NewKind::Symlink(b"../f"), 0o777);
    f.create(
        "fifo",
        NewKind::Node {
            kind: crate::attr::FileKind::Fifo,
            rdev: 0,
        },
        0o600,
    );
    if crate::mount::privileged() {
        f.create(
            "null",
            NewKind::Node {
                kind: crate::attr::FileKind::CharDevice,
                rdev: rustix::fs::makedev(1, 3),
            },
            0o666,
        );
    }
    f.union
        .setxattr(f.ino("f"), OsStr::new("user.color"), b"blue", 0)
        .unwrap();
    f.union
        .setattr(
            f.ino("f"),
            SetAttr {
                mtime: Some(crate::union::SetTime::At(crate::attr::Timestamp {
                    sec: 1_234_567_890,
                    nsec: 0,
                })),
                ..SetAttr::default()
            },
        )
        .unwrap();
    let set = f.changes();
    let bytes = tar_of(&set, &TarOptions::default());
    assert_eq!(bytes, tar_of(&f.changes(), &TarOptions::default()));
    let tar = read_tar(&bytes);
    let get = |p: &str| &tar.iter().find(|(n, _)| n == p).unwrap().1;
    assert_eq!(get("link").kind, ::tar::EntryType::Symlink);
    assert_eq!(get("link").link.as_deref(), Some(Path::new("../f")));
    assert_eq!(get("fifo").kind, ::tar::EntryType::Fifo);
    assert_eq!(get("fifo").mode, 0o600);
    assert_eq!(
        get("f").xattrs,
        BTreeMap::from([("user.color".to_string(), b"blue".to_vec())])
    );
    assert_eq!(get("f").data, b"f");
    let mut ar = ::tar::Archive::new(&bytes[..]);
    let mtime = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap() == Path::new("f"))
        .unwrap()
        .header()
        .mtime()
        .unwrap();
    assert_eq!(mtime, 1_234_567_890);
    if crate::mount::privileged() {
        assert_eq!(get("null").kind, ::tar::EntryType::Char);
        assert_eq!(get("null").rdev, (1, 3));
    }
}

#[test]
fn owners_are_written_as_the_mount_maps_them() {
    if !crate::mount::privileged() {
        // Files of another owner need chown.
        return;
    }
    let f = fixture(&[&[("f", Some("f"))]]);
    f.write("f", b"F");
    rustix::fs::chown(
        f.upper().join("f"),
        Some(rustix::fs::Uid::from_raw(100_000)),
        Some(rustix::fs::Gid::from_raw(100_005)),
    )
    .unwrap();
    let range = |container, host| crate::ids::IdRange {
        container,
        host,
        len: 65536,
    };
    let opts = TarOptions {
        read_override: false,
        ids: IdMapper {
            uids: vec![range(0, 100_000)],
            gids: vec![range(0, 100_000)],
            ..IdMapper::default()
        },
    };
    let tar = read_tar(&tar_of(&f.changes(), &opts));
    let (_, e) = tar.iter().find(|(p, _)| p == "f").unwrap();
    assert_eq!((e.uid, e.gid), (0, 5));
}

#[test]
fn export_writes_the_merged_view_with_renames_deletions_hard_links_and_chmods() {
    let f = fixture(&[
        &[("etc/hosts", Some("h")), ("etc/sub/x", Some("x"))],
        &[
            ("etc/passwd", Some("root")),
            ("etc/gone", Some("g")),
            ("bin/tool", Some("#!")),
            ("keep", Some("k")),
            ("keep2", Some("hl:keep")),
        ],
    ]);
    f.union.unlink(f.ino("etc"), OsStr::new("gone")).unwrap();
    f.rename("etc", "etc2");
    f.write("etc2/hosts", b"H");
    f.chmod("bin/tool", 0o700);
    f.create(
        "new",
        NewKind::Regular {
            flags: libc::O_WRONLY,
        },
        0o640,
    );
    let bytes = export_tar(&f.union, Vec::new()).unwrap();
    // The same view gives the same bytes.
    assert_eq!(bytes, export_tar(&f.union, Vec::new()).unwrap());
    let tar = read_tar(&bytes);
    let names: Vec<&str> = tar.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        names,
        [
            "bin",
            "bin/tool",
            "etc2",
            "etc2/hosts",
            "etc2/passwd",
            "etc2/sub",
            "etc2/sub/x",
            "keep",
            "keep2",
            "new"
        ]
    );
    let entry = |p: &str| &tar.iter().find(|(n, _)| n == p).unwrap().1;
    assert_eq!(entry("etc2/hosts").data, b"H");
    assert_eq!(entry("etc2/passwd").data, b"root");
    assert_eq!(entry("bin/tool").data, b"#!");
    assert_eq!(entry("bin/tool").mode, 0o700);
    assert_eq!(entry("new").mode, 0o640);
    assert_eq!(entry("keep").data, b"k");
    assert_eq!(entry("keep2").kind, ::tar::EntryType::Link);
    assert_eq!(entry("keep2").link.as_deref(), Some(Path::new("keep")));
}
