//! A containerd of the test's own (config, root, state and socket under a directory;
//! stopped on drop), driven with `ctr` or stargz-snapshotter's `ctr-remote` (eStargz
//! conversion, TOC digests).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use crate::mounts::wait_for;
use crate::strata::Run;

pub struct Containerd {
    child: Child,
    socket: PathBuf,
}

impl Containerd {
    /// Starts one under `dir` and waits for its socket. Panics with its log if it does not
    /// come up.
    pub fn start(dir: &Path) -> Containerd {
        std::fs::create_dir_all(dir).unwrap();
        let socket = dir.join("sock");
        let config = dir.join("config.toml");
        let text = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            sock = socket.display(),
        );
        std::fs::write(&config, text).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let c = Containerd { child, socket };
        let ready = wait_for(Duration::from_secs(30), "containerd's socket", || {
            c.ctr(&["version"]).code == 0
        });
        assert!(
            ready.is_ok(),
            "containerd did not start: {}",
            std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
        );
        c
    }

    /// `ctr --address SOCKET ARGS`.
    pub fn ctr(&self, args: &[&str]) -> Run {
        self.client("ctr", args)
    }

    /// `ctr-remote --address SOCKET ARGS` (Debian's stargz-snapshotter).
    pub fn ctr_remote(&self, args: &[&str]) -> Run {
        self.client("ctr-remote", args)
    }

    fn client(&self, program: &str, args: &[&str]) -> Run {
        let out = Command::new(program)
            .arg("--address")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {program}: {e}"));
        Run::from(out)
    }

    /// The STATUS column of `ctr task ls` for `id`.
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
