//! `save` and `load`: round trips, skopeo reading what strata saves and strata loading what
//! skopeo writes, bad archives refused with nothing stored; and a full disk during a pull.

use std::path::Path;
use std::process::Command;

use strata_tests::strata::Strata;
use strata_tests::users::have_root;

use super::env;

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Files below `dir`, recursively.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[test]
fn save_then_load_gives_back_the_same_image() {
    let env = env();
    env.strata.run(&["pull", "-q", &env.busybox]).ok();
    env.strata.run(&["pull", "-q", &env.layers]).ok();
    let before = env.strata.run(&["images", "--no-trunc"]).ok();
    let file = env.tmp.path().join("both.tar");
    env.strata
        .run(&[
            "save",
            "-o",
            file.to_str().unwrap(),
            &env.busybox,
            &env.layers,
        ])
        .ok();
    env.strata.run(&["rmi", &env.busybox, &env.layers]).ok();
    assert_eq!(env.strata.run(&["images", "-aq"]).ok().trim(), "");
    let out = env.strata.run(&["load", "-i", file.to_str().unwrap()]).ok();
    assert_eq!(
        out,
        format!(
            "Loaded image: {}\nLoaded image: {}\n",
            env.busybox, env.layers
        )
    );
    // Same IDs and names; the repo digests a pull records are not in an archive.
    let after = env.strata.run(&["images", "--no-trunc"]).ok();
    let ids = |s: &str| {
        let mut v: Vec<String> = s
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(&after), ids(&before));
    // Loading it again names the same images: nothing to say but what was loaded.
    let again = env
        .strata
        .run(&["load", "-q", "-i", file.to_str().unwrap()]);
    assert_eq!(again.ok(), "");
    // A name another image holds now is taken back, saying from which image (docker's line).
    env.strata.run(&["tag", &env.layers, &env.busybox]).ok();
    let out = env.strata.run(&["load", "-i", file.to_str().unwrap()]).ok();
    assert_eq!(
        out,
        format!(
            "The image {b} already exists, renaming the old one with ID {} to empty string\n\
             Loaded image: {b}\nLoaded image: {}\n",
            env.layers_built.config_digest,
            env.layers,
            b = env.busybox,
        )
    );
    assert_eq!(
        ids(&env.strata.run(&["images", "--no-trunc"]).ok()),
        ids(&before)
    );
    // The loaded layers serve a container (the zstd one included, through the index).
    let run = env
        .strata
        .run(&["run", "--rm", &env.layers, "cat", "/old/new"]);
    assert_eq!(run.ok(), "new");
    let run = env
        .strata
        .run(&["run", "--rm", &env.busybox, "cat", "/hello"]);
    assert_eq!(run.ok(), "world\n");
}

#[test]
fn skopeo_reads_what_strata_saves_and_strata_loads_what_skopeo_writes() {
    let env = env();
    env.strata.run(&["pull", "-q", &env.layers]).ok();
    let file = env.tmp.path().join("layers.tar");
    let f = file.to_str().unwrap();
    env.strata.run(&["save", "-o", f, &env.layers]).ok();
    let config = env.layers_built.config_digest.as_str();
    for transport in ["docker-archive", "oci-archive"] {
        let raw: serde_json::Value =
            serde_json::from_str(&skopeo(&["inspect", "--raw", &format!("{transport}:{f}")]))
                .unwrap();
        assert_eq!(raw["config"]["digest"], config, "{transport}");
        assert_eq!(raw["layers"].as_array().unwrap().len(), 3, "{transport}");
        // A whole copy (skopeo checks every blob against its digest), unpacked by umoci.
        let dir = env.tmp.path().join(format!("copy-{transport}"));
        skopeo(&[
            "copy",
            "--quiet",
            &format!("{transport}:{f}"),
            &format!("oci:{}:x", dir.display()),
        ]);
        let bundle = env.tmp.path().join(format!("bundle-{transport}"));
        let out = Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:x", dir.display()))
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{transport}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::read(bundle.join("rootfs/old/new")).unwrap(),
            b"new",
            "{transport}"
        );
    }

    // skopeo's own docker-archive, straight from the registry (gzip/zstd as pushed).
    let theirs = env.tmp.path().join("skopeo.tar");
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{}", env.busybox),
        &format!("docker-archive:{}:loaded/by:skopeo", theirs.display()),
    ]);
    let fresh = Strata::new(&env.tmp.path().join("fresh")).unwrap();
    let out = fresh.run(&["load", "-i", theirs.to_str().unwrap()]).ok();
    assert_eq!(out, "Loaded image: loaded/by:skopeo\n");
    let id = fresh
        .run(&["images", "-q", "--no-trunc", "loaded/by:skopeo"])
        .ok();
    assert_eq!(id.trim(), env.busybox_built.config_digest);
    // And skopeo's oci-archive, from standard input.
    let oci = env.tmp.path().join("skopeo-oci.tar");
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{}", env.busybox),
        &format!("oci-archive:{}:other/name:2", oci.display()),
    ]);
    let out = fresh
        .command(&["load"])
        .stdin(std::fs::File::open(&oci).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Loaded image: other/name:2\n"
    );
}

/// `save -o` writes a temp file and renames it: a save that fails leaves no file, and an
/// earlier archive where it was stays whole.
#[test]
fn a_failed_save_leaves_no_partial_archive() {
    use std::os::unix::fs::PermissionsExt;
    let env = env();
    env.strata.run(&["pull", "-q", &env.busybox]).ok();
    let file = env.tmp.path().join("out.tar");
    let f = file.to_str().unwrap();
    let err = env.strata.run(&["save", "-o", f, "no/such:image"]).fails(1);
    assert!(err.contains("No such image: no/such:image"), "{err}");
    assert!(!file.exists());
    env.strata.run(&["save", "-o", f, &env.busybox]).ok();
    let good = std::fs::read(&file).unwrap();
    // Only the owner reads a saved archive (docker's 0600).
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // A layer that cannot be read fails the save midway.
    let layers = env.strata.root().join("layers");
    let data = std::fs::read_dir(&layers)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("data"))
        .find(|p| p.exists())
        .unwrap();
    let saved = std::fs::read(&data).unwrap();
    std::fs::remove_file(&data).unwrap();
    std::fs::create_dir(&data).unwrap();
    env.strata.run(&["save", "-o", f, &env.busybox]).fails(1);
    std::fs::remove_dir(&data).unwrap();
    std::fs::write(&data, saved).unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), good);
    let stray: Vec<String> = files(env.tmp.path())
        .into_iter()
        .filter(|p| p.contains("out.tar") && !p.ends_with("/out.tar"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

/// How a bad archive is made from a good one: each member kept, changed, renamed or left out.
type Rewrite<'a> = dyn Fn(&str, &[u8]) -> Option<(String, Vec<u8>)> + 'a;

/// A tar of `members` (name, bytes) written as given, names unchecked.
fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn bad_archives_are_refused_and_store_nothing() {
    let env = env();
    env.strata.run(&["pull", "-q", &env.busybox]).ok();
    let good = env.tmp.path().join("good.tar");
    env.strata
        .run(&["save", "-o", good.to_str().unwrap(), &env.busybox])
        .ok();
    let fresh = Strata::new(&env.tmp.path().join("fresh")).unwrap();
    // Every member of the good archive, to build the bad ones from.
    let mut members: Vec<(String, Vec<u8>)> = Vec::new();
    let mut a = tar::Archive::new(std::fs::File::open(&good).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_file() {
            let name = e.path().unwrap().display().to_string();
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut v).unwrap();
            members.push((name, v));
        }
    }
    let layer_name = {
        let m: serde_json::Value = serde_json::from_slice(
            &members
                .iter()
                .find(|(n, _)| n == "manifest.json")
                .unwrap()
                .1,
        )
        .unwrap();
        m[0]["Layers"][1].as_str().unwrap().to_string()
    };
    let build = |f: &Rewrite<'_>| -> Vec<u8> {
        let kept: Vec<(String, Vec<u8>)> = members.iter().filter_map(|(n, d)| f(n, d)).collect();
        let refs: Vec<(&str, &[u8])> = kept
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        tar_of(&refs)
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "not a tar",
            b"this is not an archive at all".repeat(40),
            "not a tar",
        ),
        (
            "a layer missing",
            build(&|n, d| (n != layer_name).then(|| (n.to_string(), d.to_vec()))),
            "is missing",
        ),
        (
            "a layer that is not what the config says",
            build(&|n, d| {
                let mut d = d.to_vec();
                if n == layer_name {
                    d = tar_of(&[("hello", b"changed\n")]);
                }
                Some((n.to_string(), d))
            }),
            "the image config says",
        ),
        (
            "a name leaving the archive",
            build(&|n, d| {
                Some((
                    if n == "repositories" {
                        "../../escape".into()
                    } else {
                        n.to_string()
                    },
                    d.to_vec(),
                ))
            }),
            "leaves the archive",
        ),
    ];
    for (what, bytes, want) in cases {
        let path = env.tmp.path().join("bad.tar");
        std::fs::write(&path, &bytes).unwrap();
        let err = fresh.run(&["load", "-i", path.to_str().unwrap()]).fails(1);
        assert!(err.contains(want), "{what}: {err}");
        assert_eq!(fresh.run(&["images", "-aq"]).ok().trim(), "", "{what}");
        assert!(
            stored(&fresh).is_empty(),
            "{what}: left behind {:?}",
            stored(&fresh)
        );
        assert!(!env.tmp.path().join("escape").exists());
    }
    // The OCI form alone, its manifest blob missing.
    let manifest_blob = {
        let index: serde_json::Value =
            serde_json::from_slice(&members.iter().find(|(n, _)| n == "index.json").unwrap().1)
                .unwrap();
        let digest = index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        format!("blobs/sha256/{}", &digest["sha256:".len()..])
    };
    let oci = build(&|n, d| {
        (n != "manifest.json" && n != manifest_blob).then(|| (n.to_string(), d.to_vec()))
    });
    let path = env.tmp.path().join("no-manifest.tar");
    std::fs::write(&path, oci).unwrap();
    let err = fresh.run(&["load", "-i", path.to_str().unwrap()]).fails(1);
    assert!(
        err.contains(&format!("archive member \"{manifest_blob}\" is missing")),
        "{err}"
    );
    assert_eq!(fresh.run(&["images", "-aq"]).ok().trim(), "");
    assert!(stored(&fresh).is_empty(), "{:?}", stored(&fresh));
    // An OCI blob whose content does not match its name.
    let oci = build(&|n, d| {
        if n == "manifest.json" {
            return None;
        }
        let mut d = d.to_vec();
        if n == layer_name {
            d[600] ^= 0xff;
        }
        Some((n.to_string(), d))
    });
    let path = env.tmp.path().join("bad-oci.tar");
    std::fs::write(&path, oci).unwrap();
    let err = fresh.run(&["load", "-i", path.to_str().unwrap()]).fails(1);
    assert!(err.contains("its content hashes to"), "{err}");
    assert_eq!(fresh.run(&["images", "-aq"]).ok().trim(), "");
    assert!(stored(&fresh).is_empty(), "{:?}", stored(&fresh));
}

/// What a store holds besides its layout files and locks: blobs, layer indexes, temp files.
fn stored(strata: &Strata) -> Vec<String> {
    ["blobs", "layers", "tmp"]
        .iter()
        .flat_map(|d| files(&strata.root().join(d)))
        .filter(|f| !f.ends_with(".lock"))
        .collect()
}

/// A pull or a load that fills the disk fails saying so, and leaves no partial blob or index.
#[test]
fn a_full_disk_fails_pull_and_load_cleanly() {
    if !have_root("a_full_disk_fails_pull_and_load_cleanly") {
        return;
    }
    let env = env();
    let small = env.tmp.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(status.success());
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _guard = Unmount(&small);
    let store = Strata::new(&small.join("store")).unwrap();
    // busybox (about 2 MB uncompressed, kept twice: blob and layer data) does not fit.
    let err = store.run(&["pull", &env.layers]).fails(1);
    let last = err.lines().last().unwrap_or_default();
    // The error names the layer or blob being written, and why.
    assert!(
        last.contains("No space left on device")
            && (last.contains("layer sha256:") || last.contains("blob sha256:")),
        "{err}"
    );
    assert_eq!(store.run(&["images", "-aq"]).ok().trim(), "");
    // Not even a partial download: it cannot complete on this disk and would hold its space.
    assert!(
        stored(&store).is_empty(),
        "left behind: {:?}",
        stored(&store)
    );

    // A load that fills the disk: the same, naming the member it was unpacking.
    env.strata.run(&["pull", "-q", &env.layers]).ok();
    let archive = env.tmp.path().join("layers.tar");
    env.strata
        .run(&["save", "-o", archive.to_str().unwrap(), &env.layers])
        .ok();
    let err = store
        .run(&["load", "-i", archive.to_str().unwrap()])
        .fails(1);
    assert!(
        err.contains("unpacking blobs/sha256/") && err.contains("No space left on device"),
        "{err}"
    );
    assert_eq!(store.run(&["images", "-aq"]).ok().trim(), "");
    assert!(
        stored(&store).is_empty(),
        "left behind: {:?}",
        stored(&store)
    );
}

/// A tar entry for [`old_archive`]: a file, or a symlink to another member.
enum Member<'a> {
    File(&'a str, Vec<u8>),
    Link(&'a str, &'a str),
}

fn old_archive(members: &[Member<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        match m {
            Member::File(name, data) => {
                h.set_size(data.len() as u64);
                b.append_data(&mut h, name, data.as_slice()).unwrap();
            }
            Member::Link(name, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, name, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// What docker before 25 wrote: `<id>/layer.tar` members (here one gzip'd), a layer repeated
/// in an image as a symlink to the first copy, two images sharing a layer, one of them
/// without a name; and the whole archive gzip'd, on standard input.
#[test]
fn old_docker_archives_load_with_linked_and_gzipd_layers() {
    use strata_tests::fixture::LayerBuilder;
    use strata_tests::oci::{busybox_layer, compress, digest, host_architecture, Compression};
    let env = env();
    let base = busybox_layer().unwrap().tar_bytes(1_700_000_000).unwrap();
    let hello = LayerBuilder::new()
        .file("hello", "old world\n")
        .tar_bytes(1_700_000_000)
        .unwrap();
    let empty = LayerBuilder::new().tar_bytes(1_700_000_000).unwrap();
    let config = |diff_ids: &[&[u8]], cmd: &str| {
        serde_json::to_vec(&serde_json::json!({
            "architecture": host_architecture(),
            "os": "linux",
            "config": {"Cmd": [cmd]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(|t| digest(t)).collect::<Vec<_>>()},
        }))
        .unwrap()
    };
    let first = config(&[&base, &empty, &hello, &empty], "/bin/sh");
    let second = config(&[&base], "/bin/true");
    let hex = |b: &[u8]| digest(b)["sha256:".len()..].to_string();
    let (first_json, second_json) = (
        format!("{}.json", hex(&first)),
        format!("{}.json", hex(&second)),
    );
    let manifest = serde_json::json!([
        {"Config": first_json, "RepoTags": ["old/first:v1"],
         "Layers": ["aaa/layer.tar", "ccc/layer.tar", "bbb/layer.tar", "ddd/layer.tar"]},
        {"Config": second_json, "RepoTags": null, "Layers": ["aaa/layer.tar"]},
    ]);
    let tar = old_archive(&[
        Member::File("aaa/layer.tar", compress(Compression::Gzip, &base).unwrap()),
        Member::File("aaa/VERSION", b"1.0".to_vec()),
        Member::File("bbb/layer.tar", hello),
        Member::File("ccc/layer.tar", empty),
        Member::Link("ddd/layer.tar", "../ccc/layer.tar"),
        Member::File(&first_json, first.clone()),
        Member::File(&second_json, second.clone()),
        Member::File("repositories", br#"{"old/first":{"v1":"bbb"}}"#.to_vec()),
        Member::File("manifest.json", serde_json::to_vec(&manifest).unwrap()),
    ]);
    let gz = compress(Compression::Gzip, &tar).unwrap();
    let out = crate::containers::run_input(&env.strata, &["load"], &gz).ok();
    assert_eq!(
        out,
        format!(
            "Loaded image: old/first:v1\nLoaded image ID: {}\n",
            digest(&second)
        )
    );
    let ids = env.strata.run(&["images", "-q", "--no-trunc"]).ok();
    let mut ids: Vec<&str> = ids.lines().collect();
    ids.sort();
    let mut want = vec![digest(&first), digest(&second)];
    want.sort();
    assert_eq!(ids, want);
    let run = env
        .strata
        .run(&["run", "--rm", "old/first:v1", "cat", "/hello"]);
    assert_eq!(run.ok(), "old world\n");

    // Saved to standard output and loaded from standard input elsewhere: the same image.
    let file = env.tmp.path().join("piped.tar");
    let status = env
        .strata
        .command(&["save", "old/first:v1"])
        .stdout(std::fs::File::create(&file).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    let other = Strata::new(&env.tmp.path().join("other")).unwrap();
    let out = other
        .command(&["load", "-q"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    let id = other
        .run(&["images", "-q", "--no-trunc", "old/first:v1"])
        .ok();
    assert_eq!(id.trim(), digest(&first));
}
