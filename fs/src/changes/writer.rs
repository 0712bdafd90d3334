//! The layer tar of a change set (OCI image-spec "Representing Changes"): entries in path
//! order, so the same upper gives the same bytes; a deletion is `DIR/.wh.NAME`, an opaque
//! directory is followed by `DIR/.wh..wh..opq`; a hard link's later names are link entries to
//! its first; xattrs are PAX `SCHILY.xattr.NAME` records, the upper's bookkeeping left out;
//! owners and modes are the merged view's (`user.containers.override_stat` applied when read,
//! then the mount's id mapping). A file's data is what the merged view reads: a metadata-only
//! copy-up's from its lower file.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rustix::fs::OFlags;
use tar::{Builder, EntryType, Header};

use super::{Change, ChangeSet, ChangesError, LowerEntry, Result, Source};
use crate::attr::{Attr, FileKind};
use crate::errno::Errno;
use crate::host;
use crate::ids::IdMapper;
use crate::layer::{LayerPath, OPAQUE_MARKER};
use crate::upper;

/// How the upper's owners read.
#[derive(Clone, Debug, Default)]
pub struct TarOptions {
    /// Apply `user.containers.override_stat` (a rootless upper) and leave it out.
    pub read_override: bool,
    /// Host ids to the merged view's, as the mount maps them.
    pub ids: IdMapper,
}

/// One entry's metadata, from wherever its source keeps it.
struct Meta {
    attr: Attr,
    xattrs: Vec<(OsString, Vec<u8>)>,
    link: Option<Vec<u8>>,
}

/// Reads exactly `len` bytes of a file from `offset`: a short file is an error, never a
/// corrupt archive.
pub(super) struct Exact {
    pub(super) file: File,
    pub(super) offset: u64,
    pub(super) left: u64,
}

impl Read for Exact {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.left) as usize;
        let n = self.file.read_at(&mut buf[..want], self.offset)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file is shorter than its size",
            ));
        }
        self.offset += n as u64;
        self.left -= n as u64;
        Ok(n)
    }
}

fn path_of(p: &LayerPath) -> &Path {
    Path::new(OsStr::from_bytes(p.as_bytes()))
}

impl ChangeSet {
    fn meta(&self, change: &Change, source: &Source, opts: &TarOptions) -> Result<Meta> {
        let upper_err = |path: &LayerPath| {
            let path = super::lossy(path);
            move |source| ChangesError::Upper { path, source }
        };
        let (mut attr, keys, link, over) = match source {
            Source::Upper { .. } | Source::Index(_) => {
                let (dir, name) = match source {
                    Source::Index(name) => (
                        self.index
                            .as_ref()
                            .ok_or(Errno::EIO)
                            .map_err(upper_err(&change.path))?,
                        name.as_os_str(),
                    ),
                    _ => (&self.upper, OsStr::from_bytes(change.path.as_bytes())),
                };
                let dir = dir.as_fd();
                let err = upper_err(&change.path);
                let read = || -> std::result::Result<_, Errno> {
                    let attr = host::stat_at(dir, name)?.ok_or(Errno::ENOENT)?;
                    let link = match attr.kind {
                        FileKind::Symlink => Some(host::read_link(dir, name)?),
                        _ => None,
                    };
                    let mut xattrs = Vec::new();
                    for key in host::list_xattrs(dir, Some(name))? {
                        if let Some(v) = host::get_xattr(dir, Some(name), &key)? {
                            xattrs.push((key, v));
                        }
                    }
                    Ok((attr, xattrs, link))
                };
                let (attr, xattrs, link) = read().map_err(err)?;
                let over = xattrs
                    .iter()
                    .find(|(k, _)| k.as_bytes() == upper::OVERRIDE_STAT.as_bytes())
                    .and_then(|(_, v)| upper::parse_override(v));
                (attr, xattrs, link, over)
            }
            Source::Lower(LowerEntry { layer, path }) => {
                let l = &self.lowers[*layer];
                let err = || {
                    let path = super::lossy(path);
                    let layer = *layer;
                    move |source| ChangesError::Lower {
                        layer,
                        path,
                        source,
                    }
                };
                let read = || -> std::result::Result<_, Errno> {
                    let attr = l.stat(path)?;
                    let link = match attr.kind {
                        FileKind::Symlink => Some(l.read_link(path)?),
                        _ => None,
                    };
                    let mut xattrs = Vec::new();
                    for key in l.list_xattrs(path)? {
                        if let Some(v) = l.get_xattr(path, &key)? {
                            xattrs.push((key, v));
                        }
                    }
                    Ok((attr, xattrs, link))
                };
                let (attr, xattrs, link) = read().map_err(err())?;
                let over = xattrs
                    .iter()
                    .find(|(k, _)| k.as_bytes() == upper::OVERRIDE_STAT.as_bytes())
                    .and_then(|(_, v)| upper::parse_override(v));
                (attr, xattrs, link, over)
            }
        };
        if opts.read_override {
            if let Some((uid, gid, perm)) = over {
                attr.uid = uid;
                attr.gid = gid;
                attr.perm = perm;
            }
        }
        attr.uid = opts.ids.uid_to_view(attr.uid);
        attr.gid = opts.ids.gid_to_view(attr.gid);
        let mut xattrs: Vec<(OsString, Vec<u8>)> = keys
            .into_iter()
            .filter(|(k, _)| !upper::is_bookkeeping_xattr(k, opts.read_override))
            .collect();
        xattrs.sort();
        Ok(Meta { attr, xattrs, link })
    }

    /// The contents of a regular file: the upper's, the index's, or a lower's.
    fn data(&self, change: &Change, source: &Source, size: u64) -> Result<Exact> {
        let upper_err = |source| ChangesError::Upper {
            path: super::lossy(&change.path),
            source,
        };
        let lower = match source {
            Source::Upper { data: None } => {
                let fd = host::open_at(
                    self.upper.as_fd(),
                    OsStr::from_bytes(change.path.as_bytes()),
                    OFlags::RDONLY,
                    0,
                )
                .map_err(upper_err)?;
                return Ok(Exact {
                    file: File::from(fd),
                    offset: 0,
                    left: size,
                });
            }
            Source::Index(name) => {
                let index = self.index.as_ref().ok_or(Errno::EIO).map_err(upper_err)?;
                let fd =
                    host::open_at(index.as_fd(), name, OFlags::RDONLY, 0).map_err(upper_err)?;
                return Ok(Exact {
                    file: File::from(fd),
                    offset: 0,
                    left: size,
                });
            }
            Source::Upper { data: Some(lower) } | Source::Lower(lower) => lower,
        };
        let f = self.lowers[lower.layer]
            .open(&lower.path)
            .map_err(|source| ChangesError::Lower {
                layer: lower.layer,
                path: super::lossy(&lower.path),
                source,
            })?;
        let (offset, size) = match f.range {
            Some(r) => (r.offset, size.min(r.len)),
            None => (0, size),
        };
        Ok(Exact {
            file: f.file,
            offset,
            left: size,
        })
    }

    /// Writes the layer tar of the changes to `out`, and returns it.
    pub fn write_tar<W: Write>(&self, opts: &TarOptions, out: W) -> Result<W> {
        let mut b = Builder::new(out);
        // Each hard-link group: its first name (the target of the others' link entries)
        // and the source to read it from — an upper or index copy over a lower one.
        let mut groups: HashMap<u64, (usize, usize)> = HashMap::new();
        for (i, c) in self.changes.iter().enumerate() {
            let (Some(ino), Some(src)) = (c.ino, &c.source) else {
                continue;
            };
            let g = groups.entry(ino).or_insert((i, i));
            if rank(src) < rank(self.changes[g.1].source.as_ref().expect("has a source")) {
                g.1 = i;
            }
        }
        for (i, c) in self.changes.iter().enumerate() {
            let werr = |source| ChangesError::Write {
                path: super::lossy(&c.path),
                source,
            };
            let Some(source) = &c.source else {
                let (parent, name) = c.path.split_last().expect("the root is never deleted");
                // The rootless upper's encoding is the OCI one.
                let wh = upper::whiteout_file_name(name).ok_or_else(|| ChangesError::Write {
                    path: super::lossy(&c.path),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "the name is too long for a `.wh.` whiteout",
                    ),
                })?;
                marker(&mut b, &parent.join(&wh)).map_err(werr)?;
                continue;
            };
            let (first, best) = match c.ino.and_then(|ino| groups.get(&ino)) {
                Some(&g) => g,
                None => (i, i),
            };
            if first != i {
                let mut h = header(EntryType::Link);
                b.append_link(&mut h, path_of(&c.path), path_of(&self.changes[first].path))
                    .map_err(werr)?;
                continue;
            }
            // The name whose source holds the group's file (this one, or a copied-up one).
            let owner = &self.changes[best];
            let source = owner.source.as_ref().unwrap_or(source);
            let meta = self.meta(owner, source, opts)?;
            if !meta.xattrs.is_empty() {
                pax(&mut b, &super::lossy(&c.path), &meta.xattrs)?;
            }
            let a = &meta.attr;
            let mut h = header(EntryType::Regular);
            h.set_mode(a.perm);
            h.set_uid(a.uid.into());
            h.set_gid(a.gid.into());
            h.set_mtime(a.mtime.sec.max(0) as u64);
            let path = path_of(&c.path);
            match a.kind {
                FileKind::Directory => {
                    h.set_entry_type(EntryType::Directory);
                    b.append_data(&mut h, path, std::io::empty())
                        .map_err(werr)?;
                    if c.opaque {
                        marker(&mut b, &c.path.join(OsStr::from_bytes(OPAQUE_MARKER)))
                            .map_err(werr)?;
                    }
                }
                FileKind::Regular => {
                    h.set_entry_type(EntryType::Regular);
                    h.set_size(a.size);
                    let data = self.data(owner, source, a.size)?;
                    b.append_data(&mut h, path, data).map_err(werr)?;
                }
                FileKind::Symlink => {
                    h.set_entry_type(EntryType::Symlink);
                    let target = meta.link.as_deref().unwrap_or_default();
                    b.append_link(&mut h, path, Path::new(OsStr::from_bytes(target)))
                        .map_err(werr)?;
                }
                FileKind::CharDevice | FileKind::BlockDevice | FileKind::Fifo => {
                    h.set_entry_type(match a.kind {
                        FileKind::CharDevice => EntryType::Char,
                        FileKind::BlockDevice => EntryType::Block,
                        _ => EntryType::Fifo,
                    });
                    if a.kind != FileKind::Fifo {
                        h.set_device_major(rustix::fs::major(a.rdev))
                            .map_err(werr)?;
                        h.set_device_minor(rustix::fs::minor(a.rdev))
                            .map_err(werr)?;
                    }
                    b.append_data(&mut h, path, std::io::empty())
                        .map_err(werr)?;
                }
                // A socket is no file a layer can carry (docker and umoci skip them too).
                FileKind::Socket => {}
            }
        }
        b.into_inner().map_err(|source| ChangesError::Write {
            path: String::new(),
            source,
        })
    }
}

/// Which source of a hard-link group to read: the upper's copy, then the index's, then a
/// lower's (all the same file in the merged view; a lower one may be older).
fn rank(s: &Source) -> u8 {
    match s {
        Source::Upper { data: None } => 0,
        Source::Upper { .. } => 1,
        Source::Index(_) => 2,
        Source::Lower(_) => 3,
    }
}

/// A header with every numeric field set (readers refuse empty ones): mode 0644, owner
/// root, time 0, no size, device 0/0.
pub(super) fn header(kind: EntryType) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(0);
    // Both set on a fresh GNU header, which has room for them.
    let _ = h.set_device_major(0);
    let _ = h.set_device_minor(0);
    h
}

/// An empty marker entry: a whiteout or the opaque marker.
fn marker<W: Write>(b: &mut Builder<W>, path: &LayerPath) -> std::io::Result<()> {
    let mut h = header(EntryType::Regular);
    b.append_data(&mut h, path_of(path), std::io::empty())
}

/// A PAX extended header with the entry's xattrs, for the entry that follows.
pub(super) fn pax<W: Write>(
    b: &mut Builder<W>,
    path: &str,
    xattrs: &[(OsString, Vec<u8>)],
) -> Result<()> {
    let mut records = Vec::new();
    for (k, v) in xattrs {
        let name = std::str::from_utf8(k.as_bytes()).map_err(|_| ChangesError::XattrName {
            path: path.to_string(),
            name: k.to_string_lossy().into_owned(),
        })?;
        let body_len = " SCHILY.xattr.".len() + name.len() + 1 + v.len() + 1;
        // The length field counts its own digits.
        let mut len = body_len + 1;
        while len != body_len + len.to_string().len() {
            len = body_len + len.to_string().len();
        }
        records.extend_from_slice(format!("{len} SCHILY.xattr.{name}=").as_bytes());
        records.extend_from_slice(v);
        records.push(b'\n');
    }
    let mut h = header(EntryType::XHeader);
    h.set_size(records.len() as u64);
    let werr = |source| ChangesError::Write {
        path: path.to_string(),
        source,
    };
    h.set_path("PaxHeaders/xattrs").map_err(werr)?;
    h.set_cksum();
    b.append(&h, &records[..]).map_err(werr)
}
