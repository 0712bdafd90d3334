//! A bundle's lifecycle through `strata-runtime`: `spec`, `create` (pid 1 set up, blocked
//! before exec), `start`, `state`, `exec`, `ps`, `pause`, `resume`, `kill`, `delete`, and
//! the error text and exit status callers match, with `--log-format json` lines.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use strata_tests::mounts::wait_for;
use strata_tests::users::have_root;
use tempfile::TempDir;

use super::{busybox_rootfs, run_to_files, runtime_bin, Out};

/// A bundle under a fresh directory and a `--root` of its own; rootless, `spec --rootless`
/// and the default root under an `$XDG_RUNTIME_DIR` of its own.
pub(super) struct Bundle {
    pub(super) tmp: TempDir,
    rootless: bool,
    /// The runtime the commands run: strata-runtime, or a peer ([`Bundle::using`]).
    bin: PathBuf,
}

impl Bundle {
    /// `strata-runtime spec`, a busybox rootfs, and `args` as the process.
    pub(super) fn new(args: &[&str]) -> Bundle {
        Bundle::make(args, false)
    }

    /// As [`Bundle::new`] with `spec --rootless`: a user namespace mapping the caller's
    /// own ids to root, and no `--root` (`$XDG_RUNTIME_DIR/strata-runtime`).
    pub(super) fn rootless(args: &[&str]) -> Bundle {
        Bundle::make(args, true)
    }

    fn make(args: &[&str], rootless: bool) -> Bundle {
        let tmp = tempfile::Builder::new()
            .prefix("strata-rt")
            .tempdir()
            .unwrap();
        let b = Bundle {
            tmp,
            rootless,
            bin: runtime_bin(),
        };
        std::fs::create_dir_all(b.xdg()).unwrap();
        let dir = b.dir();
        let mut spec_args = vec!["spec", "--bundle", dir.to_str().unwrap()];
        if rootless {
            spec_args.push("--rootless");
        }
        let spec = b.rt(&spec_args);
        assert_eq!(spec.code, 0, "spec: {}", spec.stderr);
        busybox_rootfs(&b.dir().join("rootfs"));
        let path = b.dir().join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        config["process"]["args"] = serde_json::json!(args);
        // A writable root: the test's processes leave markers in it.
        config["root"]["readonly"] = serde_json::json!(false);
        std::fs::write(&path, config.to_string()).unwrap();
        b
    }

    pub(super) fn dir(&self) -> PathBuf {
        self.tmp.path().join("bundle")
    }

    /// The state directory: `--root`, or rootless the default under [`Bundle::xdg`].
    pub(super) fn root(&self) -> PathBuf {
        match self.rootless {
            true => self.xdg().join("strata-runtime"),
            false => self.tmp.path().join("state"),
        }
    }

    /// `$XDG_RUNTIME_DIR` of the runtime's commands.
    pub(super) fn xdg(&self) -> PathBuf {
        self.tmp.path().join("xdg")
    }

    /// The same bundle driven by another runtime (runc), from now on.
    pub(super) fn using(mut self, bin: impl Into<PathBuf>) -> Bundle {
        self.bin = bin.into();
        self
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        if !self.rootless {
            c.arg("--root").arg(self.root());
        }
        c.args(args).env("XDG_RUNTIME_DIR", self.xdg());
        c.current_dir(self.tmp.path());
        c
    }

    pub(super) fn rt(&self, args: &[&str]) -> Out {
        std::fs::create_dir_all(self.dir()).unwrap();
        run_to_files(self.command(args), self.tmp.path())
    }

    /// Succeeds, or fails the test with its stderr; stdout.
    pub(super) fn ok(&self, args: &[&str]) -> String {
        let out = self.rt(args);
        assert_eq!(out.code, 0, "strata-runtime {args:?}: {}", out.stderr);
        out.stdout
    }

    /// Fails with status 1 and `text` in stderr.
    pub(super) fn fails(&self, args: &[&str], text: &str) {
        let out = self.rt(args);
        assert_eq!(
            out.code, 1,
            "strata-runtime {args:?} should fail: {}",
            out.stdout
        );
        assert!(
            out.stderr.contains(text),
            "strata-runtime {args:?}: {text:?} not in {:?}",
            out.stderr
        );
    }

    pub(super) fn state(&self, id: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["state", id])).unwrap()
    }

    pub(super) fn wait_status(&self, id: &str, status: &str) {
        let mut last = serde_json::Value::Null;
        let r = wait_for(Duration::from_secs(30), status, || {
            last = self.state(id);
            last["status"] == status
        });
        assert!(r.is_ok(), "{id} never {status}: {last}");
    }

    /// Edits config.json.
    pub(super) fn config(&self, edit: impl FnOnce(&mut serde_json::Value)) {
        let path = self.dir().join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        edit(&mut config);
        std::fs::write(&path, config.to_string()).unwrap();
    }

    /// `create --bundle BUNDLE [extra...] ID`, which must succeed.
    pub(super) fn create(&self, id: &str, extra: &[&str]) {
        let dir = self.dir();
        let mut args = vec!["create", "--bundle", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.push(id);
        self.ok(&args);
    }

    /// Runs `args` with `input` on stdin.
    pub(super) fn rt_stdin(&self, args: &[&str], input: &str) -> Out {
        use std::io::Write;
        let mut c = self.command(args);
        let mut child = c
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap().into()
    }

    pub(super) fn rootfs(&self, path: &str) -> PathBuf {
        self.dir().join("rootfs").join(path)
    }
}

#[test]
fn bundle_lifecycle_create_blocks_until_start() {
    if !have_root("bundle_lifecycle_create_blocks_until_start") {
        return;
    }
    let b = Bundle::new(&["sh", "-c", "echo $$ > /started; exec sleep 1000"]);
    let bundle = b.dir();
    let pid_file = b.tmp.path().join("pid");
    b.ok(&[
        "create",
        "--bundle",
        bundle.to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        "c1",
    ]);
    let state = b.state("c1");
    assert_eq!(state["status"], "created", "{state}");
    assert_eq!(state["id"], "c1");
    assert_eq!(state["bundle"], bundle.to_str().unwrap());
    assert_eq!(state["rootfs"], bundle.join("rootfs").to_str().unwrap());
    assert!(state["ociVersion"].is_string() && state["owner"].is_string());
    let created = state["created"].as_str().unwrap();
    assert!(created.parse::<jiff::Timestamp>().is_ok(), "{created}");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(state["pid"].to_string(), pid, "pid file and state differ");
    // Set up but not exec'd: the process's first act has not happened.
    assert!(
        !b.rootfs("started").exists(),
        "the process ran before start"
    );
    let listed = b.ok(&["list"]);
    assert!(
        listed.contains("c1") && listed.contains("created"),
        "{listed}"
    );

    b.ok(&["start", "c1"]);
    // Written, not only created: the shell creates the file before echo writes to it.
    wait_for(Duration::from_secs(30), "/started", || {
        std::fs::read_to_string(b.rootfs("started")).is_ok_and(|s| s.ends_with('\n'))
    })
    .unwrap();
    // pid 1 of its own pid namespace.
    assert_eq!(std::fs::read_to_string(b.rootfs("started")).unwrap(), "1\n");
    assert_eq!(b.state("c1")["status"], "running");
    b.fails(
        &["start", "c1"],
        "cannot start an already running container",
    );

    let out = b.rt(&["exec", "c1", "sh", "-c", "echo in-exec; exit 3"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (3, "in-exec\n"),
        "{}",
        out.stderr
    );
    let ps: Vec<i32> = serde_json::from_str(&b.ok(&["ps", "--format", "json", "c1"])).unwrap();
    assert!(ps.contains(&pid.trim().parse().unwrap()), "{ps:?}");

    b.ok(&["pause", "c1"]);
    assert_eq!(b.state("c1")["status"], "paused");
    b.ok(&["resume", "c1"]);
    assert_eq!(b.state("c1")["status"], "running");

    b.fails(&["delete", "c1"], "not stopped");
    b.ok(&["kill", "c1", "KILL"]);
    b.wait_status("c1", "stopped");
    b.fails(&["kill", "c1", "TERM"], "container not running");
    b.fails(
        &["start", "c1"],
        "cannot start a container that has stopped",
    );
    b.ok(&["delete", "c1"]);
    b.fails(&["state", "c1"], "does not exist");
    assert!(
        !b.root().join("c1").exists(),
        "delete left the state directory"
    );
}

#[test]
fn bundle_errors_and_json_log() {
    if !have_root("bundle_errors_and_json_log") {
        return;
    }
    let b = Bundle::new(&["no-such-command"]);
    let bundle = b.dir();
    let log = b.tmp.path().join("log.json");
    let log_args = ["--log", log.to_str().unwrap(), "--log-format", "json"];
    let with_log = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = log_args.iter().map(|s| s.to_string()).collect();
        v.extend(args.iter().map(|s| s.to_string()));
        v
    };
    let args = with_log(&["create", "--bundle", bundle.to_str().unwrap(), "bad"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    b.fails(&args, "executable file not found in $PATH");
    // Nothing half-made: the failed create left no container.
    b.fails(&["state", "bad"], "does not exist");
    let args = with_log(&["kill", "nosuch"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    b.fails(&args, "does not exist");

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    for line in &lines {
        assert_eq!(line["level"], "error", "{line}");
        let time = line["time"].as_str().unwrap();
        assert!(
            time.parse::<jiff::Timestamp>().is_ok(),
            "not RFC 3339: {time}"
        );
    }
    assert!(lines[0]["msg"]
        .as_str()
        .unwrap()
        .contains("executable file not found in $PATH"));

    // A non-executable file: permission denied.
    std::fs::write(b.rootfs("bin/script"), "#!/bin/sh\n").unwrap();
    set_config_args(&bundle, &["/bin/script"]);
    b.fails(
        &["create", "--bundle", bundle.to_str().unwrap(), "noexec"],
        "permission denied",
    );
    b.fails(
        &["--systemd-cgroup", "list"],
        "--systemd-cgroup is not supported",
    );
    b.fails(&["--log-format", "xml", "list"], "invalid --log-format");
    b.fails(&["spec", "--bundle", bundle.to_str().unwrap()], "exists");

    // The same id twice.
    set_config_args(&bundle, &["sleep", "1000"]);
    b.ok(&["create", "--bundle", bundle.to_str().unwrap(), "twice"]);
    b.fails(
        &["create", "--bundle", bundle.to_str().unwrap(), "twice"],
        "already exists",
    );
    assert_eq!(b.state("twice")["status"], "created");
    // A created container is deleted without --force, as runc.
    b.ok(&["delete", "twice"]);
    b.fails(&["state", "twice"], "does not exist");
    assert_eq!(b.rt(&["delete", "--force", "twice"]).code, 0);
}

fn set_config_args(bundle: &Path, args: &[&str]) {
    let path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["process"]["args"] = serde_json::json!(args);
    std::fs::write(&path, config.to_string()).unwrap();
}
