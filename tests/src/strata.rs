//! Driving the `strata` binary as a user does, against a store of the test's own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::Result;

use crate::mounts::workspace_bin;

/// The `strata` binary with `--root` set to a test store.
pub struct Strata {
    bin: PathBuf,
    root: PathBuf,
}

/// What one command did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// What a finished command gave.
    pub fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Fails the test unless the command exited 0; returns stdout.
    #[track_caller]
    pub fn ok(self) -> String {
        assert_eq!(
            self.code, 0,
            "strata failed:\n{}\n{}",
            self.stdout, self.stderr
        );
        self.stdout
    }

    /// Fails the test unless the command failed with `code`; returns stderr.
    #[track_caller]
    pub fn fails(self, code: i32) -> String {
        assert_eq!(
            self.code, code,
            "expected exit {code}:\n{}\n{}",
            self.stdout, self.stderr
        );
        self.stderr
    }

    /// stdout split into lines.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

impl Strata {
    pub fn new(root: &Path) -> Result<Strata> {
        Ok(Strata {
            bin: workspace_bin("strata", "STRATA_BIN")?,
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A command ready to run (for tests that set env or stdin).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--root").arg(&self.root).args(args);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(
            self.command(args)
                .output()
                .unwrap_or_else(|e| panic!("running {}: {e}", self.bin.display())),
        )
    }
}
