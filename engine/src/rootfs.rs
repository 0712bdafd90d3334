//! A container's root file system as a union: its image's layers from the store (top
//! first), its upper and work directories, and the init layer of a running container.
//! The monitor mounts it, strata's own FUSE server ([`crate::fs_server`]) serves it,
//! `commit` and `export` read it unmounted.

use std::path::Path;
use std::sync::Arc;

use strata_fs::layer::Layer;
use strata_image::store::Store;

use crate::containers::Record;
use crate::{Error, Result};

/// The union options of a container whose directory is `dir`: its upper and work
/// directories (the monitor mounts the union; `export` reads it unmounted). The lowers are
/// [`layers`].
pub fn union_options(dir: &Path) -> Result<strata_fs::options::MountOptions> {
    let mut o = strata_fs::options::MountOptions {
        upperdir: Some(dir.join("upper")),
        workdir: Some(dir.join("work")),
        // Container processes run as other users than the server.
        allow_other: true,
        ..Default::default()
    };
    o.validate_upper()?;
    Ok(o)
}

/// The union of a container whose directory is `dir`: its image's layers under `init` (the
/// init layer, for a running container) and its upper; and the options it was built with.
pub(crate) fn container_union(
    store: &Store,
    rec: &Record,
    dir: &Path,
    init: Option<&Path>,
) -> Result<(strata_fs::Union, strata_fs::options::MountOptions)> {
    let mut opts = union_options(dir)?;
    opts.lowerdirs = init.map(Path::to_path_buf).into_iter().collect();
    let mut lowers = strata_fs::mount::open_lowers(&opts)?;
    lowers.extend(layers(store, rec)?);
    let union = strata_fs::mount::build_union(lowers, &opts)?;
    Ok((union, opts))
}

/// The layers of a container's image as its union's lowers, top first, from the store
/// ([`Store::open_layers`], the one opener of an image's layers).
pub fn layers(store: &Store, rec: &Record) -> Result<Vec<Arc<dyn Layer>>> {
    let diff_ids = rec
        .diff_ids
        .iter()
        .map(|d| strata_image::digest::Digest::parse(d))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    store.open_layers(&diff_ids).map_err(|e| match e {
        strata_image::Error::MissingLayer { diff_id } => Error::MissingLayer {
            diff_id: diff_id.to_string(),
            image: rec.image.clone(),
        },
        e => e.into(),
    })
}
