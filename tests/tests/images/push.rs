//! `strata push` and `strata search` against real registries: docker's per-layer lines
//! (Pushed, Layer already exists, Mounted from), skopeo, umoci and another store reading what
//! was pushed, `--format` and `--compression-format`, bad input; search over a catalog of
//! more than one page.

use std::process::Command;

use base64::Engine as _;
use serde_json::Value;
use strata_tests::mounts::{is_mounted, unmount, Driver};
use strata_tests::registry::{free_port, Registry, AUTH_PASSWORD, AUTH_USER};
use strata_tests::strata::Strata;
use strata_tests::tree::{diff, snapshot_with_times};
use strata_tests::users::{have_root, is_child, run_test_as_user, Rootless};

use super::{env, Env};

/// A credential file that cannot exist: skopeo then uses none (podman may have made its
/// default, /run/containers/UID/auth.json, unreadable).
const NO_AUTH: &str = "/proc/strata-no-auth.json";

/// `skopeo inspect --raw` of `reference`: the manifest as the registry serves it.
fn remote_manifest(reference: &str) -> Result<Value, String> {
    let out = Command::new("skopeo")
        .env("REGISTRY_AUTH_FILE", NO_AUTH)
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap())
}

fn media_types(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_string())
        .collect()
}

/// The 12-hex short form docker shows layers by.
fn short(digest: &str) -> &str {
    &digest["sha256:".len().."sha256:".len() + 12]
}

/// Pushes `reference` (already tagged); returns (stdout, stderr).
fn push(strata: &Strata, args: &[&str]) -> (String, String) {
    let mut all = vec!["push"];
    all.extend_from_slice(args);
    let r = strata.run(&all);
    let err = r.stderr.clone();
    (r.ok(), err)
}

/// Every layer of `env.layers` has the status line `ID: status` in `stderr`.
#[track_caller]
fn every_layer(env: &Env, stderr: &str, status: &str) {
    for d in &env.layers_built.diff_ids {
        let line = format!("{}: {status}", short(d));
        assert!(
            stderr.lines().any(|l| l == line),
            "no {line:?} in:\n{stderr}"
        );
    }
}

/// The push scenario, as root and rootless: upload, push again, cross-mount, another store
/// pulls the same digests, formats and compression.
fn push_round_trip(env: &Env) -> Registry {
    let target = Registry::start().unwrap();
    let s = &env.strata;
    s.run(&["pull", "-q", &env.layers]).ok();
    let one = format!("{}/test/one:v1", target.host);
    s.run(&["tag", &env.layers, &one]).ok();

    // 1. Every layer uploaded; docker's closing line; nothing converted: the same digest.
    let (out, err) = push(s, &[&one]);
    assert!(
        err.contains(&format!(
            "The push refers to repository [{}/test/one]",
            target.host
        )),
        "{err}"
    );
    every_layer(env, &err, "Pushed");
    let manifest = remote_manifest(&one).unwrap();
    let size = serde_json::to_vec(&manifest).unwrap().len();
    assert!(size > 0);
    let digest = &env.layers_built.manifest_digest;
    let line = out.trim();
    assert!(
        line.starts_with(&format!("v1: digest: {digest} size: ")),
        "{out}"
    );
    assert_eq!(
        manifest["config"]["digest"].as_str(),
        Some(env.layers_built.config_digest.as_str())
    );
    // The pushed image gained its repo digest.
    let repo_digests = s
        .run(&["inspect", "--format", "{{json .RepoDigests}}", &one])
        .ok();
    assert!(
        repo_digests.contains(&format!("{}/test/one@{digest}", target.host)),
        "{repo_digests}"
    );

    // 2. Again: the registry has every blob.
    let (out, err) = push(s, &[&one]);
    every_layer(env, &err, "Layer already exists");
    assert!(!err.contains("Pushed"), "{err}");
    assert!(out.contains(digest.as_str()), "{out}");

    // 3. Another repository of the same registry: the layers are mounted, not uploaded.
    let two = format!("{}/test/two:latest", target.host);
    s.run(&["tag", &env.layers, &two]).ok();
    let quiet = s.run(&["push", "-q", &two]);
    assert_eq!(quiet.stderr, "", "-q prints no progress");
    assert_eq!(quiet.ok().trim(), two, "-q prints the pushed reference");
    let three = format!("{}/test/three:latest", target.host);
    s.run(&["tag", &env.layers, &three]).ok();
    let (_, err) = push(s, &[&three]);
    every_layer(env, &err, "Mounted from test/one");
    assert_eq!(
        remote_manifest(&three).unwrap()["config"]["digest"],
        manifest["config"]["digest"]
    );

    // 4. Another store pulls the same digests.
    let other = Strata::new(&env.tmp.path().join("other-store")).unwrap();
    let pulled = other.run(&["pull", &three]).ok();
    assert!(pulled.contains(&format!("Digest: {digest}")), "{pulled}");
    assert_eq!(
        other.run(&["images", "-q", "--no-trunc"]).ok().trim(),
        env.layers_built.config_digest
    );

    // 5. Docker schema 2 has no zstd layer: refused before anything is sent.
    let v2 = format!("{}/test/v2:v1", target.host);
    s.run(&["tag", &env.layers, &v2]).ok();
    let err = s.run(&["push", "--format", "v2s2", &v2]).fails(1);
    assert!(err.contains("zstd layers need --format oci"), "{err}");
    assert!(remote_manifest(&v2).is_err(), "nothing pushed");
    // With gzip it converts: Docker media types, the same config (image ID), new layers.
    push(
        s,
        &["--format", "v2s2", "--compression-format", "gzip", &v2],
    );
    let m = remote_manifest(&v2).unwrap();
    assert_eq!(
        m["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    assert_eq!(m["config"]["digest"], manifest["config"]["digest"]);
    assert!(media_types(&m)
        .iter()
        .all(|t| t == "application/vnd.docker.image.rootfs.diff.tar.gzip"));

    // 6. zstd in OCI: every layer +zstd; another store gets the same image ID (diff-ids).
    let z = format!("{}/test/zstd:v1", target.host);
    s.run(&["tag", &env.layers, &z]).ok();
    push(s, &["--format", "oci", "--compression-format", "zstd", &z]);
    let m = remote_manifest(&z).unwrap();
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert!(media_types(&m)
        .iter()
        .all(|t| t == "application/vnd.oci.image.layer.v1.tar+zstd"));
    // The zstd layer was stored zstd: it is the same blob.
    assert_eq!(
        m["layers"][1]["digest"].as_str(),
        Some(env.layers_built.layer_digests[1].as_str())
    );
    let zstore = Strata::new(&env.tmp.path().join("zstd-store")).unwrap();
    zstore.run(&["pull", "-q", &z]).ok();
    assert_eq!(
        zstore.run(&["images", "-q", "--no-trunc"]).ok().trim(),
        env.layers_built.config_digest
    );
    target
}

#[test]
fn push_uploads_skips_mounts_and_converts() {
    let env = env();
    let _target = push_round_trip(&env);
}

/// skopeo + umoci read what strata pushed (gzip: Debian's umoci has no zstd) and unpack it
/// equal to `strata mount` of the local image.
#[test]
fn pushed_image_unpacks_like_strata_mount() {
    if !have_root("pushed_image_unpacks_like_strata_mount") {
        return;
    }
    let env = env();
    let target = Registry::start().unwrap();
    let s = &env.strata;
    s.run(&["pull", "-q", &env.layers]).ok();
    let gz = format!("{}/test/gz:v1", target.host);
    s.run(&["tag", &env.layers, &gz]).ok();
    push(s, &["--compression-format", "gzip", &gz]);
    let oci = env.tmp.path().join("copied");
    let out = Command::new("skopeo")
        .env("REGISTRY_AUTH_FILE", NO_AUTH)
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{gz}"))
        .arg(format!("oci:{}:gz", oci.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bundle = env.tmp.path().join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:gz", oci.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mnt = env.tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    s.run(&["mount", &env.layers, mnt.to_str().unwrap()]).ok();
    assert!(is_mounted(&mnt));
    let differences = diff(
        &snapshot_with_times(&bundle.join("rootfs")).unwrap(),
        &snapshot_with_times(&mnt).unwrap(),
    );
    unmount(&mnt, Driver::Strata).unwrap();
    assert!(
        differences.is_empty(),
        "umoci's unpack of the pushed image differs from strata mount (- umoci, + strata):\n{}",
        differences.join("\n")
    );
}

#[test]
fn rootless_push() {
    if have_root("rootless_push") {
        run_test_as_user("images::push::rootless_push_child", Rootless::Host).unwrap();
    }
}

#[test]
#[ignore = "run by rootless_push"]
fn rootless_push_child() {
    assert!(is_child());
    assert!(!nix::unistd::getuid().is_root());
    let env = env();
    let _target = push_round_trip(&env);
}

#[test]
fn push_bad_input() {
    let env = env();
    let s = &env.strata;
    s.run(&["pull", "-q", &env.busybox]).ok();

    // Not tagged locally.
    let err = s.run(&["push", "127.0.0.1:1/nothing:here"]).fails(1);
    assert!(
        err.contains("An image does not exist locally with the tag: 127.0.0.1:1/nothing:here"),
        "{err}"
    );

    // No registry listening there.
    let dead = format!("127.0.0.1:{}/test/dead:v1", free_port().unwrap());
    s.run(&["tag", &env.busybox, &dead]).ok();
    let err = s.run(&["push", &dead]).fails(1);
    assert!(err.contains("is not reachable"), "{err}");

    // A registry with Basic auth: no credentials, wrong ones, then the right ones.
    let locked = Registry::start_with_auth().unwrap();
    let image = format!("{}/test/locked:v1", locked.host);
    s.run(&["tag", &env.busybox, &image]).ok();
    let err = s.run(&["push", &image]).fails(1);
    assert!(err.contains("strata login"), "{err}");
    let config = s.root().join("config.json");
    let wrong = base64::engine::general_purpose::STANDARD.encode(format!("{AUTH_USER}:wrong"));
    std::fs::write(
        &config,
        format!(r#"{{"auths":{{"{}":{{"auth":"{wrong}"}}}}}}"#, locked.host),
    )
    .unwrap();
    let err = s.run(&["push", &image]).fails(1);
    assert!(err.contains("wrong credentials"), "{err}");
    let mut login = s.command(&["login", "-u", AUTH_USER, "--password-stdin", &locked.host]);
    let mut child = login
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(AUTH_PASSWORD.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (out, _) = push(s, &[&image]);
    assert!(out.starts_with("v1: digest: sha256:"), "{out}");

    // A layer blob missing from the store: the error names it, no manifest is put.
    let target = Registry::start().unwrap();
    let broken = format!("{}/test/broken:v1", target.host);
    s.run(&["tag", &env.busybox, &broken]).ok();
    let blob = &env.busybox_built.layer_digests[1];
    std::fs::remove_file(
        s.root()
            .join("blobs/sha256")
            .join(blob.trim_start_matches("sha256:")),
    )
    .unwrap();
    let err = s.run(&["push", &broken]).fails(1);
    assert!(err.contains(blob.as_str()), "{err}");
    assert!(err.contains("missing"), "{err}");
    assert!(remote_manifest(&broken).is_err(), "no manifest pushed");

    // A digest reference cannot be pushed.
    let err = s
        .run(&[
            "push",
            &format!("{}@{}", env.busybox, env.busybox_built.manifest_digest),
        ])
        .fails(1);
    assert!(err.contains("digest"), "{err}");
}

#[test]
fn search_lists_the_catalog_with_limit_and_format() {
    let env = env();
    let s = &env.strata;
    let reg = &env.registry.host;
    // More repositories than one catalog page (100): the Link header is followed.
    s.run(&["pull", "-q", &env.busybox]).ok();
    for i in 0..101 {
        let name = format!("{reg}/many/r{i:03}:v1");
        s.run(&["tag", &env.busybox, &name]).ok();
        s.run(&["push", "-q", &name]).ok();
    }
    let out = s
        .run(&["search", "--limit", "100", &format!("{reg}/1")])
        .ok();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "DESCRIPTION", "STARS", "OFFICIAL"]
    );
    // The names with a 1: r001, r010..r019, r021, …, r091 and r100, on the second page.
    assert_eq!(lines.len(), 1 + 20, "{out}");
    assert!(lines[1].starts_with(&format!("{reg}/many/r001 ")), "{out}");
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with(&format!("{reg}/many/r100 ")),
        "{out}"
    );
    let out = s
        .run(&[
            "search",
            "--format",
            "{{.Name}}:{{.StarCount}}",
            &format!("{reg}/busy"),
        ])
        .ok();
    assert_eq!(out, format!("{reg}/test/busybox:0\n"));
    let out = s
        .run(&[
            "search",
            "--limit",
            "2",
            "--format",
            "{{.Name}}",
            &format!("{reg}/"),
        ])
        .ok();
    assert_eq!(out, format!("{reg}/many/r000\n{reg}/many/r001\n"));
    let err = s
        .run(&["search", "--limit", "0", &format!("{reg}/x")])
        .fails(1);
    assert!(err.contains("outside the range"), "{err}");
    let out = s.run(&["search", &format!("{reg}/nomatch")]).ok();
    assert_eq!(out.lines().count(), 1, "only the header: {out}");
    let dead = format!("127.0.0.1:{}/x", free_port().unwrap());
    let err = s.run(&["search", &dead]).fails(1);
    assert!(err.contains("is not reachable"), "{err}");
}
