//! `strata-snapshotter` under a private containerd 1.6 (`[proxy_plugins.strata]`): images
//! pulled from the test registry unpack into strata-fs unions, containers run on them with
//! runc and with strata-runtime, `ctr snapshots` lists, measures and removes them, a killed
//! and restarted snapshotter leaves running containers working, bad requests sent straight
//! to its socket get the gRPC codes containerd expects (grpc.rs), and an eStargz image
//! rpulled with ctr-remote runs without containerd downloading a layer (lazy.rs).

mod grpc;
mod lazy;

use std::path::{Path, PathBuf};
use std::time::Duration;

use strata_tests::containerd::{Containerd, Out, Snapshotter};
use strata_tests::mounts::{wait_for, workspace_bin};
use strata_tests::tree::{diff, snapshot, snapshot_with_times};
use strata_tests::users::have_root;
use tempfile::TempDir;

use crate::images::{env, Env};

/// A registry with the test images, a snapshotter over a store of the test's own, and a
/// containerd using it as `strata`. Fields drop in order: containerd before the
/// snapshotter, the registry last.
struct Setup {
    ctd: Containerd,
    snap: Snapshotter,
    root: PathBuf,
    env: Env,
    _tmp: TempDir,
}

fn setup() -> Setup {
    let env = env();
    let tmp = tempfile::Builder::new()
        .prefix("strata-snap")
        .tempdir()
        .unwrap();
    let root = tmp.path().join("store");
    let snap = Snapshotter::start(tmp.path(), &root).unwrap();
    // containerd only bind-mounts: it needs no strata binary in its PATH.
    let ctd = Containerd::start_with(
        &tmp.path().join("containerd"),
        &snap.proxy_config("strata"),
        None,
    )
    .unwrap();
    Setup {
        ctd,
        snap,
        root,
        env,
        _tmp: tmp,
    }
}

impl Setup {
    fn pull(&self, reference: &str) {
        self.ctd.ctr_ok(&[
            "image",
            "pull",
            "--plain-http",
            "--snapshotter",
            "strata",
            reference,
        ]);
    }

    /// `ctr run --rm --snapshotter strata [head…] IMAGE ID cmd…`.
    fn run(&self, head: &[&str], image: &str, id: &str, cmd: &[&str]) -> Out {
        let id = unique(id);
        let mut v = vec!["run", "--rm", "--snapshotter", "strata"];
        v.extend_from_slice(head);
        v.extend_from_slice(&[image, &id]);
        v.extend_from_slice(cmd);
        self.ctd.ctr(&v)
    }

    /// `ctr snapshots --snapshotter strata args…`.
    fn snapshots(&self, args: &[&str]) -> Out {
        let mut v = vec!["snapshots", "--snapshotter", "strata"];
        v.extend_from_slice(args);
        self.ctd.ctr(&v)
    }

    /// The KEY column of `ctr snapshots ls`.
    fn snapshot_keys(&self) -> Vec<String> {
        let out = self.snapshots(&["ls"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    }

    /// The snapshot directories the snapshotter holds.
    fn snapshot_dirs(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.root.join("snapshotter/snapshots")) {
            Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// `name` made unique to this process: runc's state directory
/// (`/run/containerd/runc/NAMESPACE/ID`) is shared by every containerd on the host.
fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

fn runtime_bin() -> PathBuf {
    workspace_bin("strata-runtime", "STRATA_RUNTIME_BIN").unwrap()
}

/// The file system type of `/` in a mountinfo text.
fn root_fstype(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let sep = f.iter().position(|x| *x == "-")?;
        (f.get(4) == Some(&"/")).then(|| f.get(sep + 1).unwrap_or(&"").to_string())
    })
}

/// Strata-fs mounts over the snapshotter's directories still in the host's mount table.
fn strata_mounts_over(root: &Path) -> Vec<String> {
    let root = root.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains("fuse.strata-fs") && l.contains(&root))
        .map(str::to_string)
        .collect()
}

#[test]
fn containerd_pulls_and_runs_images_on_strata_fs() {
    if !have_root("containerd_pulls_and_runs_images_on_strata_fs") {
        return;
    }
    let s = setup();
    s.pull(&s.env.busybox);
    // Two layers: the base one and the one over it, both committed.
    let keys = s.snapshot_keys();
    assert_eq!(keys.len(), 2, "{keys:?}");

    // runc, the default runtime.
    let out = s.run(&[], &s.env.busybox, "c1", &["cat", "/hello"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "world\n"),
        "{}",
        out.stderr
    );
    let out = s.run(&[], &s.env.busybox, "c2", &["cat", "/proc/self/mountinfo"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        root_fstype(&out.stdout).as_deref(),
        Some("fuse.strata-fs"),
        "{}",
        out.stdout
    );
    // strata-runtime through the runc shim; the container writes to its upper.
    let rt = runtime_bin();
    let out = s.run(
        &["--runc-binary", rt.to_str().unwrap()],
        &s.env.busybox,
        "c3",
        &[
            "sh",
            "-c",
            "echo new > /hello && cat /hello && rm /bin/true && ! test -e /bin/true \
             && awk '$5 == \"/\" { for (i = 7; i < NF; i++) if ($i == \"-\") print $(i + 1) }' \
             /proc/self/mountinfo",
        ],
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "new\nfuse.strata-fs\n"),
        "{}",
        out.stderr
    );
    // The layers are untouched by what the container did.
    let out = s.run(&[], &s.env.busybox, "c4", &["cat", "/hello"]);
    assert_eq!(out.stdout, "world\n", "{}", out.stderr);
    assert_eq!(
        s.snapshot_keys().len(),
        2,
        "--rm removed the containers' snapshots"
    );

    // Usage: the top layer (the one with a parent: KEY PARENT KIND) holds one file.
    let listing = s.snapshots(&["ls"]).stdout;
    let top_key = listing
        .lines()
        .skip(1)
        .find(|l| l.split_whitespace().count() == 3)
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no layer with a parent in:\n{listing}"))
        .to_string();
    let usage = s.snapshots(&["usage", &top_key]);
    assert_eq!(usage.code, 0, "{}", usage.stderr);
    let line = usage.stdout.lines().nth(1).unwrap_or_default().to_string();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols.first(), Some(&top_key.as_str()), "{}", usage.stdout);
    assert_eq!(
        cols.last(),
        Some(&"2"),
        "inodes of the top layer: {}",
        usage.stdout
    );

    // Removal: the image, then its snapshots, top first; nothing is left.
    s.ctd.ctr_ok(&["image", "rm", "--sync", &s.env.busybox]);
    for key in s.snapshot_keys().iter().rev() {
        let _ = s.snapshots(&["rm", key]);
    }
    for key in s.snapshot_keys() {
        let out = s.snapshots(&["rm", &key]);
        assert_eq!(out.code, 0, "rm {key}: {}", out.stderr);
    }
    assert_eq!(s.snapshot_keys(), Vec::<String>::new());
    // containerd removes the backend's snapshots in its garbage collection, after `rm`.
    let gone = wait_for(
        Duration::from_secs(30),
        "the snapshot directories to go",
        || s.snapshot_dirs().is_empty(),
    );
    assert!(gone.is_ok(), "{:?}", s.snapshot_dirs());
    assert_eq!(strata_mounts_over(&s.root), Vec::<String>::new());
    let _ = &s.snap;
}

#[test]
fn snapshotter_view_equals_strata_mount_of_the_image() {
    if !have_root("snapshotter_view_equals_strata_mount_of_the_image") {
        return;
    }
    let s = setup();
    s.pull(&s.env.layers);
    let tmp = s.env.tmp.path();
    let view = tmp.join("view");
    std::fs::create_dir(&view).unwrap();
    // The image's top layer: the committed snapshot no other one has as parent.
    let listing = s.snapshots(&["ls"]).stdout;
    let rows: Vec<Vec<&str>> = listing
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let top = rows
        .iter()
        .map(|r| r[0])
        .find(|k| !rows.iter().any(|r| r.len() == 3 && r[1] == *k))
        .unwrap_or_else(|| panic!("no top layer in:\n{listing}"));
    // A view nothing references is garbage to containerd: label it a GC root, again with a
    // new key if its GC took it between the two commands.
    let key = (0..5)
        .map(|i| format!("v{i}"))
        .find(|key| {
            let out = s.snapshots(&["view", key, top]);
            assert_eq!(out.code, 0, "{}", out.stderr);
            s.snapshots(&["label", key, "containerd.io/gc.root=1"]).code == 0
        })
        .expect("containerd collected five views in a row");
    let key = key.as_str();
    // `ctr snapshots mounts` prints `mount -t TYPE SOURCE TARGET -o OPTIONS`: a bind
    // mount of the union the snapshotter holds, which we make as containerd does.
    let out = s.snapshots(&["mounts", view.to_str().unwrap(), key]);
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(
        words.get(..3),
        Some(&["mount", "-t", "bind"][..]),
        "{}{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(words.get(6), Some(&"rbind,ro"), "{}", out.stdout);
    let status = std::process::Command::new("mount")
        .args(["--rbind", words[3], words[4]])
        .status()
        .unwrap();
    assert!(status.success());
    let guard = ViewMount(&view);
    let mounted = strata_tests::mounts::mountinfo_line(&view).unwrap_or_default();
    assert!(mounted.contains("fuse.strata-fs"), "{mounted}");

    s.env.strata.run(&["pull", "-q", &s.env.layers]).ok();
    let mnt = tmp.join("strata-mnt");
    std::fs::create_dir(&mnt).unwrap();
    s.env
        .strata
        .run(&["mount", &s.env.layers, mnt.to_str().unwrap()])
        .ok();
    let expected = snapshot_with_times(&mnt).unwrap();
    let actual = snapshot_with_times(&view).unwrap();
    let untimed = diff(&snapshot(&mnt).unwrap(), &snapshot(&view).unwrap());
    let _ = strata_tests::mounts::unmount(&mnt, strata_tests::mounts::Driver::Strata);
    assert!(
        untimed.is_empty(),
        "the snapshotter's view differs from strata mount (- strata mount only, + view only):\n{}",
        untimed.join("\n")
    );
    // Times too, but for /etc: containerd applies the top layer's `etc/.wh.group` by
    // unlinking etc/group through the mount, which makes etc's mtime the time of the pull,
    // and that layer has no `etc/` entry whose times the applier would set back. strata's
    // index keeps the lower layer's time.
    let differences: Vec<String> = diff(&expected, &actual)
        .into_iter()
        .filter(|d| !d.starts_with("~ etc\n"))
        .collect();
    assert!(
        differences.is_empty(),
        "times differ (- strata mount only, + view only):\n{}",
        differences.join("\n")
    );
    drop(guard);
    // Removing the view takes its union down (containerd removes the backend's snapshot
    // in its garbage collection, after `rm` returned).
    let out = s.snapshots(&["rm", key]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let gone = wait_for(Duration::from_secs(30), "the view's union to go", || {
        strata_mounts_over(&s.root).is_empty()
    });
    assert!(gone.is_ok(), "{:?}", strata_mounts_over(&s.root));
}

/// Unmounts on drop, so a failed test leaves no mount behind.
struct ViewMount<'a>(&'a Path);

impl Drop for ViewMount<'_> {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn running_container_survives_a_snapshotter_restart() {
    if !have_root("running_container_survives_a_snapshotter_restart") {
        return;
    }
    let mut s = setup();
    s.pull(&s.env.busybox);
    let long = unique("long");
    s.ctd.ctr_ok(&[
        "run",
        "-d",
        "--snapshotter",
        "strata",
        &s.env.busybox,
        &long,
        "sleep",
        "1000",
    ]);
    let task = TaskGuard(&s.ctd, &long);
    let exec = |id: &str, script: &str| {
        s.ctd
            .ctr(&["task", "exec", "--exec-id", id, &long, "sh", "-c", script])
    };
    s.snap.kill().unwrap();
    // Its mounts are strata-fs processes of their own: the root file system still serves.
    let out = exec("e1", "cat /hello && echo more > /new && cat /new");
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "world\nmore\n"),
        "{}",
        out.stderr
    );
    s.snap.restart().unwrap();
    // containerd's gRPC client reconnects with backoff: calls fail Unavailable until then.
    wait_for(Duration::from_secs(30), "containerd to reconnect", || {
        s.snapshots(&["ls"]).code == 0
    })
    .unwrap();
    // The restarted snapshotter knows every snapshot, the container's active one too.
    assert_eq!(s.snapshot_keys().len(), 3, "{}", s.snap.log());
    let out = exec("e2", "cat /new");
    assert_eq!(out.stdout, "more\n", "{}", out.stderr);
    // And serves new containers.
    let out = s.run(&[], &s.env.busybox, "after", &["cat", "/hello"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "world\n"),
        "{}",
        out.stderr
    );
    drop(task);
    assert_eq!(s.snapshot_keys().len(), 2);
}

/// Kills and deletes a task and its container on drop.
struct TaskGuard<'a>(&'a Containerd, &'a str);

impl Drop for TaskGuard<'_> {
    fn drop(&mut self) {
        self.0.remove_task(self.1);
    }
}
