//! `import`: a one-layer image from a filesystem tar (as `export` writes one), plain or
//! gzip, zstd, xz or bzip2 compressed (told by its magic bytes), from a file, an http(s) URL or
//! stdin. The tar is untrusted: it goes through [`crate::store::author`], so through the
//! indexer's checks as a pulled layer does, and nothing is kept when it fails. History as
//! docker writes it: one row whose comment is `-m`, else `Imported from SOURCE`.

use std::io::{BufRead, BufReader, Read};

use crate::change::ConfigChanger;
use crate::oci::History;
use crate::reference::Reference;
use crate::store::author::{NewImage, WrittenImage};
use crate::store::Store;
use crate::{Error, Result};

/// `import`'s options (docker's flags).
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// `-c`: Dockerfile instructions applied to the empty config.
    pub changes: Vec<String>,
    /// `-m`: the history row's comment.
    pub message: Option<String>,
    /// `REPO[:TAG]`.
    pub tag: Option<Reference>,
}

/// Whether `source` names a URL to fetch (docker takes http and https).
pub fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// Opens `url` with the registry client's HTTP stack.
pub fn open_url(url: &str) -> Result<Box<dyn Read + Send>> {
    match crate::registry::http_agent().get(url).call() {
        Ok(resp) => Ok(resp.into_reader()),
        Err(ureq::Error::Status(status, resp)) => Err(Error::ImportUrl {
            url: url.to_string(),
            message: format!("{status} {}", resp.status_text()),
        }),
        Err(ureq::Error::Transport(t)) => Err(Error::ImportUrl {
            url: url.to_string(),
            message: t.to_string(),
        }),
    }
}

/// Checks `-c` before anything is read (a bad change costs no download).
pub fn check_changes(changes: &[String]) -> Result<ConfigChanger> {
    let mut changer = ConfigChanger::new(None);
    for c in changes {
        changer.apply_line(c)?;
    }
    Ok(changer)
}

/// The uncompressed tar of `input`, whatever of gzip, zstd, xz, bzip2 or nothing compresses
/// it.
pub fn decompressed<'a>(input: &'a mut dyn Read) -> Result<Box<dyn Read + 'a>> {
    let mut input = BufReader::with_capacity(256 * 1024, input);
    let head = input.fill_buf().map_err(Error::ReadNewLayer)?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(input))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(input).map_err(Error::ReadNewLayer)?)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(xz2::read::XzDecoder::new_multi_decoder(input))
    } else if is_bzip2(head) {
        Box::new(bzip2::read::MultiBzDecoder::new(input))
    } else {
        Box::new(input)
    })
}

/// bzip2's stream header: `BZh` and the block size, `1` to `9` (hundreds of kB). A tar
/// starts with a file name, which may be `BZh…`, but a tar's 512-byte header never passes
/// as the bzip2 block magic that follows (`1AY&SY`), so both are checked.
fn is_bzip2(head: &[u8]) -> bool {
    head.len() >= 10
        && head.starts_with(b"BZh")
        && (b'1'..=b'9').contains(&head[3])
        && (head[4..10] == *b"1AY&SY" || head[4..10] == *b"\x17rE8P\x90")
}

/// Imports the tar read from `input`; `source` is what the user named (`-`, a path, a URL)
/// for the history row.
pub fn import(
    store: &Store,
    input: &mut dyn Read,
    source: &str,
    opts: &ImportOptions,
) -> Result<WrittenImage> {
    let changer = check_changes(&opts.changes)?;
    let authoring = store.authoring()?;
    let mut tar = decompressed(input)?;
    let layer = authoring
        .add_layer(&mut tar)
        .map_err(|e| Error::Import(Box::new(e)))?;
    let config = changer.into_value();
    let empty = config.as_object().is_some_and(|m| m.is_empty());
    let comment = opts
        .message
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| format!("Imported from {source}"));
    authoring.write_image(&NewImage {
        base: None,
        layers: vec![layer],
        config: (!empty).then_some(config),
        history: vec![History {
            created_by: Some(String::new()),
            comment: Some(comment),
            ..Default::default()
        }],
        tags: opts.tag.iter().cloned().collect(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(2);
        h.set_mode(0o755);
        b.append_data(&mut h, "bin/x", &b"hi"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn every_compression_gives_the_same_image_layer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let raw = tar();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&raw[..], 3).unwrap();
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&raw).unwrap();
        let xz = xz.finish().unwrap();
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&raw).unwrap();
        let bz = bz.finish().unwrap();
        let opts = ImportOptions {
            changes: vec!["CMD [\"/bin/x\"]".into()],
            message: None,
            tag: Some(Reference::parse("imp:1").unwrap()),
        };
        let mut diff_ids = Vec::new();
        for bytes in [&raw, &gz, &zst, &xz, &bz] {
            let w = import(&store, &mut &bytes[..], "-", &opts).unwrap();
            let t = store.table().unwrap();
            let img = store.find(&t, "imp:1").unwrap().image().clone();
            assert_eq!(img.id, w.id);
            assert_eq!(img.config.config.as_ref().unwrap()["Cmd"][0], "/bin/x");
            assert_eq!(
                img.config.history[0].comment.as_deref(),
                Some("Imported from -")
            );
            diff_ids.push(img.config.rootfs.diff_ids.clone());
        }
        assert!(diff_ids.iter().all(|d| *d == diff_ids[0]));
    }

    #[test]
    fn a_bad_change_reads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let opts = ImportOptions {
            changes: vec!["RUN x".into()],
            ..Default::default()
        };
        let e = import(&store, &mut &tar()[..], "-", &opts).unwrap_err();
        assert!(e.to_string().contains("not a valid change command"), "{e}");
    }
}
