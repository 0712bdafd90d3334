//! Driving the `strata` binary as a user does, against a store of the test's own.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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

    /// [`Strata::run`] for a command that must end: one still running after `limit` (make
    /// it generous: this catches a hang, it does not time anything) is killed and fails the
    /// test.
    #[track_caller]
    pub fn run_bounded(&self, args: &[&str], limit: Duration) -> Run {
        let mut child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.bin.display()));
        let drain = |r: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_end(&mut v);
                }
                v
            })
        };
        let out = drain(
            child
                .stdout
                .take()
                .map(|r| Box::new(r) as Box<dyn Read + Send>),
        );
        let err = drain(
            child
                .stderr
                .take()
                .map(|r| Box::new(r) as Box<dyn Read + Send>),
        );
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for strata") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("strata {args:?} still ran after {limit:?}: it hangs");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Run::from(Output {
            status,
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        })
    }
}

/// Everything under a store's blobs/, layers/ and tmp/ (lock files aside) and index.json:
/// equal before and after a command that failed means it left nothing behind.
pub fn store_state(root: &Path) -> (BTreeSet<PathBuf>, Vec<u8>) {
    let mut files = BTreeSet::new();
    for d in ["blobs/sha256", "layers", "tmp"] {
        for e in std::fs::read_dir(root.join(d))
            .into_iter()
            .flatten()
            .flatten()
        {
            if !e.file_name().to_string_lossy().ends_with(".lock") {
                files.insert(e.path());
            }
        }
    }
    (
        files,
        std::fs::read(root.join("index.json")).unwrap_or_default(),
    )
}
