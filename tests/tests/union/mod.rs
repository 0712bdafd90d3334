//! The union filesystem through a real mount. `suite.rs` holds the semantics every union
//! mount must show; it runs on strata-fs (both whiteout formats, as root, rootless in a user
//! namespace, rootless on the host) and on kernel overlayfs, the reference that keeps the
//! expectations honest. `daemon.rs` covers the command line, the daemon's life and its
//! options; `corners.rs` the POSIX corners and safety; `rootless.rs` the rootless specifics.

mod corners;
mod daemon;
mod fidelity;
mod rootless;
mod suite;

use std::io;
use std::path::{Path, PathBuf};

use anyhow::Result;
use strata_tests::fixture::{LayerBuilder, WhiteoutFormat};
use strata_tests::mounts::{mount, Driver, MountGuard, UnionDirs};
use tempfile::TempDir;

/// Size of `big`: large enough that a copy-up is observable, small enough for debug builds.
pub const BIG_LEN: usize = 4 << 20;

/// Byte `i` of `big`: a pattern whose every 4 KiB block differs.
pub fn big_byte(i: usize) -> u8 {
    ((i / 4096) as u8) ^ (i as u8)
}

/// The layers every union test starts from (top first). Outside the layers, `outside/`
/// holds `secret`, the target of the hostile absolute symlink `evil` in the bottom layer.
pub fn standard_layers(outside: &Path) -> [LayerBuilder; 2] {
    let big: Vec<u8> = (0..BIG_LEN).map(big_byte).collect();
    let top = LayerBuilder::new()
        .file("a", "top-a")
        .whiteout("gone")
        .opaque("o")
        .file("o/new", "n")
        .file("d/z", "z")
        .whiteout("d/y")
        .dir("evil")
        .file("evil/inside", "i");
    let bottom = LayerBuilder::new()
        .file("a", "bottom-a")
        .file("b", "b")
        .mode(0o640)
        .owner(1000, 1000)
        .xattr("user.k", "v")
        .file("gone", "g")
        .file("d/x", "x")
        .file("d/y", "y")
        .file("o/old", "o")
        .file("ren/f1", "1")
        .file("ren/sub/f2", "2")
        .file("hl1", "hard")
        .hardlink("hl2", "hl1")
        .symlink("sym", "a")
        .file("big", big)
        .fifo("fifo")
        .symlink("evil", outside)
        .file("rmme/child", "c")
        .file("empty", "")
        .dir("emptydir");
    [top, bottom]
}

/// Names at the root of the merged standard layers.
pub const ROOT_NAMES: &[&str] = &[
    "a", "b", "big", "d", "empty", "emptydir", "evil", "fifo", "hl1", "hl2", "o", "ren", "rmme",
    "sym",
];

/// A union's directories in a temporary directory, torn down after the mount.
pub struct Fixture {
    pub dirs: UnionDirs,
    pub outside: PathBuf,
    /// Options strata-fs mounts get besides the directories.
    pub strata_options: &'static [&'static str],
    // Last: dropped after any guard the test holds.
    pub tmp: TempDir,
}

impl Fixture {
    pub fn new(format: WhiteoutFormat) -> Result<Fixture> {
        Self::with_layers(format, standard_layers)
    }

    pub fn with_layers(
        format: WhiteoutFormat,
        layers: impl FnOnce(&Path) -> [LayerBuilder; 2],
    ) -> Result<Fixture> {
        let tmp = tempfile::Builder::new().prefix("strata-e2e").tempdir()?;
        let root = tmp.path();
        let outside = root.join("outside");
        std::fs::create_dir(&outside)?;
        std::fs::write(outside.join("secret"), "secret")?;
        let mut lowers = Vec::new();
        for (i, layer) in layers(&outside).iter().enumerate() {
            let dir = root.join(format!("l{i}"));
            layer.write_dir(&dir, format)?;
            lowers.push(dir);
        }
        for d in ["upper", "work", "merged"] {
            std::fs::create_dir(root.join(d))?;
        }
        Ok(Fixture {
            dirs: UnionDirs {
                lowers,
                upper: Some((root.join("upper"), root.join("work"))),
                merged: root.join("merged"),
            },
            outside,
            strata_options: &[],
            tmp,
        })
    }

    pub fn upper(&self) -> &Path {
        &self.dirs.upper.as_ref().expect("fixture has an upper").0
    }

    pub fn merged(&self) -> &Path {
        &self.dirs.merged
    }

    pub fn lower(&self, i: usize) -> &Path {
        &self.dirs.lowers[i]
    }

    pub fn mount(&self, driver: Driver) -> Result<MountGuard> {
        match driver {
            Driver::Strata => mount(driver, &self.dirs, self.strata_options),
            _ => mount(driver, &self.dirs, reference_options(driver)),
        }
    }
}

/// Kernel overlayfs is the reference only with the features strata always has.
pub fn reference_options(driver: Driver) -> &'static [&'static str] {
    match driver {
        Driver::Kernel => &["redirect_dir=on", "index=on", "metacopy=on"],
        _ => &[],
    }
}

/// The errno of a failed call, or 0.
pub fn errno<T>(result: io::Result<T>) -> i32 {
    match result {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

/// The sorted names in a directory.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

use strata_tests::users::have_root;
use suite::Variant;

#[test]
fn strata_passes_the_suite_as_root_over_oci_layers() {
    if have_root("strata_passes_the_suite_as_root_over_oci_layers") {
        suite::run(Variant {
            driver: Driver::Strata,
            format: WhiteoutFormat::Oci,
            host_root: true,
            ns_root: true,
            options: &[],
        });
    }
}

#[test]
fn strata_passes_the_suite_as_root_over_kernel_format_layers() {
    if have_root("strata_passes_the_suite_as_root_over_kernel_format_layers") {
        suite::run(Variant {
            driver: Driver::Strata,
            format: WhiteoutFormat::KERNEL,
            host_root: true,
            ns_root: true,
            options: &[],
        });
    }
}

/// strata's own FUSE loop (`server=strata`, the restartable server's) on a par with fuser's:
/// passthrough, O_TMPFILE and every other check, over the transport `STRATA_FS_TRANSPORT`
/// names (auto: io_uring where the kernel offers it).
#[test]
fn strata_own_loop_passes_the_suite_as_root() {
    if have_root("strata_own_loop_passes_the_suite_as_root") {
        suite::run(Variant {
            driver: Driver::Strata,
            format: WhiteoutFormat::Oci,
            host_root: true,
            ns_root: true,
            options: &["server=strata"],
        });
    }
}

/// The reference: if kernel overlayfs fails a check, the check is wrong.
#[test]
fn kernel_overlayfs_passes_the_suite() {
    if have_root("kernel_overlayfs_passes_the_suite") {
        suite::run(Variant {
            driver: Driver::Kernel,
            format: WhiteoutFormat::KERNEL,
            host_root: true,
            ns_root: true,
            options: &[],
        });
    }
}
