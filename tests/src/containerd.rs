//! A containerd of the test's own (Debian's 1.6): config, root, state and socket under a
//! directory, stopped on drop, driven with `ctr --address` (or `ctr-remote`). Extra config (a proxy
//! snapshotter) and a PATH head (where its shims and mount helpers find strata's binaries)
//! are the caller's. [`Snapshotter`] runs `strata-snapshotter` for its `[proxy_plugins]`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::mounts::wait_for;

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

/// A private containerd; SIGTERM and wait on drop.
pub struct Containerd {
    child: Child,
    socket: PathBuf,
    dir: PathBuf,
    /// PATH of containerd and of every ctr run against it (ctr mounts snapshots itself,
    /// e.g. to read a rootfs' /etc/group).
    path: Option<OsString>,
}

impl Containerd {
    /// containerd with its own root, state and socket under `dir` (CRI off).
    pub fn start(dir: &Path) -> Result<Containerd> {
        Containerd::start_with(dir, "", None)
    }

    /// [`Containerd::start`] with `extra` appended to its config.toml and `path_head`
    /// first in its PATH (and so its shims' and mount helpers').
    pub fn start_with(dir: &Path, extra: &str, path_head: Option<&Path>) -> Result<Containerd> {
        std::fs::create_dir_all(dir)?;
        let socket = dir.join("sock");
        let config = dir.join("config.toml");
        let text = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n{extra}",
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            sock = socket.display(),
        );
        std::fs::write(&config, text)?;
        let log = std::fs::File::create(dir.join("containerd.log"))?;
        let path = path_head.map(|head| {
            let mut path = OsString::from(head);
            path.push(":");
            path.push(std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin".into()));
            path
        });
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(&config);
        if let Some(path) = &path {
            cmd.env("PATH", path);
        }
        let child = cmd
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting containerd (apt-get install containerd)")?;
        let c = Containerd {
            child,
            socket,
            dir: dir.to_path_buf(),
            path,
        };
        if wait_for(Duration::from_secs(30), "containerd's socket", || {
            c.ctr(&["version"]).code == 0
        })
        .is_err()
        {
            bail!("containerd did not start: {}", c.log());
        }
        Ok(c)
    }

    /// What containerd logged so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `ctr --address SOCKET args…`.
    pub fn ctr(&self, args: &[&str]) -> Out {
        self.client("ctr", args)
    }

    fn client(&self, program: &str, args: &[&str]) -> Out {
        let mut c = Command::new(program);
        c.arg("--address").arg(&self.socket).args(args);
        if let Some(path) = &self.path {
            c.env("PATH", path);
        }
        match c.output() {
            Ok(out) => out.into(),
            Err(e) => Out {
                code: -1,
                stdout: String::new(),
                stderr: format!("running {program}: {e}"),
            },
        }
    }

    /// `ctr-remote --address SOCKET args…` (stargz-snapshotter's ctr, with `image convert`
    /// and `image rpull`).
    pub fn ctr_remote(&self, args: &[&str]) -> Out {
        self.client("ctr-remote", args)
    }

    /// Pulls `src` (into the default snapshotter), converts it to eStargz as `dst` with
    /// `ctr-remote image convert` and pushes that to `dst`'s registry (plain HTTP).
    pub fn push_estargz(&self, src: &str, dst: &str) -> Result<()> {
        for (tool, args) in [
            ("ctr", &["image", "pull", "--plain-http", src][..]),
            (
                "ctr-remote",
                &["image", "convert", "--estargz", "--oci", src, dst][..],
            ),
            ("ctr-remote", &["image", "push", "--plain-http", dst][..]),
        ] {
            let out = self.client(tool, args);
            if out.code != 0 {
                bail!("{tool} {args:?}: {}", out.stderr.trim());
            }
        }
        Ok(())
    }

    /// [`Containerd::ctr`] that must succeed; its stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert_eq!(out.code, 0, "ctr {args:?}: {}{}", out.stdout, out.stderr);
        out.stdout
    }

    /// `ctr run --runc-binary RUNTIME --rootfs ROOTFS head… ID cmd…`.
    pub fn run_rootfs(
        &self,
        runtime: &Path,
        rootfs: &Path,
        head: &[&str],
        id: &str,
        cmd: &[&str],
    ) -> Out {
        let mut v = vec!["run", "--runc-binary", runtime.to_str().unwrap()];
        v.extend_from_slice(head);
        v.extend_from_slice(&["--rootfs", rootfs.to_str().unwrap(), id]);
        v.extend_from_slice(cmd);
        self.ctr(&v)
    }

    /// The STATUS column of `ctr task ls` for `id` (empty: no such task).
    pub fn task_status(&self, id: &str) -> String {
        let out = self.ctr(&["task", "ls"]);
        out.stdout
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.first() == Some(&id)).then(|| f.get(2).unwrap_or(&"").to_string())
            })
            .unwrap_or_default()
    }

    /// Kills task `id` (SIGKILL), waits for it to stop, deletes it and its container.
    pub fn remove_task(&self, id: &str) {
        let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", id]);
        let _ = wait_for(Duration::from_secs(30), "the task to stop", || {
            matches!(self.task_status(id).as_str(), "STOPPED" | "")
        });
        let _ = self.ctr(&["task", "delete", id]);
        let _ = self.ctr(&["container", "delete", id]);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// `strata-snapshotter --address DIR/snapshotter.sock --root ROOT`, killed on drop.
pub struct Snapshotter {
    child: Child,
    socket: PathBuf,
    root: PathBuf,
    log: PathBuf,
}

impl Snapshotter {
    /// Starts it and waits until its socket accepts connections.
    pub fn start(dir: &Path, root: &Path) -> Result<Snapshotter> {
        let socket = dir.join("snapshotter.sock");
        let log = dir.join("snapshotter.log");
        let mut s = Snapshotter {
            child: Snapshotter::spawn(&socket, root, &log)?,
            socket,
            root: root.to_path_buf(),
            log,
        };
        s.wait_ready()?;
        Ok(s)
    }

    fn spawn(socket: &Path, root: &Path, log: &Path) -> Result<Child> {
        let bin = crate::mounts::workspace_bin("strata-snapshotter", "STRATA_SNAPSHOTTER_BIN")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        Ok(Command::new(bin)
            .arg("--debug")
            .arg("--address")
            .arg(socket)
            .arg("--root")
            .arg(root)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let socket = self.socket.clone();
        let child = &mut self.child;
        wait_for(
            Duration::from_secs(30),
            "strata-snapshotter's socket",
            || {
                matches!(child.try_wait(), Ok(Some(_)))
                    || std::os::unix::net::UnixStream::connect(&socket).is_ok()
            },
        )?;
        if let Ok(Some(status)) = self.child.try_wait() {
            bail!(
                "strata-snapshotter exited at start ({status}): {}",
                self.log()
            );
        }
        Ok(())
    }

    /// The `[proxy_plugins.NAME]` section that points containerd at it.
    pub fn proxy_config(&self, name: &str) -> String {
        format!(
            "[proxy_plugins]\n  [proxy_plugins.{name}]\n    type = \"snapshot\"\n    \
             address = \"{}\"\n",
            self.socket.display()
        )
    }

    /// SIGKILL, as a crash: no cleanup of its own runs.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Starts it again on the same socket and root after [`Snapshotter::kill`].
    pub fn restart(&mut self) -> Result<()> {
        self.child = Snapshotter::spawn(&self.socket, &self.root, &self.log)?;
        self.wait_ready()
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The store root it serves.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for Snapshotter {
    /// Kills it and takes down the unions it left mounted under its root (its snapshots'
    /// servers outlive it on purpose; containerd removes snapshots in a GC that a stopped
    /// containerd never runs): each server exits once its mount is gone.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for at in mounts_under(&self.root).iter().rev() {
            let _ = nix::mount::umount2(at.as_path(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Mount points at or below `root`, in mount order.
fn mounts_under(root: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(root))
        .collect()
}
