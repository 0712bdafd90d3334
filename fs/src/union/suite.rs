//! The union conformance suite in-process: the cases of `tests/tests/union/suite.rs` (same
//! names, same standard layers, same expectations, which kernel overlayfs keeps honest
//! there) run on the union's API directly, with no mount, over [`MemLayer`] lowers and
//! over `IndexedLayer`s of the same layers written as OCI tars. A
//! failure here points at the merge itself, not at FUSE or the kernel; a case that passes
//! here and fails through FUSE points at the adapter.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use super::*;
use crate::layer::MemLayer;
use crate::union::{Caller, NewKind, SetAttr, SetTime};

/// Size of `big` (smaller than the mounted suite's: it lives in memory, and no page cache
/// is in the way to make a copy-up observable).
const BIG_LEN: usize = 256 << 10;

fn big_byte(i: usize) -> u8 {
    ((i / 4096) as u8) ^ (i as u8)
}

/// One entry of a layer description, which either driver is built from.
enum Spec {
    File(&'static str, Vec<u8>),
    Dir(&'static str),
    Symlink(&'static str, &'static str),
    Hardlink(&'static str, &'static str),
    Whiteout(&'static str),
    Opaque(&'static str),
    Fifo(&'static str),
    /// Mode, owner and one xattr of an entry described before.
    Meta(&'static str, u32, u32, &'static str, &'static str),
}

/// The standard layers of the mounted suite (`tests/tests/union/mod.rs`), top first.
fn standard_specs() -> [Vec<Spec>; 2] {
    use Spec::*;
    let big: Vec<u8> = (0..BIG_LEN).map(big_byte).collect();
    let top = vec![
        File("a", b"top-a".to_vec()),
        Whiteout("gone"),
        Opaque("o"),
        File("o/new", b"n".to_vec()),
        File("d/z", b"z".to_vec()),
        Whiteout("d/y"),
        Dir("evil"),
        File("evil/inside", b"i".to_vec()),
    ];
    let bottom = vec![
        File("a", b"bottom-a".to_vec()),
        File("b", b"b".to_vec()),
        Meta("b", 0o640, 1000, "user.k", "v"),
        File("gone", b"g".to_vec()),
        File("d/x", b"x".to_vec()),
        File("d/y", b"y".to_vec()),
        File("o/old", b"o".to_vec()),
        File("ren/f1", b"1".to_vec()),
        File("ren/sub/f2", b"2".to_vec()),
        File("hl1", b"hard".to_vec()),
        Hardlink("hl2", "hl1"),
        Symlink("sym", "a"),
        File("big", big),
        Fifo("fifo"),
        Symlink("evil", "/outside"),
        File("rmme/child", b"c".to_vec()),
        File("empty", Vec::new()),
        Dir("emptydir"),
    ];
    [top, bottom]
}

fn mem_layer(spec: &[Spec]) -> MemLayer {
    let mut b = MemLayer::builder();
    for e in spec {
        b = match e {
            Spec::File(p, data) => b.file(p, data),
            Spec::Dir(p) => b.dir(p),
            Spec::Symlink(p, t) => b.symlink(p, t),
            Spec::Hardlink(p, t) => b.hardlink(p, t),
            Spec::Whiteout(p) => b.whiteout(p),
            Spec::Opaque(p) => b.opaque(p),
            Spec::Fifo(p) => b.fifo(p),
            Spec::Meta(p, mode, id, k, v) => b.mode(p, *mode).owner(p, *id, *id).xattr(p, k, v),
        };
    }
    b.build()
}

/// The description as an OCI layer tar, indexed: the same layer through an
/// `IndexedLayer` over its local data.
fn indexed_layer(spec: &[Spec], dir: &std::path::Path) -> crate::layer::IndexedLayer {
    use ::tar::{EntryType, Header};
    let mut t = ::tar::Builder::new(Vec::new());
    let metas: std::collections::HashMap<&str, (u32, u32, &str, &str)> = spec
        .iter()
        .filter_map(|e| match e {
            Spec::Meta(p, m, id, k, v) => Some((*p, (*m, *id, *k, *v))),
            _ => None,
        })
        .collect();
    let mut add = |path: String, kind: EntryType, data: &[u8], link: Option<&str>| {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(match kind {
            EntryType::Directory => 0o755,
            _ => 0o644,
        });
        h.set_size(data.len() as u64);
        h.set_mtime(1_600_000_000);
        if let Some((mode, id, k, v)) = metas.get(path.as_str()) {
            h.set_mode(*mode);
            h.set_uid((*id).into());
            h.set_gid((*id).into());
            let key = format!("SCHILY.xattr.{k}");
            t.append_pax_extensions([(key.as_str(), v.as_bytes())])
                .unwrap();
        }
        match link {
            Some(l) => t.append_link(&mut h, &path, l).unwrap(),
            None => t.append_data(&mut h, &path, data).unwrap(),
        }
    };
    for e in spec {
        match e {
            Spec::File(p, data) => add(p.to_string(), EntryType::Regular, data, None),
            Spec::Dir(p) => add(format!("{p}/"), EntryType::Directory, b"", None),
            Spec::Symlink(p, l) => add(p.to_string(), EntryType::Symlink, b"", Some(l)),
            Spec::Hardlink(p, l) => add(p.to_string(), EntryType::Link, b"", Some(l)),
            Spec::Whiteout(p) => {
                let (d, n) = p.rsplit_once('/').map_or(("", *p), |(d, n)| (d, n));
                let wh = match d {
                    "" => format!(".wh.{n}"),
                    d => format!("{d}/.wh.{n}"),
                };
                add(wh, EntryType::Regular, b"", None)
            }
            Spec::Opaque(p) => add(format!("{p}/.wh..wh..opq"), EntryType::Regular, b"", None),
            Spec::Fifo(p) => add(p.to_string(), EntryType::Fifo, b"", None),
            Spec::Meta(..) => {}
        }
    }
    let tar = t.into_inner().unwrap();
    let limits = crate::layer::index::IndexLimits::default();
    crate::layer::index::build_index(&mut &tar[..], dir, &limits).unwrap();
    crate::layer::IndexedLayer::open(dir).unwrap()
}

/// Which driver serves the standard layers.
#[derive(Clone, Copy, Debug)]
enum Driver {
    Mem,
    Indexed,
}

fn standard_layers(driver: Driver, dir: &std::path::Path) -> Vec<Arc<dyn Layer>> {
    standard_specs()
        .iter()
        .enumerate()
        .map(|(i, spec)| -> Arc<dyn Layer> {
            match driver {
                Driver::Mem => Arc::new(mem_layer(spec)),
                Driver::Indexed => {
                    let d = dir.join(format!("layer{i}"));
                    fs::create_dir(&d).unwrap();
                    Arc::new(indexed_layer(spec, &d))
                }
            }
        })
        .collect()
}

const ROOT_NAMES: &[&str] = &[
    "a", "b", "big", "d", "empty", "emptydir", "evil", "fifo", "hl1", "hl2", "o", "ren", "rmme",
    "sym",
];

/// A union over the standard layers and a fresh upper, driven by path.
struct Fx {
    dir: tempfile::TempDir,
    lowers: Vec<Arc<dyn Layer>>,
    u: Union,
}

type Check = fn(&Fx) -> std::result::Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!("{}: {}", stringify!($cond), format!($($msg)+)));
        }
    };
    ($cond:expr) => {
        ensure!($cond, "failed")
    };
}

/// Turns a union error into the check's failure, naming the call.
trait Ctx<T> {
    fn ctx(self, what: &str) -> std::result::Result<T, String>;
}

impl<T> Ctx<T> for Result<T> {
    fn ctx(self, what: &str) -> std::result::Result<T, String> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

fn union_over(lowers: &[Arc<dyn Layer>], dir: &std::path::Path) -> Union {
    let privileged = crate::mount::privileged();
    let upper = Upper::open(&dir.join("upper"), &dir.join("work"), privileged, false).unwrap();
    Union::new(UnionConfig {
        lowers: lowers.to_vec(),
        upper: Some(upper),
        ids: IdMapper::default(),
        read_override: !privileged,
        fd_cache: 64,
    })
}

impl Fx {
    fn new(driver: Driver) -> Fx {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("upper")).unwrap();
        fs::create_dir(dir.path().join("work")).unwrap();
        let lowers = standard_layers(driver, dir.path());
        let u = union_over(&lowers, dir.path());
        Fx { dir, lowers, u }
    }

    /// The same layers and upper, as a new mount would see them.
    fn remount(&self) -> Union {
        union_over(&self.lowers, self.dir.path())
    }

    fn split(path: &str) -> (&str, &OsStr) {
        match path.rsplit_once('/') {
            Some((p, n)) => (p, OsStr::new(n)),
            None => ("", OsStr::new(path)),
        }
    }

    fn ino_in(u: &Union, path: &str) -> Result<Ino> {
        let mut ino = ROOT;
        for c in path.split('/').filter(|c| !c.is_empty()) {
            ino = u.lookup(ino, OsStr::new(c))?.attr.ino;
        }
        Ok(ino)
    }

    fn ino(&self, path: &str) -> Result<Ino> {
        Self::ino_in(&self.u, path)
    }

    fn stat(&self, path: &str) -> Result<Attr> {
        self.u.getattr(self.ino(path)?, None)
    }

    fn errno(&self, path: &str) -> i32 {
        match self.stat(path) {
            Ok(_) => 0,
            Err(e) => e.code(),
        }
    }

    fn listing(&self, path: &str) -> Result<Vec<DirEntry>> {
        let ino = self.ino(path)?;
        let fh = self.u.opendir(ino)?;
        let entries = self.u.readdir(fh, ino, 0);
        self.u.release(fh);
        Ok(entries?
            .iter()
            .filter(|e| e.name != "." && e.name != "..")
            .cloned()
            .collect())
    }

    fn names(&self, path: &str) -> Result<Vec<String>> {
        let mut v: Vec<String> = self
            .listing(path)?
            .into_iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .collect();
        v.sort();
        Ok(v)
    }

    fn read(&self, path: &str) -> Result<Vec<u8>> {
        let (fh, _) = self.u.open(self.ino(path)?, libc::O_RDONLY)?;
        let mut out = Vec::new();
        let mut buf = Vec::new();
        loop {
            self.u.read(fh, out.len() as u64, 128 << 10, &mut buf)?;
            if buf.is_empty() {
                break;
            }
            out.extend_from_slice(&buf);
        }
        self.u.release(fh);
        Ok(out)
    }

    fn write_at(&self, path: &str, offset: u64, data: &[u8]) -> Result<()> {
        let (fh, _) = self.u.open(self.ino(path)?, libc::O_WRONLY)?;
        let r = self.u.write(fh, offset, data);
        self.u.release(fh);
        r.map(drop)
    }

    fn create(&self, path: &str, data: &[u8]) -> Result<Ino> {
        let (dir, name) = Self::split(path);
        let new = NewKind::Regular {
            flags: libc::O_RDWR,
        };
        let (e, opened) = self.u.create(self.ino(dir)?, name, new, 0o644, me())?;
        let (fh, _) = opened.ok_or(Errno::EIO)?;
        self.u.write(fh, 0, data)?;
        self.u.release(fh);
        Ok(e.attr.ino)
    }

    fn mkdir(&self, path: &str) -> Result<Ino> {
        let (dir, name) = Self::split(path);
        let (e, _) = self
            .u
            .create(self.ino(dir)?, name, NewKind::Directory, 0o755, me())?;
        Ok(e.attr.ino)
    }

    fn unlink(&self, path: &str) -> Result<()> {
        let (dir, name) = Self::split(path);
        self.u.unlink(self.ino(dir)?, name)
    }

    fn rmdir(&self, path: &str) -> Result<()> {
        let (dir, name) = Self::split(path);
        self.u.rmdir(self.ino(dir)?, name)
    }

    fn rename(&self, from: &str, to: &str, flags: u32) -> Result<()> {
        let (fdir, fname) = Self::split(from);
        let (tdir, tname) = Self::split(to);
        self.u
            .rename(self.ino(fdir)?, fname, self.ino(tdir)?, tname, flags)
    }

    fn set(&self, path: &str, set: SetAttr) -> Result<Attr> {
        self.u.setattr(self.ino(path)?, set)
    }

    /// Whether the upper holds a whiteout for `path`, in either format.
    fn upper_whiteout(&self, path: &str) -> bool {
        let upper = self.dir.path().join("upper");
        let (dir, name) = Self::split(path);
        let dev = fs::symlink_metadata(upper.join(path)).is_ok_and(|m| {
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            m.file_type().is_char_device() && m.rdev() == 0
        });
        let mut wh = b".wh.".to_vec();
        wh.extend_from_slice(name.as_bytes());
        dev || upper.join(dir).join(OsStr::from_bytes(&wh)).exists()
    }
}

fn me() -> Caller {
    Caller {
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
    }
}

fn checks() -> Vec<(&'static str, Check)> {
    vec![
        ("merged_view", merged_view),
        ("readdir_offsets_are_stable", readdir_offsets_are_stable),
        ("read_write_create", read_write_create),
        ("special_files", special_files),
        (
            "whiteouts_and_opaque_recreate",
            whiteouts_and_opaque_recreate,
        ),
        ("rename_files_and_lower_dirs", rename_files_and_lower_dirs),
        (
            "rename_noreplace_and_exchange",
            rename_noreplace_and_exchange,
        ),
        ("links_and_symlinks", links_and_symlinks),
        ("readdir_ino_matches_stat", readdir_ino_matches_stat),
        ("copy_up_keeps_metadata", copy_up_keeps_metadata),
        ("metadata_only_copy_up", metadata_only_copy_up),
        ("attributes", attributes),
        ("xattrs", xattrs),
        ("statfs", statfs),
        (
            "inode_numbers_unique_and_stable",
            inode_numbers_unique_and_stable,
        ),
    ]
}

fn run(driver: Driver) {
    let mut failures = Vec::new();
    for (name, check) in checks() {
        if let Err(e) = check(&Fx::new(driver)) {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} checks failed over {driver:?} layers:\n{}",
        failures.len(),
        checks().len(),
        failures.join("\n")
    );
}

#[test]
fn the_union_passes_the_suite_in_process_over_mem_layers() {
    run(Driver::Mem);
}

#[test]
fn the_union_passes_the_suite_in_process_over_indexed_layers() {
    run(Driver::Indexed);
}

/// The suite can fail: a union that lost a whiteout fails `merged_view`.
#[test]
fn the_suite_catches_a_broken_merge() {
    let fx = Fx::new(Driver::Mem);
    let broken = MemLayer::builder().file("a", "top-a").build();
    let u = union_over(&[Arc::new(broken), fx.lowers[1].clone()], fx.dir.path());
    let fx = Fx {
        dir: fx.dir,
        lowers: fx.lowers,
        u,
    };
    assert!(merged_view(&fx).is_err());
}

fn merged_view(fx: &Fx) -> std::result::Result<(), String> {
    let root = fx.names("").ctx("listing /")?;
    ensure!(root == ROOT_NAMES, "root lists {root:?}");
    let d = fx.names("d").ctx("listing d")?;
    ensure!(d == ["x", "z"], "d lists {d:?}");
    let o = fx.names("o").ctx("listing o")?;
    ensure!(o == ["new"], "opaque o lists {o:?}");
    let evil = fx.names("evil").ctx("listing evil")?;
    ensure!(evil == ["inside"], "evil lists {evil:?}");
    ensure!(fx.read("a").ctx("read a")? == b"top-a");
    for gone in ["gone", "d/y", "o/old", ".wh.gone"] {
        ensure!(fx.errno(gone) == libc::ENOENT, "{gone} shows");
    }
    let b = fx.stat("b").ctx("stat b")?;
    ensure!(b.perm == 0o640, "b mode {:o}", b.perm);
    ensure!(
        (b.uid, b.gid) == (1000, 1000),
        "b owned {}:{}",
        b.uid,
        b.gid
    );
    let k = fx.u.getxattr(fx.ino("b").ctx("b")?, OsStr::new("user.k"));
    ensure!(k == Ok(b"v".to_vec()), "user.k of b: {k:?}");
    ensure!(fx.u.readlink(fx.ino("sym").ctx("sym")?).ctx("readlink")? == b"a");
    ensure!(fx.u.readlink(fx.ino("evil/inside").ctx("inside")?) == Err(Errno::EINVAL));
    Ok(())
}

fn readdir_offsets_are_stable(fx: &Fx) -> std::result::Result<(), String> {
    let fh = fx.u.opendir(ROOT).ctx("opendir")?;
    let first = fx.u.readdir(fh, ROOT, 0).ctx("readdir")?;
    fx.create("zz-new", b"").ctx("create")?;
    fx.unlink("b").ctx("unlink b")?;
    let again = fx.u.readdir(fh, ROOT, 5).ctx("readdir at 5")?;
    ensure!(
        first
            .iter()
            .map(|e| &e.name)
            .eq(again.iter().map(|e| &e.name)),
        "a continued listing changed under its offsets"
    );
    let fresh = fx.u.readdir(fh, ROOT, 0).ctx("rewinddir")?;
    let names: Vec<_> = fresh.iter().map(|e| e.name.clone()).collect();
    ensure!(names.contains(&OsString::from("zz-new")) && !names.contains(&"b".into()));
    fx.u.release(fh);
    Ok(())
}

fn read_write_create(fx: &Fx) -> std::result::Result<(), String> {
    fx.write_at("a", 0, b"TOP").ctx("write a")?;
    ensure!(fx.read("a").ctx("read a")? == b"TOP-a");
    ensure!(fs::read(fx.dir.path().join("upper/a")).unwrap_or_default() == b"TOP-a");
    fx.write_at("big", 100_000, b"!").ctx("write big")?;
    let big = fx.read("big").ctx("read big")?;
    ensure!(big.len() == BIG_LEN, "big is {} bytes", big.len());
    let ok = big
        .iter()
        .enumerate()
        .all(|(i, b)| *b == if i == 100_000 { b'!' } else { big_byte(i) });
    ensure!(ok, "big lost bytes in its copy-up");
    fx.create("d/new", b"fresh").ctx("create d/new")?;
    ensure!(fx.read("d/new").ctx("read d/new")? == b"fresh");
    ensure!(fx.create("d/new", b"") == Err(Errno::EEXIST));
    ensure!(fx.create("a/x", b"") == Err(Errno::ENOTDIR));
    Ok(())
}

fn special_files(fx: &Fx) -> std::result::Result<(), String> {
    ensure!(fx.stat("fifo").ctx("stat fifo")?.kind == FileKind::Fifo);
    ensure!(fx.stat("empty").ctx("stat empty")?.size == 0);
    ensure!(fx.read("empty").ctx("read empty")?.is_empty());
    // A change of a fifo copies it up as a fifo.
    fx.set(
        "fifo",
        SetAttr {
            mode: Some(0o600),
            ..SetAttr::default()
        },
    )
    .ctx("chmod fifo")?;
    let a = fx.stat("fifo").ctx("stat fifo")?;
    ensure!(a.kind == FileKind::Fifo && a.perm == 0o600);
    Ok(())
}

fn whiteouts_and_opaque_recreate(fx: &Fx) -> std::result::Result<(), String> {
    fx.unlink("b").ctx("unlink b")?;
    ensure!(fx.errno("b") == libc::ENOENT);
    ensure!(fx.upper_whiteout("b"), "no whiteout for b");
    // A name only the upper had leaves nothing behind.
    fx.create("mine", b"m").ctx("create")?;
    fx.unlink("mine").ctx("unlink mine")?;
    ensure!(
        !fx.upper_whiteout("mine"),
        "a whiteout for an upper-only name"
    );
    ensure!(fx.rmdir("d") == Err(Errno::ENOTEMPTY));
    for n in ["d/x", "d/z"] {
        fx.unlink(n).ctx(n)?;
    }
    fx.rmdir("d").ctx("rmdir d")?;
    ensure!(fx.errno("d") == libc::ENOENT);
    fx.mkdir("d").ctx("mkdir d")?;
    let d = fx.names("d").ctx("listing d")?;
    ensure!(d.is_empty(), "a recreated directory shows {d:?}");
    let again = fx.remount();
    let d = Fx::ino_in(&again, "d").ctx("d after remount")?;
    ensure!(again
        .merged_listing(d, &again.node(d).unwrap())
        .unwrap()
        .is_empty());
    Ok(())
}

fn rename_files_and_lower_dirs(fx: &Fx) -> std::result::Result<(), String> {
    fx.rename("a", "a2", 0).ctx("rename a")?;
    ensure!(fx.read("a2").ctx("read a2")? == b"top-a");
    ensure!(fx.errno("a") == libc::ENOENT, "a shows the lower a");
    fx.rename("ren", "d/ren2", 0).ctx("rename ren")?;
    ensure!(fx.names("d/ren2").ctx("list ren2")? == ["f1", "sub"]);
    ensure!(fx.read("d/ren2/sub/f2").ctx("read f2")? == b"2");
    ensure!(fx.errno("ren") == libc::ENOENT);
    // The redirect survives a remount.
    let again = fx.remount();
    let f2 = Fx::ino_in(&again, "d/ren2/sub/f2").ctx("f2 after remount")?;
    ensure!(again.getattr(f2, None).ctx("stat")?.size == 1);
    ensure!(fx.rename("b", "emptydir", 0) == Err(Errno::EISDIR));
    ensure!(fx.rename("emptydir", "b", 0) == Err(Errno::ENOTDIR));
    ensure!(fx.rename("emptydir", "rmme", 0) == Err(Errno::ENOTEMPTY));
    Ok(())
}

fn rename_noreplace_and_exchange(fx: &Fx) -> std::result::Result<(), String> {
    ensure!(fx.rename("a", "b", libc::RENAME_NOREPLACE) == Err(Errno::EEXIST));
    fx.rename("a", "b", libc::RENAME_EXCHANGE).ctx("exchange")?;
    ensure!(fx.read("a").ctx("read a")? == b"b");
    ensure!(fx.read("b").ctx("read b")? == b"top-a");
    ensure!(fx.rename("a", "nothere", libc::RENAME_EXCHANGE) == Err(Errno::ENOENT));
    Ok(())
}

fn links_and_symlinks(fx: &Fx) -> std::result::Result<(), String> {
    let (h1, h2) = (fx.stat("hl1").ctx("hl1")?, fx.stat("hl2").ctx("hl2")?);
    ensure!(h1.ino == h2.ino && h1.nlink == 2, "hl1 {h1:?} hl2 {h2:?}");
    fx.write_at("hl1", 0, b"HARD").ctx("write hl1")?;
    ensure!(
        fx.read("hl2").ctx("read hl2")? == b"HARD",
        "the other name kept old bytes"
    );
    ensure!(fx.stat("hl2").ctx("hl2")?.ino == h1.ino);
    let again = fx.remount();
    let h2 = Fx::ino_in(&again, "hl2").ctx("hl2 after remount")?;
    ensure!(h2 == h1.ino, "hl2 renumbered after remount");
    let e =
        fx.u.link(fx.ino("a").ctx("a")?, ROOT, OsStr::new("a-link"))
            .ctx("link")?;
    ensure!(e.attr.ino == fx.ino("a").ctx("a")? && e.attr.nlink == 2);
    let (s, _) =
        fx.u.create(
            ROOT,
            OsStr::new("s2"),
            NewKind::Symlink(b"/abs/t"),
            0o777,
            me(),
        )
        .ctx("symlink")?;
    ensure!(fx.u.readlink(s.attr.ino).ctx("readlink")? == b"/abs/t");
    ensure!(
        fx.u.link(fx.ino("d").ctx("d")?, ROOT, OsStr::new("dl"))
            .err()
            == Some(Errno::EPERM)
    );
    Ok(())
}

fn readdir_ino_matches_stat(fx: &Fx) -> std::result::Result<(), String> {
    fx.write_at("a", 0, b"x").ctx("copy a up")?;
    for path in ["", "d", "ren"] {
        for e in fx.listing(path).ctx("listing")? {
            let full = format!("{path}/{}", e.name.to_string_lossy());
            let st = fx.stat(&full).ctx(&full)?;
            ensure!(st.ino == e.ino, "{full}: d_ino {} st_ino {}", e.ino, st.ino);
            ensure!(st.kind == e.kind, "{full}: d_type differs");
        }
    }
    Ok(())
}

fn copy_up_keeps_metadata(fx: &Fx) -> std::result::Result<(), String> {
    let before = fx.stat("b").ctx("stat b")?;
    fx.write_at("b", 1, b"+").ctx("write b")?;
    let after = fx.stat("b").ctx("stat b")?;
    ensure!((after.perm, after.uid, after.gid) == (before.perm, before.uid, before.gid));
    ensure!(after.ino == before.ino, "copy-up renumbered b");
    let k = fx.u.getxattr(after.ino, OsStr::new("user.k"));
    ensure!(k == Ok(b"v".to_vec()), "user.k after copy-up: {k:?}");
    let d = fx.stat("d").ctx("stat d")?;
    fx.create("d/n", b"").ctx("create in d")?;
    ensure!(fx.stat("d").ctx("stat d")?.ino == d.ino);
    Ok(())
}

fn metadata_only_copy_up(fx: &Fx) -> std::result::Result<(), String> {
    let big = fx.ino("big").ctx("big")?;
    let a = fx
        .set(
            "big",
            SetAttr {
                mode: Some(0o600),
                ..SetAttr::default()
            },
        )
        .ctx("chmod big")?;
    ensure!(a.perm == 0o600 && a.size == BIG_LEN as u64);
    ensure!(fx.u.node(big).unwrap().place.metacopy, "chmod copied data");
    let blocks = fs::metadata(fx.dir.path().join("upper/big"))
        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m))
        .unwrap_or(u64::MAX);
    ensure!(blocks == 0, "the upper big holds {blocks} blocks");
    ensure!(fx.read("big").ctx("read big")?[4096] == big_byte(4096));
    fx.write_at("big", 0, b"#").ctx("write big")?;
    ensure!(!fx.u.node(big).unwrap().place.metacopy);
    let data = fs::read(fx.dir.path().join("upper/big")).unwrap_or_default();
    ensure!(data.len() == BIG_LEN && data[1] == big_byte(1) && data[0] == b'#');
    Ok(())
}

fn attributes(fx: &Fx) -> std::result::Result<(), String> {
    let t = crate::attr::Timestamp {
        sec: 1_234_567_890,
        nsec: 5,
    };
    let a = fx
        .set(
            "a",
            SetAttr {
                size: Some(3),
                mtime: Some(SetTime::At(t)),
                ..SetAttr::default()
            },
        )
        .ctx("truncate a")?;
    ensure!(a.size == 3 && a.mtime == t, "{a:?}");
    ensure!(fx.read("a").ctx("read a")? == b"top");
    let d = fx
        .set(
            "emptydir",
            SetAttr {
                mode: Some(0o700),
                ..SetAttr::default()
            },
        )
        .ctx("chmod dir")?;
    ensure!(d.perm == 0o700 && d.kind == FileKind::Directory);
    Ok(())
}

fn xattrs(fx: &Fx) -> std::result::Result<(), String> {
    let d = fx.ino("d/x").ctx("d/x")?;
    fx.u.setxattr(d, OsStr::new("user.new"), b"1", 0)
        .ctx("setxattr")?;
    ensure!(fx.u.getxattr(d, OsStr::new("user.new")) == Ok(b"1".to_vec()));
    let listed = fx.u.listxattr(d).ctx("listxattr")?;
    ensure!(listed == [OsString::from("user.new")], "lists {listed:?}");
    fx.u.removexattr(d, OsStr::new("user.new"))
        .ctx("removexattr")?;
    ensure!(fx.u.getxattr(d, OsStr::new("user.new")) == Err(Errno::ENODATA));
    ensure!(fx.u.removexattr(d, OsStr::new("user.new")) == Err(Errno::ENODATA));
    // The upper's bookkeeping is neither shown nor settable.
    let b = fx.ino("b").ctx("b")?;
    fx.write_at("b", 0, b"B").ctx("copy b up")?;
    let listed = fx.u.listxattr(b).ctx("listxattr b")?;
    ensure!(listed == [OsString::from("user.k")], "b lists {listed:?}");
    for key in [
        "trusted.overlay.opaque",
        "user.overlay.redirect",
        "user.strata.ino",
    ] {
        ensure!(fx.u.setxattr(b, OsStr::new(key), b"y", 0) == Err(Errno::EPERM));
    }
    Ok(())
}

fn statfs(fx: &Fx) -> std::result::Result<(), String> {
    let st = fx.u.statfs().ctx("statfs")?;
    ensure!(st.f_bsize > 0 && st.f_namemax >= 255);
    // A read-only union reports its top layer's.
    let ro = Union::new(UnionConfig {
        lowers: fx.lowers.clone(),
        upper: None,
        ids: IdMapper::default(),
        read_override: false,
        fd_cache: 16,
    });
    let st = ro.statfs().ctx("read-only statfs")?;
    let top = fx.lowers[0].statfs().ctx("top layer statfs")?;
    ensure!((st.f_bsize, st.f_blocks, st.f_files) == (top.f_bsize, top.f_blocks, top.f_files));
    ensure!(
        ro.open(Fx::ino_in(&ro, "a").ctx("a")?, libc::O_WRONLY)
            .err()
            == Some(Errno::EROFS)
    );
    Ok(())
}

fn inode_numbers_unique_and_stable(fx: &Fx) -> std::result::Result<(), String> {
    let mut seen = std::collections::HashMap::new();
    for name in ROOT_NAMES {
        let ino = fx.stat(name).ctx(name)?.ino;
        if let Some(other) = seen.insert(ino, *name) {
            ensure!(
                *name == "hl2" && other == "hl1",
                "{name} and {other} share {ino}"
            );
        }
    }
    fx.write_at("a", 0, b"x").ctx("copy a up")?;
    fx.set(
        "b",
        SetAttr {
            mode: Some(0o600),
            ..SetAttr::default()
        },
    )
    .ctx("chmod b")?;
    let again = fx.remount();
    for name in ROOT_NAMES {
        let now = Fx::ino_in(&again, name).ctx(name)?;
        let before = fx.ino(name).ctx(name)?;
        ensure!(
            now == before,
            "{name}: {before} became {now} after a remount"
        );
    }
    Ok(())
}
