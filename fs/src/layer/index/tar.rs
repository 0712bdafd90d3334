//! Reading a tar stream once, front to back, while copying every byte read to `data`.
//!
//! Formats read: V7, ustar (with its name prefix), GNU (`L`/`K` long names, base-256
//! numbers) and POSIX pax (`x` records: `path`, `linkpath`, `size`, `uid`, `gid`, `mtime`,
//! `SCHILY.xattr.*`). Global pax headers (`g`) are skipped, as containerd does. As Go's
//! archive/tar (what image builders write with and containerd reads with): the data of
//! header-only types (links, directories, devices, fifos) is never skipped whatever the size
//! field says, a legacy regular entry whose name ends in `/` is a directory, and a stream
//! that ends cleanly at a header boundary without the two zero blocks is complete.

use std::io::{ErrorKind, Read, Write};

use super::format::Xattr;
use super::IndexError;
use crate::attr::Timestamp;

/// Largest pax header or GNU long name accepted (they are read into memory).
const MAX_META: u64 = 1 << 20;
const BLOCK: usize = 512;

/// The bytes of the tar: read from the caller's reader, each byte copied to `out` as it is
/// read, counted against the size cap.
pub(super) struct Source<'a> {
    input: &'a mut dyn Read,
    out: &'a mut dyn Write,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Bytes handed to the parser: the offset in `data` of the next byte.
    pub consumed: u64,
    /// Bytes read from the input.
    pub read: u64,
    max_bytes: u64,
}

/// What went wrong below the parser; it adds the entry name.
pub(super) enum SourceError {
    Read(std::io::Error),
    Write(std::io::Error),
    Eof,
    TooLarge,
}

impl<'a> Source<'a> {
    pub fn new(input: &'a mut dyn Read, out: &'a mut dyn Write, max_bytes: u64) -> Source<'a> {
        Source {
            input,
            out,
            buf: vec![0u8; 256 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
            consumed: 0,
            read: 0,
            max_bytes,
        }
    }

    /// Reads more input into the buffer (and through to `out`); 0 at the end of the input.
    fn fill(&mut self) -> Result<usize, SourceError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        // One byte past the cap is enough to know it was passed.
        let allowed = (self.max_bytes + 1).saturating_sub(self.read);
        let room = (self.buf.len() - self.end).min(allowed.min(usize::MAX as u64) as usize);
        if room == 0 {
            return Err(SourceError::TooLarge);
        }
        let n = loop {
            match self.input.read(&mut self.buf[self.end..self.end + room]) {
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(SourceError::Read(e)),
            }
        };
        self.read += n as u64;
        if self.read > self.max_bytes {
            return Err(SourceError::TooLarge);
        }
        self.out
            .write_all(&self.buf[self.end..self.end + n])
            .map_err(SourceError::Write)?;
        self.end += n;
        Ok(n)
    }

    /// Fills `dst` entirely; `Ok(false)` when the input ended before its first byte.
    fn read_exact_or_end(&mut self, dst: &mut [u8]) -> Result<bool, SourceError> {
        let mut done = 0;
        while done < dst.len() {
            if self.start == self.end && self.fill()? == 0 {
                return match done {
                    0 => Ok(false),
                    _ => Err(SourceError::Eof),
                };
            }
            let n = (self.end - self.start).min(dst.len() - done);
            dst[done..done + n].copy_from_slice(&self.buf[self.start..self.start + n]);
            self.start += n;
            self.consumed += n as u64;
            done += n;
        }
        Ok(true)
    }

    /// Passes `n` bytes through without looking at them.
    fn skip(&mut self, mut n: u64) -> Result<(), SourceError> {
        while n > 0 {
            if self.start == self.end && self.fill()? == 0 {
                return Err(SourceError::Eof);
            }
            let k = ((self.end - self.start) as u64).min(n) as usize;
            self.start += k;
            self.consumed += k as u64;
            n -= k as u64;
        }
        Ok(())
    }

    /// Passes everything up to the end of the input through (the zero blocks and padding
    /// after the last entry belong to the layer's bytes, and to its digest).
    pub fn drain(&mut self) -> Result<(), SourceError> {
        loop {
            let k = self.end - self.start;
            self.start = self.end;
            self.consumed += k as u64;
            if self.fill()? == 0 {
                return Ok(());
            }
        }
    }
}

/// The type of a tar entry, as the index keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TarKind {
    Regular,
    HardLink,
    Symlink,
    Char,
    Block,
    Directory,
    Fifo,
}

/// One entry of the archive, long names and pax records applied. Other layer formats
/// (an eStargz table of contents) describe their entries in the same shape.
#[derive(Debug)]
pub struct TarEntry {
    /// The name as the archive spells it (not cleaned).
    pub path: Vec<u8>,
    /// The link target of a symlink or hard link.
    pub link: Vec<u8>,
    pub kind: TarKind,
    /// Permission bits, `0o7777`.
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Timestamp,
    pub size: u64,
    /// Offset of the contents in the stream (and so in `data`).
    pub offset: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub xattrs: Vec<Xattr>,
}

/// Reads entries one after the other.
pub(super) struct Parser<'a> {
    pub src: Source<'a>,
    /// Bytes of the previous entry's contents (and padding) still to pass.
    pending: u64,
    /// The last entry read, for errors that happen between entries.
    pub last: String,
    ended: bool,
    /// The file the bytes go to, for write errors.
    data_path: std::path::PathBuf,
}

/// Pax records that change the next entry.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u32>,
    gid: Option<u32>,
    mtime: Option<Timestamp>,
    xattrs: Vec<Xattr>,
    sparse: bool,
}

fn padded(n: u64) -> u64 {
    n.div_ceil(BLOCK as u64) * BLOCK as u64
}

/// A NUL-terminated header string field.
fn cstr(field: &[u8]) -> &[u8] {
    match field.iter().position(|b| *b == 0) {
        Some(i) => &field[..i],
        None => field,
    }
}

/// A numeric header field: octal text, or GNU base-256 (first byte 0x80 positive, 0xff
/// negative).
fn number(field: &[u8]) -> Option<i64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let negative = field[0] == 0xff;
        let mut v: i128 = if negative { -1 } else { 0 };
        for (i, b) in field.iter().enumerate() {
            let b = if i == 0 && !negative { b & 0x7f } else { *b };
            v = (v << 8) | i128::from(b);
            if v > i128::from(i64::MAX) || v < i128::from(i64::MIN) {
                return None;
            }
        }
        return Some(v as i64);
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ' || *b == 0)
        .take_while(|b| *b != b' ' && *b != 0)
        .collect();
    if text.is_empty() {
        return Some(0);
    }
    let mut v: i64 = 0;
    for b in text {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add(i64::from(b - b'0'))?;
    }
    Some(v)
}

/// A pax time: `[-]SECONDS[.FRACTION]`.
fn pax_time(v: &[u8]) -> Option<Timestamp> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut nsec: u32 = 0;
    for (i, d) in frac.bytes().take(9).enumerate() {
        nsec += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
    }
    Some(match (neg, nsec) {
        (false, _) => Timestamp { sec: secs, nsec },
        (true, 0) => Timestamp {
            sec: -secs,
            nsec: 0,
        },
        (true, n) => Timestamp {
            sec: -secs - 1,
            nsec: 1_000_000_000 - n,
        },
    })
}

/// Whether a header's checksum field matches its bytes (unsigned sum, or the signed sum
/// some old tars wrote).
fn checksum_ok(h: &[u8; BLOCK]) -> bool {
    let Some(want) = number(&h[148..156]) else {
        return false;
    };
    let mut unsigned: i64 = 0;
    let mut signed: i64 = 0;
    for (i, b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { *b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    want == unsigned || want == signed
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl<'a> Parser<'a> {
    pub fn new(src: Source<'a>, data_path: &std::path::Path) -> Parser<'a> {
        Parser {
            src,
            pending: 0,
            last: String::from("(start of archive)"),
            ended: false,
            data_path: data_path.to_path_buf(),
        }
    }

    fn source_error(&self, e: SourceError, entry: &str) -> IndexError {
        match e {
            SourceError::Read(source) => IndexError::Read {
                entry: entry.to_string(),
                source,
            },
            SourceError::Write(source) => IndexError::Write {
                path: self.data_path.clone(),
                source,
            },
            SourceError::Eof => IndexError::Truncated {
                entry: entry.to_string(),
            },
            SourceError::TooLarge => IndexError::TooLarge {
                entry: entry.to_string(),
                max_bytes: self.src.max_bytes,
            },
        }
    }

    fn bad_header(&self, reason: &'static str) -> IndexError {
        IndexError::BadHeader {
            offset: self.src.consumed - BLOCK as u64,
            after: self.last.clone(),
            reason,
        }
    }

    /// Passes the rest of the input through; call once `next` returned `None`.
    pub fn finish(&mut self) -> Result<(), IndexError> {
        let last = self.last.clone();
        self.src.drain().map_err(|e| self.source_error(e, &last))
    }

    /// Reads an extended header's contents into memory.
    fn read_meta(&mut self, size: u64, what: &'static str) -> Result<Vec<u8>, IndexError> {
        if size > MAX_META {
            return Err(IndexError::BadPax {
                entry: self.last.clone(),
                reason: what,
            });
        }
        let mut v = vec![0u8; size as usize];
        let last = self.last.clone();
        match self.src.read_exact_or_end(&mut v) {
            Ok(true) => {}
            Ok(false) => return Err(self.source_error(SourceError::Eof, &last)),
            Err(e) => return Err(self.source_error(e, &last)),
        }
        self.src
            .skip(padded(size) - size)
            .map_err(|e| self.source_error(e, &last))?;
        Ok(v)
    }

    fn parse_pax(&self, data: &[u8], pax: &mut Pax) -> Result<(), IndexError> {
        let bad = |reason| IndexError::BadPax {
            entry: self.last.clone(),
            reason,
        };
        let mut rest = data;
        while !rest.is_empty() {
            let sp = rest
                .iter()
                .position(|b| *b == b' ')
                .ok_or(bad("record without a length"))?;
            let len: usize = std::str::from_utf8(&rest[..sp])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(bad("bad record length"))?;
            if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
                return Err(bad("bad record length"));
            }
            let record = &rest[sp + 1..len - 1];
            rest = &rest[len..];
            let eq = record
                .iter()
                .position(|b| *b == b'=')
                .ok_or(bad("record without '='"))?;
            let (key, value) = (&record[..eq], &record[eq + 1..]);
            let num = |v: &[u8]| -> Result<u64, IndexError> {
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(bad("bad number"))
            };
            match key {
                b"path" => pax.path = Some(value.to_vec()),
                b"linkpath" => pax.linkpath = Some(value.to_vec()),
                b"size" => pax.size = Some(num(value)?),
                b"uid" => {
                    pax.uid = Some(u32::try_from(num(value)?).map_err(|_| bad("uid too large"))?)
                }
                b"gid" => {
                    pax.gid = Some(u32::try_from(num(value)?).map_err(|_| bad("gid too large"))?)
                }
                b"mtime" => pax.mtime = Some(pax_time(value).ok_or(bad("bad mtime"))?),
                k if k.starts_with(b"GNU.sparse.") => pax.sparse = true,
                k if k.starts_with(b"SCHILY.xattr.") => {
                    let name = &k[b"SCHILY.xattr.".len()..];
                    if name.is_empty() || name.contains(&0) {
                        return Err(bad("bad xattr name"));
                    }
                    pax.xattrs.retain(|(n, _)| &n[..] != name);
                    pax.xattrs.push((name.into(), value.into()));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The next entry; `None` at the end of the archive.
    pub fn next(&mut self) -> Result<Option<TarEntry>, IndexError> {
        if self.ended {
            return Ok(None);
        }
        let last = self.last.clone();
        let pending = std::mem::take(&mut self.pending);
        self.src
            .skip(pending)
            .map_err(|e| self.source_error(e, &last))?;
        let mut pax = Pax::default();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            let mut h = [0u8; BLOCK];
            match self.src.read_exact_or_end(&mut h) {
                Ok(true) => {}
                Ok(false) => {
                    self.ended = true;
                    return Ok(None);
                }
                Err(e) => return Err(self.source_error(e, &last)),
            }
            if h.iter().all(|b| *b == 0) {
                self.ended = true;
                return Ok(None);
            }
            if !checksum_ok(&h) {
                return Err(self.bad_header("checksum mismatch"));
            }
            let typeflag = h[156];
            let header_size = number(&h[124..136])
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| self.bad_header("bad size field"))?;
            match typeflag {
                b'x' => {
                    let data = self.read_meta(header_size, "pax header too large")?;
                    self.parse_pax(&data, &mut pax)?;
                    continue;
                }
                b'g' => {
                    self.read_meta(header_size, "global pax header too large")?;
                    continue;
                }
                b'L' => {
                    let data = self.read_meta(header_size, "GNU long name too large")?;
                    long_name = Some(cstr(&data).to_vec());
                    continue;
                }
                b'K' => {
                    let data = self.read_meta(header_size, "GNU long link name too large")?;
                    long_link = Some(cstr(&data).to_vec());
                    continue;
                }
                _ => {}
            }
            let ustar = &h[257..263] == b"ustar\0";
            let path = match (pax.path.take(), long_name.take()) {
                (Some(p), _) | (None, Some(p)) => p,
                (None, None) => {
                    let name = cstr(&h[0..100]);
                    let prefix = if ustar { cstr(&h[345..500]) } else { &[][..] };
                    if prefix.is_empty() {
                        name.to_vec()
                    } else {
                        [prefix, b"/", name].concat()
                    }
                }
            };
            let link = match (pax.linkpath.take(), long_link.take()) {
                (Some(l), _) | (None, Some(l)) => l,
                (None, None) => cstr(&h[157..257]).to_vec(),
            };
            let num = |r: std::ops::Range<usize>, what| {
                number(&h[r]).ok_or_else(|| self.bad_header(what))
            };
            let entry_name = lossy(&path);
            if pax.sparse || typeflag == b'S' {
                return Err(IndexError::Sparse { entry: entry_name });
            }
            let kind = match typeflag {
                b'0' | 0 | b'7' if path.ends_with(b"/") => TarKind::Directory,
                b'0' | 0 | b'7' => TarKind::Regular,
                b'1' => TarKind::HardLink,
                b'2' => TarKind::Symlink,
                b'3' => TarKind::Char,
                b'4' => TarKind::Block,
                b'5' => TarKind::Directory,
                b'6' => TarKind::Fifo,
                t => {
                    return Err(IndexError::UnsupportedType {
                        entry: entry_name,
                        typeflag: t as char,
                    })
                }
            };
            let id = |v: Option<u32>, r, what| -> Result<u32, IndexError> {
                match v {
                    Some(v) => Ok(v),
                    None => u32::try_from(num(r, what)?).map_err(|_| self.bad_header(what)),
                }
            };
            let uid = id(pax.uid, 108..116, "bad uid field")?;
            let gid = id(pax.gid, 116..124, "bad gid field")?;
            let mtime = match pax.mtime {
                Some(t) => t,
                None => Timestamp {
                    sec: num(136..148, "bad mtime field")?,
                    nsec: 0,
                },
            };
            let perm = (num(100..108, "bad mode field")? & 0o7777) as u32;
            let (dev_major, dev_minor) = match kind {
                TarKind::Char | TarKind::Block => (
                    u32::try_from(num(329..337, "bad devmajor field")?)
                        .map_err(|_| self.bad_header("bad devmajor field"))?,
                    u32::try_from(num(337..345, "bad devminor field")?)
                        .map_err(|_| self.bad_header("bad devminor field"))?,
                ),
                _ => (0, 0),
            };
            let size = match kind {
                TarKind::Regular => pax.size.unwrap_or(header_size),
                _ => 0,
            };
            self.pending = padded(size);
            self.last = entry_name;
            return Ok(Some(TarEntry {
                path,
                link,
                kind,
                perm,
                uid,
                gid,
                mtime,
                size,
                offset: self.src.consumed,
                dev_major,
                dev_minor,
                xattrs: std::mem::take(&mut pax.xattrs),
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_octal_and_base256() {
        assert_eq!(number(b"0000644\0"), Some(0o644));
        assert_eq!(number(b"   644 \0"), Some(0o644));
        assert_eq!(number(b"\0\0\0\0"), Some(0));
        assert_eq!(number(b"0009"), None);
        assert_eq!(number(&[0x80, 0, 0, 0, 0, 0, 0, 1, 0]), Some(256));
        assert_eq!(number(&[0xff; 8]), Some(-1));
        assert_eq!(
            number(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]),
            Some(-2)
        );
    }

    #[test]
    fn pax_times() {
        assert_eq!(
            pax_time(b"1700000000.5"),
            Some(Timestamp {
                sec: 1_700_000_000,
                nsec: 500_000_000
            })
        );
        assert_eq!(
            pax_time(b"-1.25"),
            Some(Timestamp {
                sec: -2,
                nsec: 750_000_000
            })
        );
        assert_eq!(pax_time(b"12"), Some(Timestamp { sec: 12, nsec: 0 }));
        assert_eq!(pax_time(b"1.x"), None);
        assert_eq!(pax_time(b""), None);
    }
}
