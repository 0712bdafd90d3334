//! eStargz: a gzip layer whose every file (and every chunk of a large file) starts a new
//! gzip member, followed by a table of contents (`stargz.index.json`, in a tar, in its own
//! member) and a 51-byte footer naming where the TOC starts. The whole blob still
//! decompresses to an ordinary layer tar, so clients that know nothing of it pull it whole.
//!
//! Reading: [`parse_footer`] → fetch the TOC member → [`decode_toc`] (checked against the
//! `containerd.io/snapshot/stargz/toc.digest` annotation by the caller) → [`LazyIndex::from_toc`]:
//! the layer's entries for strata-fs's index builder, each regular file placed in a virtual
//! uncompressed address space, and the chunk table that maps that space back to gzip
//! members of the blob. The TOC itself and the landmark files never become entries.
//!
//! Writing: [`write()`] turns a layer tar into such a blob (the format of the Go `estargz`
//! package: per-chunk members, `chunkDigest`s, the footer with its `SG` extra field).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use base64::Engine as _;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};
use strata_fs::attr::Timestamp;
use strata_fs::layer::index::{TarEntry, TarKind};

use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
pub use crate::lazy::chunks::{chunks_in, Chunk, LazyIndex, Opened};
use crate::lazy::ChunkFetcher;

/// Bytes of the footer at the end of an eStargz blob.
pub const FOOTER_LEN: u64 = 51;
/// The name of the table of contents inside the blob's last tar entry.
pub const TOC_NAME: &str = "stargz.index.json";
/// The layer annotation holding the sha256 of the TOC's JSON bytes.
pub const TOC_DIGEST_ANNOTATION: &str = "containerd.io/snapshot/stargz/toc.digest";
/// The layer annotation holding the uncompressed size (of the layer tar).
pub const UNCOMPRESSED_SIZE_ANNOTATION: &str = "io.containers.estargz.uncompressed-size";
/// Marker files an image producer adds to delimit the prefetch region; never content.
pub const LANDMARKS: [&str; 2] = [".prefetch.landmark", ".no.prefetch.landmark"];
/// The TOC and the landmarks: an eStargz layer's metadata, hidden in every view of it.
pub const HIDDEN: &[&str] = &[TOC_NAME, LANDMARKS[0], LANDMARKS[1]];
/// Size of the chunks [`write()`] splits large files into (the Go package's default).
pub const CHUNK_SIZE: u64 = 4 << 20;

/// Where the TOC starts, from the blob's last [`FOOTER_LEN`] bytes; `Err` says why the bytes
/// are not an eStargz footer.
pub fn parse_footer(footer: &[u8]) -> Result<u64, &'static str> {
    if footer.len() != FOOTER_LEN as usize {
        return Err("the footer is not 51 bytes");
    }
    // RFC 1952: magic, CM=8, FLG with FEXTRA; XLEN=26 holding one subfield "SG" of 22 bytes.
    if footer[..3] != [0x1f, 0x8b, 8] || footer[3] & 4 == 0 {
        return Err("the footer is not a gzip header with an extra field");
    }
    if footer[10..12] != [26, 0] || &footer[12..14] != b"SG" || footer[14..16] != [22, 0] {
        return Err("the footer's extra field is not an SG subfield");
    }
    if &footer[32..38] != b"STARGZ" {
        return Err("the footer's extra field does not end in STARGZ");
    }
    let hex = std::str::from_utf8(&footer[16..32]).map_err(|_| "the TOC offset is not hex")?;
    u64::from_str_radix(hex, 16).map_err(|_| "the TOC offset is not hex")
}

/// Reads the footer and the TOC of blob `digest` (`size` bytes) through `fetcher` — two
/// Range requests — checks the TOC against `toc_digest` (the layer's
/// [`TOC_DIGEST_ANNOTATION`]) and builds the index entries and chunk table.
pub fn open(
    fetcher: &dyn ChunkFetcher,
    digest: &Digest,
    size: u64,
    toc_digest: &str,
) -> Result<Opened> {
    let fetch = |offset: u64, len: u64| {
        fetcher
            .fetch(offset, len)
            .map_err(|source| Error::FetchRange {
                digest: digest.clone(),
                offset,
                end: offset + len,
                source,
            })
    };
    let footer_err = |reason| Error::EstargzFooter {
        digest: digest.clone(),
        reason,
    };
    if size < FOOTER_LEN {
        return Err(footer_err("the blob is shorter than a footer"));
    }
    let toc_offset = parse_footer(&fetch(size - FOOTER_LEN, FOOTER_LEN)?).map_err(footer_err)?;
    if toc_offset >= size - FOOTER_LEN {
        return Err(footer_err("the TOC offset is past the footer"));
    }
    let member = fetch(toc_offset, size - FOOTER_LEN - toc_offset)?;
    let toc_json = extract_toc(&member).map_err(|source| Error::ReadToc {
        digest: digest.clone(),
        source,
    })?;
    let got = Digest::of(&toc_json);
    if got.as_str() != toc_digest {
        return Err(Error::TocVerify {
            digest: digest.clone(),
            expected: toc_digest.to_string(),
            got,
        });
    }
    let toc = decode_toc(&toc_json).map_err(|source| Error::ParseToc {
        digest: digest.clone(),
        source,
    })?;
    let index =
        LazyIndex::from_toc(&toc, toc_offset).map_err(|(entry, reason)| Error::TocEntry {
            digest: digest.clone(),
            entry,
            reason,
        })?;
    Ok(Opened {
        toc_json,
        toc_offset,
        index,
    })
}

/// The footer [`write()`] ends a blob with: an empty gzip member whose extra field names
/// `toc_offset`, 51 bytes as the Go package writes them.
fn footer(toc_offset: u64) -> Vec<u8> {
    let mut f = vec![
        0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 26, 0, b'S', b'G', 22, 0,
    ];
    f.extend_from_slice(format!("{toc_offset:016x}STARGZ").as_bytes());
    // An empty final stored block, then CRC32 and ISIZE of nothing.
    f.extend_from_slice(&[1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
    f
}

/// The TOC's JSON bytes from the blob's bytes between the TOC offset and the footer (a gzip
/// member holding a tar whose entry [`TOC_NAME`] is the TOC).
pub fn extract_toc(member: &[u8]) -> io::Result<Vec<u8>> {
    let mut archive = tar::Archive::new(GzDecoder::new(member));
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.path_bytes().as_ref() == TOC_NAME.as_bytes() {
            let mut json = Vec::new();
            entry.read_to_end(&mut json)?;
            return Ok(json);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("no {TOC_NAME} in the TOC member"),
    ))
}

/// The table of contents, as the Go `estargz` package writes it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Toc {
    pub version: u32,
    pub entries: Vec<TocEntry>,
}

/// One entry of the TOC: a file, or (`type: "chunk"`) a further chunk of the file before.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TocEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    #[serde(default, rename = "modtime", skip_serializing_if = "String::is_empty")]
    pub mod_time: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub link_name: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mode: u64,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub uid: u32,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub gid: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uname: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gname: String,
    /// Where the gzip member holding this file's (chunk's) first bytes starts in the blob.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: u64,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub dev_major: u32,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub dev_minor: u32,
    /// Values base64-encoded (Go's `[]byte` in JSON).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunk_offset: u64,
    /// 0 means "to the end of the file".
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunk_size: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub chunk_digest: String,
    /// Where the chunk starts inside its decompressed member (several small files may
    /// share one member).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub inner_offset: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// Parses the TOC's JSON.
pub fn decode_toc(json: &[u8]) -> serde_json::Result<Toc> {
    serde_json::from_slice(json)
}

impl LazyIndex {
    /// Builds the entries and chunk table from `toc`, whose member starts at `toc_offset`
    /// in the blob. `Err` names the entry and what is wrong with it.
    pub fn from_toc(toc: &Toc, toc_offset: u64) -> Result<LazyIndex, (String, &'static str)> {
        let mut out = LazyIndex::default();
        // Member boundaries: a chunk's member ends where the next member starts.
        let mut starts: Vec<u64> = toc
            .entries
            .iter()
            .filter(|e| e.kind == "reg" || e.kind == "chunk")
            .map(|e| e.offset)
            .collect();
        starts.push(toc_offset);
        starts.sort_unstable();
        starts.dedup();
        let member_len = |at: u64| -> Option<u64> {
            let i = starts.partition_point(|s| *s <= at);
            starts.get(i).map(|next| next - at)
        };
        // The file the next `chunk` entries belong to: (name, virtual start, size).
        let mut current: Option<(String, u64, u64)> = None;
        for e in &toc.entries {
            let bad = |reason| (e.name.clone(), reason);
            let trimmed = e.name.trim_start_matches("./").trim_end_matches('/');
            if trimmed == TOC_NAME || LANDMARKS.contains(&trimmed) {
                if trimmed == LANDMARKS[0] {
                    out.prefetch_end = Some(e.offset);
                }
                current = None;
                continue;
            }
            let kind = match e.kind.as_str() {
                "dir" => TarKind::Directory,
                "reg" => TarKind::Regular,
                "symlink" => TarKind::Symlink,
                "hardlink" => TarKind::HardLink,
                "char" => TarKind::Char,
                "block" => TarKind::Block,
                "fifo" => TarKind::Fifo,
                "chunk" => {
                    let Some((name, start, size)) = &current else {
                        return Err(bad("a chunk that follows no regular file"));
                    };
                    if *name != e.name {
                        return Err(bad("a chunk of another file than the one before"));
                    }
                    let chunk = chunk_of(e, *start, *size, member_len)
                        .ok_or(bad("the chunk lies outside its file or the blob's members"))?;
                    if out
                        .chunks
                        .last()
                        .is_some_and(|c| c.offset + c.len != chunk.offset)
                    {
                        return Err(bad("the chunks do not follow each other"));
                    }
                    out.chunks.push(chunk);
                    continue;
                }
                _ => return Err(bad("an unknown entry type")),
            };
            current = None;
            let mut xattrs = Vec::with_capacity(e.xattrs.len());
            for (k, v) in &e.xattrs {
                let value = base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map_err(|_| bad("an xattr value is not base64"))?;
                xattrs.push((k.as_bytes().into(), value.into()));
            }
            let mut entry = TarEntry {
                path: e.name.as_bytes().to_vec(),
                link: e.link_name.as_bytes().to_vec(),
                kind,
                perm: (e.mode & 0o7777) as u32,
                uid: e.uid,
                gid: e.gid,
                mtime: mtime(&e.mod_time).ok_or(bad("the modtime is not RFC 3339"))?,
                size: 0,
                offset: 0,
                dev_major: e.dev_major,
                dev_minor: e.dev_minor,
                xattrs,
            };
            if kind == TarKind::Regular {
                entry.size = e.size;
                entry.offset = out.data_len;
                if e.size > 0 {
                    if e.chunk_offset != 0 {
                        return Err(bad("a file's first chunk does not start at 0"));
                    }
                    let chunk = chunk_of(e, out.data_len, e.size, member_len)
                        .ok_or(bad("the chunk lies outside its file or the blob's members"))?;
                    out.chunks.push(chunk);
                    current = Some((e.name.clone(), out.data_len, e.size));
                    out.data_len = out.data_len.checked_add(e.size).ok_or(bad("too large"))?;
                }
            }
            out.entries.push(entry);
        }
        // Every file's chunks must cover it whole.
        let covered: u64 = out.chunks.iter().map(|c| c.len).sum();
        if covered != out.data_len {
            return Err((String::new(), "the chunks do not cover the files"));
        }
        Ok(out)
    }
}

fn chunk_of(
    e: &TocEntry,
    file_start: u64,
    file_size: u64,
    member_len: impl Fn(u64) -> Option<u64>,
) -> Option<Chunk> {
    if e.chunk_offset >= file_size {
        return None;
    }
    let len = match e.chunk_size {
        0 => file_size - e.chunk_offset,
        n if n <= file_size - e.chunk_offset => n,
        _ => return None,
    };
    let digest = if e.chunk_digest.is_empty() && e.chunk_offset == 0 && len == file_size {
        e.digest.clone()
    } else {
        e.chunk_digest.clone()
    };
    Some(Chunk {
        offset: file_start + e.chunk_offset,
        len,
        blob_offset: e.offset,
        blob_len: member_len(e.offset)?,
        inner_offset: e.inner_offset,
        digest,
    })
}

fn mtime(s: &str) -> Option<Timestamp> {
    if s.is_empty() {
        return Some(Timestamp::default());
    }
    let t: jiff::Timestamp = s.parse().ok()?;
    Some(Timestamp {
        sec: t.as_second(),
        nsec: t.subsec_nanosecond().max(0) as u32,
    })
}

/// Decompresses the member `member` (the chunk's `blob_len` bytes) and returns the chunk's
/// bytes, checked against its digest. `Err` is a short reason: bad gzip, short, mismatch.
pub fn decode_chunk(chunk: &Chunk, member: &[u8]) -> Result<Vec<u8>, &'static str> {
    crate::lazy::chunks::decode(
        chunk,
        GzDecoder::new(member),
        "the chunk's gzip member does not decompress",
        "the chunk's gzip member is shorter than the chunk",
    )
}

/// What [`write()`] made.
#[derive(Debug)]
pub struct Written {
    /// sha256 of the TOC JSON: the [`TOC_DIGEST_ANNOTATION`].
    pub toc_digest: Digest,
    /// sha256 of the decompressed blob (the layer's diff-id).
    pub diff_id: Digest,
    /// Bytes of the decompressed blob.
    pub uncompressed_size: u64,
}

/// Counts and hashes what passes to the blob.
struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `bytes` to `out` as one gzip member; the uncompressed bytes go to `diff`.
fn member(out: &mut Counting<impl Write>, diff: &mut Hasher, bytes: &[u8]) -> io::Result<()> {
    diff.update(bytes);
    let mut gz = GzEncoder::new(&mut *out, Compression::default());
    gz.write_all(bytes)?;
    gz.finish()?;
    Ok(())
}

/// Rewrites the layer tar `tar` as an eStargz blob into `out`, files split into chunks of
/// `chunk_size` bytes. The decompressed blob is `tar`'s entries followed by the TOC entry.
pub fn write(tar: impl Read, out: impl Write, chunk_size: u64) -> io::Result<Written> {
    let mut out = Counting { inner: out, n: 0 };
    let mut diff = Hasher::default();
    let mut uncompressed = 0u64;
    let mut toc = Toc {
        version: 1,
        entries: Vec::new(),
    };
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let header = entry.header().clone();
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .unwrap_or_default();
        let mut xattrs = BTreeMap::new();
        if let Some(pax) = entry.pax_extensions()? {
            for ext in pax {
                let ext = ext?;
                if let Some(k) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                    xattrs.insert(
                        k.to_string(),
                        base64::engine::general_purpose::STANDARD.encode(ext.value_bytes()),
                    );
                }
            }
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        // The entry's tar headers (long names, pax) as one member, re-emitted by `tar`.
        let mut one = tar::Builder::new(Vec::new());
        let mut h = header.clone();
        if !xattrs.is_empty() {
            let pax: Vec<(String, Vec<u8>)> = xattrs
                .iter()
                .map(|(k, v)| {
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(v)
                        .unwrap_or_default();
                    (format!("SCHILY.xattr.{k}"), raw)
                })
                .collect();
            one.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        let kind = header.entry_type();
        let is_device = matches!(kind, tar::EntryType::Char | tar::EntryType::Block);
        if kind.is_hard_link() || kind.is_symlink() {
            one.append_link(&mut h, &name, &link)?;
        } else {
            one.append_data(&mut h, &name, &data[..])?;
        }
        // Not `into_inner`: that ends the archive (two zero blocks), which would end the
        // whole blob's tar here for a client that reads it whole.
        let bytes = std::mem::take(one.get_mut());
        let padded = data.len().div_ceil(512) * 512;
        let head = &bytes[..bytes.len() - padded];
        member(&mut out, &mut diff, head)?;
        uncompressed += head.len() as u64;
        let mut e = TocEntry {
            name: name.clone(),
            kind: toc_kind(kind).to_string(),
            mod_time: header
                .mtime()
                .ok()
                .and_then(|s| jiff::Timestamp::from_second(s as i64).ok())
                .map(|t| t.to_string())
                .unwrap_or_default(),
            link_name: link,
            mode: u64::from(header.mode()?),
            uid: header.uid()? as u32,
            gid: header.gid()? as u32,
            // Only devices carry numbers; other entries may leave the fields blank.
            dev_major: if is_device {
                header.device_major()?.unwrap_or(0)
            } else {
                0
            },
            dev_minor: if is_device {
                header.device_minor()?.unwrap_or(0)
            } else {
                0
            },
            xattrs,
            ..TocEntry::default()
        };
        if kind.is_file() {
            e.size = data.len() as u64;
            e.digest = Digest::of(&data).to_string();
            let mut first = true;
            for (i, piece) in data.chunks(chunk_size.max(1) as usize).enumerate() {
                let mut c = if first {
                    std::mem::take(&mut e)
                } else {
                    TocEntry {
                        name: name.clone(),
                        kind: "chunk".into(),
                        ..TocEntry::default()
                    }
                };
                first = false;
                c.offset = out.n;
                c.chunk_offset = i as u64 * chunk_size;
                if data.len() as u64 > chunk_size {
                    c.chunk_size = piece.len() as u64;
                }
                c.chunk_digest = Digest::of(piece).to_string();
                let last = (i + 1) * chunk_size as usize >= data.len();
                let mut bytes = piece.to_vec();
                if last {
                    // The tar padding rides in the last chunk's member.
                    bytes.resize(piece.len() + padded - data.len(), 0);
                }
                member(&mut out, &mut diff, &bytes)?;
                uncompressed += bytes.len() as u64;
                toc.entries.push(c);
            }
            if first {
                toc.entries.push(e);
            }
        } else {
            toc.entries.push(e);
        }
    }
    let json = serde_json::to_vec(&toc).map_err(io::Error::other)?;
    let toc_offset = out.n;
    let mut t = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o644);
    h.set_size(json.len() as u64);
    t.append_data(&mut h, TOC_NAME, &json[..])?;
    let tail = t.into_inner()?;
    member(&mut out, &mut diff, &tail)?;
    uncompressed += tail.len() as u64;
    out.write_all(&footer(toc_offset))?;
    out.flush()?;
    Ok(Written {
        toc_digest: Digest::of(&json),
        diff_id: diff.finish(),
        uncompressed_size: uncompressed,
    })
}

fn toc_kind(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Directory => "dir",
        tar::EntryType::Symlink => "symlink",
        tar::EntryType::Link => "hardlink",
        tar::EntryType::Char => "char",
        tar::EntryType::Block => "block",
        tar::EntryType::Fifo => "fifo",
        _ => "reg",
    }
}

#[cfg(test)]
pub(crate) mod tests;
