//! Volumes with driver options (`volume create -o type=tmpfs -o device=tmpfs -o
//! o=size=64m,uid=1000`, `-o type=none -o o=bind -o device=/host/path`, `-o type=ext4 -o
//! device=/dev/sdX`), mounted as docker's `local` driver mounts them: when a container that
//! uses one starts, at the volume's `_data`, and gone when the last container using it
//! stops (a tmpfs's files with it, as under docker).
//!
//! Where the mount lives: in the monitors' mount namespaces, not the host's. The first
//! monitor to start with such a volume mounts it in its own namespace and writes itself
//! into `volumes/<name>/holders.json`; a monitor that starts while a holder lives enters
//! that holder's namespaces (rootless, its user namespace first) and makes its own mount
//! namespace from there, so it has the same mount, and adds itself. The mount thus lasts as
//! long as a monitor holding it, with no count to keep right through crashes, and works the
//! same rootless (where only a user namespace may mount tmpfs and binds). Unlike docker's,
//! the mount is not seen at `Mountpoint` on the host (rootless podman's are not either).
//!
//! The copy of the holder's namespace brings its other mounts along: its union and any
//! volume this container does not use are detached at once, so neither outlives its own
//! users. The volumes lock is held from the holders' check to the registration, so two
//! containers starting at once never mount two tmpfs for one volume.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use serde::{Deserialize, Serialize};
use strata_image::store::{fsutil, Store};

use crate::containers::{process_start, Record};
use crate::volume_options::LocalMount;
use crate::volumes::{pairs, Volume, Volumes, VolumesLock};
use crate::{Error, Result};

impl LocalMount {
    /// Mounts it at `target`; errors name the volume and its options.
    fn mount(&self, v: &Volume, target: &Path) -> Result<()> {
        let err = |e: nix::Error| Error::MountVolume {
            name: v.name.clone(),
            options: pairs(&v.options),
            source: e.into(),
        };
        if self.bind {
            nix::mount::mount(
                Some(Path::new(&self.device)),
                target,
                None::<&str>,
                MsFlags::MS_BIND | (self.flags & MsFlags::MS_REC),
                None::<&str>,
            )
            .map_err(err)?;
            // A bind takes its flags on a remount.
            let rest = self.flags - MsFlags::MS_REC;
            if !rest.is_empty() {
                nix::mount::mount(
                    None::<&str>,
                    target,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | rest,
                    None::<&str>,
                )
                .map_err(err)?;
            }
            return Ok(());
        }
        let device = match self.device.as_str() {
            "" => self.fstype.as_str(),
            d => d,
        };
        nix::mount::mount(
            Some(device),
            target,
            Some(self.fstype.as_str()),
            self.flags,
            Some(self.data.as_str()).filter(|d| !d.is_empty()),
        )
        .map_err(err)
    }
}

/// A monitor that holds a volume's mount: its pid and start time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Holder {
    pid: i32,
    start: u64,
}

impl Holder {
    fn me() -> Holder {
        let pid = std::process::id() as i32;
        Holder {
            pid,
            start: process_start(pid).unwrap_or(0),
        }
    }

    fn alive(&self) -> bool {
        self.pid > 0 && process_start(self.pid) == Some(self.start)
    }
}

/// The volumes with options a container uses, and how its monitor gets their mounts.
pub struct Plan {
    _lock: VolumesLock,
    volumes: Vec<(Volume, LocalMount)>,
    /// A live monitor holding the mounts of some of them, whose namespaces to start from.
    pub holder: Option<i32>,
    /// Those `holder` holds (the others are mounted here).
    held: Vec<String>,
    store_root: PathBuf,
    holders_dir: PathBuf,
    tmp: PathBuf,
}

fn holders_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name).join("holders.json")
}

fn live_holders(dir: &Path, name: &str) -> Vec<Holder> {
    std::fs::read(holders_path(dir, name))
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<Holder>>(&b).ok())
        .unwrap_or_default()
        .into_iter()
        .filter(Holder::alive)
        .collect()
}

/// Takes the volumes lock and finds what container `rec` needs: None when it uses no
/// volume with options. Before the monitor enters any namespace (the store is reached by
/// its host path).
pub fn plan(store: &Store, rec: &Record) -> Result<Option<Plan>> {
    let vols = Volumes::new(store);
    let names: Vec<&str> = rec
        .volumes
        .iter()
        .filter(|v| v.kind == "volume")
        .map(|v| v.name.as_str())
        .collect();
    // Cheap first: most containers have no volume with options and take no lock.
    let mut with_options = Vec::new();
    for n in &names {
        let v = vols.get(n)?;
        if let Some(m) = LocalMount::of(n, &v.options)? {
            if !nix::unistd::geteuid().is_root() {
                m.check_rootless(n)?;
            }
            with_options.push((v, m));
        }
    }
    if with_options.is_empty() {
        return Ok(None);
    }
    let lock = vols.lock()?;
    let dir = store.root().join("volumes");
    // One holder for all the held ones: a monitor has one mount namespace to start from.
    let mut holder: Option<i32> = None;
    let mut held = Vec::new();
    let mut candidates: Option<Vec<Holder>> = None;
    for (v, _) in &with_options {
        let live = live_holders(&dir, &v.name);
        if live.is_empty() {
            continue;
        }
        let common: Vec<Holder> = match &candidates {
            None => live,
            Some(c) => c.iter().filter(|h| live.contains(h)).copied().collect(),
        };
        if common.is_empty() {
            return Err(Error::VolumeOption {
                name: v.name.clone(),
                message: "it is mounted by a container other than the one holding this \
                          container's other volumes with options; a container may share \
                          such volumes with one running container at most"
                    .into(),
            });
        }
        held.push(v.name.clone());
        candidates = Some(common);
    }
    if let Some(c) = candidates {
        holder = c.first().map(|h| h.pid);
    }
    Ok(Some(Plan {
        _lock: lock,
        volumes: with_options,
        holder,
        held,
        store_root: std::fs::canonicalize(store.root()).unwrap_or(store.root().to_path_buf()),
        holders_dir: dir,
        tmp: store.tmp_dir(),
    }))
}

impl Plan {
    /// Enters the holder's mount namespace (the monitor is single-threaded, in the holder's
    /// user namespace when rootless); then the monitor makes its own from it.
    pub fn enter_holder_mount_namespace(&self) -> Result<()> {
        let Some(pid) = self.holder else {
            return Ok(());
        };
        let path = format!("/proc/{pid}/ns/mnt");
        let f = std::fs::File::open(&path).map_err(|source| Error::Read {
            path: path.into(),
            source,
        })?;
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNS).map_err(Error::os(
            "joining the mount namespace of a volume's holder",
        ))
    }

    /// In the monitor's own mount namespace: lets go of what the holder's namespace brought
    /// that is not this container's, mounts the volumes no one held, and records this
    /// monitor as a holder of them all. Releases the volumes lock.
    pub fn finish(self) -> Result<()> {
        if self.holder.is_some() {
            self.detach_foreign();
        }
        for (v, m) in &self.volumes {
            if !self.held.contains(&v.name) {
                m.mount(v, &v.mountpoint)?;
            }
        }
        let me = Holder::me();
        for (v, _) in &self.volumes {
            let mut live = live_holders(&self.holders_dir, &v.name);
            live.push(me);
            let path = holders_path(&self.holders_dir, &v.name);
            let bytes = serde_json::to_vec(&live).map_err(|source| Error::Serialize {
                path: path.clone(),
                source,
            })?;
            fsutil::atomic_write(&self.tmp, &path, &bytes)?;
        }
        Ok(())
    }

    /// Detaches the mounts under the store's `containers/` (other monitors' unions) and
    /// `volumes/` (save this container's), deepest first.
    fn detach_foreign(&self) {
        let containers = self.store_root.join("containers");
        let volumes = self.store_root.join("volumes");
        let keep: Vec<PathBuf> = self
            .volumes
            .iter()
            .map(|(v, _)| volumes.join(&v.name).join("_data"))
            .collect();
        let mut doomed: Vec<PathBuf> = mount_points()
            .into_iter()
            .filter(|p| {
                (p.starts_with(&containers) || p.starts_with(&volumes))
                    && !keep.iter().any(|k| p.starts_with(k))
            })
            .collect();
        doomed.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        doomed.dedup();
        for p in doomed {
            let _ = nix::mount::umount2(&p, MntFlags::MNT_DETACH);
        }
    }
}

/// Container `rec`'s monitor (this process) no longer holds its volumes' mounts for
/// others: called once its container ended, before the end is recorded, so a container
/// started after `stop` returned mounts them afresh (a tmpfs empty) as under docker, even
/// while this monitor is still tearing down. Best effort: a holder that is gone is
/// ignored anyway.
pub fn release(store: &Store, rec: &Record) {
    if !rec.volumes.iter().any(|v| v.kind == "volume") {
        return;
    }
    let vols = Volumes::new(store);
    let dir = store.root().join("volumes");
    let me = Holder::me();
    let Ok(_lock) = vols.lock() else {
        return;
    };
    for v in rec.volumes.iter().filter(|v| v.kind == "volume") {
        let path = holders_path(&dir, &v.name);
        if !path.exists() {
            continue;
        }
        let live: Vec<Holder> = live_holders(&dir, &v.name)
            .into_iter()
            .filter(|h| *h != me)
            .collect();
        if let Ok(bytes) = serde_json::to_vec(&live) {
            let _ = fsutil::atomic_write(&store.tmp_dir(), &path, &bytes);
        }
    }
}

/// The mount points of this process's mount namespace (mountinfo's fifth field, unescaped).
fn mount_points() -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let info = std::fs::read("/proc/self/mountinfo").unwrap_or_default();
    info.split(|b| *b == b'\n')
        .filter_map(|line| line.split(|b| *b == b' ').nth(4))
        .map(|field| PathBuf::from(std::ffi::OsString::from_vec(unescape(field))))
        .collect()
}

/// mountinfo's `\ooo` escapes back to bytes.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 3 < field.len() {
            if let Ok(b) =
                u8::from_str_radix(std::str::from_utf8(&field[i + 1..i + 4]).unwrap_or("x"), 8)
            {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(br"/a\040b\011c\134d"), b"/a b\tc\\d".to_vec());
        assert_eq!(unescape(br"/plain"), b"/plain".to_vec());
    }
}
