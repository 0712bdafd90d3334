//! Bad input from a registry: a clear error naming what was wrong, nothing stored, and a
//! broken transfer resumed with a Range request.

use strata_tests::fake_registry::{FakeRegistry, Faults};
use strata_tests::fixture::LayerBuilder;
use strata_tests::oci::{busybox_layer, BuiltImage, ImageBuilder};
use strata_tests::strata::Strata;
use tempfile::TempDir;

struct Case {
    tmp: TempDir,
    built: BuiltImage,
    strata: Strata,
}

fn case() -> Case {
    let tmp = tempfile::tempdir().unwrap();
    let built = ImageBuilder::new()
        .layer(&busybox_layer().unwrap())
        .unwrap()
        .layer(&LayerBuilder::new().file("hello", "world"))
        .unwrap()
        .write_layout(&tmp.path().join("layout"), "t")
        .unwrap();
    let strata = Strata::new(&tmp.path().join("store")).unwrap();
    Case { tmp, built, strata }
}

impl Case {
    fn serve(&self, faults: Faults) -> FakeRegistry {
        FakeRegistry::serve(&self.tmp.path().join("layout"), "t", faults).unwrap()
    }

    /// The store holds no image and no blob.
    #[track_caller]
    fn assert_nothing_stored(&self) {
        assert_eq!(self.strata.run(&["images", "-aq"]).ok().trim(), "");
        let blobs = self.strata.root().join("blobs/sha256");
        let count = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
        assert_eq!(count, 0, "blobs left in {}", blobs.display());
    }
}

#[test]
fn a_blob_that_does_not_match_its_digest_is_refused() {
    let c = case();
    let layer = c.built.layer_digests[1].clone();
    let reg = c.serve(Faults {
        wrong_blob: Some((layer.clone(), b"not the layer".to_vec())),
        ..Faults::default()
    });
    let err = c
        .strata
        .run(&["pull", &format!("{}/x/y:t", reg.host)])
        .fails(1);
    assert!(err.contains(&layer), "the error names the digest: {err}");
    c.assert_nothing_stored();
}

#[test]
fn a_cut_transfer_resumes_with_a_range_request() {
    let c = case();
    let layer = c.built.layer_digests[0].clone();
    let reg = c.serve(Faults {
        truncate_once: Some((layer.clone(), 100_000)),
        ..Faults::default()
    });
    c.strata
        .run(&["pull", "-q", &format!("{}/x/y:t", reg.host)])
        .ok();
    let requests = reg.seen().requests;
    assert!(
        requests
            .iter()
            .any(|r| r.contains(&layer) && r.contains("bytes=100000-")),
        "no Range request resumed the transfer: {requests:#?}"
    );
    let ids = c.strata.run(&["images", "-q", "--no-trunc"]).ok();
    assert_eq!(ids.trim(), c.built.config_digest);
}

#[test]
fn a_manifest_that_is_not_json_is_refused() {
    let c = case();
    let reg = c.serve(Faults {
        manifest: Some((
            b"<html>oops</html>".to_vec(),
            strata_tests::oci::MANIFEST_MEDIA_TYPE.into(),
        )),
        ..Faults::default()
    });
    let err = c
        .strata
        .run(&["pull", &format!("{}/x/y:t", reg.host)])
        .fails(1);
    assert!(err.to_lowercase().contains("manifest"), "{err}");
    c.assert_nothing_stored();
}

#[test]
fn a_manifest_of_unknown_media_type_is_refused() {
    let c = case();
    let reg = c.serve(Faults {
        manifest: Some((
            br#"{"schemaVersion":2,"mediaType":"application/x-strange"}"#.to_vec(),
            "application/x-strange".into(),
        )),
        ..Faults::default()
    });
    let err = c
        .strata
        .run(&["pull", &format!("{}/x/y:t", reg.host)])
        .fails(1);
    assert!(err.contains("application/x-strange"), "{err}");
    c.assert_nothing_stored();
}

#[test]
fn wrong_credentials_are_refused_and_right_ones_pull() {
    let c = case();
    let reg = c.serve(Faults {
        basic_auth: Some(("alice".into(), "s3cret".into())),
        ..Faults::default()
    });
    let image = format!("{}/x/y:t", reg.host);
    let config = c.tmp.path().join("docker-config");
    let run = |args: &[&str]| {
        let out = c
            .strata
            .command(args)
            .env("DOCKER_CONFIG", &config)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["pull", &image]);
    assert_eq!(code, Some(1), "anonymous pull: {err}");
    assert!(err.to_lowercase().contains("auth"), "{err}");
    let (code, err) = run(&["login", "-u", "alice", "-p", "wrong", &reg.host]);
    assert_eq!(code, Some(1), "login with a wrong password: {err}");
    let (code, err) = run(&["login", "-u", "alice", "-p", "s3cret", &reg.host]);
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = run(&["pull", "-q", &image]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _) = run(&["logout", &reg.host]);
    assert_eq!(code, Some(0));
}
