//! zstd:chunked (containers/storage): a zstd layer whose every file (and every chunk of a
//! large file) starts a new zstd frame, followed by the table of contents — a zstd-compressed
//! JSON manifest in the CRFS/eStargz schema — in a skippable frame, and a footer in another
//! skippable frame. Decoders skip skippable frames, so the blob still decompresses to the
//! layer tar, byte for byte, and clients that know nothing of it pull it whole.
//!
//! ```text
//!   [frame: tar headers][frame: file chunk]…[frame: padding + headers]…
//!   [skippable: zstd(TOC JSON)][skippable: footer, 40 bytes (64 in newer writers), "GnUlInUx"]
//! ```
//!
//! Reading: the TOC's position comes from the layer annotations
//! (`io.github.containers.zstd-chunked.manifest-position`, or the older `io.containers.…`
//! form that Debian's skopeo 1.9 writes: `offset:length:uncompressed length:1`), the footer
//! only when no annotation names it; the compressed TOC is checked against the
//! `…manifest-checksum` annotation before it is decompressed. [`open`] turns it into the same
//! [`LazyIndex`] as eStargz: entries for strata-fs's index builder and a chunk table, each
//! chunk one zstd frame whose exact extent the TOC gives (`offset`, `endOffset`).
//!
//! Writing: [`write()`] keeps the input tar's bytes as they are (the decompressed blob *is*
//! the input, so its diff-id does not change) and only cuts frames: one before each
//! regular file's data, one per chunk, then the TOC and the 40-byte footer as skopeo 1.9
//! writes them, with both annotation forms.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::rc::Rc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::lazy::chunks::{Chunk, LazyIndex, Opened};
use crate::lazy::estargz::{Toc, TocEntry};
use crate::lazy::ChunkFetcher;

/// The annotation holding the sha256 of the compressed TOC (containers/storage ≥ 1.45).
pub const MANIFEST_CHECKSUM_ANNOTATION: &str =
    "io.github.containers.zstd-chunked.manifest-checksum";
/// The annotation naming where the compressed TOC is: `offset:length:uncompressed:1`.
pub const MANIFEST_POSITION_ANNOTATION: &str =
    "io.github.containers.zstd-chunked.manifest-position";
/// The older forms of the two annotations (Debian's skopeo 1.9 writes these).
pub const OLD_MANIFEST_CHECKSUM_ANNOTATION: &str = "io.containers.zstd-chunked.manifest-checksum";
pub const OLD_MANIFEST_POSITION_ANNOTATION: &str = "io.containers.zstd-chunked.manifest-position";
/// The last eight bytes of a zstd:chunked blob.
pub const FOOTER_MAGIC: &[u8; 8] = b"GnUlInUx";
/// Bytes of the footer [`write()`] ends a blob with (skippable frame header + 40).
pub const FOOTER_LEN: u64 = 48;
/// The footer of newer writers (a tar-split position added): skippable header + 64.
pub const NEW_FOOTER_LEN: u64 = 72;
/// The manifest type the position and footer carry: a CRFS-style TOC, the only one.
const MANIFEST_TYPE_CRFS: u64 = 1;
/// RFC 8878 3.1.2: skippable frames' magic is 0x184D2A50..=0x184D2A5F, little-endian;
/// containers/storage writes the first.
const SKIPPABLE_MAGIC: [u8; 4] = [0x50, 0x2a, 0x4d, 0x18];
/// A skippable frame's header: magic and a 32-bit little-endian length.
const SKIPPABLE_HEADER: u64 = 8;
/// The most TOC bytes (decompressed) a reader accepts, against a decompression bomb.
const MAX_TOC_LEN: u64 = 512 << 20;
/// Size of the chunks [`write()`] splits large files into.
pub const CHUNK_SIZE: u64 = 4 << 20;

/// Where the compressed TOC lies in the blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TocPosition {
    /// Start of the compressed TOC (just past its skippable frame's header).
    pub offset: u64,
    pub compressed_len: u64,
    pub uncompressed_len: u64,
}

impl TocPosition {
    /// The annotation's form: `offset:length:uncompressed length:1`.
    pub fn annotation(&self) -> String {
        format!(
            "{}:{}:{}:{MANIFEST_TYPE_CRFS}",
            self.offset, self.compressed_len, self.uncompressed_len
        )
    }
}

/// Parses a `…manifest-position` annotation; `Err` says what is wrong with it.
pub fn parse_position(s: &str) -> Result<TocPosition, &'static str> {
    let parts: Vec<u64> = s
        .split(':')
        .map(|p| p.trim().parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| "the manifest position is not four numbers separated by ':'")?;
    match parts[..] {
        [offset, compressed_len, uncompressed_len, MANIFEST_TYPE_CRFS] => Ok(TocPosition {
            offset,
            compressed_len,
            uncompressed_len,
        }),
        [_, _, _, _] => Err("the manifest type is not 1 (CRFS)"),
        _ => Err("the manifest position is not four numbers separated by ':'"),
    }
}

/// Where the TOC is, from the blob's last bytes (at most [`NEW_FOOTER_LEN`]); `Err` says
/// why they are not a zstd:chunked footer.
pub fn parse_footer(tail: &[u8]) -> Result<TocPosition, &'static str> {
    if tail.len() < FOOTER_LEN as usize || !tail.ends_with(FOOTER_MAGIC) {
        return Err("the blob does not end in the zstd:chunked footer magic");
    }
    for total in [NEW_FOOTER_LEN, FOOTER_LEN] {
        let Some(frame) = tail.len().checked_sub(total as usize).map(|at| &tail[at..]) else {
            continue;
        };
        let data_len = total - SKIPPABLE_HEADER;
        if frame[..4] != SKIPPABLE_MAGIC || le32(&frame[4..8]) != data_len as u32 {
            continue;
        }
        let data = &frame[SKIPPABLE_HEADER as usize..];
        if le64(&data[24..32]) != MANIFEST_TYPE_CRFS {
            return Err("the footer's manifest type is not 1 (CRFS)");
        }
        return Ok(TocPosition {
            offset: le64(&data[0..8]),
            compressed_len: le64(&data[8..16]),
            uncompressed_len: le64(&data[16..24]),
        });
    }
    Err("the footer is not a skippable frame of 40 or 64 bytes")
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().expect("four bytes"))
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("eight bytes"))
}

/// The TOC checksum a layer's annotations carry (new form first): `Some` marks the layer
/// as zstd:chunked.
pub fn manifest_checksum(annotations: &BTreeMap<String, String>) -> Option<&str> {
    annotations
        .get(MANIFEST_CHECKSUM_ANNOTATION)
        .or_else(|| annotations.get(OLD_MANIFEST_CHECKSUM_ANNOTATION))
        .map(String::as_str)
}

/// Reads the TOC of zstd:chunked blob `digest` (`size` bytes) through `fetcher` — one
/// Range request when the annotations give its position, two when only the footer does —
/// checks it against the annotated checksum and builds the index entries and chunk table.
pub fn open(
    fetcher: &dyn ChunkFetcher,
    digest: &Digest,
    size: u64,
    annotations: &BTreeMap<String, String>,
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
    let not = |reason| Error::NotZstdChunked {
        digest: digest.clone(),
        reason,
    };
    let checksum = manifest_checksum(annotations).ok_or(not("no manifest-checksum annotation"))?;
    let annotated = annotations
        .get(MANIFEST_POSITION_ANNOTATION)
        .or_else(|| annotations.get(OLD_MANIFEST_POSITION_ANNOTATION));
    let position = match annotated {
        Some(s) => parse_position(s).map_err(not)?,
        None => {
            let n = size.min(NEW_FOOTER_LEN);
            parse_footer(&fetch(size - n, n)?).map_err(not)?
        }
    };
    let end = position.offset.checked_add(position.compressed_len);
    if position.offset < SKIPPABLE_HEADER || end.is_none_or(|end| end > size) {
        return Err(not("the manifest position lies outside the blob"));
    }
    if position.uncompressed_len > MAX_TOC_LEN {
        return Err(not("the manifest is larger than 512 MiB"));
    }
    let compressed = fetch(position.offset, position.compressed_len)?;
    let got = Digest::of(&compressed);
    if got.as_str() != checksum {
        return Err(Error::TocVerify {
            digest: digest.clone(),
            expected: checksum.to_string(),
            got,
        });
    }
    let toc_json = decompress_toc(&compressed, position.uncompressed_len).map_err(|source| {
        Error::ReadToc {
            digest: digest.clone(),
            source,
        }
    })?;
    let toc = decode_toc(&toc_json).map_err(|source| Error::ParseToc {
        digest: digest.clone(),
        source,
    })?;
    // The data frames end where the TOC's skippable frame starts.
    let toc_offset = position.offset - SKIPPABLE_HEADER;
    let index = index_from_toc(&toc, toc_offset).map_err(|(entry, reason)| Error::TocEntry {
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

/// The TOC's JSON from its compressed bytes, exactly `len` bytes long.
fn decompress_toc(compressed: &[u8], len: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len as usize);
    zstd::stream::read::Decoder::with_buffer(compressed)?
        .take(len + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 != len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the manifest decompresses to {} bytes, its position says {len}",
                out.len()
            ),
        ));
    }
    Ok(out)
}

/// The TOC as containers/storage writes it: eStargz's schema, plus where each file's frames
/// end and which chunks are holes.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ZstdToc {
    pub version: u32,
    pub entries: Vec<ZstdTocEntry>,
}

/// One entry: eStargz's fields, and the zstd:chunked ones.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ZstdTocEntry {
    #[serde(flatten)]
    pub entry: TocEntry,
    /// Where the frames of a file (or, in newer writers, of a chunk) end in the blob.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub end_offset: u64,
    /// `zeros` for a hole of a sparse file (whose frame still holds its zeros), else data.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub chunk_type: String,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Parses the TOC's JSON.
pub fn decode_toc(json: &[u8]) -> serde_json::Result<ZstdToc> {
    serde_json::from_slice(json)
}

/// The entries and chunk table of `toc`, whose data frames end at `data_end`: eStargz's
/// builder (one meaning of each field, one place), each chunk then cut to its own frame,
/// which the TOC's offsets give exactly (eStargz's builder only knows where the next
/// member starts, which here may be a tar header's frame later).
pub fn index_from_toc(toc: &ZstdToc, data_end: u64) -> Result<LazyIndex, (String, &'static str)> {
    let base = Toc {
        version: toc.version,
        entries: toc.entries.iter().map(|e| e.entry.clone()).collect(),
    };
    let mut index = LazyIndex::from_toc(&base, data_end)?;
    let ends = frame_ends(&toc.entries);
    for c in &mut index.chunks {
        if let Some(end) = ends.get(&c.blob_offset) {
            let exact = end.saturating_sub(c.blob_offset);
            if exact > 0 && exact < c.blob_len {
                c.blob_len = exact;
            }
        }
    }
    Ok(index)
}

/// Frame start → frame end, for every chunk whose end the TOC tells: a chunk's own
/// `endOffset`, else the next chunk's start, else (the file's last) the file's `endOffset`.
fn frame_ends(entries: &[ZstdTocEntry]) -> HashMap<u64, u64> {
    let mut ends = HashMap::new();
    let mut i = 0;
    while i < entries.len() {
        let file = &entries[i];
        i += 1;
        if file.entry.kind != "reg" || file.entry.offset == 0 {
            continue;
        }
        let mut frames = vec![file];
        while i < entries.len()
            && entries[i].entry.kind == "chunk"
            && entries[i].entry.name == file.entry.name
        {
            frames.push(&entries[i]);
            i += 1;
        }
        for (k, f) in frames.iter().enumerate() {
            let end = match (f.end_offset, frames.get(k + 1)) {
                // The file's `endOffset` is its last frame's end, not its first's.
                (e, _) if e > 0 && (k > 0 || frames.len() == 1) => e,
                (_, Some(next)) => next.entry.offset,
                (_, None) => file.end_offset,
            };
            if end > f.entry.offset {
                ends.insert(f.entry.offset, end);
            }
        }
    }
    ends
}

/// Decompresses the chunk's frame (`frame`, the chunk's `blob_len` bytes) and returns the
/// chunk's bytes, checked against its digest. `Err` is a short reason.
pub fn decode_chunk(chunk: &Chunk, frame: &[u8]) -> Result<Vec<u8>, &'static str> {
    const BAD: &str = "the chunk's zstd frame does not decompress";
    let decoder = zstd::stream::read::Decoder::with_buffer(frame).map_err(|_| BAD)?;
    crate::lazy::chunks::decode(
        chunk,
        decoder,
        BAD,
        "the chunk's zstd frame is shorter than the chunk",
    )
}

/// What [`write()`] made.
#[derive(Debug)]
pub struct Written {
    /// sha256 of the compressed TOC: the `…manifest-checksum` annotation.
    pub manifest_checksum: Digest,
    pub position: TocPosition,
    /// sha256 of the decompressed blob: the input tar's, unchanged.
    pub diff_id: Digest,
    /// Bytes of the decompressed blob.
    pub uncompressed_size: u64,
}

impl Written {
    /// The layer annotations that mark the blob as zstd:chunked, in both forms (readers
    /// before containers/storage 1.45 know only the older one).
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let position = self.position.annotation();
        let checksum = self.manifest_checksum.to_string();
        BTreeMap::from([
            (MANIFEST_CHECKSUM_ANNOTATION.to_string(), checksum.clone()),
            (MANIFEST_POSITION_ANNOTATION.to_string(), position.clone()),
            (OLD_MANIFEST_CHECKSUM_ANNOTATION.to_string(), checksum),
            (OLD_MANIFEST_POSITION_ANNOTATION.to_string(), position),
        ])
    }
}

/// Keeps a copy of every byte the tar reader takes, so the blob carries the input's exact
/// bytes (headers, padding, the end-of-archive blocks) and not a re-encoding of them.
struct Tee<R> {
    inner: R,
    seen: Rc<RefCell<Vec<u8>>>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen.borrow_mut().extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

/// The blob being written: bytes go into the open zstd frame; `cut` closes it.
struct Frames<W> {
    out: W,
    /// Bytes of the blob written so far.
    at: u64,
    frame: Option<zstd::stream::write::Encoder<'static, Vec<u8>>>,
    diff: Hasher,
    uncompressed: u64,
}

impl<W: Write> Frames<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.diff.update(bytes);
        self.uncompressed += bytes.len() as u64;
        if self.frame.is_none() {
            self.frame = Some(zstd::stream::write::Encoder::new(Vec::new(), 3)?);
        }
        self.frame.as_mut().expect("opened above").write_all(bytes)
    }

    /// Ends the open frame, if any; the next bytes start a new one at [`Frames::at`].
    fn cut(&mut self) -> io::Result<()> {
        if let Some(frame) = self.frame.take() {
            let bytes = frame.finish()?;
            self.out.write_all(&bytes)?;
            self.at += bytes.len() as u64;
        }
        Ok(())
    }

    /// A skippable frame holding `data`; returns where `data` starts.
    fn skippable(&mut self, data: &[u8]) -> io::Result<u64> {
        self.cut()?;
        let len = u32::try_from(data.len()).map_err(io::Error::other)?;
        self.out.write_all(&SKIPPABLE_MAGIC)?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(data)?;
        let start = self.at + SKIPPABLE_HEADER;
        self.at = start + data.len() as u64;
        Ok(start)
    }
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// The TOC entry of a tar entry (no offsets yet); `None` for entries the TOC does not list
/// (pax global headers), whose bytes stay in the stream all the same.
fn toc_entry<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Option<ZstdTocEntry>> {
    let header = entry.header().clone();
    let name = String::from_utf8(entry.path_bytes().into_owned())
        .map_err(|e| invalid(format!("entry name {:?} is not UTF-8", e.as_bytes())))?;
    let kind = match header.entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous => "reg",
        tar::EntryType::Directory => "dir",
        tar::EntryType::Symlink => "symlink",
        tar::EntryType::Link => "hardlink",
        tar::EntryType::Char => "char",
        tar::EntryType::Block => "block",
        tar::EntryType::Fifo => "fifo",
        tar::EntryType::GNUSparse => {
            return Err(invalid(format!(
                "entry {name}: GNU sparse tar entries cannot be written as zstd:chunked"
            )))
        }
        _ => return Ok(None),
    };
    let link_name = match entry.link_name_bytes() {
        Some(l) => String::from_utf8(l.into_owned())
            .map_err(|_| invalid(format!("entry {name}: its link target is not UTF-8")))?,
        None => String::new(),
    };
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
    let device = matches!(kind, "char" | "block");
    let number = |n: io::Result<Option<u32>>| -> io::Result<u32> {
        Ok(if device { n?.unwrap_or(0) } else { 0 })
    };
    let old = header.as_old();
    let mod_time = jiff::Timestamp::from_second(blank_or(header.mtime(), &old.mtime)? as i64)
        .map(|t| t.to_string())
        .map_err(|_| invalid(format!("entry {name}: its mtime is out of range")))?;
    Ok(Some(ZstdTocEntry {
        entry: TocEntry {
            kind: kind.to_string(),
            mod_time,
            link_name,
            mode: u64::from(blank_or(header.mode(), &old.mode)?),
            uid: u32::try_from(blank_or(header.uid(), &old.uid)?).map_err(io::Error::other)?,
            gid: u32::try_from(blank_or(header.gid(), &old.gid)?).map_err(io::Error::other)?,
            dev_major: number(header.device_major())?,
            dev_minor: number(header.device_minor())?,
            xattrs,
            name,
            ..TocEntry::default()
        },
        ..ZstdTocEntry::default()
    }))
}

/// A numeric header field's value, 0 when the field is blank (all NULs or spaces), as Go's
/// archive/tar and strata's own indexer read it.
fn blank_or<T: Default>(value: io::Result<T>, raw: &[u8]) -> io::Result<T> {
    match value {
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(T::default()),
        v => v,
    }
}

/// Rewrites the layer tar `tar` as a zstd:chunked blob into `out`, regular files cut into
/// frames of `chunk_size` bytes. The blob decompresses to `tar`'s exact bytes.
pub fn write(tar: impl Read, out: impl Write, chunk_size: u64) -> io::Result<Written> {
    let chunk_size = chunk_size.max(1);
    let seen = Rc::new(RefCell::new(Vec::new()));
    let mut frames = Frames {
        out,
        at: 0,
        frame: None,
        diff: Hasher::default(),
        uncompressed: 0,
    };
    let mut toc = ZstdToc {
        version: 1,
        entries: Vec::new(),
    };
    let mut archive = tar::Archive::new(Tee {
        inner: tar,
        seen: Rc::clone(&seen),
    });
    for entry in archive.entries()? {
        let mut entry = entry?;
        // The previous file's padding and this entry's headers.
        frames.write(&seen.take())?;
        let Some(mut e) = toc_entry(&mut entry)? else {
            continue;
        };
        let size = entry.size();
        if e.entry.kind == "reg" && size > 0 {
            frames.cut()?;
            e.entry.size = size;
            e.entry.offset = frames.at;
            let mut digest = Hasher::default();
            let mut chunks: Vec<ZstdTocEntry> = Vec::new();
            let mut done = 0u64;
            while done < size {
                let want = chunk_size.min(size - done);
                io::copy(&mut (&mut entry).take(want), &mut io::sink())?;
                let piece = seen.take();
                if piece.len() as u64 != want {
                    return Err(invalid(format!(
                        "entry {}: the tar ends early",
                        e.entry.name
                    )));
                }
                digest.update(&piece);
                let mut c = ZstdTocEntry::default();
                c.entry.kind = "chunk".into();
                c.entry.name = e.entry.name.clone();
                c.entry.offset = frames.at;
                c.entry.chunk_offset = done;
                c.entry.chunk_size = want;
                c.entry.chunk_digest = Digest::of(&piece).to_string();
                frames.write(&piece)?;
                frames.cut()?;
                chunks.push(c);
                done += want;
            }
            e.entry.digest = digest.finish().to_string();
            e.end_offset = frames.at;
            // The first chunk rides on the file's entry; one chunk needs no chunk fields.
            let first = chunks.remove(0);
            if !chunks.is_empty() {
                e.entry.chunk_size = first.entry.chunk_size;
                e.entry.chunk_digest = first.entry.chunk_digest;
            }
            toc.entries.push(e);
            toc.entries.extend(chunks);
        } else {
            if e.entry.kind == "reg" {
                e.entry.size = size;
            }
            toc.entries.push(e);
        }
    }
    // The end-of-archive blocks and whatever follows them, as they were.
    io::copy(&mut archive.into_inner(), &mut io::sink())?;
    frames.write(&seen.take())?;
    frames.cut()?;
    let json = serde_json::to_vec(&toc).map_err(io::Error::other)?;
    let compressed = zstd::encode_all(&json[..], 3)?;
    let offset = frames.skippable(&compressed)?;
    let position = TocPosition {
        offset,
        compressed_len: compressed.len() as u64,
        uncompressed_len: json.len() as u64,
    };
    frames.skippable(&footer(&position))?;
    frames.out.flush()?;
    Ok(Written {
        manifest_checksum: Digest::of(&compressed),
        position,
        diff_id: frames.diff.finish(),
        uncompressed_size: frames.uncompressed,
    })
}

/// The footer's 40 data bytes: offset, lengths and type of the TOC, little-endian, and the
/// magic.
fn footer(p: &TocPosition) -> Vec<u8> {
    let mut f = Vec::with_capacity(40);
    for n in [
        p.offset,
        p.compressed_len,
        p.uncompressed_len,
        MANIFEST_TYPE_CRFS,
    ] {
        f.extend_from_slice(&n.to_le_bytes());
    }
    f.extend_from_slice(FOOTER_MAGIC);
    f
}

#[cfg(test)]
mod tests;
