//! Inside the container, before execve: the mount namespace's contents (root, /proc,
//! /sys, /dev, volumes, masked paths, pivot_root), hostname and loopback, through the
//! [`Syscalls`] seam. The process's credentials and exec follow in `credentials.rs`.
//!
//! Paths inside the root are resolved with [`resolve_in`], which follows the image's
//! symlinks as if the root were `/`, so a hostile image cannot point a mount destination at
//! a host path before pivot_root.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};
use nix::sys::statvfs::{statvfs, FsFlags};
use nix::unistd::{chdir, pivot_root, sethostname, Gid, Uid};

use crate::spec::{ContainerSpec, Device, MountSpec, NetworkMode, ProcessSpec};
use crate::{idmap, sys, Error, Result};

/// runc's default masked paths: hidden behind /dev/null (files) or an empty read-only
/// tmpfs (directories).
pub(crate) const MASKED: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
/// runc's default read-only paths.
pub(crate) const READ_ONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];
/// Devices a container gets, bind-mounted from the host (a user namespace cannot mknod).
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// `path` inside `root`, following symlinks met on the way as if `root` were `/` (absolute
/// targets and `..` never leave it). The last component may not exist.
pub(crate) fn resolve_in(root: &Path, path: &str) -> PathBuf {
    let mut todo: VecDeque<PathBuf> = Path::new(path)
        .components()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    let mut rel = PathBuf::new();
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        match c.components().next() {
            None | Some(Component::RootDir) | Some(Component::CurDir) => {}
            Some(Component::ParentDir) => {
                rel.pop();
            }
            Some(Component::Prefix(_)) => {}
            Some(Component::Normal(name)) => {
                let here = root.join(&rel).join(name);
                match std::fs::read_link(&here) {
                    Ok(target) if links < 40 => {
                        links += 1;
                        if target.is_absolute() {
                            rel = PathBuf::new();
                        }
                        for (i, t) in target.components().enumerate() {
                            todo.insert(i, PathBuf::from(t.as_os_str()));
                        }
                    }
                    _ => rel.push(name),
                }
            }
        }
    }
    root.join(rel)
}

/// The system calls that shape the container's mount namespace: the seam that lets the
/// order of mounts be unit-tested without privilege ([`Recorder`] in the tests).
pub(crate) trait Syscalls {
    fn mount(
        &self,
        src: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()>;
    /// umount2(MNT_DETACH).
    fn umount_detach(&self, target: &Path) -> nix::Result<()>;
    /// pivot_root(".", "."): the old root stacks on the new one.
    fn pivot_root_here(&self) -> nix::Result<()>;
    fn chdir(&self, path: &Path) -> nix::Result<()>;
    fn sethostname(&self, name: &str) -> nix::Result<()>;
    fn loopback_up(&self) -> nix::Result<()>;
    /// `target` and every mount below it read-only (mount_setattr AT_RECURSIVE).
    fn readonly_recursive(&self, target: &Path) -> nix::Result<()>;
    /// mount(".", "/", MS_MOVE) then chroot("."): `--no-pivot`.
    fn move_root_here(&self) -> nix::Result<()>;
    fn mknod(&self, path: &Path, kind: SFlag, mode: u32, dev: u64) -> nix::Result<()>;
}

/// The kernel.
pub(crate) struct Kernel;

impl Syscalls for Kernel {
    fn mount(
        &self,
        src: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        mount(src, target, fstype, flags, data)
    }

    fn umount_detach(&self, target: &Path) -> nix::Result<()> {
        umount2(target, MntFlags::MNT_DETACH)
    }

    fn pivot_root_here(&self) -> nix::Result<()> {
        pivot_root(".", ".")
    }

    fn chdir(&self, path: &Path) -> nix::Result<()> {
        chdir(path)
    }

    fn sethostname(&self, name: &str) -> nix::Result<()> {
        sethostname(name)
    }

    fn loopback_up(&self) -> nix::Result<()> {
        sys::loopback_up()
    }

    fn readonly_recursive(&self, target: &Path) -> nix::Result<()> {
        sys::readonly_recursive(target)
    }

    fn move_root_here(&self) -> nix::Result<()> {
        mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)?;
        nix::unistd::chroot(".")
    }

    fn mknod(&self, path: &Path, kind: SFlag, mode: u32, dev: u64) -> nix::Result<()> {
        nix::sys::stat::mknod(path, kind, Mode::from_bits_truncate(mode), dev)
    }
}

fn mnt(
    sc: &dyn Syscalls,
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    sc.mount(src, target, fstype, flags, data)
        .map_err(Error::sys(format!("mounting {}", target.display())))
}

fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(Error::io(path))
}

/// An empty file to mount over (a device, a file volume).
fn touch(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        mkdir(parent)?;
    }
    if std::fs::symlink_metadata(path).is_ok() {
        return Ok(());
    }
    File::create(path).map(drop).map_err(Error::io(path))
}

/// The flags a bind remount must keep: a user namespace may not clear the ones locked on
/// the source mount (nosuid, nodev, noexec, atime flags).
fn locked_flags(path: &Path) -> MsFlags {
    let mut flags = MsFlags::empty();
    if let Ok(st) = statvfs(path) {
        let f = st.flags();
        for (s, m) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if f.contains(s) {
                flags |= m;
            }
        }
    }
    flags
}

/// `path` and the mounts below it read-only; on kernels without mount_setattr, `path`
/// alone.
fn read_only_tree(sc: &dyn Syscalls, path: &Path) -> Result<()> {
    match sc.readonly_recursive(path) {
        Err(Errno::ENOSYS) => remount_read_only(sc, path),
        r => r.map_err(Error::sys(format!(
            "making {} read-only recursively",
            path.display()
        ))),
    }
}

fn remount_read_only(sc: &dyn Syscalls, path: &Path) -> Result<()> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked_flags(path);
    sc.mount(None, path, None, flags, None)
        .map_err(Error::sys(format!(
            "remounting {} read-only",
            path.display()
        )))
}

/// Everything up to and including pivot_root and the read-only root, in pid 1 of the new
/// namespaces (proc must be mounted from inside the pid namespace).
///
/// `before_pivot` runs once the mounts are made, before the createContainer hooks (the
/// caller's createRuntime hooks run meanwhile).
pub(crate) fn container(
    sc: &dyn Syscalls,
    spec: &ContainerSpec,
    before_pivot: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    let root = spec.rootfs.as_path();
    // pivot_root needs the new root to be a mount point, whatever the caller gave.
    mnt(
        sc,
        Some(root),
        root,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    if let Some(name) = &spec.hostname {
        sc.sethostname(name)
            .map_err(Error::sys(format!("sethostname {name}")))?;
    }
    if spec.network == NetworkMode::Private {
        sc.loopback_up()
            .map_err(Error::sys("bringing up the loopback interface"))?;
    }
    mount_system(sc, root, spec.privileged)?;
    if !spec.privileged {
        for d in &spec.devices {
            make_device(sc, root, d)?;
        }
    }
    for m in &spec.mounts {
        mount_volume(sc, root, m)?;
    }
    for (key, value) in &spec.sysctl {
        write_sysctl(root, key, value)?;
    }
    if !spec.privileged {
        let masked = spec.masked_paths.clone();
        let masked = masked.unwrap_or_else(|| MASKED.map(String::from).to_vec());
        let readonly = spec.readonly_paths.clone();
        let readonly = readonly.unwrap_or_else(|| READ_ONLY.map(String::from).to_vec());
        mask_paths(sc, root, &masked, &readonly)?;
    }
    before_pivot()?;
    if !spec.create_container_hooks.is_empty() {
        crate::hooks::run_all(
            &spec.create_container_hooks,
            &crate::hooks::state_of_pid1(spec),
            "createContainer",
        )?;
    }
    make_cwd(root, &spec.process)?;
    match spec.no_pivot {
        true => enter_root_no_pivot(sc, root)?,
        false => enter_root(sc, root)?,
    }
    if spec.readonly_rootfs {
        remount_read_only(sc, Path::new("/"))?;
    }
    Ok(())
}

/// /proc, /sys, /dev and its standard contents inside `root`.
fn mount_system(sc: &dyn Syscalls, root: &Path, privileged: bool) -> Result<()> {
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let proc_dir = resolve_in(root, "/proc");
    mkdir(&proc_dir)?;
    mnt(
        sc,
        Some(Path::new("proc")),
        &proc_dir,
        Some("proc"),
        nosuid_nodev_noexec,
        None,
    )?;
    let sys_dir = resolve_in(root, "/sys");
    mkdir(&sys_dir)?;
    let ro = match privileged {
        true => MsFlags::empty(),
        false => MsFlags::MS_RDONLY,
    };
    let sysfs = sc.mount(
        Some(Path::new("sysfs")),
        &sys_dir,
        Some("sysfs"),
        nosuid_nodev_noexec | ro,
        None,
    );
    if sysfs.is_err() {
        // Only a user namespace that owns the network namespace may mount sysfs (rootless
        // with --network host): the caller's /sys, read-only.
        mnt(
            sc,
            Some(Path::new("/sys")),
            &sys_dir,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        if !privileged {
            read_only_tree(sc, &sys_dir)?;
        }
    }
    let dev = resolve_in(root, "/dev");
    mkdir(&dev)?;
    if privileged {
        // The host's devices, with this container's own pts, shm and mqueue on top.
        mnt(
            sc,
            Some(Path::new("/dev")),
            &dev,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
    } else {
        mnt(
            sc,
            Some(Path::new("tmpfs")),
            &dev,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
            Some("mode=755,size=65536k"),
        )?;
        for name in DEVICES {
            let target = dev.join(name);
            touch(&target)?;
            mnt(
                sc,
                Some(&Path::new("/dev").join(name)),
                &target,
                None,
                MsFlags::MS_BIND,
                None,
            )?;
        }
    }
    let pts = dev.join("pts");
    mkdir(&pts)?;
    // gid=5 (tty) only when that group exists in this user namespace.
    let pts_opts = match idmap::gid_mapped(5) {
        true => "newinstance,ptmxmode=0666,mode=0620,gid=5",
        false => "newinstance,ptmxmode=0666,mode=0620",
    };
    mnt(
        sc,
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(pts_opts),
    )?;
    let shm = dev.join("shm");
    mkdir(&shm)?;
    mnt(
        sc,
        Some(Path::new("shm")),
        &shm,
        Some("tmpfs"),
        nosuid_nodev_noexec,
        Some("mode=1777,size=65536k"),
    )?;
    let mqueue = dev.join("mqueue");
    mkdir(&mqueue)?;
    mnt(
        sc,
        Some(Path::new("mqueue")),
        &mqueue,
        Some("mqueue"),
        nosuid_nodev_noexec,
        None,
    )?;
    if privileged {
        // The host's /dev/ptmx belongs to the host's devpts.
        mnt(
            sc,
            Some(&pts.join("ptmx")),
            &dev.join("ptmx"),
            None,
            MsFlags::MS_BIND,
            None,
        )?;
    }
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        let p = dev.join(link);
        if std::fs::symlink_metadata(&p).is_ok() {
            continue;
        }
        std::os::unix::fs::symlink(target, &p).map_err(Error::io(p))?;
    }
    Ok(())
}

fn mount_volume(sc: &dyn Syscalls, root: &Path, m: &MountSpec) -> Result<()> {
    match m {
        MountSpec::Bind {
            source,
            destination,
            readonly,
        } => {
            let target = resolve_in(root, destination);
            match source.is_dir() {
                true => mkdir(&target)?,
                false => touch(&target)?,
            }
            sc.mount(
                Some(source.as_path()),
                &target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )
            .map_err(Error::sys(format!(
                "mounting volume {} on {destination}",
                source.display()
            )))?;
            if *readonly {
                read_only_tree(sc, &target)?;
            }
        }
        MountSpec::Tmpfs {
            destination,
            options,
        } => {
            let target = resolve_in(root, destination);
            mkdir(&target)?;
            let data = Some(options.as_str()).filter(|o| !o.is_empty());
            sc.mount(
                Some(Path::new("tmpfs")),
                &target,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                data,
            )
            .map_err(Error::sys(format!("mounting tmpfs on {destination}")))?;
        }
    }
    Ok(())
}

/// A bundle's device: a new node, or in a user namespace (mknod is refused there) the
/// host's node at the same path bind-mounted, as runc does.
fn make_device(sc: &dyn Syscalls, root: &Path, d: &Device) -> Result<()> {
    let target = resolve_in(root, &d.path);
    if let Some(parent) = target.parent() {
        mkdir(parent)?;
    }
    if idmap::in_user_namespace() {
        touch(&target)?;
        return mnt(
            sc,
            Some(Path::new(&d.path)),
            &target,
            None,
            MsFlags::MS_BIND,
            None,
        );
    }
    let kind = match d.kind {
        'b' => SFlag::S_IFBLK,
        'p' => SFlag::S_IFIFO,
        _ => SFlag::S_IFCHR,
    };
    let _ = std::fs::remove_file(&target);
    let dev = nix::sys::stat::makedev(d.major as u64, d.minor as u64);
    sc.mknod(&target, kind, d.mode.unwrap_or(0o666) & 0o7777, dev)
        .map_err(Error::sys(format!("mknod {}", d.path)))?;
    if d.uid.is_some() || d.gid.is_some() {
        nix::unistd::chown(&target, d.uid.map(Uid::from_raw), d.gid.map(Gid::from_raw))
            .map_err(Error::sys(format!("chown {}", d.path)))?;
    }
    Ok(())
}

/// `net.ipv4.ip_forward` = `1` → /proc/sys/net/ipv4/ip_forward in the container's /proc.
fn write_sysctl(root: &Path, key: &str, value: &str) -> Result<()> {
    if key.is_empty() || key.split(['.', '/']).any(|c| c.is_empty() || c == "..") {
        return Err(Error::Other(format!("invalid sysctl name {key:?}")));
    }
    let path = resolve_in(root, "/proc")
        .join("sys")
        .join(key.replace('.', "/"));
    std::fs::write(&path, value).map_err(|e| Error::Io {
        path: format!("sysctl {key}").into(),
        source: e,
    })
}

fn mask_paths(
    sc: &dyn Syscalls,
    root: &Path,
    masked: &[String],
    readonly: &[String],
) -> Result<()> {
    for path in masked {
        let p = resolve_in(root, path);
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        match meta.is_dir() {
            true => mnt(
                sc,
                Some(Path::new("tmpfs")),
                &p,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None,
            )?,
            false => mnt(
                sc,
                Some(Path::new("/dev/null")),
                &p,
                None,
                MsFlags::MS_BIND,
                None,
            )?,
        }
    }
    for path in readonly {
        let p = resolve_in(root, path);
        if std::fs::symlink_metadata(&p).is_err() {
            continue;
        }
        mnt(
            sc,
            Some(&p),
            &p,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        remount_read_only(sc, &p)?;
    }
    Ok(())
}

/// docker creates a missing working directory, owned by the process's user.
fn make_cwd(root: &Path, p: &ProcessSpec) -> Result<()> {
    if p.cwd.is_empty() || p.cwd == "/" {
        return Ok(());
    }
    let dir = resolve_in(root, &p.cwd);
    if dir.is_dir() {
        return Ok(());
    }
    mkdir(&dir)?;
    nix::unistd::chown(
        &dir,
        Some(Uid::from_raw(p.user.uid)),
        Some(Gid::from_raw(p.user.gid)),
    )
    .map_err(Error::sys(format!(
        "chown of the working directory {}",
        p.cwd
    )))
}

/// pivot_root into `root` and drop the old root: with both arguments `.`, the old root is
/// stacked on the new one and detached, so no directory for it is needed in the image.
/// `--no-pivot`: move the root onto / and chroot into it; the old root is covered, not
/// detached.
fn enter_root_no_pivot(sc: &dyn Syscalls, root: &Path) -> Result<()> {
    sc.chdir(root)
        .map_err(Error::sys(format!("chdir {}", root.display())))?;
    sc.move_root_here().map_err(Error::sys(format!(
        "moving {} onto / and chroot",
        root.display()
    )))?;
    sc.chdir(Path::new("/")).map_err(Error::sys("chdir /"))
}

fn enter_root(sc: &dyn Syscalls, root: &Path) -> Result<()> {
    sc.chdir(root)
        .map_err(Error::sys(format!("chdir {}", root.display())))?;
    sc.pivot_root_here()
        .map_err(Error::sys(format!("pivot_root into {}", root.display())))?;
    sc.umount_detach(Path::new("."))
        .map_err(Error::sys("detaching the old root"))?;
    sc.chdir(Path::new("/")).map_err(Error::sys("chdir /"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Records the calls instead of making them; refuses mounts of `fail_fstype` with
    /// EPERM (as the kernel refuses sysfs to a user namespace that does not own the
    /// network namespace).
    struct Recorder {
        root: PathBuf,
        calls: RefCell<Vec<String>>,
        fail_fstype: Option<&'static str>,
    }

    impl Recorder {
        fn new(root: &Path) -> Recorder {
            Recorder {
                root: root.to_path_buf(),
                calls: RefCell::new(Vec::new()),
                fail_fstype: None,
            }
        }

        fn show(&self, p: &Path) -> String {
            match p.strip_prefix(&self.root) {
                Ok(rel) => format!("R/{}", rel.display())
                    .trim_end_matches('/')
                    .to_string(),
                Err(_) => p.display().to_string(),
            }
        }

        fn push(&self, call: String) {
            self.calls.borrow_mut().push(call);
        }
    }

    impl Syscalls for Recorder {
        fn mount(
            &self,
            src: Option<&Path>,
            target: &Path,
            fstype: Option<&str>,
            flags: MsFlags,
            data: Option<&str>,
        ) -> nix::Result<()> {
            if fstype.is_some() && fstype == self.fail_fstype {
                return Err(Errno::EPERM);
            }
            let mut f = Vec::new();
            for (flag, name) in [
                (MsFlags::MS_BIND, "bind"),
                (MsFlags::MS_REC, "rec"),
                (MsFlags::MS_REMOUNT, "remount"),
                (MsFlags::MS_RDONLY, "ro"),
            ] {
                if flags.contains(flag) {
                    f.push(name);
                }
            }
            self.push(format!(
                "mount {} {} {} {}{}",
                src.map(|s| self.show(s)).unwrap_or_else(|| "-".into()),
                self.show(target),
                fstype.unwrap_or("-"),
                f.join(","),
                data.map(|d| format!(" {d}")).unwrap_or_default()
            ));
            Ok(())
        }

        fn umount_detach(&self, target: &Path) -> nix::Result<()> {
            self.push(format!("umount {}", target.display()));
            Ok(())
        }

        fn pivot_root_here(&self) -> nix::Result<()> {
            self.push("pivot_root . .".into());
            Ok(())
        }

        fn chdir(&self, path: &Path) -> nix::Result<()> {
            self.push(format!("chdir {}", self.show(path)));
            Ok(())
        }

        fn sethostname(&self, name: &str) -> nix::Result<()> {
            self.push(format!("sethostname {name}"));
            Ok(())
        }

        fn loopback_up(&self) -> nix::Result<()> {
            self.push("lo up".into());
            Ok(())
        }

        fn readonly_recursive(&self, target: &Path) -> nix::Result<()> {
            self.push(format!("readonly -R {}", self.show(target)));
            Ok(())
        }

        fn move_root_here(&self) -> nix::Result<()> {
            self.push("mount --move . / && chroot .".into());
            Ok(())
        }

        fn mknod(&self, path: &Path, kind: SFlag, mode: u32, dev: u64) -> nix::Result<()> {
            self.push(format!("mknod {} {kind:?} {mode:o} {dev}", self.show(path)));
            Ok(())
        }
    }

    fn fake_root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        // What the real /proc and /sys would show: some masked and read-only paths.
        for d in ["proc/acpi", "proc/sys", "proc/irq", "sys/firmware"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("proc/kcore"), "").unwrap();
        dir
    }

    #[test]
    fn container_mounts_in_order() {
        let dir = fake_root();
        let rec = Recorder::new(dir.path());
        let spec = ContainerSpec {
            rootfs: dir.path().to_path_buf(),
            hostname: Some("box".into()),
            readonly_rootfs: true,
            mounts: vec![
                MountSpec::Bind {
                    source: "/srv/data".into(),
                    destination: "/data".into(),
                    readonly: true,
                },
                MountSpec::Tmpfs {
                    destination: "/scratch".into(),
                    options: "size=1m".into(),
                },
            ],
            ..Default::default()
        };
        container(&rec, &spec, &mut || Ok(())).unwrap();
        let calls = rec.calls.into_inner();
        let pts = match idmap::gid_mapped(5) {
            true => "newinstance,ptmxmode=0666,mode=0620,gid=5",
            false => "newinstance,ptmxmode=0666,mode=0620",
        };
        let mut want = vec![
            "mount R R - bind,rec".to_string(),
            "sethostname box".into(),
            "lo up".into(),
            "mount proc R/proc proc ".into(),
            "mount sysfs R/sys sysfs ro".into(),
            "mount tmpfs R/dev tmpfs  mode=755,size=65536k".into(),
        ];
        for d in DEVICES {
            want.push(format!("mount /dev/{d} R/dev/{d} - bind"));
        }
        want.extend([
            format!("mount devpts R/dev/pts devpts  {pts}"),
            "mount shm R/dev/shm tmpfs  mode=1777,size=65536k".into(),
            "mount mqueue R/dev/mqueue mqueue ".into(),
            "mount /srv/data R/data - bind,rec".into(),
            "readonly -R R/data".into(),
            "mount tmpfs R/scratch tmpfs  size=1m".into(),
            // Masked: directories get an empty read-only tmpfs, files /dev/null.
            "mount tmpfs R/proc/acpi tmpfs ro".into(),
            "mount /dev/null R/proc/kcore - bind".into(),
            "mount tmpfs R/sys/firmware tmpfs ro".into(),
            "mount R/proc/irq R/proc/irq - bind,rec".into(),
            "mount - R/proc/irq - bind,remount,ro".into(),
            "mount R/proc/sys R/proc/sys - bind,rec".into(),
            "mount - R/proc/sys - bind,remount,ro".into(),
            "chdir R".into(),
            "pivot_root . .".into(),
            "umount .".into(),
            "chdir /".into(),
            "mount - / - bind,remount,ro".into(),
        ]);
        assert_eq!(calls, want);
        // Mount points were made inside the root.
        assert!(dir.path().join("scratch").is_dir());
        assert!(dir.path().join("dev/null").is_file());
    }

    #[test]
    fn privileged_and_rootless_variants() {
        let dir = fake_root();
        let mut rec = Recorder::new(dir.path());
        rec.fail_fstype = Some("sysfs");
        let spec = ContainerSpec {
            rootfs: dir.path().to_path_buf(),
            network: NetworkMode::Host,
            ..Default::default()
        };
        container(&rec, &spec, &mut || Ok(())).unwrap();
        let calls = rec.calls.into_inner();
        // No loopback for the host network; sysfs refused: /sys bound read-only instead.
        assert!(!calls.iter().any(|c| c == "lo up"));
        let i = calls
            .iter()
            .position(|c| c == "mount /sys R/sys - bind,rec")
            .unwrap();
        assert_eq!(calls[i + 1], "readonly -R R/sys");
        assert!(calls
            .iter()
            .any(|c| c.starts_with("mount /dev/null R/proc/kcore")));

        let dir = fake_root();
        let rec = Recorder::new(dir.path());
        let spec = ContainerSpec {
            rootfs: dir.path().to_path_buf(),
            privileged: true,
            ..Default::default()
        };
        container(&rec, &spec, &mut || Ok(())).unwrap();
        let calls = rec.calls.into_inner();
        // Host devices, sysfs read-write, nothing masked or read-only.
        assert!(calls.contains(&"mount /dev R/dev - bind,rec".to_string()));
        assert!(calls.contains(&"mount sysfs R/sys sysfs ".to_string()));
        assert!(calls.contains(&"mount R/dev/pts/ptmx R/dev/ptmx - bind".to_string()));
        assert!(!calls
            .iter()
            .any(|c| c.contains("/proc/kcore") || c.contains(",ro")));
    }

    #[test]
    fn resolve_in_stays_inside_the_root() {
        let root = std::env::temp_dir().join(format!("strata-resolve-{}", std::process::id()));
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("real/up")).unwrap();
        std::os::unix::fs::symlink("real/sub", root.join("rel")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert_eq!(resolve_in(&root, "/abs/passwd"), root.join("etc/passwd"));
        assert_eq!(resolve_in(&root, "/real/up/etc"), root.join("etc"));
        assert_eq!(resolve_in(&root, "/rel/x"), root.join("real/sub/x"));
        assert_eq!(resolve_in(&root, "../../x"), root.join("x"));
        assert!(resolve_in(&root, "/loop/x").starts_with(&root));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
