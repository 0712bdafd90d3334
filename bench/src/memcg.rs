//! A memory-limited cgroup (v1 memory controller, as this host has) for the random-read
//! workload: fio and the FUSE daemon serving it run inside, so no target can answer from a
//! page cache larger than the limit — every target then reads mostly cold data.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

const ROOT: &str = "/sys/fs/cgroup/memory";

/// A cgroup under the v1 memory hierarchy; removed on drop (once its processes are gone).
pub struct MemCgroup {
    dir: PathBuf,
}

impl MemCgroup {
    /// Creates `strata-bench.PID` limited to `bytes` of memory (page cache included).
    pub fn create(bytes: u64) -> Result<MemCgroup> {
        let dir = PathBuf::from(ROOT).join(format!("strata-bench.{}", std::process::id()));
        fs::create_dir(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
        let cg = MemCgroup { dir };
        cg.write("memory.limit_in_bytes", &bytes.to_string())?;
        Ok(cg)
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub fn add(&self, pid: u32) -> Result<()> {
        self.write("cgroup.procs", &pid.to_string())
    }

    /// `cmd` run through `sh`, which enters the cgroup before it execs the program: the
    /// program is charged from its first page.
    pub fn wrap(&self, cmd: &Command) -> Command {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg("echo $$ > \"$0\" && exec \"$@\"")
            .arg(self.dir.join("cgroup.procs"))
            .arg(cmd.get_program())
            .args(cmd.get_args());
        sh
    }

    fn write(&self, file: &str, value: &str) -> Result<()> {
        let path = self.dir.join(file);
        fs::write(&path, value).with_context(|| format!("writing {value} to {}", path.display()))
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_dir(&self.dir) {
            eprintln!(
                "strata-bench: removing cgroup {}: {err}",
                self.dir.display()
            );
        }
    }
}
