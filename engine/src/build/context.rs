//! The build context: a directory, or a tar sent on stdin unpacked to a temporary one, with
//! its `.dockerignore`; which context paths a COPY/ADD source names (docker's rules: cleaned,
//! never out of the context, through symlinks neither, patterns matched, ignored names gone).

use std::io::Read;
use std::path::{Path, PathBuf};

use super::ignore::{clean, Ignore};
use crate::{Error, Result};

/// The build context: a directory (or a tar given on stdin, unpacked to a temporary one)
/// and its `.dockerignore`.
pub struct Context {
    pub dir: PathBuf,
    real: PathBuf,
    pub(super) ignore: Ignore,
    _tmp: Option<tempfile::TempDir>,
}

impl Context {
    /// The context in directory `dir`.
    pub fn open(dir: &Path) -> Result<Context> {
        let real = dir.canonicalize().map_err(|source| Error::BuildContext {
            path: dir.to_path_buf(),
            source,
        })?;
        if !real.is_dir() {
            return Err(Error::BuildContext {
                path: dir.to_path_buf(),
                source: std::io::Error::from_raw_os_error(libc::ENOTDIR),
            });
        }
        let ignore = Ignore::load(&real).map_err(|source| Error::BuildContext {
            path: real.join(".dockerignore"),
            source,
        })?;
        Ok(Context {
            dir: dir.to_path_buf(),
            real,
            ignore,
            _tmp: None,
        })
    }

    /// An empty context (a Dockerfile given on stdin).
    pub fn empty(tmp_parent: &Path) -> Result<Context> {
        let tmp = tempfile::tempdir_in(tmp_parent).map_err(|source| Error::BuildContext {
            path: tmp_parent.to_path_buf(),
            source,
        })?;
        let mut c = Context::open(tmp.path())?;
        c._tmp = Some(tmp);
        Ok(c)
    }

    /// A context sent as a tar (`strata build - < ctx.tar`), unpacked below `tmp_parent`.
    pub fn from_tar(tar: &mut dyn Read, tmp_parent: &Path) -> Result<Context> {
        let tmp = tempfile::tempdir_in(tmp_parent).map_err(|source| Error::BuildContext {
            path: tmp_parent.to_path_buf(),
            source,
        })?;
        let mut archive = tar::Archive::new(decompressed(tar)?);
        archive.set_preserve_permissions(true);
        archive.set_overwrite(true);
        // tar's unpack refuses names that climb out (`..`) and writes below its root only.
        archive
            .unpack(tmp.path())
            .map_err(|source| Error::BuildContext {
                path: PathBuf::from("-"),
                source,
            })?;
        let mut c = Context::open(tmp.path())?;
        c._tmp = Some(tmp);
        Ok(c)
    }

    /// Whether `.dockerignore` excludes context path `rel`.
    pub fn excluded(&self, rel: &str) -> bool {
        self.ignore.excluded(rel)
    }

    /// The sources `src` names: `(context-relative path, host path)`.
    pub(super) fn sources(&self, src: &str) -> Result<Vec<(String, PathBuf)>> {
        let rel = inside(src).ok_or_else(|| Error::CopyOutside(src.to_string()))?;
        if has_glob(&rel) {
            let mut found = Vec::new();
            self.walk_matches(&self.real, "", &rel, &mut found)?;
            if found.is_empty() {
                return Err(Error::CopyMissing(src.to_string()));
            }
            return Ok(found);
        }
        let host = self.real.join(&rel);
        // Symlinks (of the source itself too) may lead anywhere inside the context only.
        let real = match host.canonicalize() {
            Ok(r) => r,
            Err(_) if host.symlink_metadata().is_ok() => {
                return Err(Error::CopyOutside(src.to_string()))
            }
            Err(_) => return Err(Error::CopyMissing(src.to_string())),
        };
        if !real.starts_with(&self.real) {
            return Err(Error::CopyOutside(src.to_string()));
        }
        if rel != "." && self.excluded(&rel) {
            return Err(Error::CopyMissing(src.to_string()));
        }
        Ok(vec![(rel, real)])
    }

    fn walk_matches(
        &self,
        dir: &Path,
        prefix: &str,
        pattern: &str,
        found: &mut Vec<(String, PathBuf)>,
    ) -> Result<()> {
        for (name, path) in read_dir_sorted(dir)? {
            let rel = match prefix {
                "" => name.clone(),
                p => format!("{p}/{name}"),
            };
            if self.excluded(&rel) && !self.ignore.has_exceptions() {
                continue;
            }
            if super::ignore::glob(pattern, &rel) && !self.excluded(&rel) {
                found.push((rel.clone(), path.clone()));
                continue;
            }
            let is_dir = path.symlink_metadata().is_ok_and(|m| m.is_dir());
            // A pattern has as many parts as the paths it matches.
            if is_dir && rel.matches('/').count() < pattern.matches('/').count() {
                self.walk_matches(&path, &rel, pattern, found)?;
            }
        }
        Ok(())
    }
}

/// `src` as a context-relative clean path; `None` when it climbs out of the context.
pub(super) fn inside(src: &str) -> Option<String> {
    let mut depth: i64 = 0;
    for part in src.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return None;
                }
            }
            _ => depth += 1,
        }
    }
    Some(clean(src))
}

pub(super) fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

pub(super) fn read_dir_sorted(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let rd = std::fs::read_dir(dir).map_err(|source| Error::BuildContext {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|source| Error::BuildContext {
            path: dir.to_path_buf(),
            source,
        })?;
        out.push((e.file_name().to_string_lossy().into_owned(), e.path()));
    }
    out.sort();
    Ok(out)
}

/// A reader of `r` decompressed (gzip or zstd by their magic; else as it is).
pub(super) fn decompressed<'a>(r: &'a mut dyn Read) -> Result<Box<dyn Read + 'a>> {
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < 4 {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(source) => {
                return Err(Error::BuildContext {
                    path: PathBuf::from("-"),
                    source,
                })
            }
        }
    }
    let chained: Box<dyn Read + 'a> = Box::new(std::io::Cursor::new(head[..n].to_vec()).chain(r));
    if head[..n].starts_with(&[0x1f, 0x8b]) {
        return Ok(Box::new(flate2::read::MultiGzDecoder::new(chained)));
    }
    if head[..n] == [0x28, 0xb5, 0x2f, 0xfd] {
        let d =
            zstd::stream::read::Decoder::new(chained).map_err(|source| Error::BuildContext {
                path: PathBuf::from("-"),
                source,
            })?;
        return Ok(Box::new(d));
    }
    Ok(chained)
}
