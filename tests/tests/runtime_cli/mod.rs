//! `strata-runtime`, the OCI runtime command line: a bundle's lifecycle through the binary
//! (made by its own `spec` plus the host's static busybox), its errors and `--log` JSON, and
//! peers driving it (podman `--runtime`, containerd's `ctr run --runc-binary`).

mod bundle;
mod hooks;
mod linux;
mod peers;
mod rootless;
mod states;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use strata_tests::fixture::WhiteoutFormat;

/// The binary under test.
pub fn runtime_bin() -> PathBuf {
    strata_tests::mounts::workspace_bin("strata-runtime", "STRATA_RUNTIME_BIN").unwrap()
}

/// What a command did.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for Out {
    fn from(out: std::process::Output) -> Out {
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Runs `cmd` with stdout and stderr in files under `dir`, not pipes: a container created
/// by it inherits them and would hold pipes open.
pub fn run_to_files(mut cmd: Command, dir: &Path) -> Out {
    let out = dir.join("cmd.out");
    let err = dir.join("cmd.err");
    let status = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .status()
        .unwrap();
    Out {
        code: status.code().unwrap_or(-1),
        stdout: std::fs::read_to_string(&out).unwrap(),
        stderr: std::fs::read_to_string(&err).unwrap(),
    }
}

/// Writes a rootfs of the demo busybox layer under `dir`.
pub fn busybox_rootfs(dir: &Path) {
    strata_tests::oci::busybox_layer()
        .unwrap()
        .write_dir(dir, WhiteoutFormat::KERNEL)
        .unwrap();
}
