//! Images through the `strata` binary against a real registry (issue: images).

use std::process::Command;

use strata_tests::oci::{busybox_layer, Compression, ImageBuilder};
use strata_tests::registry::Registry;

/// The harness itself: an image built here is pushed with skopeo and read back unchanged.
#[test]
fn harness_pushes_a_built_image_to_the_registry() {
    let registry = Registry::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let built = ImageBuilder::new()
        .layer(&busybox_layer().unwrap())
        .unwrap()
        .layer_with(
            &strata_tests::fixture::LayerBuilder::new().file("hello", "world"),
            Compression::Zstd,
        )
        .unwrap()
        .config("Cmd", serde_json::json!(["/bin/sh"]))
        .write_layout(&layout, "latest")
        .unwrap();
    let reference = registry
        .push(&layout, "latest", "test/busybox:latest")
        .unwrap();
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(manifest["config"]["digest"], built.config_digest.as_str());
    let layers: Vec<_> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(layers, built.layer_digests);
}
