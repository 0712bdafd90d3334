//! The FUSE daemon behind a mount point, found in `/proc`, and its resident memory.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// The pid of the process whose command line names `program` (by file name) and has
/// `mountpoint` as one of its arguments: the daemon serving that mount. Both fuse-overlayfs
/// and strata-fs keep their command line when they go to the background.
pub fn daemon_pid(program: &str, mountpoint: &Path) -> Result<u32> {
    let wanted = mountpoint.as_os_str().as_encoded_bytes();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").context("listing /proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may exit while we look: skip what cannot be read.
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline_matches(&cmdline, program, wanted) {
            found.push(pid);
        }
    }
    match found.as_slice() {
        [pid] => Ok(*pid),
        [] => bail!("no {program} process serves {}", mountpoint.display()),
        many => bail!(
            "several {program} processes name {}: {many:?}",
            mountpoint.display()
        ),
    }
}

fn cmdline_matches(cmdline: &[u8], program: &str, mountpoint: &[u8]) -> bool {
    let mut args = cmdline.split(|&b| b == 0).filter(|a| !a.is_empty());
    let Some(argv0) = args.next() else {
        return false;
    };
    let name = argv0.rsplit(|&b| b == b'/').next().unwrap_or(argv0);
    name == program.as_bytes() && args.any(|a| a == mountpoint)
}

/// `VmRSS` of `pid`, in bytes.
pub fn vm_rss(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_vm_rss(&status).with_context(|| format!("no VmRSS line in /proc/{pid}/status"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line["VmRSS:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Bytes read from block device `dev` (`loop3`) so far: `/proc/diskstats`' sectors read.
pub fn device_bytes_read(dev: &str) -> Result<u64> {
    let stats = fs::read_to_string("/proc/diskstats").context("reading /proc/diskstats")?;
    parse_sectors_read(&stats, dev)
        .map(|sectors| sectors * 512)
        .with_context(|| format!("no {dev} line in /proc/diskstats"))
}

fn parse_sectors_read(stats: &str, dev: &str) -> Option<u64> {
    // major minor name reads merged sectors …
    let line = stats
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some(dev))?;
    line.split_whitespace().nth(5)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sectors_read_are_the_sixth_field() {
        let stats =
            "   7       0 loop0 3417 10707 132766 641 15491\n   7       1 loop10 5 0 8 0 0\n";
        assert_eq!(parse_sectors_read(stats, "loop0"), Some(132766));
        assert_eq!(parse_sectors_read(stats, "loop10"), Some(8));
        assert_eq!(parse_sectors_read(stats, "loop1"), None);
    }

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tstrata-fs\nVmPeak:\t  900 kB\nVmRSS:\t   41234 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(41234 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn the_daemon_is_matched_by_program_and_mountpoint() {
        let line = b"/work/target/release/strata-fs\0-o\0lowerdir=/a:/b\0/tmp/mnt\0";
        assert!(cmdline_matches(line, "strata-fs", b"/tmp/mnt"));
        assert!(!cmdline_matches(line, "fuse-overlayfs", b"/tmp/mnt"));
        assert!(!cmdline_matches(line, "strata-fs", b"/tmp/mnt2"));
        // The mount point inside an option value is not the mount point.
        let other = b"fuse-overlayfs\0-o\0lowerdir=/tmp/mnt\0/x\0";
        assert!(!cmdline_matches(other, "fuse-overlayfs", b"/tmp/mnt"));
    }
}
