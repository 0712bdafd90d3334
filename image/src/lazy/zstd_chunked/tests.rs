use std::io::Read;

use strata_fs::attr::FileKind;
use strata_fs::layer::index::{build_index, build_index_from_entries, IndexLimits, IndexedLayer};
use strata_fs::layer::{Layer, LayerDirEntry, LayerPath};
use strata_fs::Errno;

use super::*;
use crate::lazy::estargz::tests::{hdr, layer_tar};
use crate::lazy::{Format, LazyData};

struct Lazy {
    _dir: tempfile::TempDir,
    layer: IndexedLayer<LazyData<Vec<u8>>>,
    chunks: Vec<Chunk>,
}

fn lazy(blob: Vec<u8>, annotations: &BTreeMap<String, String>) -> Result<Lazy> {
    let digest = Digest::of(&blob);
    let size = blob.len() as u64;
    let opened = open(&blob, &digest, size, annotations)?;
    let index = opened.index;
    let dir = tempfile::tempdir().unwrap();
    build_index_from_entries(
        index.entries,
        index.data_len,
        dir.path(),
        &IndexLimits::default(),
    )
    .unwrap();
    let path = dir.path().join("index");
    let local = std::fs::File::open(&path).unwrap();
    let data = LazyData::new(
        Format::ZstdChunked,
        index.chunks.clone(),
        index.data_len,
        blob,
        local,
    )
    .unwrap();
    Ok(Lazy {
        layer: IndexedLayer::with_source(&path, data).unwrap(),
        _dir: dir,
        chunks: index.chunks,
    })
}

/// Everything a layer shows, one line per entry: name, attributes, link, xattrs, bytes.
fn view(layer: &dyn Layer, dir: &LayerPath, out: &mut Vec<String>) {
    let mut entries = layer.read_dir(dir).unwrap();
    entries.sort_by_key(|e| match e {
        LayerDirEntry::Entry { name, .. } | LayerDirEntry::Whiteout(name) => name.clone(),
    });
    for e in entries {
        let LayerDirEntry::Entry { name, .. } = e else {
            out.push(format!("{e:?}"));
            continue;
        };
        let path = dir.join(&name);
        let a = layer.stat(&path).unwrap();
        let mut line = format!(
            "{name:?} {:?} {:o} {}:{} size={} nlink={} rdev={} mtime={}",
            a.kind, a.perm, a.uid, a.gid, a.size, a.nlink, a.rdev, a.mtime.sec
        );
        for k in layer.list_xattrs(&path).unwrap() {
            let v = layer.get_xattr(&path, &k).unwrap();
            line.push_str(&format!(" {k:?}={v:?}"));
        }
        match a.kind {
            FileKind::Directory => {
                out.push(line);
                view(layer, &path, out);
                continue;
            }
            FileKind::Symlink => line.push_str(&format!(" -> {:?}", layer.read_link(&path))),
            FileKind::Regular => {
                let f = layer.open(&path).unwrap();
                let mut buf = vec![0; f.len() as usize];
                let n = f.read_at(&mut buf, 0).unwrap();
                line.push_str(&format!(" {}", Digest::of(&buf[..n])));
            }
            _ => {}
        }
        out.push(line);
    }
}

fn whole_view(tar: &[u8]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    build_index(&mut &tar[..], dir.path(), &IndexLimits::default()).unwrap();
    let layer = IndexedLayer::open(dir.path()).unwrap();
    let mut out = Vec::new();
    view(&layer, &LayerPath::root(), &mut out);
    out
}

fn lazy_view(l: &Lazy) -> Vec<String> {
    let mut out = Vec::new();
    view(&l.layer, &LayerPath::root(), &mut out);
    out
}

fn unzstd(blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(blob)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn written_blob_decompresses_to_the_input_tar_and_reads_lazily_like_it() {
    let (tar, big) = layer_tar();
    let mut blob = Vec::new();
    let w = write(&tar[..], &mut blob, 4096).unwrap();
    // Whole, the blob is an ordinary zstd layer holding the input's very bytes.
    assert_eq!(unzstd(&blob), tar);
    assert_eq!(w.diff_id, Digest::of(&tar));
    assert_eq!(w.uncompressed_size, tar.len() as u64);

    let l = lazy(blob, &w.annotations()).unwrap();
    let view = lazy_view(&l);
    assert_eq!(view, whole_view(&tar));
    assert!(view.iter().any(|v| v.contains("\"hostname\"")
        && v.contains("1000:100")
        && v.contains("\"user.note\"=Some([104, 105])")));
    // A read across a chunk boundary of the 10 000-byte file (three frames).
    let f = l
        .layer
        .open(&LayerPath::from_bytes(b"usr/bin/big"))
        .unwrap();
    let mut buf = vec![0; 100];
    assert_eq!(f.read_at(&mut buf, 4050).unwrap(), 100);
    assert_eq!(buf, big[4050..4150]);
    assert_eq!(l.chunks.len(), 1 + 3);
}

#[test]
fn each_chunk_is_exactly_its_own_frame() {
    let (tar, _) = layer_tar();
    let mut blob = Vec::new();
    let w = write(&tar[..], &mut blob, 4096).unwrap();
    let l = lazy(blob.clone(), &w.annotations()).unwrap();
    for c in &l.chunks {
        let frame = &blob[c.blob_offset as usize..(c.blob_offset + c.blob_len) as usize];
        // One whole frame: its decompressed size is the chunk's, no header frame after it.
        let mut out = Vec::new();
        zstd::stream::read::Decoder::with_buffer(frame)
            .unwrap()
            .single_frame()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out.len() as u64, c.len, "chunk at {}", c.blob_offset);
        assert_eq!(
            zstd::zstd_safe::find_frame_compressed_size(frame),
            Ok(frame.len())
        );
    }
}

#[test]
fn the_position_comes_from_either_annotation_form_or_else_the_footer() {
    let (tar, _) = layer_tar();
    let mut blob = Vec::new();
    let w = write(&tar[..], &mut blob, 4096).unwrap();
    let want = whole_view(&tar);
    let all = w.annotations();
    let only = |keys: &[&str]| -> BTreeMap<String, String> {
        all.iter()
            .filter(|(k, _)| keys.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    for annotations in [
        only(&[MANIFEST_CHECKSUM_ANNOTATION, MANIFEST_POSITION_ANNOTATION]),
        only(&[
            OLD_MANIFEST_CHECKSUM_ANNOTATION,
            OLD_MANIFEST_POSITION_ANNOTATION,
        ]),
        only(&[MANIFEST_CHECKSUM_ANNOTATION]),
    ] {
        let l = lazy(blob.clone(), &annotations).unwrap();
        assert_eq!(lazy_view(&l), want, "{annotations:?}");
    }
    let n = blob.len();
    assert_eq!(
        parse_footer(&blob[n - FOOTER_LEN as usize..]),
        Ok(w.position)
    );
    assert_eq!(
        parse_footer(&blob[n - NEW_FOOTER_LEN as usize..]),
        Ok(w.position)
    );
    // No checksum: not a zstd:chunked layer (it is pulled whole).
    let err = lazy(
        blob.clone(),
        &only(&[
            MANIFEST_POSITION_ANNOTATION,
            OLD_MANIFEST_POSITION_ANNOTATION,
        ]),
    )
    .err()
    .unwrap();
    assert!(matches!(err, Error::NotZstdChunked { .. }), "{err}");
}

#[test]
fn the_newer_64_byte_footer_parses() {
    let mut data = Vec::new();
    for n in [1000u64, 200, 3000, 1, 1208, 50, 400] {
        data.extend_from_slice(&n.to_le_bytes());
    }
    data.extend_from_slice(FOOTER_MAGIC);
    let mut tail = b"some frame bytes".to_vec();
    tail.extend_from_slice(&SKIPPABLE_MAGIC);
    tail.extend_from_slice(&64u32.to_le_bytes());
    tail.extend_from_slice(&data);
    let want = TocPosition {
        offset: 1000,
        compressed_len: 200,
        uncompressed_len: 3000,
    };
    assert_eq!(parse_footer(&tail[tail.len() - 72..]), Ok(want));
    // Another manifest type, another magic, a frame of another length: refused.
    let mut bad = tail.clone();
    let at = bad.len() - 40;
    bad[at] = 2;
    assert!(parse_footer(&bad[bad.len() - 72..]).is_err());
    let mut bad = tail.clone();
    *bad.last_mut().unwrap() = b'y';
    assert!(parse_footer(&bad[bad.len() - 72..]).is_err());
    let mut bad = tail;
    let at = bad.len() - 68;
    bad[at] = 63;
    assert!(parse_footer(&bad[bad.len() - 72..]).is_err());
}

#[test]
fn positions_parse_and_bad_ones_are_named() {
    assert_eq!(
        parse_position("300949:978:3599:1"),
        Ok(TocPosition {
            offset: 300949,
            compressed_len: 978,
            uncompressed_len: 3599
        })
    );
    assert!(parse_position("1:2:3:2").unwrap_err().contains("type"));
    assert!(parse_position("1:2:3").is_err());
    assert!(parse_position("a:2:3:1").is_err());
    let p = TocPosition {
        offset: 5,
        compressed_len: 6,
        uncompressed_len: 7,
    };
    assert_eq!(parse_position(&p.annotation()), Ok(p));
}

#[test]
fn a_toc_that_does_not_match_its_checksum_or_lies_outside_the_blob_is_refused() {
    let (tar, _) = layer_tar();
    let mut blob = Vec::new();
    let w = write(&tar[..], &mut blob, CHUNK_SIZE).unwrap();
    let mut annotations = w.annotations();
    annotations.insert(
        MANIFEST_CHECKSUM_ANNOTATION.into(),
        Digest::of(b"other").to_string(),
    );
    let err = lazy(blob.clone(), &annotations).err().unwrap();
    assert!(matches!(err, Error::TocVerify { .. }), "{err}");

    let mut annotations = w.annotations();
    let past = TocPosition {
        offset: blob.len() as u64,
        ..w.position
    };
    annotations.insert(MANIFEST_POSITION_ANNOTATION.into(), past.annotation());
    let err = lazy(blob.clone(), &annotations).err().unwrap();
    assert!(err.to_string().contains("outside the blob"), "{err}");

    // The uncompressed length must be the TOC's.
    let mut annotations = w.annotations();
    let short = TocPosition {
        uncompressed_len: w.position.uncompressed_len - 1,
        ..w.position
    };
    annotations.insert(MANIFEST_POSITION_ANNOTATION.into(), short.annotation());
    let err = lazy(blob, &annotations).err().unwrap();
    assert!(matches!(err, Error::ReadToc { .. }), "{err}");
}

#[test]
fn a_corrupt_frame_is_eio_and_other_files_still_read() {
    let (tar, _) = layer_tar();
    let mut blob = Vec::new();
    let w = write(&tar[..], &mut blob, 4096).unwrap();
    let opened = open(
        &blob,
        &Digest::of(&blob),
        blob.len() as u64,
        &w.annotations(),
    )
    .unwrap();
    // The second chunk of usr/bin/big: flip a byte in its frame.
    let c = &opened.index.chunks[2];
    let mut bad = blob.clone();
    bad[(c.blob_offset + c.blob_len / 2) as usize] ^= 0xff;
    let l = lazy(bad, &w.annotations()).unwrap();
    let f = l
        .layer
        .open(&LayerPath::from_bytes(b"usr/bin/big"))
        .unwrap();
    let mut buf = vec![0; 100];
    assert_eq!(f.read_at(&mut buf, 0).unwrap(), 100);
    assert_eq!(f.read_at(&mut buf, 4096 + 10), Err(Errno::EIO));
    let host = l
        .layer
        .open(&LayerPath::from_bytes(b"etc/hostname"))
        .unwrap();
    assert_eq!(host.read_at(&mut buf, 0).unwrap(), 6);
    // decode_chunk itself: the right frame with another digest is refused.
    let good = &blob[c.blob_offset as usize..(c.blob_offset + c.blob_len) as usize];
    let mut other = c.clone();
    other.digest = Digest::of(b"x").to_string();
    assert!(decode_chunk(&other, good).unwrap_err().contains("digest"));
    assert_eq!(decode_chunk(c, good).unwrap().len() as u64, c.len);
}

#[test]
fn long_names_pax_headers_and_the_tars_own_bytes_survive() {
    // A 200-byte name (a GNU long-name or pax header before it), an empty file, a hole-
    // filled file and trailing zero blocks beyond the two of the end of the archive.
    let long = format!("d/{}", "n".repeat(200));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = hdr();
    h.set_size(3);
    b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
    let mut h = hdr();
    h.set_size(0);
    b.append_data(&mut h, "empty", &[][..]).unwrap();
    let zeros = vec![0u8; 9000];
    let mut h = hdr();
    h.set_size(zeros.len() as u64);
    b.append_data(&mut h, "zeros", &zeros[..]).unwrap();
    let mut tar = b.into_inner().unwrap();
    tar.extend_from_slice(&[0; 2048]);
    let mut blob = Vec::new();
    let w = write(&tar[..], &mut blob, 4096).unwrap();
    assert_eq!(unzstd(&blob), tar);
    let l = lazy(blob, &w.annotations()).unwrap();
    assert_eq!(lazy_view(&l), whole_view(&tar));
    let f = l
        .layer
        .open(&LayerPath::from_bytes(long.as_bytes()))
        .unwrap();
    let mut buf = [0u8; 3];
    f.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"abc");
}

#[test]
fn decodes_containers_storage_field_names() {
    // As skopeo 1.9 writes them: endOffset on the file, only offset on further chunks,
    // chunkType for holes, access and change times.
    let json = br#"{"version":1,"entries":[
      {"type":"dir","name":".","mode":493,"modtime":"2026-12-06T02:47:51Z","accesstime":"0001-01-01T00:00:00Z"},
      {"type":"reg","name":"sparse","mode":420,"size":10,"modtime":"2026-12-06T02:47:51Z",
       "digest":"sha256:aa","offset":368,"endOffset":619,"chunkSize":8,"chunkDigest":"sha256:bb","chunkType":"zeros"},
      {"type":"chunk","name":"sparse","offset":604,"chunkSize":2,"chunkOffset":8,"chunkDigest":"sha256:cc"},
      {"type":"hardlink","name":"l","linkName":"sparse","mode":420}
    ]}"#;
    let toc = decode_toc(json).unwrap();
    assert_eq!(toc.entries[1].end_offset, 619);
    assert_eq!(toc.entries[1].chunk_type, "zeros");
    assert_eq!(toc.entries[3].entry.link_name, "sparse");
    let index = index_from_toc(&toc, 700).unwrap();
    let frames: Vec<_> = index
        .chunks
        .iter()
        .map(|c| {
            (
                c.offset,
                c.len,
                c.blob_offset,
                c.blob_len,
                c.digest.as_str(),
            )
        })
        .collect();
    assert_eq!(
        frames,
        [
            (0, 8, 368, 604 - 368, "sha256:bb"),
            (8, 2, 604, 619 - 604, "sha256:cc")
        ]
    );
}
