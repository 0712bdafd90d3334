//! The built-in demo image, `localhost/demo:latest` (`demo` on the command line): made on
//! first use from the host's busybox-static, so `strata run --rm demo …` works on a machine
//! without network. One uncompressed layer — busybox with every applet linked in /bin,
//! /etc/passwd (root, nobody), /etc/group, /tmp (1777), /root, /home — and a config with
//! `Cmd ["sh"]` and `PATH`. It is stored as a pull stores an image (verified blobs, the
//! layer index built by the same code, a tag in index.json), so `images`, `inspect`,
//! `history` and `rmi` treat it as any image. Its times are busybox's mtime, so the same
//! busybox always makes the same image ID.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::MetadataExt;

use crate::{Error, Result};
use serde_json::json;

use super::Store;
use crate::digest::Digest;
use crate::oci::{media, Descriptor};
use crate::reference::Reference;

/// The reference the demo image is stored under.
pub const REFERENCE: &str = "localhost/demo:latest";

/// Where busybox-static is looked for.
const BUSYBOX: [&str; 2] = ["/bin/busybox", "/usr/bin/busybox"];

/// Whether `name` means the demo image.
pub fn is_demo(name: &str) -> bool {
    matches!(
        name,
        "demo" | "demo:latest" | "localhost/demo" | "localhost/demo:latest"
    )
}

struct TarBuilder {
    tar: tar::Builder<Vec<u8>>,
    mtime: u64,
}

impl TarBuilder {
    fn entry(
        &mut self,
        path: &str,
        kind: tar::EntryType,
        mode: u32,
        data: &[u8],
    ) -> io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_mtime(self.mtime);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(data.len() as u64);
        self.tar.append_data(&mut h, path, data)?;
        Ok(())
    }

    fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_mtime(self.mtime);
        h.set_size(0);
        self.tar.append_link(&mut h, path, target)?;
        Ok(())
    }
}

/// The layer tar.
fn layer(busybox: &[u8], applets: &str, mtime: u64) -> io::Result<Vec<u8>> {
    use tar::EntryType::{Directory, Regular};
    let mut t = TarBuilder {
        tar: tar::Builder::new(Vec::new()),
        mtime,
    };
    for (dir, mode) in [
        ("bin/", 0o755),
        ("dev/", 0o755),
        ("etc/", 0o755),
        ("home/", 0o755),
        ("proc/", 0o555),
        ("root/", 0o700),
        ("sys/", 0o555),
        ("tmp/", 0o1777),
        ("usr/", 0o755),
        ("usr/bin/", 0o755),
        ("var/", 0o755),
    ] {
        t.entry(dir, Directory, mode, b"")?;
    }
    t.entry("bin/busybox", Regular, 0o755, busybox)?;
    let mut names: Vec<&str> = applets
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .collect();
    names.sort();
    names.dedup();
    for applet in names {
        t.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    t.entry(
        "etc/passwd",
        Regular,
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
    )?;
    t.entry(
        "etc/group",
        Regular,
        0o644,
        b"root:x:0:\nnogroup:x:65534:\n",
    )?;
    t.tar.into_inner()
}

/// Makes the demo image in `store` unless it is there.
pub fn ensure(store: &Store) -> Result<()> {
    let table = store.table()?;
    if store.find(&table, REFERENCE).is_ok() {
        return Ok(());
    }
    let path = BUSYBOX
        .iter()
        .find(|p| std::path::Path::new(p).is_file())
        .ok_or(Error::NoBusybox)?;
    let read_err = |source| Error::Read {
        path: path.into(),
        source,
    };
    let busybox = std::fs::read(path).map_err(read_err)?;
    let mtime = std::fs::metadata(path).map_err(read_err)?.mtime().max(0) as u64;
    let applets = std::process::Command::new(path)
        .arg("--list")
        .output()
        .map_err(|source| Error::BusyboxList {
            path: path.to_string(),
            source,
        })?;
    let tar = layer(&busybox, &String::from_utf8_lossy(&applets.stdout), mtime)
        .map_err(Error::DemoLayer)?;
    store.init()?;
    let layer_digest = Digest::of(&tar);
    store.put_blob(&layer_digest, &tar)?;
    let created = jiff::Timestamp::from_second(mtime as i64)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let platform = crate::oci::PlatformSpec::host();
    let config = serde_json::to_vec(&json!({
        "created": created,
        "architecture": platform.arch,
        "os": platform.os,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest.to_string()]},
        "history": [{
            "created": created,
            "created_by": format!("strata: demo image from the host's busybox-static ({path})"),
        }]
    }))
    .map_err(|source| Error::Serialize {
        what: "the demo image config",
        source,
    })?;
    let config_digest = Digest::of(&config);
    store.put_blob(&config_digest, &config)?;
    let layer_type = "application/vnd.oci.image.layer.v1.tar";
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest.to_string(), "size": config.len()},
        "layers": [{"mediaType": layer_type, "digest": layer_digest.to_string(),
                    "size": tar.len()}]
    }))
    .map_err(|source| Error::Serialize {
        what: "the demo image manifest",
        source,
    })?;
    let digest = Digest::of(&manifest);
    store.put_blob(&digest, &manifest)?;
    // The layer index, as pull builds it.
    store.ensure_layer(&layer_digest, layer_type, &layer_digest)?;
    let desc = Descriptor {
        media_type: media::OCI_MANIFEST.to_string(),
        digest,
        size: manifest.len() as u64,
        platform: None,
        annotations: BTreeMap::new(),
        extra: Default::default(),
    };
    let reference = Reference::parse(REFERENCE)?;
    store.update(|t| {
        t.ensure(&desc);
        t.set_tag(&desc.digest, &reference);
        Ok::<_, Error>(())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_layer_has_busybox_links_and_users() {
        let tar = layer(b"\x7fELF", "sh\nls\nbusybox\n", 7).unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        let mut names = Vec::new();
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            if p == "tmp/" {
                assert_eq!(e.header().mode().unwrap(), 0o1777);
            }
            if p == "bin/sh" {
                assert_eq!(e.link_name().unwrap().unwrap().to_str(), Some("busybox"));
            }
            assert_eq!(e.header().mtime().unwrap(), 7);
            names.push(p);
        }
        for want in [
            "bin/busybox",
            "bin/sh",
            "bin/ls",
            "etc/passwd",
            "etc/group",
            "root/",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        assert!(is_demo("demo") && is_demo("localhost/demo:latest") && !is_demo("demo2"));
    }
}
