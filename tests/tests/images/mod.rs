//! Images through the `strata` binary against a real registry (Debian's docker-registry on
//! a free loopback port; images built here and pushed with skopeo).

mod archive;
mod bad_input;
mod build;
mod commands;
mod commit;
mod hostile;
mod lazy;
mod mount;
mod prune;
mod push;
mod zstd_chunked;

use std::process::Command;

use strata_tests::fixture::LayerBuilder;
use strata_tests::oci::{busybox_layer, BuiltImage, Compression, ImageBuilder};
use strata_tests::registry::Registry;
use strata_tests::strata::Strata;
use tempfile::TempDir;

/// A registry holding the test images, and an empty store.
pub struct Env {
    pub registry: Registry,
    pub strata: Strata,
    /// `REGISTRY/test/busybox:latest`: busybox plus a layer with whiteouts.
    pub busybox: String,
    pub busybox_built: BuiltImage,
    /// `REGISTRY/test/layers:v1`: the nasty tree over three layers (gzip, zstd, plain).
    pub layers: String,
    pub layers_built: BuiltImage,
    pub tmp: TempDir,
}

/// The nasty top layer: hard links, symlinks (dangling and absolute), a fifo, an empty and
/// a sparse file, a setuid file, xattrs, a unicode and a 255-byte name, a whiteout and an
/// opaque directory.
pub fn nasty_layer() -> LayerBuilder {
    LayerBuilder::new()
        .dir("data")
        .file("data/empty", "")
        .sparse("data/sparse", 3 << 20)
        .file("data/suid", "#!/bin/sh\n")
        .mode(0o4755)
        .file("data/owned", "o")
        .owner(1000, 1000)
        .file("data/xattr", "x")
        .xattr("user.test", "value")
        .file("data/hard1", "hard")
        .hardlink("data/hard2", "data/hard1")
        .symlink("data/dangling", "no/such/target")
        .symlink("data/abs", "/etc/passwd")
        .fifo("data/fifo")
        .mknod("data/null", nix::sys::stat::SFlag::S_IFCHR, 1, 3)
        .mknod("data/loop9", nix::sys::stat::SFlag::S_IFBLK, 7, 9)
        .mode(0o600)
        .owner(6, 6)
        .file("data/ünïcödé", "u")
        .file(format!("data/{}", "n".repeat(255)), "long")
        .whiteout("etc/group")
        // Image builders write the directory entry with the marker; a directory known only
        // from its marker has no defined mtime (umoci gives it the time of unpacking).
        .dir("old")
        .opaque("old")
        .file("old/new", "new")
}

/// The `layers` image: busybox (gzip), a layer under the nasty one (`middle`), the nasty
/// layer (uncompressed).
pub fn layers_image(middle: Compression) -> ImageBuilder {
    ImageBuilder::new()
        .layer_with(&busybox_layer().unwrap(), Compression::Gzip)
        .unwrap()
        .layer_with(
            &LayerBuilder::new()
                .file("old/gone", "g")
                .file("old/kept", "k"),
            middle,
        )
        .unwrap()
        .layer_with(&nasty_layer(), Compression::None)
        .unwrap()
}

pub fn env() -> Env {
    let registry = Registry::start().unwrap();
    let tmp = tempfile::Builder::new()
        .prefix("strata-img")
        .tempdir()
        .unwrap();
    let layout = tmp.path().join("layout");
    let busybox_built = ImageBuilder::new()
        .layer(&busybox_layer().unwrap())
        .unwrap()
        .layer(&LayerBuilder::new().file("hello", "world\n"))
        .unwrap()
        .config("Cmd", serde_json::json!(["/bin/sh"]))
        .config("Env", serde_json::json!(["PATH=/bin", "GREETING=hi"]))
        .config(
            "Labels",
            serde_json::json!({"suite": "strata", "kind": "busybox"}),
        )
        .empty_layer_history("/bin/sh -c #(nop) CMD [\"/bin/sh\"]")
        .write_layout(&layout, "busybox")
        .unwrap();
    let busybox = registry
        .push(&layout, "busybox", "test/busybox:latest")
        .unwrap();
    let layers_built = layers_image(Compression::Zstd)
        .config(
            "Labels",
            serde_json::json!({"suite": "strata", "kind": "layers"}),
        )
        .write_layout(&layout, "layers")
        .unwrap();
    let layers = registry.push(&layout, "layers", "test/layers:v1").unwrap();
    let strata = Strata::new(&tmp.path().join("store")).unwrap();
    Env {
        registry,
        strata,
        busybox,
        busybox_built,
        layers,
        layers_built,
        tmp,
    }
}

/// The harness itself: an image built here is pushed with skopeo and read back unchanged.
#[test]
fn harness_pushes_a_built_image_to_the_registry() {
    let env = env();
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}", env.layers))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        manifest["config"]["digest"],
        env.layers_built.config_digest.as_str()
    );
    let layers: Vec<_> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(layers, env.layers_built.layer_digests);
}
