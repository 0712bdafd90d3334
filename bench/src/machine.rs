//! The conditions of a run, printed above its table: the machine, the drivers' versions and
//! options, and how busy the machine was. Every FUSE request wakes the daemon and then the
//! caller, usually on the other CPU. On a virtual machine whose idle vCPUs halt without
//! polling (this one: Firecracker, `haltpoll.guest_halt_poll_ns=0`), waking an idle vCPU
//! goes through the host: a thread-to-thread round trip costs ~40-50 µs when the machine is
//! idle and ~10 µs when other work keeps both vCPUs awake, and FUSE untar and `rm -rf`
//! figures move 2-4× with it while kernel overlayfs's do not. So the round trip is measured
//! before and after the run and reported.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Result};

/// How busy the machine is.
#[derive(Clone, Copy, Debug)]
pub struct Conditions {
    /// 1, 5 and 15 minute load averages.
    pub load: (f64, f64, f64),
    /// One byte there and back between two threads over a socket pair, in µs (median of
    /// five batches).
    pub round_trip_us: f64,
}

impl Conditions {
    pub fn now() -> Conditions {
        Conditions {
            load: load_average(),
            round_trip_us: round_trip_us().unwrap_or(f64::NAN),
        }
    }

    /// Warns on stderr when other work would skew the figures.
    pub fn warn(&self) {
        if self.load.0 > 0.5 {
            eprintln!(
                "strata-bench: warning: load average {:.2}: other work on the machine skews \
                 the figures",
                self.load.0
            );
        }
        if self.round_trip_us > 25.0 {
            eprintln!(
                "strata-bench: note: a thread-to-thread round trip takes {:.0} µs (idle vCPUs \
                 are woken through the host?); every FUSE request pays it twice",
                self.round_trip_us
            );
        }
    }

    fn describe(&self) -> String {
        let (one, five, fifteen) = self.load;
        format!(
            "load {one:.2} / {five:.2} / {fifteen:.2}, thread round trip {:.1} µs",
            self.round_trip_us
        )
    }
}

/// The 1, 5 and 15 minute load averages; zeros when /proc/loadavg cannot be read.
fn load_average() -> (f64, f64, f64) {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut fields = text
        .split_whitespace()
        .map(|f| f.parse::<f64>().unwrap_or(0.0));
    let mut next = || fields.next().unwrap_or(0.0);
    (next(), next(), next())
}

/// The cost of waking another thread and being woken back, as a FUSE request costs it.
fn round_trip_us() -> Result<f64> {
    const TRIPS: usize = 5_000;
    let (mut ours, mut theirs) = UnixStream::pair()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let mut byte = [0u8];
        while theirs.read(&mut byte)? == 1 && byte[0] != b'q' {
            theirs.write_all(&byte)?;
        }
        Ok(())
    });
    let mut batches = Vec::new();
    let mut byte = [0u8];
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..TRIPS {
            ours.write_all(b"x")?;
            ours.read_exact(&mut byte)?;
        }
        batches.push(start.elapsed().as_secs_f64() * 1e6 / TRIPS as f64);
    }
    ours.write_all(b"q")?;
    echo.join().expect("echo thread panicked")?;
    Ok(crate::report::median(&batches).unwrap_or(f64::NAN))
}

pub fn which(tool: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    if !found {
        bail!("{tool} is not installed (not on PATH)");
    }
    Ok(())
}

/// The machine and the drivers' versions and options, as markdown bullets.
pub fn environment(
    strata_fs: &Path,
    runs: usize,
    quick: bool,
    before: &Conditions,
    after: &Conditions,
) -> String {
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let fuse_overlayfs = Command::new("fuse-overlayfs")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find(|l| l.starts_with("fuse-overlayfs"))
                .map(|l| l.trim_start_matches("fuse-overlayfs:").trim().to_string())
        })
        .unwrap_or_else(|| "?".to_string());
    let params: Vec<String> = ["redirect_dir", "index", "metacopy", "xino_auto"]
        .iter()
        .filter_map(|p| {
            let v = std::fs::read_to_string(format!("/sys/module/overlay/parameters/{p}")).ok()?;
            Some(format!("{p}={}", v.trim()))
        })
        .collect();
    let mut out = String::new();
    out.push_str(&format!(
        "- machine: {os}, {cores} cores, kernel {kernel}\n\
         - kernel overlayfs: plain `lowerdir,upperdir,workdir`, module defaults ({})\n\
         - fuse-overlayfs {fuse_overlayfs} and strata-fs ({}) with their defaults\n\
         - data on a fresh ext4 image on a loop device; layers in kernel overlay format\n\
         - median of {runs} run(s){}; ratios are strata-fs's figure over the peer's \
           (times: below 1 is faster; MB/s and IOPS: above 1 is faster)\n\
         - native ext4: the merged tree copied flat (walk, readdir), the lower file itself \
           (reads), a plain copy written in place with no copy-up (copyup, chmod)\n",
        params.join(" "),
        strata_fs.display(),
        if quick { ", --quick sizes" } else { "" },
    ));
    out.push_str(&format!(
        "- before the run: {}; after it: {} (the run's own processes add about 1 to the load)\n",
        before.describe(),
        after.describe()
    ));
    out
}

/// `podman` with the runtime and cgroup manager that work on this host: its default crun
/// fails on the hybrid cgroups here.
pub fn podman() -> std::process::Command {
    let mut c = std::process::Command::new("podman");
    c.args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"]);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_trip_is_measured() {
        let us = round_trip_us().unwrap();
        assert!(us > 0.0 && us < 10_000.0, "{us} µs");
    }
}
