//! RUN: the command runs in a container on the stage's image so far, made and started
//! through the engine's own create and run path (`strata start -a` in a child process: the
//! monitor enters its namespaces there, not in the builder), and its upper becomes a layer
//! through strata-fs's changes writer.

use std::process::{Command, Stdio};
use std::sync::Arc;

use strata_image::store::author::{Authoring, NewLayer};
use strata_image::store::image::Image;
use strata_image::store::Store;

use crate::containers::{Containers, Record};
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
    if !req.add_hosts.is_empty() {
        return Err(Error::InvalidFlag(
            "--add-host needs the default network's /etc/hosts, which this strata has not".into(),
        ));
    }
    let mut argv = vec![req.image.id.to_string()];
    argv.extend(req.argv.iter().cloned());
    let opts = CreateOptions {
        // The image's entrypoint and CMD do not apply to a RUN.
        entrypoint: Some(String::new()),
        env,
        network: req.network.clone(),
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

/// The layer of what the step's container changed: its upper over the image's layers,
/// through strata-fs's changes walk and layer tar writer.
pub fn layer(authoring: &Authoring<'_>, c: &StepContainer<'_>) -> Result<NewLayer> {
    let store = authoring.store();
    let dir = Containers::new(store).dir(&c.record.id);
    let mut lowers: Vec<Arc<dyn strata_fs::layer::Layer>> = Vec::new();
    for d in crate::monitor::layer_dirs(store, &c.record)? {
        let l = strata_fs::layer::IndexedLayer::open(&d).map_err(|source| Error::ChangesLayer {
            path: d.clone(),
            source: Box::new(source),
        })?;
        lowers.push(Arc::new(l));
    }
    let set = strata_fs::changes::changes(&dir.join("upper"), Some(&dir.join("work")), &lowers)
        .map_err(|source| Error::Changes(Box::new(source)))?;
    let opts = strata_fs::changes::TarOptions {
        read_override: !strata_fs::mount::privileged(),
        ids: rootless_ids(),
    };
    let mut tmp = tempfile::tempfile_in(store.tmp_dir()).map_err(|source| Error::Create {
        path: store.tmp_dir(),
        source,
    })?;
    let f = set
        .write_tar(&opts, &mut tmp)
        .map_err(|source| Error::Changes(Box::new(source)))?;
    let _ = f;
    use std::io::Seek;
    tmp.rewind()
        .map_err(|source| Error::WriteLayerTar { source })?;
    Ok(authoring.add_layer(&mut tmp)?)
}

/// Rootless, the upper's files belong to the caller's ids, which the container saw as
/// root (and the subordinate ranges as the ids above): the same mapping read back.
fn rootless_ids() -> strata_fs::ids::IdMapper {
    if nix::unistd::geteuid().is_root() {
        return Default::default();
    }
    let m = strata_runtime::idmap::IdMapping::detect();
    let conv = |r: &[strata_runtime::idmap::IdRange]| {
        r.iter()
            .map(|r| strata_fs::ids::IdRange {
                container: r.inside,
                host: r.outside,
                len: r.count,
            })
            .collect()
    };
    strata_fs::ids::IdMapper {
        uids: conv(&m.uids),
        gids: conv(&m.gids),
        ..Default::default()
    }
}
