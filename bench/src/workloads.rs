//! The workloads. Each runs `runs` rounds, and every round visits every target in turn (each
//! round starting one target later), so that drift on the machine (other load, the host's
//! caches) affects all of them alike.
//! A cold figure is taken on a fresh mount after `sync` + `drop_caches`; a warm one right
//! after it on the same mount. Every figure is checked (entry counts, sizes, modes) before
//! it is kept: a fast wrong answer is a failure, not a result.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use strata_tests::mounts::Driver;

use crate::data::{
    Layout, Sizes, CHMODR_DIR, COPYUP_FILE, READDIR_DIR, SEQ_FILE, UNTAR_DIR, WALK_DIR,
};
use crate::memcg::MemCgroup;
use crate::ops::{self, timed, Counts};
use crate::procfs;
use crate::report::{Metric, Results, Target};
use crate::scratch::{drop_caches, Scratch, UnionMount};

/// What the measurements need to know, and what they found.
pub struct Bench<'a> {
    pub scratch: &'a Scratch,
    pub layout: &'a Layout,
    pub sizes: &'a Sizes,
    pub runs: usize,
    pub results: Results,
    /// What a walk of the merged `walk/` tree must count.
    pub walk_expected: Counts,
}

/// Where one measurement runs: a fresh union mount, or a directory of the ext4 image.
struct Place {
    /// Held for the measurement; unmounted (and its upper removed) on drop.
    mount: Option<UnionMount>,
    base: PathBuf,
}

type Figures = Vec<(Metric, f64)>;

impl Bench<'_> {
    fn place(&self, target: Target, native_base: &Path) -> Result<Place> {
        match target.driver() {
            None => Ok(Place {
                mount: None,
                base: native_base.to_path_buf(),
            }),
            Some(driver) => {
                let mount =
                    self.scratch
                        .mount_union(driver, target.options(), &self.layout.lowers())?;
                Ok(Place {
                    base: mount.path().to_path_buf(),
                    mount: Some(mount),
                })
            }
        }
    }

    /// Runs `once` for every round and target, keeping its figures; a target that fails is
    /// recorded as failed for `metrics` and not run again for this workload.
    fn rounds(
        &mut self,
        name: &str,
        metrics: &[Metric],
        once: impl Fn(&Self, Target) -> Result<Figures>,
    ) {
        self.rounds_on(&Target::ALL, name, metrics, once)
    }

    /// [`Bench::rounds`] on `targets`.
    fn rounds_on(
        &mut self,
        targets: &[Target],
        name: &str,
        metrics: &[Metric],
        once: impl Fn(&Self, Target) -> Result<Figures>,
    ) {
        let mut failed = BTreeSet::new();
        for run in 1..=self.runs {
            // Each round starts with the next target: whoever goes first also pays for what
            // the host (below this VM's disk) has not cached yet.
            for i in 0..targets.len() {
                let target = targets[(run - 1 + i) % targets.len()];
                if failed.contains(&target) {
                    continue;
                }
                match once(self, target) {
                    Ok(figures) => {
                        let shown: Vec<String> = figures
                            .iter()
                            .map(|(m, v)| format!("{m:?} {}", m.unit().format(*v)))
                            .collect();
                        eprintln!(
                            "  {name} {run}/{} {:<16} {}",
                            self.runs,
                            target.name(),
                            shown.join(", ")
                        );
                        for (metric, value) in figures {
                            self.results.add(metric, target, value);
                        }
                    }
                    Err(err) => {
                        eprintln!(
                            "  {name} {run}/{} {}: FAILED: {err:#}",
                            self.runs,
                            target.name()
                        );
                        for &metric in metrics {
                            if metric != Metric::DaemonRss || has_daemon(target) {
                                self.results.fail(metric, target, format!("{err:#}"));
                            }
                        }
                        failed.insert(target);
                    }
                }
            }
        }
    }

    /// Workloads 1 and 7: lstat of every entry of the merged tree, cold then warm; the FUSE
    /// daemon's RSS after the warm walk.
    pub fn walk(&mut self) {
        let metrics = [Metric::WalkCold, Metric::WalkWarm, Metric::DaemonRss];
        self.rounds_on(&Target::WITH_OWN_LOOP, "walk", &metrics, |bench, target| {
            let place = bench.place(target, &bench.layout.native)?;
            let root = place.base.join(WALK_DIR);
            drop_caches()?;
            let (cold_counts, cold) = timed(|| ops::walk(&root))?;
            let (warm_counts, warm) = timed(|| ops::walk(&root))?;
            for (when, counts) in [("cold", cold_counts), ("warm", warm_counts)] {
                ensure!(
                    counts == bench.walk_expected,
                    "the {when} walk of {} found {counts:?}, expected {:?}",
                    root.display(),
                    bench.walk_expected
                );
            }
            let mut figures = vec![(Metric::WalkCold, cold), (Metric::WalkWarm, warm)];
            if let (Some(driver), Some(mount)) = (target.driver(), &place.mount) {
                if has_daemon(target) {
                    let pid = procfs::daemon_pid(driver.name(), mount.path())?;
                    figures.push((Metric::DaemonRss, procfs::vm_rss(pid)? as f64));
                }
            }
            let files = bench.walk_expected.files + bench.walk_expected.dirs;
            if let Some(n) = requests_served(place)? {
                figures.push((Metric::WalkRequests, n / files as f64));
            }
            Ok(figures)
        });
    }

    /// Workload 2: the names of one big merged directory, cold then warm.
    pub fn readdir(&mut self) {
        let metrics = [Metric::ReaddirCold, Metric::ReaddirWarm];
        self.rounds_on(
            &Target::WITH_OWN_LOOP,
            "readdir",
            &metrics,
            |bench, target| {
                let place = bench.place(target, &bench.layout.native)?;
                let dir = place.base.join(READDIR_DIR);
                drop_caches()?;
                let (cold_n, cold) = timed(|| ops::list_dir(&dir))?;
                let (warm_n, warm) = timed(|| ops::list_dir(&dir))?;
                let expected = bench.sizes.readdir_entries;
                ensure!(
                    cold_n == expected && warm_n == expected,
                    "readdir of {} listed {cold_n} then {warm_n} entries, expected {expected}",
                    dir.display()
                );
                let mut figures = vec![(Metric::ReaddirCold, cold), (Metric::ReaddirWarm, warm)];
                if let Some(n) = requests_served(place)? {
                    figures.push((Metric::ReaddirRequests, n / expected as f64));
                }
                Ok(figures)
            },
        );
    }

    /// Workload 3: one cold sequential read of the big lower file (natively: the bottom
    /// layer's file itself).
    pub fn seq_read(&mut self) {
        self.rounds("seqread", &[Metric::SeqRead], |bench, target| {
            let place = bench.place(target, bench.layout.bottom())?;
            let file = place.base.join(SEQ_FILE);
            drop_caches()?;
            let (bytes, secs) = timed(|| ops::read_all(&file))?;
            ensure!(
                bytes == bench.sizes.seq_bytes,
                "read {bytes} bytes of {}, expected {}",
                file.display(),
                bench.sizes.seq_bytes
            );
            Ok(vec![(Metric::SeqRead, bytes as f64 / secs / 1e6)])
        });
    }

    /// Workload 4: fio's 4-job 4k random reads of the same file, cold.
    pub fn rand_read(&mut self) {
        // fio and the FUSE daemon get a quarter of the file's size in memory, page cache
        // included: most reads then reach the device, for every target alike.
        let cgroup = match MemCgroup::create(self.sizes.seq_bytes / 4) {
            Ok(cg) => cg,
            Err(err) => {
                for target in Target::ALL {
                    for metric in [Metric::RandRead, Metric::RandReadDevice] {
                        self.results.fail(metric, target, format!("{err:#}"));
                    }
                }
                return;
            }
        };
        let metrics = [Metric::RandRead, Metric::RandReadDevice];
        self.rounds("randread", &metrics, |bench, target| {
            let place = bench.place(target, bench.layout.bottom())?;
            let file = place.base.join(SEQ_FILE);
            if let Some(pid) = place.mount.as_ref().and_then(UnionMount::daemon) {
                cgroup.add(pid)?;
            }
            let dev = bench
                .scratch
                .device()
                .context("the scratch disk has no device")?;
            drop_caches()?;
            let before = procfs::device_bytes_read(dev)?;
            let iops = ops::fio_randread(
                &file,
                bench.sizes.seq_bytes,
                bench.sizes.fio_runtime_secs,
                |cmd| cgroup.wrap(cmd),
            )?;
            let read = procfs::device_bytes_read(dev)? - before;
            Ok(vec![
                (Metric::RandRead, iops),
                (Metric::RandReadDevice, read as f64),
            ])
        });
    }

    /// Workload 5: the copy-up of a big lower file by an append, a chmod of it, and
    /// `chmod -R g+w` of the small lower files (each on its own fresh mount, cold). Natively
    /// the same calls on a plain copy, in place.
    pub fn copy_up(&mut self) {
        let metrics = [Metric::CopyUp, Metric::Chmod, Metric::ChmodR];
        self.rounds("copyup", &metrics, |bench, target| {
            let len = bench.sizes.copyup_bytes;
            let copy_up = {
                let place = bench.place(target, &bench.layout.native)?;
                let file = place.base.join(COPYUP_FILE);
                drop_caches()?;
                let ((), secs) = timed(|| ops::append_byte(&file))?;
                let now = fs::metadata(&file)?.len();
                ensure!(
                    now == len + 1,
                    "{} is {now} bytes after the append, expected {}",
                    file.display(),
                    len + 1
                );
                if place.mount.is_none() {
                    fs::OpenOptions::new()
                        .write(true)
                        .open(&file)?
                        .set_len(len)?;
                }
                secs
            };
            let chmod = {
                let place = bench.place(target, &bench.layout.native)?;
                let file = place.base.join(COPYUP_FILE);
                let mode = fs::metadata(&file)?.permissions().mode() & 0o7777;
                drop_caches()?;
                let ((), secs) = timed(|| {
                    fs::set_permissions(&file, fs::Permissions::from_mode(0o600))
                        .with_context(|| format!("chmod {}", file.display()))
                })?;
                let meta = fs::symlink_metadata(&file)?;
                ensure!(
                    meta.permissions().mode() & 0o7777 == 0o600 && meta.len() == len,
                    "{} is mode {:o}, {} bytes after chmod 600",
                    file.display(),
                    meta.permissions().mode() & 0o7777,
                    meta.len()
                );
                same_head(&file, &bench.layout.bottom().join(COPYUP_FILE))?;
                if place.mount.is_none() {
                    fs::set_permissions(&file, fs::Permissions::from_mode(mode))?;
                }
                secs
            };
            let chmod_r = {
                let place = bench.place(target, &bench.layout.native)?;
                let dir = place.base.join(CHMODR_DIR);
                drop_caches()?;
                let ((), secs) = timed(|| ops::chmod_r("g+w", &dir))?;
                let probe = dir.join("d00/f000");
                let mode = fs::symlink_metadata(&probe)?.permissions().mode() & 0o7777;
                ensure!(
                    mode == 0o664,
                    "{} is mode {mode:o} after chmod -R g+w, expected 664",
                    probe.display()
                );
                same_head(
                    &probe,
                    &bench.layout.bottom().join(CHMODR_DIR).join("d00/f000"),
                )?;
                if place.mount.is_none() {
                    ops::chmod_r("g-w", &dir)?;
                }
                secs
            };
            Ok(vec![
                (Metric::CopyUp, copy_up),
                (Metric::Chmod, chmod),
                (Metric::ChmodR, chmod_r),
            ])
        });
    }

    /// Workload 6: `tar -xf` of the small-file archive into the mount (the upper), cold, and
    /// `rm -rf` of what it created right after.
    pub fn untar(&mut self) {
        let metrics = [Metric::Untar, Metric::RmRf];
        let native = self.layout.native.join("untar-run");
        self.rounds_on(
            &Target::WITH_OWN_LOOP,
            "untar",
            &metrics,
            |bench, target| {
                if target == Target::Native {
                    if native.exists() {
                        fs::remove_dir_all(&native)?;
                    }
                    fs::create_dir_all(&native)?;
                }
                let place = bench.place(target, &native)?;
                let dir = place.base.join(UNTAR_DIR);
                drop_caches()?;
                let ((), untar) = timed(|| ops::untar(&bench.layout.tar, &place.base))?;
                let counts = ops::walk(&dir)?;
                let files = bench.sizes.untar_files;
                let expected = Counts {
                    dirs: files.div_ceil(100),
                    files,
                    ..Counts::default()
                };
                ensure!(
                    counts == expected,
                    "after untar {} holds {counts:?}, expected {expected:?}",
                    dir.display()
                );
                let ((), rm) = timed(|| ops::rm_rf(&dir))?;
                match fs::symlink_metadata(&dir) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    other => bail!("{} is still there after rm -rf: {other:?}", dir.display()),
                }
                let mut figures = vec![(Metric::Untar, untar), (Metric::RmRf, rm)];
                if let Some(n) = requests_served(place)? {
                    figures.push((Metric::UntarRequests, n / files as f64));
                }
                Ok(figures)
            },
        );
        let _ = fs::remove_dir_all(&native);
    }
}

/// The FUSE requests a mount's daemon served, once it is unmounted and the daemon has
/// exited: strata-fs's own loop writes them at its end to the file
/// [`strata_fs::wire::REQUEST_COUNTS_ENV`] names. `None` for a target that does not count.
fn requests_served(place: Place) -> Result<Option<f64>> {
    let Some(path) = std::env::var_os(strata_fs::wire::REQUEST_COUNTS_ENV) else {
        return Ok(None);
    };
    let path = PathBuf::from(path);
    // Written by this mount's daemon only: an earlier one's is gone.
    let _ = fs::remove_file(&path);
    drop(place);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut total = 0u64;
    for line in text.lines() {
        let n = line.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok());
        total += n.with_context(|| format!("{}: bad line {line:?}", path.display()))?;
    }
    Ok(Some(total as f64))
}

/// Whether `target` is served by a FUSE daemon whose memory is measured.
fn has_daemon(target: Target) -> bool {
    matches!(
        target.driver(),
        Some(Driver::Strata) | Some(Driver::FuseOverlayfs)
    )
}

/// The first MiB of `file` is the first MiB of `original` (a chmod kept the data).
fn same_head(file: &Path, original: &Path) -> Result<()> {
    use std::io::Read;
    let head = |path: &Path| -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(1 << 20);
        fs::File::open(path)
            .with_context(|| format!("opening {}", path.display()))?
            .take(1 << 20)
            .read_to_end(&mut buf)?;
        Ok(buf)
    };
    ensure!(
        head(file)? == head(original)?,
        "{} no longer starts with the lower file's data",
        file.display()
    );
    Ok(())
}
