//! Containers on disk, beside the image store:
//!
//! ```text
//! ROOT/containers/names.lock          exclusive while a name is taken, changed or freed
//! ROOT/containers/<id>/container.json what was asked (fixed at create): Record
//! ROOT/containers/<id>/state.json     what happened (the monitor writes it): State
//! ROOT/containers/<id>/upper/ work/   the copy-on-write layer and its scratch dir
//! ROOT/containers/<id>/rootfs/        the union's mount point (in the monitor's namespace)
//! ROOT/containers/<id>/ctr.log        stdout/stderr, docker json-file lines
//! ROOT/containers/<id>/space.reserve  disk held back for the exit's state.json write
//! ```
//!
//! Both JSON files are written atomically (fsutil). A container exists once its
//! `container.json` does; it is written last under the names lock, so two `strata run` at once
//! never share a name, and each id (256 random bits) has its own upper.
//!
//! The recorded state is only as good as the monitor that writes it: [`Containers::state`]
//! checks that the monitor of a running container is still the process it recorded (pid and
//! start time), and reports the container `dead` when it is not.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_image::store::{fsutil, lock::Lock, Store};
use strata_runtime::ContainerSpec;

use crate::{names, Error, Result};

/// The file in a container's directory that holds disk back for the state written when the
/// container ends ([`Containers::reserve_space`]).
const RESERVE: &str = "space.reserve";

/// The reserve's size: a state.json and its temp file many times over, in any block size.
const RESERVE_BYTES: usize = 64 * 1024;

/// A volume mounted into the container.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct VolumeMount {
    /// `bind`, `volume` (named or anonymous) or `tmpfs`.
    pub kind: String,
    /// The volume's name (`volume` only).
    pub name: String,
    /// Host path (bind source or the volume's `_data`).
    pub source: PathBuf,
    pub destination: String,
    pub rw: bool,
}

/// A published port: `-p [IP:]HOST:CTR[/PROTO]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PortBinding {
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub proto: String,
}

/// What a container is: fixed when it is created (only the name changes, by `rename`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Record {
    /// 64 hex digits.
    pub id: String,
    /// Without docker's leading `/`.
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// `sha256:<hex>` of the image config: the image ID (`images --no-trunc`).
    pub image_id: String,
    /// The image's layers (diff ids, `sha256:<hex>`), bottom first, as the config lists them.
    pub diff_ids: Vec<String>,
    /// RFC 3339 with nanoseconds.
    pub created: String,
    /// What the runtime gets; `rootfs` and `process.user` are filled in at each start.
    pub spec: ContainerSpec,
    /// `user[:group]` (`-u` or the image's User), resolved in the container's /etc/passwd at
    /// each start.
    pub user: String,
    /// The process as docker shows it: `Path` and `Args` (entrypoint + cmd).
    pub path: String,
    pub args: Vec<String>,
    /// The image config's Cmd/Entrypoint after flags (inspect's Config).
    pub cmd: Vec<String>,
    pub entrypoint: Vec<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--rm`.
    pub auto_remove: bool,
    /// `-i`: stdin stays open.
    pub interactive: bool,
    /// `-t`.
    pub tty: bool,
    pub volumes: Vec<VolumeMount>,
    /// Names of the anonymous volumes made for the image's Volumes; `rm -v` removes them.
    pub anonymous_volumes: Vec<String>,
    pub ports: Vec<PortBinding>,
    /// `--expose` and the image's ExposedPorts: `80/tcp`.
    pub exposed: Vec<String>,
    /// `--security-opt` as given.
    pub security_opt: Vec<String>,
    /// The signal `stop` sends first (`--stop-signal`, else the image's StopSignal); empty
    /// is SIGTERM.
    pub stop_signal: String,
    /// Seconds `stop` waits before SIGKILL (`--stop-timeout`); `None` is 10.
    pub stop_timeout: Option<i64>,
    /// `--network`, `--dns*`, `--add-host`.
    pub network: crate::network::config::NetworkConfig,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Paused,
    Exited,
    /// Its monitor died without recording an exit (SIGKILL, a crash).
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }

    /// Running or paused: a monitor should be alive.
    pub fn is_active(self) -> bool {
        matches!(self, Status::Running | Status::Paused)
    }
}

/// What happened to a container.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    pub status: Status,
    /// Host pid of the container's pid 1 while it runs, and its start time.
    pub pid: i32,
    pub pid_start: u64,
    /// The monitor's pid and start time (clock ticks after boot, /proc/PID/stat field 22),
    /// to tell it from a recycled pid.
    pub monitor_pid: i32,
    pub monitor_start: u64,
    pub exit_code: i32,
    pub oom_killed: bool,
    /// RFC 3339; empty when never.
    pub started_at: String,
    pub finished_at: String,
    /// Why it did not start, or why it is dead.
    pub error: String,
    /// Times it was started.
    pub starts: u32,
    /// The ports published while it runs (random host ports chosen).
    pub published: Vec<PortBinding>,
    /// Its address while it runs (empty on `none`, `host`, `container:`).
    pub address: crate::network::config::Address,
}

impl State {
    /// The ports as published while running (random ones chosen), else as `rec` asked.
    pub fn ports(&self, rec: &Record) -> Vec<PortBinding> {
        if self.status.is_active() && !self.published.is_empty() {
            self.published.clone()
        } else {
            rec.ports.clone()
        }
    }

    /// Whether the recorded monitor is still alive.
    pub fn monitor_alive(&self) -> bool {
        self.monitor_pid > 0 && process_start(self.monitor_pid) == Some(self.monitor_start)
    }

    /// Waits until the recorded monitor is gone, at most `timeout`.
    pub fn wait_monitor_gone(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while self.monitor_alive() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        true
    }
}

/// A process's start time from /proc; `None` when it does not exist or has ended.
pub fn process_start(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parens: the fields after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    // A zombie has ended: only its parent's wait is missing.
    if rest.starts_with(['Z', 'X']) {
        return None;
    }
    rest.split(' ').nth(19)?.parse().ok()
}

/// The containers of a store.
pub struct Containers {
    dir: PathBuf,
    tmp: PathBuf,
}

/// docker's rule for names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

impl Containers {
    pub fn new(store: &Store) -> Containers {
        Containers {
            dir: store.root().join("containers"),
            tmp: store.tmp_dir(),
        }
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// The names lock: held while a name is taken, changed or freed.
    pub fn lock(&self) -> Result<Lock> {
        if !self.dir.is_dir() {
            // Logs, uppers and attach sockets are the owner's alone, as under docker.
            use std::os::unix::fs::DirBuilderExt;
            let r = fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir);
            r.map_err(|source| Error::Create {
                path: self.dir.clone(),
                source,
            })?;
        }
        Ok(Lock::exclusive(&self.dir.join("names.lock"))?)
    }

    fn conflict(name: &str, id: &str) -> Error {
        Error::NameInUse {
            name: name.to_string(),
            id: id.to_string(),
        }
    }

    /// Stores a new container; its name must be free (checked under the names lock). An
    /// empty name is generated there, drawn again until it is free. On error nothing is left.
    pub fn create(&self, rec: &mut Record) -> Result<()> {
        if !rec.name.is_empty() && !valid_name(&rec.name) {
            return Err(Error::InvalidName(rec.name.clone()));
        }
        let _lock = self.lock()?;
        let records = self.records()?;
        if rec.name.is_empty() {
            let taken = records.iter().map(|r| r.name.as_str()).collect();
            let mut random = RandomSource::open()?;
            rec.name = names::generate(&taken, || random.next());
        } else if let Some(other) = records.iter().find(|o| o.name == rec.name) {
            return Err(Self::conflict(&rec.name, &other.id));
        }
        let dir = self.dir(&rec.id);
        let result = (|| -> Result<()> {
            for sub in ["upper", "work", "rootfs"] {
                let d = dir.join(sub);
                fs::create_dir_all(&d).map_err(|source| Error::Create { path: d, source })?;
            }
            self.save_state(&rec.id, &State::default())?;
            self.write_json(&dir.join("container.json"), rec)
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&dir);
        }
        result
    }

    fn write_json<T: Serialize>(&self, path: &Path, value: &T) -> Result<()> {
        fs::create_dir_all(&self.tmp).map_err(|source| Error::Create {
            path: self.tmp.clone(),
            source,
        })?;
        let bytes = serde_json::to_vec_pretty(value).map_err(|source| Error::Serialize {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(fsutil::atomic_write(&self.tmp, path, &bytes)?)
    }

    pub fn record(&self, id: &str) -> Result<Record> {
        let path = self.dir(id).join("container.json");
        read_json(&path)
    }

    /// Renames a container (under the names lock).
    pub fn rename(&self, id: &str, new_name: &str) -> Result<()> {
        if !valid_name(new_name) {
            return Err(Error::InvalidName(new_name.to_string()));
        }
        let _lock = self.lock()?;
        if let Some(other) = self.records()?.iter().find(|o| o.name == new_name) {
            return Err(Self::conflict(new_name, &other.id));
        }
        let mut rec = self.record(id)?;
        rec.name = new_name.to_string();
        self.write_json(&self.dir(id).join("container.json"), &rec)
    }

    /// The state as recorded, without the liveness check.
    pub fn raw_state(&self, id: &str) -> Result<State> {
        let path = self.dir(id).join("state.json");
        read_json(&path)
    }

    /// The state, corrected when the monitor that should be running is gone: `dead`.
    pub fn state(&self, id: &str) -> Result<State> {
        let mut st = self.raw_state(id)?;
        if st.status.is_active() && !st.monitor_alive() {
            st.status = Status::Dead;
            st.pid = 0;
            if st.error.is_empty() {
                st.error = "its monitor process died without recording an exit".into();
            }
        }
        Ok(st)
    }

    pub fn save_state(&self, id: &str, st: &State) -> Result<()> {
        self.write_json(&self.dir(id).join("state.json"), st)
    }

    /// Read-modify-write of the recorded state under the container's state lock (the
    /// monitor and `pause`, `stop`, crash cleanup may write at once). Returns the new state.
    pub fn update_state(&self, id: &str, f: impl FnOnce(&mut State)) -> Result<State> {
        let dir = self.dir(id);
        if !dir.join("container.json").exists() && !dir.join("state.json").exists() {
            return Err(Error::NoSuchContainer(id.to_string()));
        }
        let _lock = Lock::exclusive(&dir.join("state.lock"))?;
        let mut st = self.raw_state(id).unwrap_or_default();
        f(&mut st);
        if let Err(e) = self.save_state(id, &st) {
            // A full disk (the container filled it): the reserve gives the room for the
            // write, so an exit is still recorded. Any other failure fails again.
            if fs::remove_file(dir.join(RESERVE)).is_err() {
                return Err(e);
            }
            self.save_state(id, &st)?;
        }
        Ok(st)
    }

    /// Takes 64 KiB of disk in the container's directory (when not taken yet),
    /// which [`Containers::update_state`] gives back when the disk is full. Best effort: on
    /// a disk already full there is nothing to take.
    pub fn reserve_space(&self, id: &str) {
        let path = self.dir(id).join(RESERVE);
        if path.exists() {
            return;
        }
        let taken = fs::File::create_new(&path).and_then(|mut f| {
            // Written, not sized: a sparse file would hold no blocks.
            std::io::Write::write_all(&mut f, &[0u8; RESERVE_BYTES])?;
            f.sync_all()
        });
        if taken.is_err() {
            let _ = fs::remove_file(&path);
        }
    }

    /// Every container, oldest first.
    pub fn records(&self) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(source) => {
                return Err(Error::Read {
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let read_err = |source| Error::Read {
            path: self.dir.clone(),
            source,
        };
        for e in rd {
            let e = e.map_err(read_err)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.len() != 64 || !e.file_type().map_err(read_err)?.is_dir() {
                continue;
            }
            if let Ok(r) = self.record(&name) {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.created.cmp(&b.created));
        Ok(out)
    }

    /// The container named by a name, a full id or a unique id prefix (docker's order).
    pub fn find(&self, what: &str) -> Result<Record> {
        let what = what.strip_prefix('/').unwrap_or(what);
        let all = self.records()?;
        if let Some(r) = all.iter().find(|r| r.id == what || r.name == what) {
            return Ok(r.clone());
        }
        let matches: Vec<&Record> = all.iter().filter(|r| r.id.starts_with(what)).collect();
        match matches.as_slice() {
            [one] if !what.is_empty() => Ok((*one).clone()),
            [] | [_] => Err(Error::NoSuchContainer(what.to_string())),
            _ => Err(Error::AmbiguousId(what.to_string())),
        }
    }

    /// Deletes a container's directory, its upper with it. The caller has made sure nothing
    /// runs.
    pub fn remove(&self, id: &str) -> Result<()> {
        let _lock = self.lock()?;
        let dir = self.dir(id);
        // Never through a mount: a stale one from a crash is detached first.
        let rootfs = dir.join("rootfs");
        if is_mount_point(&rootfs) {
            let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
        }
        // Hide it first (one rename), so a half-removed container is never listed.
        let doomed = self.dir.join(format!(".removing-{id}"));
        match fs::rename(&dir, &doomed) {
            Ok(()) => remove_tree(&doomed),
            // Gone already: an `--rm` container's monitor removed it (`rm -f` waited for
            // that monitor to end).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Remove { path: dir, source }),
        }
    }

    /// Directories of containers whose removal was interrupted.
    pub fn leftovers(&self) -> Vec<PathBuf> {
        fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".removing-"))
            .map(|e| e.path())
            .collect()
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| Error::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// `remove_dir_all`, making directories writable on the way (a container may have made its
/// files read-only).
pub fn remove_tree(path: &Path) -> Result<()> {
    if fs::remove_dir_all(path).is_ok() || !path.exists() {
        return Ok(());
    }
    use std::os::unix::fs::PermissionsExt;
    for entry in walk_dirs(path) {
        let _ = fs::set_permissions(&entry, fs::Permissions::from_mode(0o700));
    }
    fs::remove_dir_all(path).map_err(|source| Error::Remove {
        path: path.to_path_buf(),
        source,
    })
}

fn walk_dirs(path: &Path) -> Vec<PathBuf> {
    let mut out = vec![path.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        let _ = fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o700));
        if let Ok(rd) = fs::read_dir(&p) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

/// Whether `path` is a mount point in this process's mount namespace.
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|m| m.replace("\\040", " ") == want)
    })
}

/// A new container id: 64 hex digits from the kernel's random source.
pub fn new_id() -> Result<String> {
    let mut b = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|source| Error::Read {
            path: "/dev/urandom".into(),
            source,
        })?;
    Ok(strata_image::digest::hex(&b))
}

/// Random numbers from the kernel's source, for generated names.
struct RandomSource(fs::File);

impl RandomSource {
    fn open() -> Result<RandomSource> {
        Ok(RandomSource(fs::File::open("/dev/urandom").map_err(
            |source| Error::Read {
                path: "/dev/urandom".into(),
                source,
            },
        )?))
    }

    fn next(&mut self) -> u64 {
        let mut b = [0u8; 8];
        // urandom does not fail short of a closed descriptor; zeros still give a name.
        let _ = self.0.read_exact(&mut b);
        u64::from_ne_bytes(b)
    }
}

/// Bytes of files under `dir` (a container's upper: `ps -s`).
pub fn dir_size(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                total += m.size();
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, name: &str, created: &str) -> Record {
        Record {
            id: id.repeat(64 / id.len()),
            name: name.into(),
            created: created.into(),
            ..Default::default()
        }
    }

    #[test]
    fn names_are_unique_and_lookup_takes_name_id_or_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let c = Containers::new(&store);
        c.create(&mut rec("ab", "one", "2024-01-01T00:00:00Z"))
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join("containers"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        c.create(&mut rec("ac", "two", "2024-01-02T00:00:00Z"))
            .unwrap();
        let err = c
            .create(&mut rec("cd", "one", "2024-01-03T00:00:00Z"))
            .unwrap_err();
        assert!(err.to_string().contains("is already in use"), "{err}");
        assert!(
            !c.dir(&"cd".repeat(32)).exists(),
            "nothing left of the refused one"
        );
        assert_eq!(c.find("one").unwrap().id, "ab".repeat(32));
        assert_eq!(c.find("/two").unwrap().name, "two");
        assert_eq!(c.find("aba").unwrap().name, "one");
        assert!(c.find("a").unwrap_err().to_string().contains("multiple"));
        assert!(c
            .find("zz")
            .unwrap_err()
            .to_string()
            .contains("No such container"));
        assert!(c.create(&mut rec("ef", "-bad", "x")).is_err());
        c.rename(&"ab".repeat(32), "three").unwrap();
        assert!(c.rename(&"ac".repeat(32), "three").is_err());
        assert_eq!(
            c.records()
                .unwrap()
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>(),
            ["three", "two"]
        );
        c.remove(&"ab".repeat(32)).unwrap();
        assert!(c.find("three").is_err());
        assert!(c.leftovers().is_empty());
    }

    #[test]
    fn generated_names_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let c = Containers::new(&Store::new(dir.path()));
        let ids: Vec<String> = (0..200).map(|i| format!("{i:064x}")).collect();
        std::thread::scope(|s| {
            for id in &ids {
                let c = &c;
                s.spawn(move || {
                    let mut r = Record {
                        id: id.clone(),
                        ..Default::default()
                    };
                    c.create(&mut r).unwrap();
                    assert!(valid_name(&r.name), "{}", r.name);
                });
            }
        });
        let records = c.records().unwrap();
        let names: std::collections::HashSet<&str> =
            records.iter().map(|r| r.name.as_str()).collect();
        assert_eq!((records.len(), names.len()), (200, 200));
    }

    #[test]
    fn a_running_container_whose_monitor_is_gone_is_dead() {
        let dir = tempfile::tempdir().unwrap();
        let c = Containers::new(&Store::new(dir.path()));
        let mut r = rec("ab", "x1", "t");
        c.create(&mut r).unwrap();
        let me = std::process::id() as i32;
        let mut st = State {
            status: Status::Running,
            monitor_pid: me,
            monitor_start: process_start(me).unwrap(),
            ..Default::default()
        };
        c.save_state(&r.id, &st).unwrap();
        assert_eq!(c.state(&r.id).unwrap().status, Status::Running);
        st.monitor_start += 1; // a recycled pid
        c.save_state(&r.id, &st).unwrap();
        assert_eq!(c.state(&r.id).unwrap().status, Status::Dead);
    }
}
