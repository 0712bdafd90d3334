//! RUN: the command runs in a container on the stage's image so far, made and started
//! through the engine's own create and run path (`strata start -a` in a child process: the
//! monitor enters its namespaces there, not in the builder), and its upper becomes a layer
//! through `commit`'s changes tar.

use std::process::{Command, Stdio};

use strata_image::store::author::{Authoring, NewLayer};
use strata_image::store::image::Image;
use strata_image::store::Store;

use crate::containers::Record;
use crate::create::{create, CreateOptions};
use crate::{Error, Result};

/// What a RUN step runs and how.
pub struct RunRequest<'a> {
    pub image: &'a Image,
    pub argv: Vec<String>,
    /// The build args in effect, as `K=V` (ENV of the same name wins, as docker's).
    pub env: Vec<String>,
    pub network: Option<String>,
    pub add_hosts: &'a [String],
    /// The command's output goes nowhere (`build -q`).
    pub quiet: bool,
}

/// A container made for a RUN step; removed (with its anonymous volumes) when dropped.
pub struct StepContainer<'s> {
    store: &'s Store,
    pub record: Record,
}

impl Drop for StepContainer<'_> {
    fn drop(&mut self) {
        let _ = crate::monitor::remove_container(self.store, &self.record, true);
    }
}

/// Makes the step's container.
pub fn make<'s>(store: &'s Store, req: &RunRequest<'_>) -> Result<StepContainer<'s>> {
    let config = req.image.config.config.as_ref();
    let image_env: Vec<String> = config
        .and_then(|c| c.get("Env"))
        .and_then(|e| e.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let env = req
        .env
        .iter()
        .filter(|kv| {
            let k = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
            !image_env
                .iter()
                .any(|e| e.split_once('=').map(|(n, _)| n) == Some(k))
        })
        .cloned()
        .collect();
    let mut argv = vec![req.image.id.to_string()];
    argv.extend(req.argv.iter().cloned());
    let opts = CreateOptions {
        // The image's entrypoint and CMD do not apply to a RUN.
        entrypoint: Some(String::new()),
        env,
        network: req.network.clone(),
        add_host: req.add_hosts.to_vec(),
        argv,
        ..Default::default()
    };
    let record = create(store, &opts, &strata_image::pull::Silent, &|_| {})?;
    Ok(StepContainer { store, record })
}

/// Runs the step's container to its end; its exit status (docker's: 125 when it could not
/// start, 126/127 when the command could not run).
pub fn run(store: &Store, c: &StepContainer<'_>, quiet: bool) -> Result<i32> {
    let exe = std::env::current_exe().map_err(|source| Error::Os {
        step: "finding the strata binary",
        source,
    })?;
    let out = || match quiet {
        true => Stdio::null(),
        false => Stdio::inherit(),
    };
    let status = Command::new(exe)
        .arg("--root")
        .arg(store.root())
        .args(["start", "-a", &c.record.id])
        .stdin(Stdio::null())
        .stdout(out())
        .stderr(out())
        .status()
        .map_err(|source| Error::Os {
            step: "starting the RUN container",
            source,
        })?;
    Ok(status.code().unwrap_or(255))
}

/// The layer of what the step's container changed: the container's changes tar as
/// `commit` writes it (rootless through the same helper), into the store.
pub fn layer(authoring: &Authoring<'_>, c: &StepContainer<'_>) -> Result<NewLayer> {
    crate::commit::with_tar(
        authoring.store(),
        &c.record,
        crate::commit::TarKind::Changes,
        &mut |tar| Ok(authoring.add_layer(tar)?),
    )
}

/// Whether the file system at `path` is full (under 1 MiB left for unprivileged writers):
/// the likely reason a RUN that wrote to it failed, said with its status.
pub fn disk_full(path: &std::path::Path) -> bool {
    nix::sys::statvfs::statvfs(path)
        .is_ok_and(|st| st.blocks_available().saturating_mul(st.fragment_size()) < 1 << 20)
}
