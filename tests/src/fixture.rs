//! `LayerBuilder`: one way to describe a layer's content, written out as a directory in
//! either whiteout format. End-to-end tests, the differential test and bench/ share it.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

/// How deletions and opaque directories are recorded in a layer directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhiteoutFormat {
    /// OCI image-spec: `.wh.NAME` files and a `.wh..wh..opq` marker.
    Oci,
    /// Kernel overlayfs: a 0/0 character device and `trusted.overlay.opaque=y` (needs root,
    /// or a user namespace for the device with `user.overlay.opaque`).
    Overlay { xattr_prefix: &'static str },
}

impl WhiteoutFormat {
    pub const KERNEL: WhiteoutFormat = WhiteoutFormat::Overlay {
        xattr_prefix: "trusted.overlay.",
    };
    pub const KERNEL_USER: WhiteoutFormat = WhiteoutFormat::Overlay {
        xattr_prefix: "user.overlay.",
    };
}

#[derive(Clone, Debug)]
enum Kind {
    File(Vec<u8>),
    Sparse(u64),
    Dir,
    Symlink(PathBuf),
    Hardlink(PathBuf),
    Node(SFlag, u64),
    Whiteout,
    Opaque,
}

#[derive(Clone, Debug)]
struct Entry {
    path: PathBuf,
    kind: Kind,
    mode: Option<u32>,
    owner: Option<(u32, u32)>,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// The content of one layer, in the order it is written (parents are created on demand).
#[derive(Clone, Debug, Default)]
pub struct LayerBuilder {
    entries: Vec<Entry>,
}

impl LayerBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    fn push(mut self, path: impl AsRef<Path>, kind: Kind) -> Self {
        self.entries.push(Entry {
            path: path.as_ref().to_path_buf(),
            kind,
            mode: None,
            owner: None,
            xattrs: Vec::new(),
        });
        self
    }

    fn last(&mut self) -> &mut Entry {
        self.entries.last_mut().expect("modifier before any entry")
    }

    pub fn file(self, path: impl AsRef<Path>, content: impl AsRef<[u8]>) -> Self {
        self.push(path, Kind::File(content.as_ref().to_vec()))
    }

    /// A file of `len` bytes with no data blocks.
    pub fn sparse(self, path: impl AsRef<Path>, len: u64) -> Self {
        self.push(path, Kind::Sparse(len))
    }

    pub fn dir(self, path: impl AsRef<Path>) -> Self {
        self.push(path, Kind::Dir)
    }

    pub fn symlink(self, path: impl AsRef<Path>, target: impl AsRef<Path>) -> Self {
        self.push(path, Kind::Symlink(target.as_ref().to_path_buf()))
    }

    /// A hard link at `path` to the earlier entry `target` of this layer.
    pub fn hardlink(self, path: impl AsRef<Path>, target: impl AsRef<Path>) -> Self {
        self.push(path, Kind::Hardlink(target.as_ref().to_path_buf()))
    }

    pub fn fifo(self, path: impl AsRef<Path>) -> Self {
        self.push(path, Kind::Node(SFlag::S_IFIFO, 0))
    }

    pub fn mknod(self, path: impl AsRef<Path>, kind: SFlag, major: u64, minor: u64) -> Self {
        self.push(path, Kind::Node(kind, makedev(major, minor)))
    }

    /// Deletes `path` of the layers below.
    pub fn whiteout(self, path: impl AsRef<Path>) -> Self {
        self.push(path, Kind::Whiteout)
    }

    /// Hides everything the layers below have in directory `path` (created if needed).
    pub fn opaque(self, path: impl AsRef<Path>) -> Self {
        self.push(path, Kind::Opaque)
    }

    /// Sets the permission bits of the last entry.
    pub fn mode(mut self, mode: u32) -> Self {
        self.last().mode = Some(mode);
        self
    }

    /// Sets the owner of the last entry (applied only when the writer is root and, in a user
    /// namespace, the ids are mapped).
    pub fn owner(mut self, uid: u32, gid: u32) -> Self {
        self.last().owner = Some((uid, gid));
        self
    }

    pub fn xattr(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.last()
            .xattrs
            .push((name.to_string(), value.as_ref().to_vec()));
        self
    }

    /// Writes the layer into `root` (created if missing) with deletions in `format`.
    pub fn write_dir(&self, root: &Path, format: WhiteoutFormat) -> Result<()> {
        fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        let can_chown = nix::unistd::geteuid().is_root();
        for entry in &self.entries {
            let path = root.join(&entry.path);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            write_entry(root, &path, entry, format)
                .with_context(|| format!("writing {}", path.display()))?;
            if let Some(mode) = entry.mode {
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
            }
            for (name, value) in &entry.xattrs {
                xattr_set(&path, name, value)?;
            }
            if let (Some((uid, gid)), true) = (entry.owner, can_chown) {
                // In a user namespace an unmapped id is EINVAL: the entry keeps the
                // writer's ids there, and tests read owners back from the layer.
                match std::os::unix::fs::lchown(&path, Some(uid), Some(gid)) {
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                    other => other?,
                }
            }
        }
        Ok(())
    }
}

impl LayerBuilder {
    /// Writes the layer as an OCI layer tar (uncompressed): `.wh.` whiteouts, `.wh..wh..opq`
    /// markers, xattrs as PAX `SCHILY.xattr.` records, owners as given (root otherwise),
    /// every entry with mtime `mtime`. Parent directories are not added implicitly.
    pub fn write_tar(&self, out: impl std::io::Write, mtime: u64) -> Result<()> {
        let mut tar = tar::Builder::new(out);
        for entry in &self.entries {
            append_tar_entry(&mut tar, entry, mtime)
                .with_context(|| format!("adding {} to the tar", entry.path.display()))?;
        }
        tar.finish()?;
        Ok(())
    }

    /// The tar as bytes.
    pub fn tar_bytes(&self, mtime: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.write_tar(&mut out, mtime)?;
        Ok(out)
    }
}

fn append_tar_entry<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    entry: &Entry,
    mtime: u64,
) -> Result<()> {
    use tar::{EntryType, Header};
    let mut header = Header::new_gnu();
    let (uid, gid) = entry.owner.unwrap_or((0, 0));
    header.set_uid(uid.into());
    header.set_gid(gid.into());
    header.set_mtime(mtime);
    header.set_size(0);
    let mut path = entry.path.clone();
    let mut data: Vec<u8> = Vec::new();
    let default_mode = match &entry.kind {
        Kind::Dir | Kind::Opaque => 0o755,
        Kind::Symlink(_) => 0o777,
        _ => 0o644,
    };
    header.set_mode(entry.mode.unwrap_or(default_mode));
    match &entry.kind {
        Kind::File(content) => {
            header.set_entry_type(EntryType::Regular);
            data = content.clone();
        }
        Kind::Sparse(len) => {
            header.set_entry_type(EntryType::Regular);
            data = vec![0; *len as usize];
        }
        Kind::Dir => header.set_entry_type(EntryType::Directory),
        Kind::Symlink(target) => {
            header.set_entry_type(EntryType::Symlink);
            tar.append_link(&mut header, &path, target)?;
            return Ok(());
        }
        Kind::Hardlink(target) => {
            header.set_entry_type(EntryType::Link);
            tar.append_link(&mut header, &path, target)?;
            return Ok(());
        }
        Kind::Node(kind, dev) => {
            header.set_entry_type(if *kind == SFlag::S_IFIFO {
                EntryType::Fifo
            } else if *kind == SFlag::S_IFBLK {
                EntryType::Block
            } else {
                EntryType::Char
            });
            header.set_device_major(nix::sys::stat::major(*dev) as u32)?;
            header.set_device_minor(nix::sys::stat::minor(*dev) as u32)?;
        }
        Kind::Whiteout => {
            let name = path.file_name().context("whiteout of the root")?;
            let mut marker = b".wh.".to_vec();
            marker.extend_from_slice(name.as_bytes());
            path = path.with_file_name(OsStr::from_bytes(&marker));
            header.set_entry_type(EntryType::Regular);
        }
        Kind::Opaque => {
            path = path.join(".wh..wh..opq");
            header.set_entry_type(EntryType::Regular);
        }
    }
    if !entry.xattrs.is_empty() {
        let records: Vec<(String, &[u8])> = entry
            .xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
            .collect();
        tar.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))?;
    }
    header.set_size(data.len() as u64);
    tar.append_data(&mut header, &path, data.as_slice())?;
    Ok(())
}

fn write_entry(root: &Path, path: &Path, entry: &Entry, format: WhiteoutFormat) -> Result<()> {
    match &entry.kind {
        Kind::File(content) => fs::write(path, content)?,
        Kind::Sparse(len) => fs::File::create(path)?.set_len(*len)?,
        Kind::Dir => fs::create_dir_all(path)?,
        Kind::Symlink(target) => symlink(target, path)?,
        Kind::Hardlink(target) => fs::hard_link(root.join(target), path)?,
        Kind::Node(kind, dev) => mknod(path, *kind, Mode::from_bits_truncate(0o644), *dev)?,
        Kind::Whiteout => match format {
            WhiteoutFormat::Oci => {
                let name = path.file_name().context("whiteout of the root")?;
                let mut marker = b".wh.".to_vec();
                marker.extend_from_slice(name.as_bytes());
                fs::write(path.with_file_name(OsStr::from_bytes(&marker)), b"")?;
            }
            WhiteoutFormat::Overlay { .. } => {
                mknod(path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))?;
            }
        },
        Kind::Opaque => {
            fs::create_dir_all(path)?;
            match format {
                WhiteoutFormat::Oci => fs::write(path.join(".wh..wh..opq"), b"")?,
                WhiteoutFormat::Overlay { xattr_prefix } => {
                    xattr_set(path, &format!("{xattr_prefix}opaque"), b"y")?
                }
            }
        }
    }
    Ok(())
}

/// Sets an xattr on `path` itself (symlinks included).
pub fn xattr_set(path: &Path, name: &str, value: &[u8]) -> Result<()> {
    xattr::set(path, name, value)
        .with_context(|| format!("setting xattr {name} on {}", path.display()))
}

/// Reads an xattr of `path` itself; `None` when it is absent.
pub fn xattr_get(path: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    xattr::get(path, name).with_context(|| format!("reading xattr {name} of {}", path.display()))
}

/// Names of the xattrs of `path` itself, sorted.
pub fn xattr_list(path: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = xattr::list(path)
        .with_context(|| format!("listing xattrs of {}", path.display()))?
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}
