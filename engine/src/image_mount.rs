//! `strata mount IMAGE DIR [--upper DIR]`: an image's layers under a union mount served by a
//! process of its own, read-only, or writable with changes in `DIR/upper` and scratch space
//! in `DIR/work`; `umount DIR` ends it (the server exits once its mount is gone).
//!
//! ```text
//!   strata mount ──start()──▶ strata __mount ID DIR ──serve()──▶ Store::image_layers
//!        ▲   (waits for "ready")        │                         (Vec<Arc<dyn Layer>>)
//!        └──────────────────────────────┘                               │
//!                                    strata_fs::mount::build_union ◀────┘ → mount → serve
//! ```
//! The layers come from the store as a container's do ([`Store::image_layers`]), not from
//! index paths handed to `strata-fs`: one code path opens an image's layers.

use std::path::{Path, PathBuf};
use std::process::Command;

use strata_fs::mount;
use strata_fs::options::MountOptions;
use strata_image::store::image::Image;
use strata_image::store::Store;

use crate::{Error, Result};

/// The directories of a writable mount's upper and work under `dir`.
fn upper_dirs(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("upper"), dir.join("work"))
}

/// Mounts `img` at `dir` (`upper`: the directory of a writable mount's changes) from a
/// server process of its own, and returns once the mount is ready. The layers' indexes are
/// built here first, so an image that cannot be mounted fails in this process.
pub fn start(store: &Store, img: &Image, dir: &Path, upper: Option<&Path>) -> Result<()> {
    store.image_layer_dirs(img)?;
    if let Some(upper) = upper {
        let (u, w) = upper_dirs(upper);
        for d in [u, w] {
            std::fs::create_dir_all(&d).map_err(|source| Error::Os {
                step: "creating the upper and work directories",
                source,
            })?;
        }
    }
    let exe = std::env::current_exe().map_err(|source| Error::Os {
        step: "finding the strata executable",
        source,
    })?;
    let mut cmd = Command::new(exe);
    cmd.arg("--root")
        .arg(store.root())
        .arg("__mount")
        .arg(img.id.to_string())
        .arg(dir);
    if let Some(upper) = upper {
        cmd.arg("--upper").arg(upper);
    }
    mount::start_server(cmd.stdin(std::process::Stdio::null()))?;
    Ok(())
}

/// `strata __mount ID DIR [--upper DIR]`: the server [`start`] runs. Mounts image `id`'s
/// layers from the store at `dir`, reports ready, serves until unmounted.
pub fn serve(store: &Store, id: &str, dir: &Path, upper: Option<&Path>) -> Result<()> {
    let _ = nix::unistd::setsid();
    // Modes of new files are the caller's, already masked by the kernel.
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    // Before any thread starts, so that every thread has them blocked.
    let signals = mount::block_end_signals().map_err(|e| Error::Os {
        step: "blocking signals",
        source: e.into(),
    })?;
    let table = store.table()?;
    let img = store.find(&table, id)?.image().clone();
    strata_image::store::lazy::serve_mounts();
    let lowers = store.image_layers(&img)?;
    let mut opts = MountOptions::default();
    if let Some(upper) = upper {
        let (u, w) = upper_dirs(upper);
        opts.upperdir = Some(u);
        opts.workdir = Some(w);
    }
    opts.validate_upper()?;
    let union = mount::build_union(lowers, &opts)?;
    let source = format!("strata:{}", img.id.short());
    let mounted = mount::mount(union, &opts, Some(&source), dir)?;
    mounted
        .serve(signals, || mount::report_ready(false))
        .map_err(|source| Error::Os {
            step: "serving the mount",
            source,
        })
}
