//! A container's filesystem as a tar: its changes as a layer (`commit`) and its merged view
//! (`export`), and `commit` itself.
//!
//! ```text
//!   commit: pause (freezer) ─> changes(upper, work, image layers) ─> ChangeSet::write_tar
//!            ─(pipe)─> strata-image Authoring::add_layer ─> write_image (base + layer,
//!            the container's config with -c changes, one history row) ─> thaw
//!   export: the container's union (as the monitor builds it, not mounted) ─> export_tar
//! ```
//!
//! Both read the container's upper and layers on the host, never the container's own mount
//! namespace, so what the runtime bind-mounts into a container (volumes, `/etc/hosts`,
//! `/etc/hostname`, `/etc/resolv.conf` from its state directory) stays out, as docker keeps
//! it out. The tar is written in one thread and consumed in another (the layer's compression
//! and indexing), through a pipe.
//!
//! Rootless, the upper holds ids as the container's user namespace sees them (and
//! `user.containers.override_stat` records the ones the host refused, in those terms), and
//! files of subordinate ids the caller cannot read: the walk then runs in a helper process
//! (`strata __tar`, [`tar_helper_main`]) that enters the same user namespace mapping as the
//! monitor, so it reads what the container's union reads.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use strata_fs::changes::TarOptions;
use strata_image::change::ConfigChanger;
use strata_image::oci::History;
use strata_image::reference::Reference;
use strata_image::store::author::{NewImage, WrittenImage};
use strata_image::store::Store;
use strata_runtime::cgroups::Cgroup;

use crate::containers::{Containers, Record, Status};
use crate::{Error, Result};

/// Which tar of a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TarKind {
    /// The OCI layer tar of its upper's changes over its image.
    Changes,
    /// Its whole merged filesystem.
    Export,
}

impl TarKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TarKind::Changes => "changes",
            TarKind::Export => "export",
        }
    }

    pub fn parse(s: &str) -> Option<TarKind> {
        match s {
            "changes" => Some(TarKind::Changes),
            "export" => Some(TarKind::Export),
            _ => None,
        }
    }
}

/// `commit`'s options (docker's flags).
#[derive(Clone, Debug)]
pub struct CommitOptions {
    /// `-a`: the config's author and the history row's.
    pub author: Option<String>,
    /// `-m`: the history row's comment.
    pub message: Option<String>,
    /// `-c`: Dockerfile instructions applied to the container's config.
    pub changes: Vec<String>,
    /// `-p` (default true): freeze the container while its upper is read.
    pub pause: bool,
    /// `REPO[:TAG]`.
    pub tag: Option<Reference>,
}

impl Default for CommitOptions {
    fn default() -> Self {
        CommitOptions {
            author: None,
            message: None,
            changes: Vec::new(),
            pause: true,
            tag: None,
        }
    }
}

/// Thaws a container frozen for a commit when dropped.
struct Frozen(Option<Cgroup>);

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Some(cg) = self.0.take() {
            let _ = cg.thaw();
        }
    }
}

/// The container's runtime config as docker's commit takes it: the image's, with what the
/// container was created with (Env, Cmd, Entrypoint, WorkingDir, User, Labels, ports).
pub fn container_config(image_config: Option<&Value>, rec: &Record) -> Value {
    let mut c = image_config
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let list = |v: &Vec<String>| match v.is_empty() {
        true => Value::Null,
        false => json!(v),
    };
    c.insert("Env".into(), json!(rec.spec.process.env));
    c.insert("Cmd".into(), list(&rec.cmd));
    c.insert("Entrypoint".into(), list(&rec.entrypoint));
    c.insert("WorkingDir".into(), json!(rec.spec.process.cwd));
    c.insert("User".into(), json!(rec.user));
    if !rec.labels.is_empty() {
        c.insert("Labels".into(), json!(rec.labels));
    }
    if !rec.exposed.is_empty() {
        let ports: serde_json::Map<String, Value> =
            rec.exposed.iter().map(|p| (p.clone(), json!({}))).collect();
        c.insert("ExposedPorts".into(), Value::Object(ports));
    }
    if !rec.stop_signal.is_empty() {
        c.insert("StopSignal".into(), json!(rec.stop_signal));
    }
    Value::Object(c)
}

/// `strata commit`: a new image of the container's image plus one layer of its changes.
/// The `-c` changes are checked before anything is read; on any error nothing is stored and
/// the container is thawed.
pub fn commit(store: &Store, rec: &Record, opts: &CommitOptions) -> Result<WrittenImage> {
    let table = store.table()?;
    let base = store
        .find(&table, &rec.image_id)
        .map_err(|source| Error::CommitBase {
            image: rec.image.clone(),
            source,
        })?
        .image()
        .clone();
    let mut changer = ConfigChanger::new(Some(&container_config(base.config.config.as_ref(), rec)));
    for c in &opts.changes {
        changer.apply_line(c)?;
    }
    let containers = Containers::new(store);
    let st = containers.state(&rec.id)?;
    let _frozen = match (opts.pause, st.status) {
        (true, Status::Running) => {
            let cg = Cgroup::of(&rec.id);
            // Rootless without a delegated cgroup there is no freezer: commit unpaused, as
            // podman does there.
            match cg.exists() {
                true => {
                    cg.freeze().map_err(|source| Error::CommitPause {
                        id: rec.id.clone(),
                        source,
                    })?;
                    Frozen(Some(cg))
                }
                false => Frozen(None),
            }
        }
        _ => Frozen(None),
    };
    let authoring = store.authoring()?;
    let layer = with_tar(store, rec, TarKind::Changes, &mut |tar| {
        Ok(authoring.add_layer(tar)?)
    })?;
    drop(_frozen);
    let created_by = std::iter::once(rec.path.as_str())
        .chain(rec.args.iter().map(String::as_str))
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let image = NewImage {
        base: Some(base),
        layers: vec![layer],
        config: Some(changer.into_value()),
        history: vec![History {
            created_by: Some(created_by),
            author: opts.author.clone(),
            comment: opts.message.clone(),
            ..Default::default()
        }],
        author: opts.author.clone(),
        created: None,
        tags: opts.tag.iter().cloned().collect(),
    };
    Ok(authoring.write_image(&image)?)
}

/// Streams the container's tar of `kind` to `f` (as a reader), written by a thread of this
/// process where it may read the upper as the union does (root), else by `strata __tar`.
/// The writer's error wins over the reader's: a reader sees only a cut stream.
pub fn with_tar<T>(
    store: &Store,
    rec: &Record,
    kind: TarKind,
    f: &mut dyn FnMut(&mut dyn Read) -> Result<T>,
) -> Result<T> {
    if strata_fs::mount::privileged() {
        let (r, w) = nix::unistd::pipe().map_err(Error::os("making a pipe"))?;
        return std::thread::scope(|s| {
            let writer = s.spawn(move || {
                let mut w = File::from(w);
                write_tar_here(store, rec, kind, &mut w)
            });
            let mut r = File::from(r);
            let read = f(&mut r);
            // A writer blocked on a full pipe gets EPIPE once nobody reads.
            drop(r);
            let written = writer.join().unwrap_or_else(|_| {
                Err(Error::TarWriter {
                    kind: kind.as_str(),
                    id: rec.id.clone(),
                    message: "the tar writer panicked".into(),
                })
            });
            match (read, written) {
                (Ok(v), Ok(())) => Ok(v),
                // The reader stopped early on purpose (`export | head`).
                (Ok(v), Err(e)) if broken_pipe(&e) => Ok(v),
                (Err(e), Ok(())) => Err(e),
                (Err(e), Err(w)) if broken_pipe(&w) => Err(e),
                (_, Err(e)) => Err(e),
            }
        });
    }
    let exe = std::env::current_exe().map_err(|source| Error::Os {
        step: "finding the strata binary",
        source,
    })?;
    let mut child = Command::new(exe)
        .arg("--root")
        .arg(store.root())
        .args(["__tar", kind.as_str(), &rec.id])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Os {
            step: "starting the tar helper (strata __tar)",
            source,
        })?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    // stderr is drained beside stdout, so a chatty helper never blocks on it.
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let read = f(&mut out);
    drop(out);
    let status = child.wait().map_err(|source| Error::Os {
        step: "waiting for the tar helper",
        source,
    })?;
    let message = errors.join().unwrap_or_default();
    if !status.success() {
        let message = message.trim();
        let message = message.strip_prefix("Error: ").unwrap_or(message);
        return Err(Error::TarWriter {
            kind: kind.as_str(),
            id: rec.id.clone(),
            message: match message.is_empty() {
                true => format!("the tar helper failed ({status})"),
                false => message.to_string(),
            },
        });
    }
    read
}

/// Whether `e` is a write to a pipe nobody reads any more.
fn broken_pipe(e: &Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Writes the container's tar of `kind` to `out` from this process, which must see the
/// upper as the container's union does: privileged, or in the container's user namespace
/// mapping (see the module docs).
pub fn write_tar_here(
    store: &Store,
    rec: &Record,
    kind: TarKind,
    out: &mut dyn Write,
) -> Result<()> {
    let dir = Containers::new(store).dir(&rec.id);
    let stream_err = |source| Error::TarStream {
        kind: kind.as_str(),
        id: rec.id.clone(),
        source,
    };
    match kind {
        TarKind::Changes => {
            let lowers = crate::rootfs::layers(store, rec)?;
            let set =
                strata_fs::changes::changes(&dir.join("upper"), Some(&dir.join("work")), &lowers)
                    .map_err(|source| Error::Changes {
                    id: rec.id.clone(),
                    source,
                })?;
            let opts = TarOptions {
                // The container's union reads the override where it is not privileged.
                read_override: !strata_fs::mount::privileged(),
                ids: Default::default(),
            };
            let out = std::io::BufWriter::with_capacity(256 * 1024, out);
            let mut out = set.write_tar(&opts, out).map_err(|source| Error::Changes {
                id: rec.id.clone(),
                source,
            })?;
            out.flush().map_err(stream_err)?;
        }
        TarKind::Export => {
            let opts = crate::rootfs::union_options(&dir)?;
            let union = strata_fs::mount::build_union(crate::rootfs::layers(store, rec)?, &opts)?;
            let out = std::io::BufWriter::with_capacity(256 * 1024, out);
            let mut out =
                strata_fs::changes::export_tar(&union, out).map_err(|source| Error::Changes {
                    id: rec.id.clone(),
                    source,
                })?;
            out.flush().map_err(stream_err)?;
        }
    }
    Ok(())
}

/// `strata __tar changes|export ID`: writes the tar to stdout, rootless from inside a user
/// namespace with the monitor's mapping. Must run single-threaded (a kernel rule for
/// entering a user namespace).
pub fn tar_helper_main(root: &Path, kind: TarKind, id: &str) -> Result<()> {
    let store = Store::new(root);
    let rec = Containers::new(&store).record(id)?;
    if !nix::unistd::geteuid().is_root() {
        let mapping = strata_runtime::idmap::IdMapping::detect();
        strata_runtime::idmap::enter_user_namespace(&mapping).map_err(|source| {
            Error::RuntimeStep {
                step: "entering a user namespace",
                source,
            }
        })?;
    }
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    write_tar_here(&store, &rec, kind, &mut lock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_config_is_the_containers() {
        let rec = Record {
            cmd: vec!["sh".into(), "-c".into(), "true".into()],
            user: "nobody".into(),
            exposed: vec!["80/tcp".into()],
            labels: [("a".to_string(), "1".to_string())].into(),
            spec: strata_runtime::ContainerSpec {
                process: strata_runtime::ProcessSpec {
                    env: vec!["PATH=/bin".into(), "X=1".into()],
                    cwd: "/srv".into(),
                    ..Default::default()
                },
                ..Default::default()
            },
            ..Default::default()
        };
        let c = container_config(
            Some(&json!({"Env": ["PATH=/bin"], "Cmd": ["sh"], "OnBuild": ["RUN x"]})),
            &rec,
        );
        assert_eq!(c["Env"], json!(["PATH=/bin", "X=1"]));
        assert_eq!(c["Cmd"], json!(["sh", "-c", "true"]));
        assert_eq!(c["Entrypoint"], Value::Null);
        assert_eq!(c["WorkingDir"], "/srv");
        assert_eq!(c["User"], "nobody");
        assert_eq!(c["ExposedPorts"], json!({"80/tcp": {}}));
        assert_eq!(c["Labels"], json!({"a": "1"}));
        // What the container does not override stays the image's.
        assert_eq!(c["OnBuild"], json!(["RUN x"]));
    }
}
