//! The measured operations themselves, on any path: native, or inside a union mount.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::scratch;

/// What a walk found below its root.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub dirs: usize,
    pub files: usize,
    pub symlinks: usize,
    pub other: usize,
}

/// Runs `f` and returns its value with the seconds it took.
pub fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let start = Instant::now();
    let value = f()?;
    Ok((value, start.elapsed().as_secs_f64()))
}

/// `find ROOT` with an `lstat` of every entry: recursive readdir, depth first.
pub fn walk(root: &Path) -> Result<Counts> {
    let mut counts = Counts::default();
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = fs::read_dir(&dir).with_context(|| format!("opendir {}", dir.display()))?;
        for entry in entries {
            let path = entry
                .with_context(|| format!("readdir {}", dir.display()))?
                .path();
            let meta =
                fs::symlink_metadata(&path).with_context(|| format!("lstat {}", path.display()))?;
            let kind = meta.file_type();
            if kind.is_dir() {
                counts.dirs += 1;
                stack.push(path);
            } else if kind.is_file() {
                counts.files += 1;
            } else if kind.is_symlink() {
                counts.symlinks += 1;
            } else {
                counts.other += 1;
            }
        }
    }
    Ok(counts)
}

/// Reads the names of one directory (no stat); returns how many there are.
pub fn list_dir(dir: &Path) -> Result<usize> {
    let mut n = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("opendir {}", dir.display()))? {
        entry.with_context(|| format!("readdir {}", dir.display()))?;
        n += 1;
    }
    Ok(n)
}

/// Reads `path` to the end in 1 MiB `read(2)`s; returns the bytes read.
pub fn read_all(path: &Path) -> Result<u64> {
    let mut file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {} at {total}", path.display()))?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

/// fio's 4k random reads with 4 jobs over `size` bytes of `path` for `runtime` seconds;
/// returns the IOPS of the group.
pub fn fio_randread(
    path: &Path,
    size: u64,
    runtime: u32,
    wrap: impl FnOnce(&Command) -> Command,
) -> Result<f64> {
    let out = scratch::output(&mut wrap(
        Command::new("fio")
            .args([
                "--name=randread",
                "--rw=randread",
                "--bs=4k",
                "--numjobs=4",
                "--ioengine=psync",
                "--direct=0",
                "--readonly",
                "--time_based",
                "--group_reporting",
                "--output-format=json",
            ])
            .arg(format!("--size={size}"))
            .arg(format!("--runtime={runtime}"))
            .arg(format!("--filename={}", path.display())),
    ))?;
    parse_fio_iops(&out)
}

fn parse_fio_iops(out: &str) -> Result<f64> {
    // fio may print notes before its JSON.
    let json = &out[out.find('{').context("no JSON in fio's output")?..];
    let value: serde_json::Value = serde_json::from_str(json).context("parsing fio's JSON")?;
    let job = &value["jobs"][0];
    if job["error"].as_i64().unwrap_or(0) != 0 {
        bail!("fio job failed: error {}", job["error"]);
    }
    job["read"]["iops"]
        .as_f64()
        .context("no jobs[0].read.iops in fio's JSON")
}

/// `open(O_WRONLY|O_APPEND)`, `write` one byte, `close`: on a lower file, the copy-up.
pub fn append_byte(path: &Path) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("opening {} for appending", path.display()))?;
    file.write_all(b"x")
        .with_context(|| format!("appending to {}", path.display()))?;
    drop(file);
    Ok(())
}

/// `tar -xf TAR -C DIR`.
pub fn untar(tar: &Path, dir: &Path) -> Result<()> {
    scratch::run(Command::new("tar").arg("-xf").arg(tar).arg("-C").arg(dir))
}

/// `chmod -R MODE PATH`.
pub fn chmod_r(mode: &str, path: &Path) -> Result<()> {
    scratch::run(Command::new("chmod").arg("-R").arg(mode).arg(path))
}

/// `rm -rf PATH`.
pub fn rm_rf(path: &Path) -> Result<()> {
    scratch::run(Command::new("rm").arg("-rf").arg(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_counts_each_kind() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::write(dir.path().join("a/f"), "x").unwrap();
        fs::write(dir.path().join("a/b/g"), "").unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("a/l")).unwrap();
        let counts = walk(dir.path()).unwrap();
        let expected = Counts {
            dirs: 2,
            files: 2,
            symlinks: 1,
            other: 0,
        };
        assert_eq!(counts, expected);
        assert_eq!(list_dir(&dir.path().join("a")).unwrap(), 3);
    }

    #[test]
    fn fio_iops_are_read_after_any_notes() {
        let out = "note: both iodepth >= 1 and synchronous I/O engine are selected\n\
                   {\"jobs\": [{\"error\": 0, \"read\": {\"iops\": 12345.6}}]}";
        assert_eq!(parse_fio_iops(out).unwrap(), 12345.6);
        let failed = "{\"jobs\": [{\"error\": 5, \"read\": {\"iops\": 0}}]}";
        assert!(parse_fio_iops(failed).is_err());
    }
}
