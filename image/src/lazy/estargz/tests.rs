use std::ffi::OsStr;
use std::io::Read;
use std::sync::Arc;

use flate2::read::MultiGzDecoder;
use strata_fs::layer::index::{build_index, build_index_from_entries, IndexLimits, IndexedLayer};
use strata_fs::layer::{Layer, LayerDirEntry, LayerPath};

use super::*;
use crate::lazy::{Format, LazyData};

/// A header with every numeric field set, as real layer tars have them.
pub(crate) fn hdr() -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// A layer with a directory, small and chunked files, links, a fifo and an xattr.
pub(crate) fn layer_tar() -> (Vec<u8>, Vec<u8>) {
    let big: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = hdr();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o750);
    h.set_uid(7);
    h.set_size(0);
    b.append_data(&mut h, "etc/", &[][..]).unwrap();
    let mut h = hdr();
    h.set_mode(0o640);
    h.set_uid(1000);
    h.set_gid(100);
    h.set_mtime(1_700_000_000);
    h.set_size(6);
    b.append_pax_extensions([("SCHILY.xattr.user.note", &b"hi"[..])])
        .unwrap();
    b.append_data(&mut h, "etc/hostname", &b"strata"[..])
        .unwrap();
    let mut h = hdr();
    h.set_mode(0o755);
    h.set_size(big.len() as u64);
    b.append_data(&mut h, "usr/bin/big", &big[..]).unwrap();
    let mut h = hdr();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    b.append_link(&mut h, "usr/bin/big2", "usr/bin/big")
        .unwrap();
    let mut h = hdr();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "etc/link", "/nowhere").unwrap();
    let mut h = hdr();
    h.set_entry_type(tar::EntryType::Fifo);
    h.set_size(0);
    b.append_data(&mut h, "run/fifo", &[][..]).unwrap();
    let mut h = hdr();
    h.set_size(0);
    b.append_data(&mut h, "empty", &[][..]).unwrap();
    (b.into_inner().unwrap(), big)
}

fn entry_name(e: LayerDirEntry) -> std::ffi::OsString {
    match e {
        LayerDirEntry::Entry { name, .. } | LayerDirEntry::Whiteout(name) => name,
    }
}

fn p(path: &str) -> LayerPath {
    LayerPath::from_bytes(path.as_bytes())
}

struct Opened {
    _dir: tempfile::TempDir,
    layer: IndexedLayer<LazyData<Vec<u8>>>,
}

/// Reads `blob` as a client does: footer, TOC, digest check, index, lazy data.
fn open(blob: Vec<u8>, toc_digest: &Digest) -> Opened {
    let n = blob.len() as u64;
    let toc_offset = parse_footer(&blob[(n - FOOTER_LEN) as usize..]).unwrap();
    let json = extract_toc(&blob[toc_offset as usize..(n - FOOTER_LEN) as usize]).unwrap();
    assert_eq!(&Digest::of(&json), toc_digest);
    let toc = decode_toc(&json).unwrap();
    let lazy = LazyIndex::from_toc(&toc, toc_offset).unwrap();
    let dir = tempfile::tempdir().unwrap();
    build_index_from_entries(
        lazy.entries,
        lazy.data_len,
        dir.path(),
        &IndexLimits::default(),
    )
    .unwrap();
    let index = dir.path().join("index");
    let local = std::fs::File::open(&index).unwrap();
    let data = LazyData::new(Format::Estargz, lazy.chunks, lazy.data_len, blob, local).unwrap();
    let layer = IndexedLayer::with_source(&index, data).unwrap();
    Opened { _dir: dir, layer }
}

fn read_all(layer: &dyn Layer, path: &str) -> strata_fs::errno::Result<Vec<u8>> {
    let f = layer.open(&p(path))?;
    let mut buf = vec![0; f.len() as usize];
    let n = f.read_at(&mut buf, 0)?;
    buf.truncate(n);
    Ok(buf)
}

#[test]
fn footer_round_trips_and_rejects_other_bytes() {
    let f = footer(0x1234);
    assert_eq!(f.len() as u64, FOOTER_LEN);
    assert_eq!(parse_footer(&f), Ok(0x1234));
    // It is a valid empty gzip member, as Go writes it.
    let mut out = Vec::new();
    MultiGzDecoder::new(&f[..]).read_to_end(&mut out).unwrap();
    assert!(out.is_empty());
    let mut bad = f.clone();
    bad[12] = b'X';
    assert!(parse_footer(&bad).is_err());
    assert!(parse_footer(&f[1..]).is_err());
}

#[test]
fn written_blob_reads_lazily_like_the_tar() {
    let (tar, big) = layer_tar();
    let mut blob = Vec::new();
    let w = write(&tar[..], &mut blob, 4096).unwrap();
    // Whole, the blob is an ordinary gzip layer: its diff-id is the written one.
    let mut whole = Vec::new();
    MultiGzDecoder::new(&blob[..])
        .read_to_end(&mut whole)
        .unwrap();
    assert_eq!(Digest::of(&whole), w.diff_id);
    assert_eq!(whole.len() as u64, w.uncompressed_size);
    // ... and a tar of the same entries, with the same bytes, then the TOC.
    let entries = |bytes: &[u8]| -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut a = tar::Archive::new(bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (e.path_bytes().into_owned(), data)
            })
            .collect()
    };
    let mut expected = entries(&tar);
    let got = entries(&whole);
    assert_eq!(
        got.last().map(|e| e.0.as_slice()),
        Some(TOC_NAME.as_bytes())
    );
    expected.push(got.last().cloned().unwrap());
    assert_eq!(got, expected);

    let o = open(blob, &w.toc_digest);
    let layer: &dyn Layer = &o.layer;
    assert_eq!(read_all(layer, "etc/hostname").unwrap(), b"strata");
    assert_eq!(read_all(layer, "usr/bin/big").unwrap(), big);
    assert_eq!(read_all(layer, "usr/bin/big2").unwrap(), big);
    assert_eq!(read_all(layer, "empty").unwrap(), b"");
    // A read across a chunk boundary.
    let f = layer.open(&p("usr/bin/big")).unwrap();
    let mut buf = vec![0; 100];
    assert_eq!(f.read_at(&mut buf, 4050).unwrap(), 100);
    assert_eq!(buf, big[4050..4150]);

    let st = layer.stat(&p("etc/hostname")).unwrap();
    assert_eq!((st.uid, st.gid, st.perm), (1000, 100, 0o640));
    assert_eq!(st.mtime.sec, 1_700_000_000);
    assert_eq!(
        layer
            .get_xattr(&p("etc/hostname"), OsStr::new("user.note"))
            .unwrap(),
        Some(b"hi".to_vec())
    );
    let big_st = layer.stat(&p("usr/bin/big")).unwrap();
    let big2_st = layer.stat(&p("usr/bin/big2")).unwrap();
    assert_eq!((big_st.ino, big_st.nlink), (big2_st.ino, 2));
    assert_eq!(layer.read_link(&p("etc/link")).unwrap(), b"/nowhere");
    let etc = layer.stat(&p("etc")).unwrap();
    assert_eq!((etc.uid, etc.perm), (7, 0o750));

    // The TOC never shows; the names equal those of the plain tar's index.
    let names = |l: &dyn Layer| -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = l
            .read_dir(&LayerPath::root())
            .unwrap()
            .into_iter()
            .map(|e| entry_name(e).as_encoded_bytes().to_vec())
            .collect();
        v.sort();
        v
    };
    let plain = tempfile::tempdir().unwrap();
    build_index(&mut &tar[..], plain.path(), &IndexLimits::default()).unwrap();
    let plain = IndexedLayer::open(plain.path()).unwrap();
    assert_eq!(names(layer), names(&plain));
    assert!(!names(layer).contains(&TOC_NAME.as_bytes().to_vec()));
}

#[test]
fn landmarks_never_show() {
    let mut b = tar::Builder::new(Vec::new());
    for name in LANDMARKS {
        let mut h = hdr();
        h.set_size(1);
        b.append_data(&mut h, name, &[0xf][..]).unwrap();
    }
    let mut h = hdr();
    h.set_size(1);
    b.append_data(&mut h, "a", &b"a"[..]).unwrap();
    let mut blob = Vec::new();
    let w = write(&b.into_inner().unwrap()[..], &mut blob, CHUNK_SIZE).unwrap();
    let o = open(blob, &w.toc_digest);
    let names: Vec<_> = o
        .layer
        .read_dir(&LayerPath::root())
        .unwrap()
        .into_iter()
        .map(entry_name)
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("a")]);
}

#[test]
fn a_corrupt_chunk_is_eio_not_wrong_bytes() {
    let (tar, big) = layer_tar();
    let mut blob = Vec::new();
    let w = write(&tar[..], &mut blob, 4096).unwrap();
    // Rewrite the second chunk of usr/bin/big with other bytes that still decompress.
    let n = blob.len() as u64;
    let toc_offset = parse_footer(&blob[(n - FOOTER_LEN) as usize..]).unwrap();
    let json = extract_toc(&blob[toc_offset as usize..(n - FOOTER_LEN) as usize]).unwrap();
    let lazy = LazyIndex::from_toc(&decode_toc(&json).unwrap(), toc_offset).unwrap();
    let second = lazy
        .chunks
        .iter()
        .find(|c| c.len == 4096 && c.offset > 4096)
        .unwrap();
    let mut other = Vec::new();
    let mut gz = GzEncoder::new(&mut other, Compression::none());
    gz.write_all(&vec![0u8; 4096]).unwrap();
    gz.finish().unwrap();
    let at = second.blob_offset as usize;
    let mut evil = blob[..at].to_vec();
    evil.extend_from_slice(&other[..(second.blob_len as usize).min(other.len())]);
    evil.resize(at + second.blob_len as usize, 0);
    evil.extend_from_slice(&blob[at + second.blob_len as usize..]);
    let o = open(evil, &w.toc_digest);
    let f = o.layer.open(&p("usr/bin/big")).unwrap();
    let mut buf = vec![0; 100];
    // The first chunk is intact; the second is refused.
    assert_eq!(f.read_at(&mut buf, 0).unwrap(), 100);
    assert_eq!(buf, big[..100]);
    assert_eq!(f.read_at(&mut buf, 5000), Err(strata_fs::Errno::EIO));
}

#[test]
fn a_chunk_without_its_file_is_refused() {
    let toc = Toc {
        version: 1,
        entries: vec![TocEntry {
            name: "x".into(),
            kind: "chunk".into(),
            ..TocEntry::default()
        }],
    };
    let err = LazyIndex::from_toc(&toc, 100).unwrap_err();
    assert_eq!(err.0, "x");
}

#[test]
fn decodes_the_go_packages_field_names() {
    let json = br#"{"version":1,"entries":[{"name":"bin/","type":"dir","modtime":"2023-01-02T03:04:05Z","mode":493},{"name":"bin/sh","type":"reg","size":3,"modtime":"2023-01-02T03:04:05Z","mode":493,"uid":1,"gid":2,"offset":40,"digest":"sha256:00","chunkDigest":"sha256:00","xattrs":{"user.a":"aGk="}}]}"#;
    let toc = decode_toc(json).unwrap();
    let lazy = LazyIndex::from_toc(&toc, 90).unwrap();
    assert_eq!(lazy.data_len, 3);
    assert_eq!(lazy.chunks[0].blob_offset, 40);
    assert_eq!(lazy.chunks[0].blob_len, 50);
    assert_eq!(lazy.entries[1].xattrs[0].1.as_ref(), b"hi");
    assert_eq!(lazy.entries[0].mtime.sec, 1_672_628_645);
}

#[test]
fn decode_chunk_checks_the_digest() {
    let mut member = Vec::new();
    let mut gz = GzEncoder::new(&mut member, Compression::default());
    gz.write_all(b"xxhello").unwrap();
    gz.finish().unwrap();
    let mut c = Chunk {
        offset: 0,
        len: 5,
        blob_offset: 0,
        blob_len: member.len() as u64,
        inner_offset: 2,
        digest: Digest::of(b"hello").to_string(),
    };
    assert_eq!(decode_chunk(&c, &member).unwrap(), b"hello");
    c.digest = Digest::of(b"jello").to_string();
    assert_eq!(
        decode_chunk(&c, &member),
        Err("the chunk's bytes do not match its digest")
    );
    assert!(decode_chunk(&c, &member[..member.len() - 4]).is_err());
}

#[test]
fn open_checks_the_toc_digest_and_the_footer() {
    let (tar, _) = layer_tar();
    let mut blob = Vec::new();
    let w = write(&tar[..], &mut blob, 4096).unwrap();
    let digest = Digest::of(&blob);
    let size = blob.len() as u64;
    let opened = super::open(&blob, &digest, size, w.toc_digest.as_str()).unwrap();
    assert_eq!(Digest::of(&opened.toc_json), w.toc_digest);
    let other = Digest::of(b"other").to_string();
    assert!(matches!(
        super::open(&blob, &digest, size, &other),
        Err(Error::TocVerify { .. })
    ));
    // A plain gzip layer has no footer.
    let mut plain = Vec::new();
    let mut gz = GzEncoder::new(&mut plain, Compression::default());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap();
    let n = plain.len() as u64;
    assert!(matches!(
        super::open(&plain, &Digest::of(&plain), n, &other),
        Err(Error::EstargzFooter { .. })
    ));
}

/// A fetcher that counts its requests and can be switched off.
#[derive(Debug)]
struct Counting {
    blob: Vec<u8>,
    calls: std::sync::atomic::AtomicU32,
    down: std::sync::atomic::AtomicBool,
}

impl crate::lazy::ChunkFetcher for Arc<Counting> {
    fn fetch(&self, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
        use std::sync::atomic::Ordering;
        if self.down.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("registry down"));
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.blob.fetch(offset, len)
    }
}

#[test]
fn a_cache_smaller_than_the_layer_still_reads_everything_and_survives_reopening() {
    use crate::lazy::cache::{BlobCache, ChunkCache};
    use std::sync::atomic::Ordering;
    let (tar, big) = layer_tar();
    let mut blob = Vec::new();
    let w = write(&tar[..], &mut blob, 1024).unwrap();
    let n = blob.len() as u64;
    let toc_offset = parse_footer(&blob[(n - FOOTER_LEN) as usize..]).unwrap();
    let json = extract_toc(&blob[toc_offset as usize..(n - FOOTER_LEN) as usize]).unwrap();
    let lazy = LazyIndex::from_toc(&decode_toc(&json).unwrap(), toc_offset).unwrap();
    let dir = tempfile::tempdir().unwrap();
    build_index_from_entries(
        lazy.entries,
        lazy.data_len,
        dir.path(),
        &IndexLimits::default(),
    )
    .unwrap();
    let index = dir.path().join("index");
    let fetcher = Arc::new(Counting {
        blob,
        calls: Default::default(),
        down: Default::default(),
    });
    let hex = w.toc_digest.hex().to_string();
    let open = |limit: u64| {
        let cache = ChunkCache::open(&dir.path().join("chunks"), limit).unwrap();
        let blob_cache = BlobCache::open(&cache, &hex, &lazy.chunks).unwrap();
        let data = LazyData::new(
            Format::Estargz,
            lazy.chunks.clone(),
            lazy.data_len,
            fetcher.clone(),
            std::fs::File::open(&index).unwrap(),
        )
        .unwrap()
        .with_cache(blob_cache);
        (cache, IndexedLayer::with_source(&index, data).unwrap())
    };
    // 3 KiB of cache for a 10 KB file in 1 KiB chunks.
    let (cache, layer) = open(3 << 10);
    for _ in 0..2 {
        assert_eq!(read_all(&layer, "usr/bin/big").unwrap(), big);
        assert!(cache.used() <= 3 << 10, "used {}", cache.used());
    }
    // A chunk read a second time comes from the cache: no request.
    let f = layer.open(&p("usr/bin/big")).unwrap();
    let mut buf = vec![0; 100];
    f.read_at(&mut buf, 0).unwrap();
    let before = fetcher.calls.load(Ordering::SeqCst);
    f.read_at(&mut buf, 0).unwrap();
    assert_eq!(buf, big[..100]);
    assert_eq!(fetcher.calls.load(Ordering::SeqCst), before);
    drop((f, layer, cache));

    // Reopened (a new process): the present chunks are still served, the registry down.
    fetcher.down.store(true, Ordering::SeqCst);
    let (cache, layer) = open(3 << 10);
    assert!(cache.used() > 0 && cache.used() <= 3 << 10);
    let f = layer.open(&p("usr/bin/big")).unwrap();
    f.read_at(&mut buf, 0).unwrap();
    assert_eq!(buf, big[..100]);
    // An evicted chunk (the file's last, least recently used) is EIO while the registry
    // is down, and is read again once it is back.
    assert_eq!(f.read_at(&mut buf, 9_900), Err(strata_fs::Errno::EIO));
    fetcher.down.store(false, Ordering::SeqCst);
    f.read_at(&mut buf, 9_900).unwrap();
    assert_eq!(buf, big[9_900..10_000]);
    drop((f, layer, cache));

    // Two processes (two caches over the same files): one evicts a chunk the other still
    // has in its table; the other finds it gone and fetches it again, never reading the
    // hole.
    let _ = std::fs::remove_dir_all(dir.path().join("chunks"));
    let (first, first_layer) = open(64 << 10);
    let f1 = first_layer.open(&p("usr/bin/big")).unwrap();
    f1.read_at(&mut buf, 0).unwrap();
    let (second, second_layer) = open(1 << 10);
    let f2 = second_layer.open(&p("usr/bin/big")).unwrap();
    let mut far = vec![0; 100];
    f2.read_at(&mut far, 5_000).unwrap();
    assert_eq!(far, big[5_000..5_100]);
    assert!(second.used() <= 1 << 10);
    let before = fetcher.calls.load(Ordering::SeqCst);
    buf.fill(0);
    f1.read_at(&mut buf, 0).unwrap();
    assert_eq!(buf, big[..100]);
    assert_eq!(
        fetcher.calls.load(Ordering::SeqCst),
        before + 1,
        "fetched again"
    );
    assert!(first.used() > 0);
    drop((f1, f2, first_layer, second_layer, first, second));

    // Read-ahead: the first read of a small file fetches the chunks stored after it in the
    // same request; the next file then costs no request.
    let _ = std::fs::remove_dir_all(dir.path().join("chunks"));
    let (_cache, layer) = open(64 << 10);
    let before = fetcher.calls.load(Ordering::SeqCst);
    assert_eq!(read_all(&layer, "etc/hostname").unwrap(), b"strata");
    assert_eq!(fetcher.calls.load(Ordering::SeqCst), before + 1);
    assert_eq!(read_all(&layer, "usr/bin/big").unwrap(), big);
    assert_eq!(
        fetcher.calls.load(Ordering::SeqCst),
        before + 1,
        "read ahead"
    );
}

#[test]
fn a_chunk_another_process_fetches_is_waited_for_not_fetched_again() {
    use crate::lazy::cache::{BlobCache, ChunkCache, Claimed, Slot};
    use std::time::Duration;
    let (tar, _) = layer_tar();
    let mut blob = Vec::new();
    write(&tar[..], &mut blob, 1024).unwrap();
    let n = blob.len() as u64;
    let toc_offset = parse_footer(&blob[(n - FOOTER_LEN) as usize..]).unwrap();
    let json = extract_toc(&blob[toc_offset as usize..(n - FOOTER_LEN) as usize]).unwrap();
    let lazy = LazyIndex::from_toc(&decode_toc(&json).unwrap(), toc_offset).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Two processes: two caches over the same files.
    let (a, b) = (
        ChunkCache::open(dir.path(), 1 << 20).unwrap(),
        ChunkCache::open(dir.path(), 1 << 20).unwrap(),
    );
    let (ba, bb) = (
        BlobCache::open(&a, "blob", &lazy.chunks).unwrap(),
        BlobCache::open(&b, "blob", &lazy.chunks).unwrap(),
    );
    let c = &lazy.chunks[0];
    let wait = Duration::from_secs(5);
    assert!(matches!(a.acquire(&ba.key(0), wait), Some(Slot::Fetch)));
    let Ok(Claimed::Mine(claim)) = ba.claim(0, c.len, None) else {
        panic!("the first claim is not this process's");
    };
    assert!(matches!(b.acquire(&bb.key(0), wait), Some(Slot::Fetch)));
    assert!(matches!(bb.claim(0, c.len, None), Ok(Claimed::Busy)));
    // The other process times out while the first one holds its claim...
    assert!(bb.claim(0, c.len, Some(Duration::from_millis(50))).is_err());
    // ... and finds the chunk present once it is stored and the claim dropped.
    let member = &blob[c.blob_offset as usize..(c.blob_offset + c.blob_len) as usize];
    let bytes = decode_chunk(c, member).unwrap();
    ba.store(0, c, &bytes).unwrap();
    drop(claim);
    assert!(matches!(
        bb.claim(0, c.len, Some(wait)),
        Ok(Claimed::Present)
    ));
    let mut buf = vec![0; c.len as usize];
    assert!(bb.read_chunk(0, &mut buf, c.offset).unwrap());
    assert_eq!(buf, bytes);
    assert_eq!(b.used(), c.len);
}
