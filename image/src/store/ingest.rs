//! Streaming a blob into the store: one process fetches a given blob at a time (an ingest
//! lock per digest), the bytes land in `tmp/<hex>.partial` as they arrive, a broken transfer
//! continues where it stopped (in this process through [`BlobSource::open`] at an offset, in
//! a later process from the partial file), and the blob is renamed into `blobs/` only after
//! its sha256 matched.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use crate::{Error, Result};

use super::lock::Lock;
use super::{fsutil, Store};
use crate::digest::{Digest, Hasher};

/// Where a blob's bytes come from. One call is one attempt; [`BlobReader`] owns the retries.
pub trait BlobSource: Send + Sync {
    /// Opens the blob at byte `offset`. Returns the reader and the offset it really starts at
    /// (0 when the server ignored the range request).
    fn open(&self, offset: u64) -> io::Result<(Box<dyn Read + Send>, u64)>;
}

/// Attempts without progress before a transfer is given up.
const MAX_ATTEMPTS: u32 = 5;

pub enum Begin {
    /// The blob is already in the store.
    Present,
    Ingest(Ingest),
}

/// The right to write one blob (its ingest lock is held).
pub struct Ingest {
    digest: Digest,
    size: u64,
    partial: PathBuf,
    dest: PathBuf,
    _lock: Lock,
}

impl Store {
    /// Waits for any other process ingesting `digest`, then reports whether it is present or
    /// hands out the right to fetch it.
    pub fn begin_ingest(&self, digest: &Digest, size: u64) -> Result<Begin> {
        if self.has_blob(digest) {
            return Ok(Begin::Present);
        }
        let lock =
            Lock::exclusive_ephemeral(&self.tmp_dir().join(format!("{}.lock", digest.hex())))?;
        if self.has_blob(digest) {
            return Ok(Begin::Present);
        }
        Ok(Begin::Ingest(Ingest {
            digest: digest.clone(),
            size,
            partial: self.tmp_dir().join(format!("{}.partial", digest.hex())),
            dest: self.blob_path(digest),
            _lock: lock,
        }))
    }
}

impl Ingest {
    /// A reader over the whole blob: the bytes of an earlier partial transfer first, then the
    /// source from where they end. `progress` gets the running byte count.
    pub fn reader<'a>(
        &self,
        source: &'a dyn BlobSource,
        progress: Box<dyn FnMut(u64) + Send + 'a>,
    ) -> Result<BlobReader<'a>> {
        let mut have = fs::metadata(&self.partial).map(|m| m.len()).unwrap_or(0);
        if have > self.size {
            have = 0;
        }
        let out = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&self.partial)
            .map_err(|source| self.open_err(source))?;
        out.set_len(have).map_err(|source| self.open_err(source))?;
        let replay = if have > 0 {
            let f = File::open(&self.partial).map_err(|source| self.open_err(source))?;
            Some(f.take(have))
        } else {
            None
        };
        let mut out = out;
        std::io::Seek::seek(&mut out, io::SeekFrom::End(0))
            .map_err(|source| self.open_err(source))?;
        Ok(BlobReader {
            source,
            replay,
            current: None,
            offset: 0,
            size: self.size,
            out,
            hasher: Hasher::default(),
            attempts: 0,
            progress,
            digest: self.digest.clone(),
            write_failed: false,
        })
    }

    /// Reads what is left, checks the digest and size, and moves the blob into place. On a
    /// mismatch the partial file is deleted and nothing is stored.
    pub fn commit(self, mut reader: BlobReader<'_>) -> Result<()> {
        if let Err(e) = io::copy(&mut reader, &mut io::sink()) {
            if reader.write_failed {
                // The store's disk is full (or failing): what came so far is no use to a later
                // pull until space is freed, and would only hold on to it. A cut transfer keeps
                // its partial file to resume from.
                drop(reader);
                self.discard();
            }
            return Err(Error::Download {
                digest: self.digest.clone(),
                source: e,
            });
        }
        let got = reader.hasher.clone().finish();
        let received = reader.offset;
        if received != self.size || got != self.digest {
            drop(reader);
            self.discard();
            return Err(Error::DownloadVerify {
                digest: self.digest.clone(),
                received,
                got,
                size: self.size,
            });
        }
        reader.out.sync_all().map_err(|source| Error::Sync {
            path: self.partial.clone(),
            source,
        })?;
        drop(reader);
        fsutil::commit_file(&self.partial, &self.dest)
    }

    fn open_err(&self, source: io::Error) -> Error {
        Error::Open {
            path: self.partial.clone(),
            source,
        }
    }

    /// Deletes the partial transfer (its content cannot be right).
    pub fn discard(&self) {
        let _ = fs::remove_file(&self.partial);
    }
}

/// See [`Ingest::reader`].
pub struct BlobReader<'a> {
    source: &'a dyn BlobSource,
    replay: Option<io::Take<File>>,
    current: Option<Box<dyn Read + Send>>,
    offset: u64,
    size: u64,
    out: File,
    hasher: Hasher,
    attempts: u32,
    progress: Box<dyn FnMut(u64) + Send + 'a>,
    digest: Digest,
    /// Writing the partial file failed (a full disk): [`Ingest::commit`] keeps nothing.
    write_failed: bool,
}

impl BlobReader<'_> {
    fn read_remote(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.current.is_none() {
                self.attempts += 1;
                match self.source.open(self.offset) {
                    Ok((mut r, start)) => {
                        if start < self.offset {
                            io::copy(&mut (&mut r).take(self.offset - start), &mut io::sink())?;
                        }
                        self.current = Some(r);
                    }
                    Err(e) if self.attempts < MAX_ATTEMPTS && retryable(&e) => {
                        std::thread::sleep(Duration::from_millis(200 * self.attempts as u64));
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let want = buf.len().min((self.size - self.offset) as usize);
            let r = self.current.as_mut().expect("opened above");
            match r.read(&mut buf[..want]) {
                Ok(0) => {
                    // The server closed early: ask again from here.
                    self.current = None;
                    if self.attempts >= MAX_ATTEMPTS {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!(
                                "blob {}: transfer ended at {} of {} bytes, {MAX_ATTEMPTS} times",
                                self.digest, self.offset, self.size
                            ),
                        ));
                    }
                }
                Ok(n) => {
                    self.attempts = 0;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.current = None;
                    if self.attempts >= MAX_ATTEMPTS || !retryable(&e) {
                        return Err(e);
                    }
                }
            }
        }
    }
}

fn retryable(e: &io::Error) -> bool {
    !matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidData
    )
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.offset >= self.size {
            return Ok(0);
        }
        let n = match &mut self.replay {
            Some(replay) => match replay.read(buf)? {
                0 => {
                    self.replay = None;
                    return self.read(buf);
                }
                n => n,
            },
            None => {
                let n = self.read_remote(buf)?;
                if let Err(e) = self.out.write_all(&buf[..n]) {
                    // Keep the partial file and the stream at `offset` (a full disk may
                    // have taken part of the write): a later read starts over from there.
                    self.current = None;
                    self.write_failed = true;
                    let _ = self.out.set_len(self.offset);
                    let _ = std::io::Seek::seek(&mut self.out, io::SeekFrom::Start(self.offset));
                    return Err(e);
                }
                n
            }
        };
        self.hasher.update(&buf[..n]);
        self.offset += n as u64;
        (self.progress)(self.offset);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Serves `data`, cutting every response after `cut` bytes and ignoring Range on the
    /// first `ignore_range` opens.
    struct Flaky {
        data: Vec<u8>,
        cut: usize,
        opens: AtomicU32,
        ignore_range: u32,
    }

    impl BlobSource for Flaky {
        fn open(&self, offset: u64) -> io::Result<(Box<dyn Read + Send>, u64)> {
            let n = self.opens.fetch_add(1, Ordering::SeqCst);
            let start = if n < self.ignore_range {
                0
            } else {
                offset as usize
            };
            let end = (start + self.cut).min(self.data.len());
            Ok((
                Box::new(io::Cursor::new(self.data[start..end].to_vec())),
                start as u64,
            ))
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::new(dir.path());
        s.init().unwrap();
        (dir, s)
    }

    #[test]
    fn resumes_broken_transfers_and_verifies() {
        let (_d, s) = store();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let digest = Digest::of(&data);
        let src = Flaky {
            data: data.clone(),
            cut: 30_000,
            opens: AtomicU32::new(0),
            ignore_range: 2,
        };
        let Begin::Ingest(ing) = s.begin_ingest(&digest, data.len() as u64).unwrap() else {
            panic!()
        };
        let r = ing.reader(&src, Box::new(|_| {})).unwrap();
        ing.commit(r).unwrap();
        assert_eq!(fs::read(s.blob_path(&digest)).unwrap(), data);
        assert!(matches!(
            s.begin_ingest(&digest, 1).unwrap(),
            Begin::Present
        ));
        assert!(src.opens.load(Ordering::SeqCst) >= 4);
    }

    #[test]
    fn wrong_content_is_not_stored() {
        let (_d, s) = store();
        let digest = Digest::of(b"right");
        let src = Flaky {
            data: b"wrong".to_vec(),
            cut: 100,
            opens: AtomicU32::new(0),
            ignore_range: 0,
        };
        let Begin::Ingest(ing) = s.begin_ingest(&digest, 5).unwrap() else {
            panic!()
        };
        let r = ing.reader(&src, Box::new(|_| {})).unwrap();
        let e = ing.commit(r).unwrap_err().to_string();
        assert!(
            e.contains(digest.as_str()) && e.contains("failed verification"),
            "{e}"
        );
        assert!(!s.has_blob(&digest));
        assert_eq!(fs::read_dir(s.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn a_later_ingest_continues_a_partial_file() {
        let (_d, s) = store();
        let data = vec![7u8; 10_000];
        let digest = Digest::of(&data);
        fs::write(
            s.tmp_dir().join(format!("{}.partial", digest.hex())),
            &data[..4000],
        )
        .unwrap();
        let src = Flaky {
            data: data.clone(),
            cut: usize::MAX / 2,
            opens: AtomicU32::new(0),
            ignore_range: 0,
        };
        let Begin::Ingest(ing) = s.begin_ingest(&digest, data.len() as u64).unwrap() else {
            panic!()
        };
        let mut seen = 0;
        let r = ing.reader(&src, Box::new(|n| seen = n)).unwrap();
        ing.commit(r).unwrap();
        assert_eq!(seen, 10_000);
        assert!(s.has_blob(&digest));
    }
}
