//! Unpacking an archive into a temporary directory of the store: every member name must be
//! a plain relative path, and links (old docker archives symlink repeated layers) are kept as
//! a map resolved inside the archive, never made on disk.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

use super::Step;
use crate::{Error, Result};

use super::MAX_JSON_MEMBER;

/// An unpacked archive: its members in a temporary directory (removed on drop), and the
/// symlinks old docker archives use for repeated layers.
pub struct Unpacked {
    dir: PathBuf,
    links: HashMap<String, String>,
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `name` as a relative path of plain components; `None` for `..`, absolute or empty.
fn member_path(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

impl Unpacked {
    pub fn read(input: &mut dyn Read, tmp: &Path) -> Result<Unpacked> {
        let dir = crate::store::fsutil::temp_name(tmp, "load");
        fs::create_dir_all(&dir).map_err(|source| Error::Create {
            path: dir.clone(),
            source,
        })?;
        let mut u = Unpacked {
            dir,
            links: HashMap::new(),
        };
        let mut input = BufReader::new(input);
        let head =
            std::io::BufRead::fill_buf(&mut input).step(|| "reading the archive".to_string())?;
        let reader: Box<dyn Read + '_> = match head.starts_with(&[0x1f, 0x8b]) {
            true => Box::new(flate2::read::MultiGzDecoder::new(input)),
            false => Box::new(input),
        };
        let mut archive = tar::Archive::new(reader);
        let entries = archive
            .entries()
            .step(|| "the input is not a tar archive".to_string())?;
        for entry in entries {
            let mut entry =
                entry.step(|| "reading the archive (not a tar, or cut short)".to_string())?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(rel) = member_path(&name) else {
                return Err(Error::Archive(format!(
                    "archive member {name:?}: the name leaves the archive"
                )));
            };
            let kind = entry.header().entry_type();
            let target = u.dir.join(&rel);
            match kind {
                tar::EntryType::Directory => {
                    fs::create_dir_all(&target).step(|| format!("unpacking {name}"))?;
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    if let Some(parent) = target.parent() {
                        fs::create_dir_all(parent).step(|| format!("unpacking {name}"))?;
                    }
                    let mut f = File::create(&target).step(|| format!("unpacking {name}"))?;
                    std::io::copy(&mut entry, &mut f).step(|| format!("unpacking {name}"))?;
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let link = entry
                        .link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    // Relative to the link's directory for symlinks, to the root for links.
                    let base = match kind {
                        tar::EntryType::Symlink => {
                            rel.parent().unwrap_or(Path::new("")).join(&link)
                        }
                        _ => PathBuf::from(&link),
                    };
                    let resolved = normalize(&base)
                        .step(|| format!("archive member {name:?}: its link leaves the archive"))?;
                    u.links.insert(
                        rel.to_string_lossy().into_owned(),
                        resolved.to_string_lossy().into_owned(),
                    );
                }
                // pax global headers (as git archive writes): metadata for tar, no member.
                tar::EntryType::XGlobalHeader => {}
                other => {
                    return Err(Error::Archive(format!(
                        "archive member {name:?}: unexpected entry type {other:?}"
                    )))
                }
            }
        }
        Ok(u)
    }

    /// Where member `name` was unpacked (following the archive's own links).
    pub fn member_file(&self, name: &str) -> Result<PathBuf> {
        let rel = member_path(name).step(|| format!("{name:?} names no archive member"))?;
        let mut key = rel.to_string_lossy().into_owned();
        for _ in 0..16 {
            match self.links.get(&key) {
                Some(t) => key = t.clone(),
                None => break,
            }
        }
        let path = self.dir.join(&key);
        if !path.is_file() {
            return Err(Error::Archive(format!(
                "archive member {name:?} is missing"
            )));
        }
        Ok(path)
    }

    /// The bytes of a small member: a manifest or a config (layers are streamed).
    pub fn member(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.member_file(name)?;
        let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len > MAX_JSON_MEMBER {
            return Err(Error::Archive(format!(
                "archive member {name:?}: {len} bytes is too large for a manifest or config"
            )));
        }
        fs::read(&path).step(|| format!("reading archive member {name:?}"))
    }

    pub fn has(&self, name: &str) -> bool {
        self.dir.join(name).is_file()
    }
}

/// A relative path with `..` resolved lexically; an error when it climbs out.
fn normalize(p: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err(Error::Archive(format!("{} climbs out", p.display())));
                }
            }
            _ => return Err(Error::Archive(format!("{} is absolute", p.display()))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar of (name, entry type, link target or content), names written unchecked.
    fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, arg) in entries {
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            let data = match kind {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    h.set_link_name(arg).unwrap();
                    &[][..]
                }
                _ => arg.as_bytes(),
            };
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn unpack(bytes: &[u8], tmp: &Path) -> Result<Unpacked> {
        Unpacked::read(&mut &bytes[..], tmp)
    }

    #[test]
    fn member_names_stay_inside() {
        assert_eq!(member_path("./a/b"), Some(PathBuf::from("a/b")));
        assert_eq!(member_path("a//b/"), Some(PathBuf::from("a/b")));
        for bad in ["../x", "a/../../x", "/etc/passwd", "", "."] {
            assert_eq!(member_path(bad), None, "{bad}");
        }
        assert_eq!(normalize(Path::new("a/../b")).unwrap(), PathBuf::from("b"));
        assert!(normalize(Path::new("a/../../b")).is_err());
    }

    #[test]
    fn links_resolve_inside_the_archive_only() {
        use tar::EntryType::{Link, Regular, Symlink};
        let dir = tempfile::tempdir().unwrap();
        let u = unpack(
            &tar_of(&[
                ("ccc/layer.tar", Regular, "layer"),
                ("ddd/layer.tar", Symlink, "../ccc/layer.tar"),
                ("eee/layer.tar", Link, "ccc/layer.tar"),
                ("chain", Symlink, "ddd/layer.tar"),
            ]),
            dir.path(),
        )
        .unwrap();
        for name in ["ccc/layer.tar", "ddd/layer.tar", "./eee/layer.tar", "chain"] {
            assert_eq!(u.member(name).unwrap(), b"layer", "{name}");
        }
        assert!(u.has("ccc/layer.tar"));
        let e = u.member("nothing").unwrap_err().to_string();
        assert!(e.contains("archive member \"nothing\" is missing"), "{e}");

        for (what, link) in [(Symlink, "../../../etc/passwd"), (Link, "../x")] {
            let e = unpack(&tar_of(&[("out", what, link)]), dir.path())
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("\"out\": its link leaves the archive"), "{e}");
        }
        // Nothing of the unpacked archives is left once they are dropped.
        drop(u);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn bad_members_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = unpack(
            &tar_of(&[("../up", tar::EntryType::Regular, "x")]),
            dir.path(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("\"../up\": the name leaves the archive"), "{e}");
        let e = unpack(&tar_of(&[("dev", tar::EntryType::Char, "")]), dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("\"dev\": unexpected entry type"), "{e}");
        assert!(!dir.path().join("up").exists());
    }

    #[test]
    fn a_gzipd_archive_and_a_pax_global_header_are_read() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_of(&[
            ("pax_global_header", tar::EntryType::XGlobalHeader, ""),
            ("manifest.json", tar::EntryType::Regular, "[]"),
        ]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let u = unpack(&gz.finish().unwrap(), dir.path()).unwrap();
        assert_eq!(u.member("manifest.json").unwrap(), b"[]");
        assert!(!u.has("pax_global_header"));
    }
}
