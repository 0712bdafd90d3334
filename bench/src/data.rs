//! The benchmark data, generated deterministically (same names, sizes and bytes on every
//! run) into four layer directories in kernel overlayfs format — whiteouts are 0/0 character
//! devices, opaque directories carry `trusted.overlay.opaque=y` — which kernel overlayfs,
//! fuse-overlayfs and strata-fs all read, so the three drivers serve identical layers.
//!
//! ```text
//!   layers/L0 (bottom) … L3 (top)
//!     walk/dDDD/sSS/     the metadata tree: each leaf directory spans 1-4 layers, with
//!                        files shadowed by upper layers, whiteouts and an opaque subdir
//!     readdir/big/       one directory whose entries are spread over L1-L3, plus names
//!                        L1 has and L3 whites out
//!     big/seq.bin        (L0) the sequential and random read file
//!     big/copyup.bin     (L0) the copy-up and chmod file
//!     small/dDD/fFFF     (L0) the `chmod -R` files: 100 a directory, 1 KiB each
//!   native/              the merged trees copied flat (cp -a from a kernel overlay mount),
//!                        and a plain copy of copyup.bin
//!   untar.tar            the small-file archive (tar, one directory `untar/`)
//! ```

use std::fs;
use std::io::{BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use strata_tests::fixture::{LayerBuilder, WhiteoutFormat};

use crate::ops::Counts;
use crate::scratch::{self, Scratch};

pub const LAYERS: usize = 4;
pub const WALK_DIR: &str = "walk";
pub const READDIR_DIR: &str = "readdir/big";
pub const SEQ_FILE: &str = "big/seq.bin";
pub const COPYUP_FILE: &str = "big/copyup.bin";
pub const UNTAR_DIR: &str = "untar";
pub const CHMODR_DIR: &str = "small";

/// How much data each workload uses.
#[derive(Clone, Debug)]
pub struct Sizes {
    pub walk_top_dirs: usize,
    pub walk_leaf_dirs: usize,
    pub walk_files_per_leaf: usize,
    pub readdir_entries: usize,
    pub seq_bytes: u64,
    pub fio_runtime_secs: u32,
    pub copyup_bytes: u64,
    pub chmodr_files: usize,
    pub untar_files: usize,
    pub image_bytes: u64,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes {
            walk_top_dirs: 100,
            walk_leaf_dirs: 20,
            walk_files_per_leaf: 50,
            readdir_entries: 30_000,
            seq_bytes: 1 << 30,
            fio_runtime_secs: 10,
            copyup_bytes: 512 << 20,
            chmodr_files: 2_000,
            untar_files: 20_000,
            image_bytes: 12 << 30,
        }
    }

    /// A smoke run: every workload, a tenth of the data.
    pub fn quick() -> Sizes {
        Sizes {
            walk_top_dirs: 20,
            walk_leaf_dirs: 10,
            walk_files_per_leaf: 50,
            readdir_entries: 3_000,
            seq_bytes: 128 << 20,
            fio_runtime_secs: 3,
            copyup_bytes: 64 << 20,
            chmodr_files: 500,
            untar_files: 2_000,
            image_bytes: 3 << 30,
        }
    }

    /// Non-directory entries of the merged walk tree.
    pub fn walk_files(&self) -> usize {
        self.walk_top_dirs * self.walk_leaf_dirs * self.walk_files_per_leaf
    }
}

/// Where everything lives on the scratch filesystem.
pub struct Layout {
    /// Bottom first.
    layers: Vec<PathBuf>,
    pub native: PathBuf,
    pub tar: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout {
            layers: (0..LAYERS)
                .map(|i| root.join("layers").join(format!("L{i}")))
                .collect(),
            native: root.join("native"),
            tar: root.join("untar.tar"),
        }
    }

    /// Creates the (empty) layer directories: every mount stacks all four.
    pub fn create(&self) -> Result<()> {
        for dir in self.layers.iter().chain([&self.native]) {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(())
    }

    /// The lower directories, top first, as `lowerdir=` lists them.
    pub fn lowers(&self) -> Vec<PathBuf> {
        self.layers.iter().rev().cloned().collect()
    }

    /// The bottom layer, whose big files are read natively in place.
    pub fn bottom(&self) -> &Path {
        &self.layers[0]
    }
}

/// splitmix64: a fixed generator, so the data does not depend on a crate's version.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The merged walk tree, per layer, and what a walk of the merged view must count.
pub fn walk_layers(sizes: &Sizes) -> (Vec<LayerBuilder>, Counts) {
    let mut layers: Vec<LayerBuilder> = vec![LayerBuilder::new(); LAYERS];
    let mut add = |k: usize, f: &dyn Fn(LayerBuilder) -> LayerBuilder| {
        layers[k] = f(std::mem::take(&mut layers[k]));
    };
    let mut expected = Counts::default();
    for d in 0..sizes.walk_top_dirs {
        expected.dirs += 1;
        for s in 0..sizes.walk_leaf_dirs {
            expected.dirs += 1;
            let n = d * sizes.walk_leaf_dirs + s;
            // The layers this directory has entries in: 1 to 4 of them, rotating.
            let span = 1 + n % LAYERS;
            let base = (n / LAYERS) % LAYERS;
            let set: Vec<usize> = (0..span).map(|k| (base + k) % LAYERS).collect();
            let (lowest, highest) = (*set.iter().min().unwrap(), *set.iter().max().unwrap());
            let dir = format!("{WALK_DIR}/d{d:03}/s{s:02}");
            for f in 0..sizes.walk_files_per_leaf {
                let layer = set[f % span];
                let name = format!("{dir}/f{f:04}");
                if f % 10 == 9 {
                    let target = format!("f{:04}", f - 1);
                    add(layer, &|l| l.symlink(&name, &target));
                    expected.symlinks += 1;
                } else {
                    let content =
                        format!("{n}:{f}\n").repeat((mix(n as u64 ^ f as u64) % 8) as usize);
                    add(layer, &|l| l.file(&name, &content));
                    expected.files += 1;
                }
                if f % 5 == 0 && layer != lowest {
                    add(lowest, &|l| l.file(&name, "shadowed\n"));
                }
            }
            if span >= 2 {
                for g in 0..5 {
                    let name = format!("{dir}/gone{g}");
                    add(lowest, &|l| l.file(&name, "deleted above\n"));
                    add(highest, &|l| l.whiteout(&name));
                }
                if n % 10 == 0 {
                    for h in 0..10 {
                        let name = format!("{dir}/o/h{h:02}");
                        add(lowest, &|l| l.file(&name, "hidden by an opaque dir\n"));
                    }
                    let name = format!("{dir}/o");
                    add(highest, &|l| l.opaque(&name));
                    expected.dirs += 1;
                }
            }
        }
    }
    (layers, expected)
}

/// The big directory: entries round-robin over L1-L3, plus a thirtieth more names in L1
/// that L3 whites out. Returns the per-layer content and the merged entry count.
pub fn readdir_layers(sizes: &Sizes) -> (Vec<LayerBuilder>, usize) {
    let mut layers: Vec<LayerBuilder> = vec![LayerBuilder::new(); LAYERS];
    for i in 0..sizes.readdir_entries {
        let k = 1 + i % 3;
        layers[k] = std::mem::take(&mut layers[k]).file(format!("{READDIR_DIR}/e{i:06}"), "");
    }
    for i in 0..sizes.readdir_entries / 30 {
        let name = format!("{READDIR_DIR}/x{i:05}");
        layers[1] = std::mem::take(&mut layers[1]).file(&name, "");
        layers[3] = std::mem::take(&mut layers[3]).whiteout(&name);
    }
    (layers, sizes.readdir_entries)
}

/// Writes per-layer content into the layer directories, one thread per layer.
pub fn write_layers(layout: &Layout, layers: &[LayerBuilder]) -> Result<()> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = layers
            .iter()
            .zip(&layout.layers)
            .map(|(content, dir)| {
                scope.spawn(move || {
                    content
                        .write_dir(dir, WhiteoutFormat::KERNEL)
                        .with_context(|| format!("writing layer {}", dir.display()))
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("layer writer panicked"))
    })
}

/// A file of `bytes` pseudo-random bytes (no holes: every block is on disk).
pub fn write_big_file(path: &Path, bytes: u64, seed: u64) -> Result<()> {
    fs::create_dir_all(path.parent().context("a file in a directory")?)?;
    let mut out = BufWriter::with_capacity(
        1 << 20,
        fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    let mut block = vec![0u8; 1 << 20];
    let mut written = 0u64;
    let mut state = seed;
    while written < bytes {
        for word in block.chunks_exact_mut(8) {
            state = mix(state);
            word.copy_from_slice(&state.to_le_bytes());
        }
        let n = (bytes - written).min(block.len() as u64) as usize;
        out.write_all(&block[..n])?;
        written += n as u64;
    }
    out.into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
        .with_context(|| format!("writing {}", path.display()))
}

/// The `chmod -R` tree: `dir/dDD/fFFF`, 100 files a directory, 1 KiB each, mode 0644.
pub fn write_small_files(dir: &Path, files: usize) -> Result<()> {
    for i in 0..files {
        let sub = dir.join(format!("d{:02}", i / 100));
        if i % 100 == 0 {
            fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
        }
        let path = sub.join(format!("f{:03}", i % 100));
        let bytes: Vec<u8> = (0..128u64)
            .flat_map(|w| mix(i as u64 * 128 + w).to_le_bytes())
            .collect();
        fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

/// The small-file archive: `untar/dDDD/fFFFF`, 100 files a directory, 0-4 KiB each.
pub fn write_tar(path: &Path, files: usize) -> Result<()> {
    let mut content = LayerBuilder::new().dir(UNTAR_DIR);
    for i in 0..files {
        if i % 100 == 0 {
            content = content.dir(format!("{UNTAR_DIR}/d{:03}", i / 100));
        }
        let len = (mix(i as u64) % 4096) as usize;
        let byte = b'a' + (i % 26) as u8;
        content = content.file(
            format!("{UNTAR_DIR}/d{:03}/f{i:05}", i / 100),
            vec![byte; len],
        );
    }
    let out = BufWriter::new(fs::File::create(path)?);
    // A fixed mtime keeps the archive byte-for-byte the same.
    content.write_tar(out, 1_700_000_000)
}

/// Copies `rel` of the merged view (kernel overlayfs over the lowers, read-only) to
/// `native/rel` with `cp -a`: the flat tree native ext4 is measured on.
pub fn copy_merged(scratch: &Scratch, layout: &Layout, rels: &[&str]) -> Result<()> {
    if rels.is_empty() {
        return Ok(());
    }
    let merged = scratch.mount_lowers(&layout.lowers())?;
    for rel in rels {
        let to = layout.native.join(rel);
        fs::create_dir_all(to.parent().context("a path below native/")?)?;
        scratch::run(
            Command::new("cp")
                .arg("-a")
                .arg(merged.path().join(rel))
                .arg(&to),
        )?;
    }
    merged.unmount()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_fixed() {
        // splitmix64's published first output for seed 0.
        assert_eq!(mix(0), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn the_walk_tree_has_the_requested_number_of_files() {
        let sizes = Sizes::quick();
        let (layers, expected) = walk_layers(&sizes);
        assert_eq!(layers.len(), LAYERS);
        assert_eq!(expected.files + expected.symlinks, sizes.walk_files());
        assert_eq!(expected.symlinks, sizes.walk_files() / 10);
        // Top directories, leaves, and an opaque subdirectory in some leaves.
        assert!(expected.dirs > sizes.walk_top_dirs * (1 + sizes.walk_leaf_dirs));
    }
}
