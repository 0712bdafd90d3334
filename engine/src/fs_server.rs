//! A running container's root file system served from a process of its own, which strata
//! starts again on the same FUSE connection when it dies: the container keeps running.
//!
//! ```text
//! monitor: mounts rootfs/ (mount_device), keeps the /dev/fuse descriptor and a journal
//!   │      (memfd) for the connection's whole life; a supervisor thread waits on the server
//!   ├─ strata __fs-server ID ── receives both (SCM_RIGHTS on its stdin), builds the union,
//!   │     answers INIT, serves, writes each node and handle it hands out to the journal
//!   ╳  (killed)
//!   └─ strata __fs-server ID ── the same, taking over: reopens the journal's handles under
//!         their numbers, revives nodes from it as requests name them, asks the kernel to
//!         resend what the dead one had read but not answered
//! ```
//!
//! The server exits 0 when the connection ends (unmounted); any other end starts another.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;

use strata_fs::mount::{self, Unmounter};
use strata_fs::options::MountOptions;
use strata_fs::wire::handoff;
use strata_image::store::Store;

use crate::containers::{Containers, Record};
use crate::{Error, Result};

/// How the server processes are started: the strata executable, its store, the container.
struct Launcher {
    exe: PathBuf,
    root: PathBuf,
    id: String,
    device: OwnedFd,
    journal: OwnedFd,
}

impl Launcher {
    /// Starts a server and waits until it serves (`take_over`: after one that died).
    fn start(&self, take_over: bool) -> Result<Child> {
        let os = |step| move |source| Error::Os { step, source };
        let (ours, theirs) = UnixStream::pair().map_err(os("creating the server's socket"))?;
        // Sent before the server starts: the socket holds the descriptors until it reads.
        handoff::send(&ours, &self.device, &self.journal, take_over)
            .map_err(os("handing the FUSE device to the server"))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("__fs-server")
            .arg(&self.id)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            // Out of the terminal's process group: ^C is for the container, not the server.
            .process_group(0);
        Ok(mount::start_server(&mut cmd)?)
    }
}

/// Mounts the container's union at `rootfs` (options `opts`, their lowers left for the
/// server to open) and starts its server; returns how to unmount it and the supervisor
/// thread, which ends once the mount is gone and its server has exited.
pub fn start(
    store: &Store,
    rec: &Record,
    rootfs: &Path,
    opts: &MountOptions,
    source: &str,
) -> Result<(Unmounter, JoinHandle<()>)> {
    let os = |step| move |source| Error::Os { step, source };
    let exe = std::env::current_exe().map_err(os("finding the strata executable"))?;
    let journal = nix::sys::memfd::memfd_create(
        c"strata-fs-journal",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )
    .map_err(|e| Error::Os {
        step: "creating the file system's journal",
        source: e.into(),
    })?;
    let device = mount::mount_device(opts, Some(source), rootfs)?;
    let mut unmounter = device.unmounter();
    let launcher = Launcher {
        exe,
        root: store.root().to_path_buf(),
        id: rec.id.clone(),
        device: device.fd,
        journal,
    };
    let first = match launcher.start(false) {
        Ok(c) => c,
        Err(e) => {
            let _ = unmounter.unmount();
            return Err(e);
        }
    };
    let thread = std::thread::spawn(move || supervise(launcher, first));
    Ok((unmounter, thread))
}

/// Waits on the server; starts another each time one dies while the mount is in use.
fn supervise(launcher: Launcher, mut server: Child) {
    loop {
        match server.wait() {
            // Exit status 0: the connection ended.
            Ok(status) if status.success() => return,
            Ok(_) => {}
            Err(_) => return,
        }
        match launcher.start(true) {
            Ok(next) => server = next,
            // The container's file requests now wait until the monitor unmounts.
            Err(_) => return,
        }
    }
}

/// `strata __fs-server ID`: the server [`start`] runs. Receives the device and journal on
/// stdin, builds the container's union as the monitor would, reports ready, serves.
pub fn serve_main(root: &Path, id: &str) -> Result<()> {
    let os = |step| move |source| Error::Os { step, source };
    // Modes of new files are the caller's, already masked by the kernel.
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    // Before any thread starts; the monitor's end signals reach the server only by unmount.
    let _ = mount::block_end_signals();
    let handoff = handoff::receive(std::io::stdin()).map_err(os("receiving the FUSE device"))?;
    let store = Store::new(root);
    let containers = Containers::new(&store);
    let rec = containers.record(id)?;
    let dir = containers.dir(id);
    let init = crate::network::init_layer(&dir)?;
    strata_image::store::lazy::serve_mounts();
    let (union, opts) = crate::rootfs::container_union(&store, &rec, &dir, Some(&init))?;
    mount::serve_handed(union, &opts, handoff, || mount::report_ready(true))
        .map_err(os("serving the container's root file system"))
}
