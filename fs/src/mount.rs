//! Putting a mount together from its options: open the layers, build the union, mount it
//! with fuser. Shared by the `strata-fs` binary and, later, the container monitor.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::fuse::StrataFs;
use crate::layer::{DirLayer, Layer};
use crate::options::MountOptions;
use crate::union::{Union, UnionConfig};
use crate::upper::Upper;

/// Why a mount could not be set up; each names the path or step that failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("lower directory {path}: {source}")]
    Lower {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("upper directory {path}: {source}")]
    Upper {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("upperdir {upper} and workdir {work} must be on the same filesystem")]
    WorkOnOtherFs { upper: PathBuf, work: PathBuf },
    #[error("mount point {path}: {source}")]
    Mountpoint {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Whether this process is root in the initial user namespace: it may then use `trusted.`
/// xattrs, mknod whiteouts and FUSE passthrough.
pub fn privileged() -> bool {
    if !rustix::process::geteuid().is_root() {
        return false;
    }
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"],
        Err(_) => false,
    }
}

/// The soft limit on open files after raising it to the hard limit (never above it: the
/// caller's hard limit is the bound, as DESIGN.md asks).
pub fn raise_nofile() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if let Some(max) = lim.maximum {
        lim.current = Some(max);
        let _ = setrlimit(Resource::Nofile, lim);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(1024)
}

fn same_fs(a: &Path, b: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(a)?.dev() == std::fs::metadata(b)?.dev())
}

/// Opens the layers and builds the union the options describe.
pub fn build_union(opts: &MountOptions) -> Result<Union, MountError> {
    let privileged = privileged();
    let nofile = raise_nofile() as usize;
    // Half the descriptors for caches: the upper's directories, then an equal share per lower.
    let budget = (nofile / 2).max(64);
    let per_lower = (budget / 2 / opts.lowerdirs.len().max(1)).max(16);
    let mut lowers: Vec<Arc<dyn Layer>> = Vec::new();
    for path in &opts.lowerdirs {
        let layer = DirLayer::open(path, per_lower).map_err(|source| MountError::Lower {
            path: path.clone(),
            source,
        })?;
        lowers.push(Arc::new(layer));
    }
    let upper = match (&opts.upperdir, &opts.workdir) {
        (Some(u), Some(w)) => {
            let same = same_fs(u, w).map_err(|source| MountError::Upper {
                path: u.clone(),
                source,
            })?;
            if !same {
                return Err(MountError::WorkOnOtherFs {
                    upper: u.clone(),
                    work: w.clone(),
                });
            }
            Some(
                Upper::open(u, w, privileged, opts.fsync).map_err(|source| MountError::Upper {
                    path: u.clone(),
                    source,
                })?,
            )
        }
        _ => None,
    };
    Ok(Union::new(UnionConfig {
        lowers,
        upper,
        ids: opts.ids.clone(),
        read_override: !privileged,
        fd_cache: budget / 2,
    }))
}

/// The fuser session configuration the options describe.
pub fn fuser_config(opts: &MountOptions, source: Option<&str>) -> fuser::Config {
    use fuser::MountOption as M;
    let mut config = fuser::Config::default();
    let root = rustix::process::geteuid().is_root();
    let mut mo = vec![
        M::FSName(
            opts.fsname
                .clone()
                .or(source.map(str::to_string))
                .unwrap_or_else(|| "strata-fs".into()),
        ),
        M::Subtype("strata-fs".into()),
        M::DefaultPermissions,
    ];
    if opts.read_only {
        mo.push(M::RO);
    }
    // A container rootfs needs device nodes and setuid binaries: on by default as root.
    mo.push(if opts.dev.unwrap_or(root) {
        M::Dev
    } else {
        M::NoDev
    });
    mo.push(if opts.suid.unwrap_or(root) {
        M::Suid
    } else {
        M::NoSuid
    });
    if opts.exec == Some(false) {
        mo.push(M::NoExec);
    }
    if opts.noatime {
        mo.push(M::NoAtime);
    }
    config.mount_options = mo;
    config.acl = if opts.allow_other {
        fuser::SessionACL::All
    } else if opts.allow_root {
        fuser::SessionACL::RootAndOwner
    } else {
        fuser::SessionACL::Owner
    };
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    config.n_threads = Some(opts.threads.unwrap_or(cpus.clamp(2, 4)));
    config.clone_fd = true;
    config
}

/// A mounted union: the session that serves it, and how to end it.
pub struct Mounted {
    pub session: fuser::Session<StrataFs>,
    unmount: Unmount,
}

enum Unmount {
    /// fuser mounted it (through fusermount3): fuser unmounts.
    Fuser(fuser::SessionUnmounter),
    /// We mounted it with mount(2): unmounting is ours.
    Direct(PathBuf),
}

/// Ends a mount from another thread (the signal thread).
pub struct Unmounter(Unmount);

impl Unmounter {
    pub fn unmount(&mut self) -> std::io::Result<()> {
        match &mut self.0 {
            Unmount::Fuser(u) => u.unmount(),
            // Lazy: a busy mount still goes away; the session then reads ENODEV and ends.
            Unmount::Direct(path) => {
                rustix::mount::unmount(path.as_path(), rustix::mount::UnmountFlags::DETACH)
                    .map_err(Into::into)
            }
        }
    }
}

impl Mounted {
    /// Takes the unmount handle (once; later calls get a no-op).
    pub fn unmounter(&mut self) -> Unmounter {
        match &mut self.unmount {
            Unmount::Fuser(_) => Unmounter(Unmount::Fuser(self.session.unmount_callable())),
            Unmount::Direct(path) => Unmounter(Unmount::Direct(path.clone())),
        }
    }
}

/// Mounts `union` at `mountpoint`; the returned session serves it when run.
///
/// mount(2) first, with the type `fuse.strata-fs` (fuser's own mount says only `fuse`), so
/// mountinfo, `findmnt -t fuse.strata-fs` and umount(8) see it as fuse-overlayfs's is seen;
/// an unprivileged caller outside a user namespace gets EPERM there and goes through
/// fuser's fusermount3 path instead.
pub fn mount(
    union: Union,
    opts: &MountOptions,
    source: Option<&str>,
    mountpoint: &Path,
) -> Result<Mounted, MountError> {
    let fs = StrataFs::new(
        Arc::new(union),
        opts.timeout,
        opts.passthrough && privileged(),
    );
    let config = fuser_config(opts, source);
    let err = |source| MountError::Mountpoint {
        path: mountpoint.to_path_buf(),
        source,
    };
    match mount_directly(opts, source, mountpoint).map_err(err)? {
        Some(fd) => {
            let session = fuser::Session::from_fd(fs, fd, config.acl, config).map_err(|e| {
                let _ = rustix::mount::unmount(mountpoint, rustix::mount::UnmountFlags::DETACH);
                err(e)
            })?;
            Ok(Mounted {
                session,
                unmount: Unmount::Direct(mountpoint.to_path_buf()),
            })
        }
        None => {
            let mut session = fuser::Session::new(fs, mountpoint, &config).map_err(err)?;
            let unmounter = session.unmount_callable();
            Ok(Mounted {
                session,
                unmount: Unmount::Fuser(unmounter),
            })
        }
    }
}

/// mount(2) of `/dev/fuse` at `mountpoint`; `None` when the kernel says EPERM.
fn mount_directly(
    opts: &MountOptions,
    source: Option<&str>,
    mountpoint: &Path,
) -> std::io::Result<Option<std::os::fd::OwnedFd>> {
    use rustix::fs::{Mode, OFlags};
    use rustix::mount::MountFlags;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;

    let root_mode = std::fs::metadata(mountpoint)?.mode() & libc::S_IFMT;
    let fd = rustix::fs::open("/dev/fuse", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
    let root = rustix::process::geteuid().is_root();
    let mut flags = MountFlags::empty();
    if !opts.dev.unwrap_or(root) {
        flags |= MountFlags::NODEV;
    }
    if !opts.suid.unwrap_or(root) {
        flags |= MountFlags::NOSUID;
    }
    if opts.read_only {
        flags |= MountFlags::RDONLY;
    }
    if opts.exec == Some(false) {
        flags |= MountFlags::NOEXEC;
    }
    if opts.noatime {
        flags |= MountFlags::NOATIME;
    }
    let mut data = format!(
        "fd={},rootmode={root_mode:o},user_id={},group_id={},default_permissions",
        fd.as_raw_fd(),
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    if opts.allow_other || opts.allow_root {
        data.push_str(",allow_other");
    }
    let fsname = opts
        .fsname
        .clone()
        .or(source.map(str::to_string))
        .unwrap_or_else(|| "strata-fs".into());
    let data = std::ffi::CString::new(data).map_err(std::io::Error::other)?;
    match rustix::mount::mount(
        fsname.as_str(),
        mountpoint,
        "fuse.strata-fs",
        flags,
        Some(data.as_c_str()),
    ) {
        Ok(()) => Ok(Some(fd)),
        Err(rustix::io::Errno::PERM) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
