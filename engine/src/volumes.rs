//! Volumes: `ROOT/volumes/<name>/_data`, the directory a container sees, and
//! `ROOT/volumes/<name>/volume.json`, what `volume create` was told (labels, options, the
//! time). A named volume (`-v NAME:/path`, `volume create NAME`) outlives its containers; an
//! anonymous one (`-v /path`, an image's `Volumes`, `volume create` without a name) is named
//! by 64 random hex digits and carries docker's `com.docker.volume.anonymous` label, so
//! `rm -v` and `volume prune` (without `-a`) take it. A volume made before `volume.json`
//! existed reads as made at its directory's mtime, anonymous when its name is 64 hex digits.
//!
//! Lock order: the volumes lock (`ROOT/locks/volumes`), then the containers' names lock.
//! Making a volume for a container holds the volumes lock until the container's record is
//! written ([`VolumesLock`]), and removing one holds it from the in-use check to the removal,
//! so a `volume rm` racing a `run -v` never deletes data a container was just given.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use strata_image::store::{fsutil, lock::Lock, Store};

use crate::containers::{dir_size, Containers, Record};
use crate::volume_options::LocalMount;
use crate::{Error, Result};

/// docker's label on anonymous volumes (docker 23+): `volume prune` without `-a` takes
/// only these.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

/// The option keys docker's `local` driver takes.
const LOCAL_OPTIONS: [&str; 4] = ["type", "device", "o", "size"];

/// A volume as docker's `volume inspect` shows it (its field names and order).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Volume {
    /// RFC 3339, seconds.
    pub created_at: String,
    pub driver: String,
    pub labels: BTreeMap<String, String>,
    pub mountpoint: PathBuf,
    pub name: String,
    pub options: BTreeMap<String, String>,
    pub scope: String,
}

impl Volume {
    pub fn anonymous(&self) -> bool {
        self.labels.contains_key(ANONYMOUS_LABEL)
    }
}

/// What `volume.json` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Meta {
    created_at: String,
    labels: BTreeMap<String, String>,
    options: BTreeMap<String, String>,
}

/// `volume create`'s flags, as given.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// None: a generated (anonymous) name, as docker.
    pub name: Option<String>,
    /// `--driver`; only `local` exists.
    pub driver: Option<String>,
    /// `--label K=V` (or `K`).
    pub labels: Vec<String>,
    /// `-o K=V`.
    pub options: Vec<String>,
}

/// The volumes lock, held (see the module's lock order).
pub struct VolumesLock(#[allow(dead_code)] Lock);

pub struct Volumes {
    dir: PathBuf,
    tmp: PathBuf,
    lock: PathBuf,
}

/// docker's rule for volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(name: &str) -> bool {
    crate::containers::valid_name(name)
}

fn invalid_name(name: &str) -> Error {
    Error::VolumeName(format!(
        "create {name}: \"{name}\" includes invalid characters for a local volume name, \
         only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host \
         directory, use absolute path"
    ))
}

/// An RFC 3339 time to the second, as docker writes a volume's CreatedAt.
fn rfc3339_seconds(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl Volumes {
    pub fn new(store: &Store) -> Volumes {
        Volumes {
            dir: store.root().join("volumes"),
            tmp: store.tmp_dir(),
            lock: store.root().join("locks").join("volumes"),
        }
    }

    pub fn lock(&self) -> Result<VolumesLock> {
        if let Some(parent) = self.lock.parent() {
            fs::create_dir_all(parent).map_err(|source| Error::Create {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        Ok(VolumesLock(Lock::exclusive(&self.lock)?))
    }

    /// `volumes/<name>/_data`.
    pub fn data(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("_data")
    }

    pub fn exists(&self, name: &str) -> bool {
        self.data(name).is_dir()
    }

    /// The volume's data directory for a container, made (with no labels) when missing.
    pub fn ensure(&self, _held: &VolumesLock, name: &str) -> Result<PathBuf> {
        if !valid_name(name) {
            return Err(invalid_name(name));
        }
        if !self.exists(name) {
            self.make(name, &Meta::default())?;
        }
        // Options the monitor could not mount are refused now, naming the option.
        let v = self.get(name)?;
        if let Some(m) = LocalMount::of(name, &v.options)? {
            if !nix::unistd::geteuid().is_root() {
                m.check_rootless(name)?;
            }
        }
        Ok(self.data(name))
    }

    /// A new anonymous volume for a container: its name.
    pub fn make_anonymous(&self, _held: &VolumesLock) -> Result<String> {
        let name = crate::containers::new_id()?;
        let meta = Meta {
            labels: BTreeMap::from([(ANONYMOUS_LABEL.to_string(), String::new())]),
            ..Default::default()
        };
        self.make(&name, &meta)?;
        Ok(name)
    }

    /// `_data` and `volume.json`; the time is now when `meta` has none.
    fn make(&self, name: &str, meta: &Meta) -> Result<()> {
        let data = self.data(name);
        fs::create_dir_all(&data).map_err(|source| Error::CreateVolume {
            path: data.clone(),
            source,
        })?;
        let mut meta = Meta {
            created_at: meta.created_at.clone(),
            labels: meta.labels.clone(),
            options: meta.options.clone(),
        };
        if meta.created_at.is_empty() {
            meta.created_at = rfc3339_seconds(jiff::Timestamp::now());
        }
        let path = self.dir.join(name).join("volume.json");
        let bytes = serde_json::to_vec_pretty(&meta).map_err(|source| Error::Serialize {
            path: path.clone(),
            source,
        })?;
        fs::create_dir_all(&self.tmp).map_err(|source| Error::Create {
            path: self.tmp.clone(),
            source,
        })?;
        Ok(fsutil::atomic_write(&self.tmp, &path, &bytes)?)
    }

    /// `volume create`: a new volume, or the one of that name already there (as docker).
    pub fn create(&self, opts: &CreateOptions) -> Result<Volume> {
        let driver = opts.driver.as_deref().unwrap_or("local");
        if driver != "local" {
            return Err(Error::VolumeDriver(driver.to_string()));
        }
        let mut meta = Meta::default();
        for l in &opts.labels {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            if k.is_empty() {
                return Err(Error::InvalidFlag(format!(
                    "invalid label '{l}': empty name"
                )));
            }
            meta.labels.insert(k.to_string(), v.to_string());
        }
        for o in &opts.options {
            let Some((k, v)) = o.split_once('=') else {
                return Err(Error::InvalidFlag(format!(
                    "invalid option '{o}': want KEY=VALUE"
                )));
            };
            if !LOCAL_OPTIONS.contains(&k) {
                return Err(Error::InvalidFlag(format!("invalid option: \"{k}\"")));
            }
            meta.options.insert(k.to_string(), v.to_string());
        }
        let lock = self.lock()?;
        let name = match &opts.name {
            Some(n) if !valid_name(n) => return Err(invalid_name(n)),
            Some(n) => n.clone(),
            None => {
                meta.labels.insert(ANONYMOUS_LABEL.into(), String::new());
                crate::containers::new_id()?
            }
        };
        LocalMount::of(&name, &meta.options)?;
        if !self.exists(&name) {
            self.make(&name, &meta)?;
        }
        drop(lock);
        self.get(&name)
    }

    /// The volume called `name`.
    pub fn get(&self, name: &str) -> Result<Volume> {
        let data = self.data(name);
        if !valid_name(name) || !data.is_dir() {
            return Err(Error::NoSuchVolume(name.to_string()));
        }
        let path = self.dir.join(name).join("volume.json");
        let meta = match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| Error::Parse { path, source })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let created = fs::metadata(&data)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| jiff::Timestamp::try_from(t).ok())
                    .map(rfc3339_seconds)
                    .unwrap_or_default();
                let mut labels = BTreeMap::new();
                if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                    labels.insert(ANONYMOUS_LABEL.to_string(), String::new());
                }
                Meta {
                    created_at: created,
                    labels,
                    options: BTreeMap::new(),
                }
            }
            Err(source) => return Err(Error::Read { path, source }),
        };
        Ok(Volume {
            created_at: meta.created_at,
            driver: "local".into(),
            labels: meta.labels,
            mountpoint: data,
            name: name.to_string(),
            options: meta.options,
            scope: "local".into(),
        })
    }

    /// Every volume, by name.
    pub fn list(&self) -> Result<Vec<Volume>> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(Error::Read {
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let mut names: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| valid_name(n))
            .collect();
        names.sort();
        let mut out = Vec::new();
        for n in names {
            match self.get(&n) {
                Ok(v) => out.push(v),
                // Removed meanwhile.
                Err(Error::NoSuchVolume(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The containers (ids) that mount each volume, running or not.
    pub fn users(records: &[Record]) -> BTreeMap<String, Vec<String>> {
        let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in records {
            for v in r.volumes.iter().filter(|v| v.kind == "volume") {
                let ids = users.entry(v.name.clone()).or_default();
                if !ids.contains(&r.id) {
                    ids.push(r.id.clone());
                }
            }
        }
        users
    }

    /// `volume rm`: refused while a container (running or not) mounts it, as docker
    /// (`force` only makes a missing volume no error).
    pub fn remove_unused(&self, name: &str, containers: &Containers, force: bool) -> Result<()> {
        let _lock = self.lock()?;
        if !self.exists(name) || !valid_name(name) {
            return match force {
                true => Ok(()),
                false => Err(Error::NoSuchVolume(name.to_string())),
            };
        }
        if let Some(ids) = Self::users(&containers.records()?).remove(name) {
            return Err(Error::VolumeInUse {
                name: name.to_string(),
                ids,
            });
        }
        self.remove(name)
    }

    /// Deletes a volume whatever uses it; the caller checked.
    pub fn remove(&self, name: &str) -> Result<()> {
        if !valid_name(name) {
            return Err(Error::InvalidVolume(name.to_string()));
        }
        let dir = self.dir.join(name);
        if !dir.exists() {
            return Ok(());
        }
        // Hidden first (one rename), so a half-removed volume is never listed.
        let doomed = self.dir.join(format!(".removing-{name}"));
        fs::rename(&dir, &doomed).map_err(|source| Error::Remove { path: dir, source })?;
        crate::containers::remove_tree(&doomed)
    }

    /// `volume prune`: the volumes no container mounts, only the anonymous ones unless
    /// `all`. Their names and the bytes their files held.
    pub fn prune(&self, containers: &Containers, all: bool) -> Result<(Vec<String>, u64)> {
        let _lock = self.lock()?;
        let used = Self::users(&containers.records()?);
        let (mut names, mut bytes) = (Vec::new(), 0);
        for v in self.list()? {
            if used.contains_key(&v.name) || !(all || v.anonymous()) {
                continue;
            }
            bytes += dir_size(&v.mountpoint);
            self.remove(&v.name)?;
            names.push(v.name);
        }
        Ok((names, bytes))
    }
}

/// `volume ls -f`: values of one key are alternatives, different keys must all hold
/// (docker's rule).
#[derive(Debug, Default)]
pub struct Filter {
    /// `dangling=true|false`: no container mounts it / one does.
    pub dangling: Option<bool>,
    /// `name=TEXT`: the name contains it.
    pub names: Vec<String>,
    /// `label=KEY` or `label=KEY=VALUE`.
    pub labels: Vec<(String, Option<String>)>,
    /// `driver=NAME`.
    pub drivers: Vec<String>,
}

impl Filter {
    pub fn parse(args: &[String]) -> Result<Filter> {
        let mut f = Filter::default();
        for a in args {
            let Some((key, value)) = a.split_once('=') else {
                return Err(Error::InvalidFlag(format!(
                    "bad format of filter (expected name=value): {a}"
                )));
            };
            match key {
                "dangling" => {
                    let v = match value {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => {
                            return Err(Error::InvalidFlag(format!(
                                "invalid filter 'dangling={value}'"
                            )))
                        }
                    };
                    if f.dangling.is_some_and(|d| d != v) {
                        return Err(Error::InvalidFlag("conflicting dangling filters".into()));
                    }
                    f.dangling = Some(v);
                }
                "name" => f.names.push(value.to_string()),
                "driver" => f.drivers.push(value.to_string()),
                "label" => f.labels.push(match value.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (value.to_string(), None),
                }),
                other => return Err(Error::InvalidFlag(format!("invalid filter '{other}'"))),
            }
        }
        Ok(f)
    }

    /// Whether `v` passes; `in_use`: a container mounts it.
    pub fn matches(&self, v: &Volume, in_use: bool) -> bool {
        self.dangling.is_none_or(|d| d != in_use)
            && (self.names.is_empty() || self.names.iter().any(|n| v.name.contains(n.as_str())))
            && (self.drivers.is_empty() || self.drivers.contains(&v.driver))
            && (self.labels.is_empty()
                || self
                    .labels
                    .iter()
                    .any(|(k, want)| match (v.labels.get(k), want) {
                        (Some(_), None) => true,
                        (Some(have), Some(want)) => have == want,
                        (None, _) => false,
                    }))
    }
}

/// `k=v,k=v`, as docker prints labels in `volume ls --format {{.Labels}}`.
pub fn pairs(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containers::VolumeMount;

    #[test]
    fn volumes_are_made_on_demand_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let v = Volumes::new(&Store::new(dir.path()));
        let held = v.lock().unwrap();
        let data = v.ensure(&held, "data1").unwrap();
        assert!(data.ends_with("volumes/data1/_data") && data.is_dir());
        assert_eq!(v.ensure(&held, "data1").unwrap(), data);
        assert!(v.ensure(&held, "../x").is_err());
        let anon = v.make_anonymous(&held).unwrap();
        drop(held);
        assert!(v.get(&anon).unwrap().anonymous());
        assert!(!v.get("data1").unwrap().anonymous());
        v.remove("data1").unwrap();
        assert!(!v.exists("data1"));
        assert!(matches!(v.get("data1"), Err(Error::NoSuchVolume(_))));
    }

    #[test]
    fn create_keeps_labels_and_options_and_refuses_what_docker_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let v = Volumes::new(&Store::new(dir.path()));
        let made = v
            .create(&CreateOptions {
                name: Some("vol1".into()),
                labels: vec!["a=1".into(), "b".into()],
                options: vec!["type=tmpfs".into()],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(pairs(&made.labels), "a=1,b=");
        assert_eq!(pairs(&made.options), "type=tmpfs");
        assert_eq!(
            (made.driver.as_str(), made.scope.as_str()),
            ("local", "local")
        );
        assert!(made.created_at.ends_with('Z') && made.created_at.len() == 20);
        // Again: the same volume, untouched.
        let again = v
            .create(&CreateOptions {
                name: Some("vol1".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(again, made);
        // A container may use it: the monitor mounts it.
        let held = v.lock().unwrap();
        assert_eq!(v.ensure(&held, "vol1").unwrap(), v.data("vol1"));
        drop(held);
        let anon = v.create(&CreateOptions::default()).unwrap();
        assert!(anon.anonymous() && anon.name.len() == 64);
        for bad in [
            CreateOptions {
                driver: Some("nfs".into()),
                ..Default::default()
            },
            CreateOptions {
                options: vec!["color=red".into()],
                ..Default::default()
            },
            CreateOptions {
                options: vec!["novalue".into()],
                ..Default::default()
            },
            CreateOptions {
                name: Some("nodevice".into()),
                options: vec!["type=ext4".into()],
                ..Default::default()
            },
            CreateOptions {
                name: Some("a/b".into()),
                ..Default::default()
            },
        ] {
            assert!(v.create(&bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            v.list().unwrap().len(),
            2,
            "nothing made by a refused create"
        );
    }

    #[test]
    fn in_use_volumes_stay_and_prune_takes_anonymous_ones_unless_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let v = Volumes::new(&store);
        let c = Containers::new(&store);
        let named = |n: &str| CreateOptions {
            name: Some(n.into()),
            ..Default::default()
        };
        v.create(&named("used")).unwrap();
        v.create(&named("free")).unwrap();
        let anon = v.create(&CreateOptions::default()).unwrap().name;
        std::fs::write(v.data(&anon).join("f"), "1234").unwrap();
        let mut rec = Record {
            id: "ab".repeat(32),
            name: "c1".into(),
            volumes: vec![VolumeMount {
                kind: "volume".into(),
                name: "used".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        c.create(&mut rec).unwrap();
        let err = v.remove_unused("used", &c, true).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("remove used: volume is in use - [{}]", rec.id)
        );
        assert!(v.exists("used"));
        assert!(v.remove_unused("nosuch", &c, false).is_err());
        v.remove_unused("nosuch", &c, true).unwrap();
        assert_eq!(v.prune(&c, false).unwrap(), (vec![anon], 4));
        assert_eq!(v.prune(&c, true).unwrap(), (vec!["free".to_string()], 0));
        assert!(v.exists("used"));
        c.remove(&rec.id).unwrap();
        v.remove_unused("used", &c, false).unwrap();
        assert!(v.list().unwrap().is_empty());
    }

    #[test]
    fn filters_as_docker() {
        let vol = |name: &str, labels: &[(&str, &str)]| Volume {
            created_at: String::new(),
            driver: "local".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            mountpoint: PathBuf::new(),
            name: name.into(),
            options: BTreeMap::new(),
            scope: "local".into(),
        };
        let f = |args: &[&str]| {
            Filter::parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>()).unwrap()
        };
        let a = vol("alpha", &[("env", "prod")]);
        let b = vol("beta", &[("env", "dev"), ("x", "")]);
        assert!(f(&["dangling=true"]).matches(&a, false));
        assert!(!f(&["dangling=true"]).matches(&a, true));
        assert!(f(&["dangling=false"]).matches(&a, true));
        assert!(f(&["name=lph"]).matches(&a, false) && !f(&["name=lph"]).matches(&b, false));
        assert!(f(&["label=env=dev"]).matches(&b, false));
        assert!(!f(&["label=env=dev"]).matches(&a, false));
        assert!(f(&["label=env"]).matches(&a, false));
        assert!(
            f(&["label=x", "label=env=prod"]).matches(&a, false),
            "OR within a key"
        );
        assert!(
            !f(&["label=env", "name=beta"]).matches(&a, false),
            "AND across keys"
        );
        assert!(f(&["driver=local"]).matches(&a, false));
        for bad in ["dangling=maybe", "color=red", "noequals"] {
            assert!(Filter::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}
