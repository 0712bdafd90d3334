//! What a program sees in a union rootfs, checked on every implementation. Each check gets a
//! fresh fixture and mounts it itself (some remount). The expectations are kernel
//! overlayfs's (`redirect_dir=on,index=on,metacopy=on`): the suite runs on it too.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{ensure, Context, Result};
use nix::fcntl::{renameat2, RenameFlags};
use strata_tests::dirstream::DirStream;
use strata_tests::fixture::{xattr_get, xattr_list, WhiteoutFormat};
use strata_tests::mounts::Driver;

use super::{big_byte, errno, names, Fixture, BIG_LEN, ROOT_NAMES};

/// Where and as whom the suite runs.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    pub driver: Driver,
    pub format: WhiteoutFormat,
    /// The caller has real CAP_CHOWN/CAP_MKNOD on the host (root, not in a user namespace).
    pub host_root: bool,
    /// The caller is root, possibly of a user namespace (may chown to mapped ids, mknod fifos).
    pub ns_root: bool,
    /// Mount options strata-fs gets besides the directories (`server=strata`, ...).
    pub options: &'static [&'static str],
}

impl Variant {
    /// Whether strata's own FUSE loop serves the mounts (not fuser's): asked in the
    /// options, else in `STRATA_FS_SERVER`, which the strata-fs processes inherit.
    pub fn own_loop(&self) -> bool {
        match self.options.iter().find_map(|o| o.strip_prefix("server=")) {
            Some(server) => server == "strata",
            None => std::env::var("STRATA_FS_SERVER").is_ok_and(|s| s == "strata"),
        }
    }
}

type Check = fn(&Fixture, &Variant) -> Result<()>;

/// Every check, by name; `corners.rs` adds its own.
pub fn checks() -> Vec<(&'static str, Check)> {
    let mut all: Vec<(&'static str, Check)> = vec![
        ("merged_view", merged_view),
        ("readdir_offsets_are_stable", readdir_offsets_are_stable),
        ("readdir_while_changing", readdir_while_changing),
        ("listing_follows_changes", listing_follows_changes),
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
        (
            "copy_up_keeps_parent_dir_times",
            copy_up_keeps_parent_dir_times,
        ),
        ("metadata_only_copy_up", metadata_only_copy_up),
        ("attributes", attributes),
        ("xattrs", xattrs),
        ("statfs_fsync_locks", statfs_fsync_locks),
        ("tmpfile", tmpfile),
        ("mmap_shared_write", mmap_shared_write),
        (
            "inode_numbers_unique_and_stable",
            inode_numbers_unique_and_stable,
        ),
    ];
    all.extend(super::corners::checks());
    all
}

/// Runs every check on a fresh fixture; fails listing each failed check.
pub fn run(variant: Variant) {
    let mut failures = Vec::new();
    for (name, check) in checks() {
        let result = Fixture::new(variant.format).and_then(|mut fx| {
            fx.strata_options = variant.options;
            check(&fx, &variant)
        });
        if let Err(err) = result {
            failures.push(format!("{name}: {err:#}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} checks failed on {variant:?}:\n{}",
        failures.len(),
        checks().len(),
        failures.join("\n")
    );
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn merged_view(fx: &Fixture, v: &Variant) -> Result<()> {
    let m = fx.mount(v.driver)?;
    let m = m.path();
    ensure!(names(m) == ROOT_NAMES, "root lists {:?}", names(m));
    ensure!(
        names(&m.join("d")) == ["x", "z"],
        "d lists {:?}",
        names(&m.join("d"))
    );
    ensure!(
        names(&m.join("o")) == ["new"],
        "opaque o lists {:?}",
        names(&m.join("o"))
    );
    ensure!(
        names(&m.join("evil")) == ["inside"],
        "evil lists {:?}",
        names(&m.join("evil"))
    );
    ensure!(read(&m.join("a"))? == "top-a");
    ensure!(errno(fs::metadata(m.join("gone"))) == libc::ENOENT);
    ensure!(errno(fs::metadata(m.join("d/y"))) == libc::ENOENT);
    ensure!(errno(fs::metadata(m.join("o/old"))) == libc::ENOENT);
    let b = fs::metadata(m.join("b"))?;
    let lower_b = fs::metadata(fx.lower(1).join("b"))?;
    ensure!(b.mode() & 0o7777 == 0o640, "b mode {:o}", b.mode());
    ensure!((b.uid(), b.gid()) == (lower_b.uid(), lower_b.gid()));
    ensure!(xattr_get(&m.join("b"), "user.k")? == Some(b"v".to_vec()));
    ensure!(fs::read_link(m.join("sym"))? == Path::new("a"));
    ensure!(read(&m.join("sym"))? == "top-a");
    ensure!(fs::symlink_metadata(m.join("fifo"))?.file_type().is_fifo());
    let (h1, h2) = (fs::metadata(m.join("hl1"))?, fs::metadata(m.join("hl2"))?);
    ensure!(h1.ino() == h2.ino() && h1.nlink() == 2, "hard links differ");
    let big = fs::read(m.join("big"))?;
    ensure!(big.len() == BIG_LEN && big.iter().enumerate().all(|(i, b)| *b == big_byte(i)));
    ensure!(fs::metadata(m.join("empty"))?.len() == 0);
    Ok(())
}

fn readdir_offsets_are_stable(fx: &Fixture, v: &Variant) -> Result<()> {
    let m = fx.mount(v.driver)?;
    let d = m.path().join("d");
    for i in 0..200 {
        fs::write(d.join(format!("n{i:03}")), "")?;
    }
    let mut stream = DirStream::open(&d)?;
    let mut seen = Vec::new();
    loop {
        let pos = stream.tell();
        match stream.next_name()? {
            Some(name) => seen.push((pos, name)),
            None => break,
        }
    }
    let listed: Vec<_> = seen.iter().map(|(_, n)| n.clone()).collect();
    ensure!(listed.len() == 204, "d listed {} names", listed.len());
    // Jump back to a few recorded positions: the listing resumes at the same name.
    for k in [0, 1, 2, 3, 57, 150, 203] {
        stream.seek(seen[k].0);
        let name = stream.next_name()?;
        ensure!(
            name.as_ref() == Some(&seen[k].1),
            "seekdir to entry {k} gave {name:?}, expected {:?}",
            seen[k].1
        );
    }
    Ok(())
}

fn readdir_while_changing(fx: &Fixture, v: &Variant) -> Result<()> {
    let m = fx.mount(v.driver)?;
    let d = m.path().join("d");
    for i in 0..100 {
        fs::write(d.join(format!("k{i:03}")), "")?;
    }
    let before: std::collections::BTreeSet<_> = names(&d).into_iter().collect();
    let mut stream = DirStream::open(&d)?;
    let mut seen = Vec::new();
    for _ in 0..40 {
        if let Some(n) = stream.next_name()? {
            seen.push(n.to_string_lossy().into_owned());
        }
    }
    // Change the directory mid-listing: add names, delete names not yet listed.
    for i in 0..50 {
        fs::write(d.join(format!("late{i:02}")), "")?;
    }
    let removed: Vec<String> = before
        .iter()
        .filter(|n| !seen.contains(n))
        .take(10)
        .cloned()
        .collect();
    for name in &removed {
        fs::remove_file(d.join(name))?;
    }
    seen.extend(
        stream
            .rest()?
            .into_iter()
            .map(|n| n.to_string_lossy().into_owned()),
    );
    seen.retain(|n| n != "." && n != "..");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    ensure!(unique.len() == seen.len(), "a name was listed twice");
    for name in before.iter().filter(|n| !removed.contains(n)) {
        ensure!(seen.contains(name), "{name} (never removed) was not listed");
    }
    Ok(())
}

/// The kernel keeps a directory's listing (FOPEN_CACHE_DIR) and, with READDIRPLUS_AUTO,
/// reads a long directory's later batches without attributes: every change must show in
/// the next listing, and a long listing must name each entry once, with the type and the
/// inode number a stat gives.
fn listing_follows_changes(fx: &Fixture, v: &Variant) -> Result<()> {
    use std::os::unix::fs::DirEntryExt;
    let m = fx.mount(v.driver)?;
    let m = m.path();
    let d = m.join("d");
    let e = m.join("emptydir");
    let expect = |dir: &Path, want: &[&str], after: &str| -> Result<()> {
        let got = names(dir);
        ensure!(
            got == want,
            "after {after}: {} lists {got:?}, expected {want:?}",
            dir.display()
        );
        Ok(())
    };
    // Twice: the second listing may come from the kernel's cache.
    expect(&d, &["x", "z"], "mounting")?;
    expect(&d, &["x", "z"], "listing again")?;
    expect(&e, &[], "mounting")?;
    fs::write(d.join("new"), "")?;
    expect(&d, &["new", "x", "z"], "a create")?;
    fs::remove_file(d.join("x"))?;
    expect(&d, &["new", "z"], "unlinking a lower file")?;
    fs::create_dir(d.join("sub"))?;
    std::os::unix::fs::symlink("new", d.join("sym"))?;
    expect(&d, &["new", "sub", "sym", "z"], "a mkdir and a symlink")?;
    fs::rename(d.join("z"), e.join("z2"))?;
    expect(&d, &["new", "sub", "sym"], "renaming a lower file out")?;
    expect(&e, &["z2"], "renaming a lower file in")?;
    fs::remove_dir(d.join("sub"))?;
    fs::hard_link(d.join("new"), e.join("link"))?;
    expect(&d, &["new", "sym"], "an rmdir")?;
    expect(&e, &["link", "z2"], "a hard link")?;
    // A long directory, read in many batches: every entry once, typed as stat says.
    let long = m.join("long");
    fs::create_dir(&long)?;
    expect(&long, &[], "a mkdir")?;
    let mut want = std::collections::BTreeMap::new();
    for i in 0..1500 {
        let name = format!("entry-with-a-longer-name-{i:05}");
        if i % 10 == 0 {
            fs::create_dir(long.join(&name))?;
        } else {
            fs::write(long.join(&name), "")?;
        }
        want.insert(name, i % 10 == 0);
    }
    for round in ["filling", "removing a third"] {
        let mut seen = std::collections::BTreeMap::new();
        for entry in fs::read_dir(&long)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let st = fs::symlink_metadata(entry.path())?;
            ensure!(
                entry.file_type()?.is_dir() == st.is_dir() && entry.ino() == st.ino(),
                "after {round}: {name} is listed as {:?} ino {} but stat says {:?} ino {}",
                entry.file_type()?,
                entry.ino(),
                st.file_type(),
                st.ino()
            );
            ensure!(
                seen.insert(name.clone(), st.is_dir()).is_none(),
                "after {round}: {name} listed twice"
            );
        }
        ensure!(
            seen == want,
            "after {round}: {} entries listed, {} expected",
            seen.len(),
            want.len()
        );
        let gone: Vec<String> = want.keys().step_by(3).cloned().collect();
        for name in gone {
            match want.remove(&name) {
                Some(true) => fs::remove_dir(long.join(&name))?,
                _ => fs::remove_file(long.join(&name))?,
            }
        }
    }
    Ok(())
}

fn read_write_create(fx: &Fixture, v: &Variant) -> Result<()> {
    let m = fx.mount(v.driver)?;
    let m = m.path();
    fs::write(m.join("new"), "hello")?;
    ensure!(read(&m.join("new"))? == "hello");
    // Write at an offset into a lower file: copied up, the rest kept.
    let f = OpenOptions::new().write(true).open(m.join("a"))?;
    f.write_at(b"T", 0)?;
    drop(f);
    ensure!(read(&m.join("a"))? == "Top-a");
    ensure!(
        read(&fx.upper().join("a"))? == "Top-a",
        "upper copy differs"
    );
    ensure!(
        read(&fx.lower(0).join("a"))? == "top-a",
        "a lower layer was written"
    );
    let mut f = OpenOptions::new().append(true).open(m.join("d/x"))?;
    f.write_all(b"++")?;
    drop(f);
    ensure!(read(&m.join("d/x"))? == "x++");
    // O_TRUNC of a lower file.
    fs::write(m.join("b"), "B")?;
    ensure!(read(&m.join("b"))? == "B");
    fs::create_dir_all(m.join("p/q/r"))?;
    fs::write(m.join("p/q/r/s"), "deep")?;
    ensure!(read(&m.join("p/q/r/s"))? == "deep");
    ensure!(errno(fs::create_dir(m.join("d"))) == libc::EEXIST);
    ensure!(
        errno(
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(m.join("a"))
        ) == libc::EEXIST
    );
    // Read and write the same file through two descriptors, seeking.
    let mut rw = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.join("big"))?;
    rw.seek(SeekFrom::Start(4096))?;
    rw.write_all(b"xyz")?;
    let mut other = File::open(m.join("big"))?;
    let mut buf = [0u8; 5];
    other.seek(SeekFrom::Start(4094))?;
    other.read_exact(&mut buf)?;
    ensure!(buf == [big_byte(4094), big_byte(4095), b'x', b'y', b'z']);
    Ok(())
}

fn special_files(fx: &Fixture, v: &Variant) -> Result<()> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let m = fx.mount(v.driver)?;
    let m = m.path();
    nix::unistd::mkfifo(&m.join("newfifo"), Mode::from_bits_truncate(0o600))?;
    ensure!(fs::symlink_metadata(m.join("newfifo"))?
        .file_type()
        .is_fifo());
    let sock = std::os::unix::net::UnixListener::bind(m.join("sock"))?;
    ensure!(fs::symlink_metadata(m.join("sock"))?
        .file_type()
        .is_socket());
    drop(sock);
    let dev = mknod(
        &m.join("null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    );
    if v.host_root {
        dev?;
        let meta = fs::symlink_metadata(m.join("null"))?;
        ensure!(meta.file_type().is_char_device() && meta.rdev() == makedev(1, 3));
    } else {
        ensure!(
            dev == Err(nix::errno::Errno::EPERM),
            "mknod of a device: {dev:?}"
        );
    }
    Ok(())
}

/// A whiteout in the upper, in either format strata writes.
fn has_whiteout(upper_dir: &Path, name: &str) -> bool {
    let char00 = fs::symlink_metadata(upper_dir.join(name))
        .map(|m| m.file_type().is_char_device() && m.rdev() == 0)
        .unwrap_or(false);
    char00 || upper_dir.join(format!(".wh.{name}")).exists()
}

fn whiteouts_and_opaque_recreate(fx: &Fixture, v: &Variant) -> Result<()> {
    let m = fx.mount(v.driver)?;
    let m = m.path();
    fs::remove_file(m.join("b"))?;
    ensure!(errno(fs::metadata(m.join("b"))) == libc::ENOENT);
    ensure!(!names(m).contains(&"b".to_string()));
    ensure!(
        has_whiteout(fx.upper(), "b"),
        "no whiteout for b in the upper"
    );
    // Removing the top layer's `a` must hide the bottom's too.
    fs::remove_file(m.join("a"))?;
    ensure!(errno(fs::metadata(m.join("a"))) == libc::ENOENT);
    ensure!(errno(fs::remove_dir(m.join("rmme"))) == libc::ENOTEMPTY);
    fs::remove_file(m.join("rmme/child"))?;
    fs::remove_dir(m.join("rmme"))?;
    ensure!(errno(fs::metadata(m.join("rmme"))) == libc::ENOENT);
    fs::create_dir(m.join("rmme"))?;
    ensure!(
        names(&m.join("rmme")).is_empty(),
        "recreated dir shows old entries"
    );
    fs::remove_dir_all(m.join("d"))?;
    fs::create_dir(m.join("d"))?;
    ensure!(
        names(&m.join("d")).is_empty(),
        "recreated d lists {:?}",
        names(&m.join("d"))
    );
    fs::write(m.join("b"), "again")?;
    ensure!(read(&m.join("b"))? == "again");
    // A file recreated as a directory and back.
    fs::remove_file(m.join("empty"))?;
    fs::create_dir(m.join("empty"))?;
    ensure!(fs::metadata(m.join("empty"))?.is_dir());
    Ok(())
}

fn rename_files_and_lower_dirs(fx: &Fixture, v: &Variant) -> Result<()> {
    {
        let m = fx.mount(v.driver)?;
        let m = m.path();
        fs::rename(m.join("a"), m.join("a2"))?;
        ensure!(errno(fs::metadata(m.join("a"))) == libc::ENOENT);
        ensure!(read(&m.join("a2"))? == "top-a");
        // A directory that exists only in a lower: kernel overlayfs with redirect_dir.
        fs::rename(m.join("ren"), m.join("d/ren2"))?;
        ensure!(errno(fs::metadata(m.join("ren"))) == libc::ENOENT);
        ensure!(read(&m.join("d/ren2/f1"))? == "1");
        ensure!(read(&m.join("d/ren2/sub/f2"))? == "2");
        fs::create_dir(m.join("ren"))?;
        ensure!(names(&m.join("ren")).is_empty());
        // Over an existing file, and a directory over an empty directory.
        fs::rename(m.join("hl1"), m.join("b"))?;
        ensure!(read(&m.join("b"))? == "hard");
        fs::rename(m.join("o"), m.join("emptydir"))?;
        ensure!(names(&m.join("emptydir")) == ["new"]);
        ensure!(errno(fs::rename(m.join("d"), m.join("rmme"))) == libc::ENOTEMPTY);
        ensure!(errno(fs::rename(m.join("d"), m.join("d/sub"))) == libc::EINVAL);
        ensure!(errno(fs::rename(m.join("d"), m.join("a2"))) == libc::ENOTDIR);
        ensure!(errno(fs::rename(m.join("a2"), m.join("d"))) == libc::EISDIR);
    }
    // Everything persists across a remount.
    let m = fx.mount(v.driver)?;
    let m = m.path();
    ensure!(
        read(&m.join("d/ren2/sub/f2"))? == "2",
        "renamed dir lost on remount"
    );
    ensure!(
        names(&m.join("ren")).is_empty(),
        "recreated ren shows lower names after remount"
    );
    ensure!(names(&m.join("emptydir")) == ["new"]);
    ensure!(errno(fs::metadata(m.join("hl1"))) == libc::ENOENT);
    Ok(())
}

fn rename_noreplace_and_exchange(fx: &Fixture, v: &Variant) -> Result<()> {
    let m = fx.mount(v.driver)?;
    let m = m.path();
    let rn = |a: &str, b: &str, flags| renameat2(None, &m.join(a), None, &m.join(b), flags);
    ensure!(rn("a", "b", RenameFlags::RENAME_NOREPLACE) == Err(nix::errno::Errno::EEXIST));
    rn("a", "a3", RenameFlags::RENAME_NOREPLACE)?;
    ensure!(read(&m.join("a3"))? == "top-a");
    rn("a3", "d", RenameFlags::RENAME_EXCHANGE)?;
    ensure!(read(&m.join("d"))? == "top-a");
    ensure!(names(&m.join("a3")) == ["x", "z"]);
    ensure!(read(&m.join("a3/x"))? == "x");
    ensure!(rn("b", "missing", RenameFlags::RENAME_EXCHANGE) == Err(nix::errno::Errno::ENOENT));
    rn("b", "sym", RenameFlags::RENAME_EXCHANGE)?;
    ensure!(fs::read_link(m.join("b"))? == Path::new("a"));
    ensure!(read(&m.join("sym"))? == "b");
    Ok(())
}

fn links_and_symlinks(fx: &Fixture, v: &Variant) -> Result<()> {
    let m = fx.mount(v.driver)?;
    let m = m.path();
    fs::hard_link(m.join("hl1"), m.join("hl3"))?;
    let (h1, h3) = (fs::metadata(m.join("hl1"))?, fs::metadata(m.join("hl3"))?);
    ensure!(h1.ino() == h3.ino(), "link has another inode");
    fs::write(m.join("hl1"), "HARD")?;
    ensure!(read(&m.join("hl3"))? == "HARD");
    ensure!(
        read(&m.join("hl2"))? == "HARD",
        "the lower's other hard link lost the write"
    );
    ensure!(fs::metadata(m.join("hl2"))?.ino() == h1.ino());
    ensure!(errno(fs::hard_link(m.join("missing"), m.join("x"))) == libc::ENOENT);
    fs::write(m.join("n1"), "n")?;
    fs::hard_link(m.join("n1"), m.join("d/n2"))?;
    ensure!(fs::metadata(m.join("n1"))?.nlink() == 2);
    ensure!(errno(fs::hard_link(m.join("d"), m.join("dlink"))) == libc::EPERM);
    // A link made where a lower name was deleted (the whiteout is replaced).
    fs::remove_file(m.join("b"))?;
    fs::remove_dir_all(m.join("rmme"))?;
    fs::hard_link(m.join("n1"), m.join("b"))?;
    fs::hard_link(m.join("n1"), m.join("rmme"))?;
    ensure!(read(&m.join("b"))? == "n" && read(&m.join("rmme"))? == "n");
    ensure!(fs::metadata(m.join("n1"))?.nlink() == 4);
    std::os::unix::fs::symlink("target/of/link", m.join("ln"))?;
    ensure!(fs::read_link(m.join("ln"))? == Path::new("target/of/link"));
    let long_target = "t/".repeat(1000);
    std::os::unix::fs::symlink(&long_target, m.join("ln2"))?;
    ensure!(fs::read_link(m.join("ln2"))? == Path::new(&long_target));
    ensure!(errno(std::os::unix::fs::symlink("x", m.join("a"))) == libc::EEXIST);
    Ok(())
}

fn copy_up_keeps_metadata(fx: &Fixture, v: &Variant) -> Result<()> {
    let m = fx.mount(v.driver)?;
    let m = m.path();
    let lower_b = fs::metadata(fx.lower(1).join("b"))?;
    let lower_a = fs::metadata(fx.lower(0).join("a"))?;
    // Open for writing without writing: a copy-up whose times must be the lower's.
    drop(OpenOptions::new().write(true).open(m.join("a"))?);
    let a = fs::metadata(m.join("a"))?;
    ensure!(
        (a.mtime(), a.mtime_nsec()) == (lower_a.mtime(), lower_a.mtime_nsec()),
        "copy-up changed mtime"
    );
    let mut f = OpenOptions::new().append(true).open(m.join("b"))?;
    f.write_all(b"+")?;
    drop(f);
    let b = fs::metadata(m.join("b"))?;
    ensure!(b.mode() & 0o7777 == 0o640);
    ensure!(
        (b.uid(), b.gid()) == (lower_b.uid(), lower_b.gid()),
        "copy-up lost the owner"
    );
    ensure!(
        xattr_get(&m.join("b"), "user.k")? == Some(b"v".to_vec()),
        "copy-up lost xattr"
    );
    ensure!(read(&m.join("b"))? == "b+");
    ensure!(read(&fx.upper().join("b"))? == "b+");
    // Copy-up of a file in a lower-only directory brings the directory up too.
    fs::write(m.join("ren/sub/f2"), "22")?;
    ensure!(fx.upper().join("ren/sub").is_dir());
    ensure!(read(&m.join("ren/f1"))? == "1");
    Ok(())
}

/// A copy-up adds names to upper directories; that is not a change of the directory, so its
/// times stay the lower's (overlayfs restores them after each copy-up).
fn copy_up_keeps_parent_dir_times(fx: &Fixture, v: &Variant) -> Result<()> {
    let guard = fx.mount(v.driver)?;
    let m = guard.path();
    let mtime = |p: &Path| fs::metadata(p).map(|s| (s.mtime(), s.mtime_nsec()));
    let (ren, sub) = (
        mtime(&fx.lower(1).join("ren"))?,
        mtime(&fx.lower(1).join("ren/sub"))?,
    );
    OpenOptions::new()
        .append(true)
        .open(m.join("ren/sub/f2"))?
        .write_all(b"+")?;
    ensure!(
        mtime(&m.join("ren/sub"))? == sub,
        "ren/sub mtime changed by a copy-up"
    );
    ensure!(
        mtime(&m.join("ren"))? == ren,
        "ren mtime changed by a copy-up"
    );
    fs::set_permissions(m.join("ren/f1"), fs::Permissions::from_mode(0o600))?;
    ensure!(
        mtime(&m.join("ren"))? == ren,
        "ren mtime changed by a metadata copy-up"
    );
    // Not only in the kernel's attribute cache: after a remount too.
    drop(guard);
    let guard = fx.mount(v.driver)?;
    let m = guard.path();
    ensure!(
        mtime(&m.join("ren/sub"))? == sub,
        "ren/sub mtime lost on remount"
    );
    ensure!(mtime(&m.join("ren"))? == ren, "ren mtime lost on remount");
    // A real change of the directory still updates it.
    fs::write(m.join("ren/new"), "n")?;
    ensure!(
        mtime(&m.join("ren"))? != ren,
        "creating a file did not touch ren"
    );
    Ok(())
}

fn metadata_only_copy_up(fx: &Fixture, v: &Variant) -> Result<()> {
    let m = fx.mount(v.driver)?;
    let m = m.path();
    fs::set_permissions(m.join("big"), fs::Permissions::from_mode(0o600))?;
    ensure!(fs::metadata(m.join("big"))?.mode() & 0o7777 == 0o600);
    let up = fs::metadata(fx.upper().join("big"))?;
    // No data blocks; an external xattr block (4 KiB on ext4) may be there.
    ensure!(
        up.len() == BIG_LEN as u64 && up.blocks() * 512 <= 4096,
        "chmod copied data up: {} blocks",
        up.blocks()
    );
    let big = fs::read(m.join("big"))?;
    ensure!(
        big.iter().enumerate().all(|(i, b)| *b == big_byte(i)),
        "content changed"
    );
    // The first write brings the data.
    OpenOptions::new()
        .write(true)
        .open(m.join("big"))?
        .write_at(b"!", 10)?;
    let big = fs::read(m.join("big"))?;
    ensure!(big.len() == BIG_LEN && big[10] == b'!' && big[11] == big_byte(11));
    ensure!(big
        .iter()
        .enumerate()
        .skip(11)
        .all(|(i, b)| *b == big_byte(i)));
    ensure!(fs::metadata(m.join("big"))?.mode() & 0o7777 == 0o600);
    Ok(())
}

fn attributes(fx: &Fixture, v: &Variant) -> Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let m = fx.mount(v.driver)?;
    let m = m.path();
    fs::set_permissions(m.join("d"), fs::Permissions::from_mode(0o1750))?;
    ensure!(fs::metadata(m.join("d"))?.mode() & 0o7777 == 0o1750);
    if v.host_root {
        std::os::unix::fs::chown(m.join("a"), Some(1234), Some(4321))?;
        let a = fs::metadata(m.join("a"))?;
        ensure!((a.uid(), a.gid()) == (1234, 4321));
        std::os::unix::fs::lchown(m.join("sym"), Some(7), Some(8))?;
        let s = fs::symlink_metadata(m.join("sym"))?;
        ensure!((s.uid(), s.gid()) == (7, 8));
    } else if v.ns_root {
        std::os::unix::fs::chown(m.join("a"), Some(0), Some(0))?;
        ensure!(fs::metadata(m.join("a"))?.uid() == 0);
    } else {
        ensure!(errno(std::os::unix::fs::chown(m.join("a"), Some(0), None)) == libc::EPERM);
    }
    OpenOptions::new()
        .write(true)
        .open(m.join("d/x"))?
        .set_len(100)?;
    ensure!(fs::metadata(m.join("d/x"))?.len() == 100);
    let at = TimeSpec::new(1_000_000, 5);
    let mt = TimeSpec::new(2_000_000, 7);
    utimensat(
        None,
        &m.join("d/z"),
        &at,
        &mt,
        UtimensatFlags::FollowSymlink,
    )?;
    let z = fs::metadata(m.join("d/z"))?;
    ensure!(
        (z.atime(), z.atime_nsec()) == (1_000_000, 5),
        "atime {}",
        z.atime()
    );
    ensure!(
        (z.mtime(), z.mtime_nsec()) == (2_000_000, 7),
        "mtime {}",
        z.mtime()
    );
    let f = OpenOptions::new().write(true).open(m.join("empty"))?;
    rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, 65536)?;
    ensure!(fs::metadata(m.join("empty"))?.len() == 65536);
    ensure!(fs::read(m.join("empty"))?.iter().all(|b| *b == 0));
    Ok(())
}

/// Bookkeeping xattrs no union may show.
fn private_xattr(name: &str) -> bool {
    [
        "trusted.overlay.",
        "user.overlay.",
        "user.containers.",
        "trusted.strata.",
        "user.strata.",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

fn xattrs(fx: &Fixture, v: &Variant) -> Result<()> {
    let m = fx.mount(v.driver)?;
    let m = m.path();
    let b = m.join("b");
    xattr::set(&b, "user.new", b"1")?;
    ensure!(xattr_get(&b, "user.new")? == Some(b"1".to_vec()));
    ensure!(xattr_list(&b)?.contains(&"user.k".to_string()));
    xattr::remove(&b, "user.k")?;
    ensure!(xattr_get(&b, "user.k")?.is_none());
    ensure!(errno(xattr::remove(&b, "user.k")) == libc::ENODATA);
    xattr::set(m.join("ren"), "user.dir", b"d")?;
    ensure!(xattr_get(&m.join("ren"), "user.dir")? == Some(b"d".to_vec()));
    // Renames, deletions and copy-ups write bookkeeping xattrs: none may show.
    fs::rename(m.join("ren"), m.join("ren2"))?;
    fs::remove_dir_all(m.join("rmme"))?;
    fs::create_dir(m.join("rmme"))?;
    fs::set_permissions(m.join("big"), fs::Permissions::from_mode(0o600))?;
    for path in ["", "ren2", "rmme", "big", "b", "a"] {
        let list = xattr_list(&m.join(path))?;
        ensure!(
            !list.iter().any(|n| private_xattr(n)),
            "{path:?} shows bookkeeping xattrs: {list:?}"
        );
    }
    ensure!(xattr_get(&m.join("rmme"), "trusted.overlay.opaque")?.is_none());
    ensure!(xattr_get(&m.join("ren2"), "user.dir")? == Some(b"d".to_vec()));
    Ok(())
}

fn statfs_fsync_locks(fx: &Fixture, v: &Variant) -> Result<()> {
    use nix::fcntl::{Flock, FlockArg};
    let m = fx.mount(v.driver)?;
    let m = m.path();
    let st = nix::sys::statvfs::statvfs(m)?;
    ensure!(st.block_size() > 0 && st.blocks() > 0 && st.name_max() >= 255);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.join("a"))?;
    f.write_at(b"sync", 0)?;
    f.sync_all()?;
    f.sync_data()?;
    File::open(m.join("d"))?.sync_all()?;
    let g = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.join("a"))?;
    let locked = Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| e)?;
    let g = match Flock::lock(g, FlockArg::LockExclusiveNonblock) {
        Ok(_) => anyhow::bail!("a second exclusive flock succeeded"),
        Err((g, e)) => {
            ensure!(e == nix::errno::Errno::EAGAIN, "second flock: {e}");
            g
        }
    };
    let f = locked.unlock().map_err(|(_, e)| e)?;
    let g = Flock::lock(g, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)?
        .unlock()
        .map_err(|(_, e)| e)?;
    // Open-file-description record locks conflict between two opens in one process.
    let lock = |file: &File, kind| {
        let mut fl: libc::flock = zeroed_flock();
        fl.l_type = kind;
        fl.l_len = 10;
        nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(file),
            nix::fcntl::F_OFD_SETLK(&fl),
        )
    };
    lock(&f, libc::F_WRLCK as i16)?;
    ensure!(lock(&g, libc::F_WRLCK as i16) == Err(nix::errno::Errno::EAGAIN));
    Ok(())
}

/// A whole-file `struct flock` template.
fn zeroed_flock() -> libc::flock {
    libc::flock {
        l_type: 0,
        l_whence: libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    }
}

fn tmpfile(fx: &Fixture, v: &Variant) -> Result<()> {
    let m = fx.mount(v.driver)?;
    let opened = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(m.path().join("d"));
    match (v.driver, opened) {
        (_, Ok(mut f)) => {
            f.write_all(b"tmp")?;
            ensure!(f.metadata()?.nlink() == 0);
            ensure!(names(&m.path().join("d")) == ["x", "z"]);
            // linkat of /proc/self/fd/N names it (O_TMPFILE without O_EXCL is linkable).
            use std::os::fd::AsRawFd;
            let proc_path = format!("/proc/self/fd/{}", f.as_raw_fd());
            let named = m.path().join("d/named");
            nix::unistd::linkat(
                None,
                std::path::Path::new(&proc_path),
                None,
                named.as_path(),
                nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
            )?;
            ensure!(names(&m.path().join("d")) == ["named", "x", "z"]);
            ensure!(read(&m.path().join("d/named"))? == "tmp");
            ensure!(fs::metadata(m.path().join("d/named"))?.ino() == f.metadata()?.ino());
        }
        // fuser 0.18 has no FUSE_TMPFILE: the kernel turns ENOSYS into EOPNOTSUPP, which
        // programs (glibc's tmpfile, systemd) answer with a named temporary file. strata's
        // own loop serves it.
        (Driver::Strata, Err(e)) if !v.own_loop() => {
            ensure!(e.raw_os_error() == Some(libc::EOPNOTSUPP))
        }
        (_, Err(e)) => return Err(e.into()),
    }
    Ok(())
}

fn mmap_shared_write(fx: &Fixture, v: &Variant) -> Result<()> {
    let m = fx.mount(v.driver)?;
    let path = m.path().join("big");
    let file = OpenOptions::new().read(true).write(true).open(&path)?;
    // SAFETY: the map is unsound only if another process truncates the file meanwhile; this
    // test is the file's only user.
    #[allow(unsafe_code)]
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file)? };
    ensure!(map[5000] == big_byte(5000));
    map[0] = b'M';
    map[BIG_LEN - 1] = b'E';
    map.flush()?;
    drop(map);
    drop(file);
    let data = fs::read(&path)?;
    ensure!(data[0] == b'M' && data[BIG_LEN - 1] == b'E' && data[1] == big_byte(1));
    let up = fs::read(fx.upper().join("big"))?;
    ensure!(
        up[0] == b'M' && up[BIG_LEN - 1] == b'E',
        "the write did not reach the upper"
    );
    Ok(())
}

fn inode_numbers_unique_and_stable(fx: &Fixture, v: &Variant) -> Result<()> {
    let collect = |root: &Path| -> Result<Vec<(String, u64)>> {
        let tree = strata_tests::tree::snapshot(root)?;
        tree.keys()
            .map(|p| {
                let ino = fs::symlink_metadata(root.join(p))?.ino();
                Ok((p.display().to_string(), ino))
            })
            .collect()
    };
    let first = {
        let m = fx.mount(v.driver)?;
        fs::write(m.path().join("fresh"), "f")?;
        fs::write(m.path().join("d/x"), "copied up")?;
        let inos = collect(m.path())?;
        let mut seen = std::collections::HashMap::new();
        for (path, ino) in &inos {
            if let Some(other) = seen.insert(*ino, path.clone()) {
                let pair = [other.as_str(), path.as_str()];
                ensure!(
                    pair == ["hl1", "hl2"] || pair == ["hl2", "hl1"],
                    "{other} and {path} share inode {ino}"
                );
            }
        }
        inos
    };
    let m = fx.mount(v.driver)?;
    let second = collect(m.path())?;
    ensure!(first == second, "inode numbers changed across a remount");
    Ok(())
}

/// `d_ino` from readdir equals `st_ino` (find, du and tar's hard-link detection use it).
fn readdir_ino_matches_stat(fx: &Fixture, v: &Variant) -> Result<()> {
    use std::os::unix::fs::DirEntryExt;
    let m = fx.mount(v.driver)?;
    let m = m.path();
    fs::write(m.join("d/x"), "copied up")?;
    fs::write(m.join("d/new"), "new")?;
    fs::set_permissions(m.join("a"), fs::Permissions::from_mode(0o600))?;
    fs::rename(m.join("ren"), m.join("d/ren"))?;
    for dir in ["", "d", "o", "d/ren"] {
        for entry in fs::read_dir(m.join(dir))? {
            let entry = entry?;
            let st = fs::symlink_metadata(entry.path())?;
            ensure!(
                entry.ino() == st.ino(),
                "{}: d_ino {} but st_ino {}",
                entry.path().display(),
                entry.ino(),
                st.ino()
            );
        }
    }
    Ok(())
}
