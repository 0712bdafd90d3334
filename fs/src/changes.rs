//! What an upper directory changed relative to its lower layers, as `docker diff` reports
//! it: `A` for a path the layers do not have, `C` for one they have (a copied-up file or a
//! directory something changed in), `D` for a deleted one (a whiteout, in either format).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::attr::FileKind;
use crate::errno::Result;
use crate::host;
use crate::layer::{oci_whiteout_target, Layer, LayerPath, Lookup};
use crate::upper::Upper;

/// How a path changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    Added,
    Changed,
    Deleted,
}

impl ChangeKind {
    /// docker's letter.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Changed => 'C',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// One changed path, absolute inside the container (`/etc/passwd`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    pub path: PathBuf,
    pub kind: ChangeKind,
}

/// Whether `path` exists in the stack of `lowers` (top first): the first layer that has
/// the name or a whiteout for it decides, and an opaque directory on the way hides the
/// layers below it.
fn in_lowers(lowers: &[Arc<dyn Layer>], path: &LayerPath) -> Result<bool> {
    let mut dir = LayerPath::root();
    let mut layers: &[Arc<dyn Layer>] = lowers;
    for name in path.components() {
        let mut found = None;
        for (i, layer) in layers.iter().enumerate() {
            match layer.lookup(&dir, name)? {
                Lookup::Missing => continue,
                Lookup::Whiteout => return Ok(false),
                Lookup::Found { attr, opaque } => {
                    found = Some((i, attr.kind, opaque));
                    break;
                }
            }
        }
        let Some((i, kind, opaque)) = found else {
            return Ok(false);
        };
        if opaque || kind != FileKind::Directory {
            layers = &layers[i..i + 1];
        } else {
            layers = &layers[i..];
        }
        dir = dir.join(name);
    }
    Ok(true)
}

/// The changes recorded in `upper` over `lowers`, sorted by path.
pub fn changes(upper: &Path, lowers: &[Arc<dyn Layer>]) -> std::io::Result<Vec<Change>> {
    let mut out = Vec::new();
    walk(upper, &LayerPath::root(), lowers, &mut out)?;
    out.sort();
    Ok(out)
}

fn absolute(path: &LayerPath) -> PathBuf {
    Path::new("/").join(OsStr::from_bytes(path.as_bytes()))
}

fn walk(
    dir: &Path,
    at: &LayerPath,
    lowers: &[Arc<dyn Layer>],
    out: &mut Vec<Change>,
) -> std::io::Result<()> {
    let mut names: Vec<OsString> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    let fd = rustix::fs::open(
        dir,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    for name in names {
        let host_path = dir.join(&name);
        // A rootless upper's whiteout: `.wh.NAME`.
        if let Some(target) = oci_whiteout_target(&name) {
            if !target.is_empty() {
                out.push(Change {
                    path: absolute(&at.join(target)),
                    kind: ChangeKind::Deleted,
                });
            }
            continue;
        }
        let path = at.join(&name);
        let Some(attr) = host::stat_at(std::os::fd::AsFd::as_fd(&fd), &name)
            .map_err(|e| std::io::Error::from_raw_os_error(e.code()))?
        else {
            continue;
        };
        if Upper::is_whiteout(&attr) {
            out.push(Change {
                path: absolute(&path),
                kind: ChangeKind::Deleted,
            });
            continue;
        }
        let existed =
            in_lowers(lowers, &path).map_err(|e| std::io::Error::from_raw_os_error(e.code()))?;
        out.push(Change {
            path: absolute(&path),
            kind: if existed {
                ChangeKind::Changed
            } else {
                ChangeKind::Added
            },
        });
        if attr.kind == FileKind::Directory {
            walk(&host_path, &path, lowers, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::DirLayer;

    #[test]
    fn added_changed_and_deleted() {
        let t = tempfile::tempdir().unwrap();
        let (lower, upper) = (t.path().join("lower"), t.path().join("upper"));
        for d in ["etc", "usr/bin", "gone"] {
            std::fs::create_dir_all(lower.join(d)).unwrap();
        }
        std::fs::write(lower.join("etc/passwd"), "root").unwrap();
        std::fs::write(lower.join("etc/hosts"), "h").unwrap();
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        std::fs::write(upper.join("etc/passwd"), "root\nnew").unwrap();
        std::fs::write(upper.join("etc/.wh.hosts"), "").unwrap();
        std::fs::write(upper.join(".wh.gone"), "").unwrap();
        std::fs::create_dir_all(upper.join("new/dir")).unwrap();
        std::fs::write(upper.join("new/dir/file"), "x").unwrap();
        let lowers: Vec<Arc<dyn Layer>> = vec![Arc::new(DirLayer::open(&lower, 16).unwrap())];
        let got: Vec<String> = changes(&upper, &lowers)
            .unwrap()
            .iter()
            .map(|c| format!("{} {}", c.kind.letter(), c.path.display()))
            .collect();
        assert_eq!(
            got,
            [
                "C /etc",
                "D /etc/hosts",
                "C /etc/passwd",
                "D /gone",
                "A /new",
                "A /new/dir",
                "A /new/dir/file",
            ]
        );
    }
}
