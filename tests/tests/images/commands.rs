//! pull, images, tag, rmi, inspect, history: docker's output and rules, exit codes, and a
//! store that skopeo reads.

use std::process::Command;

use strata_tests::users::{have_root, is_child, run_test_as_user, Rootless};

use super::env;

/// The 12-hex short id docker shows for a config digest.
fn short_id(digest: &str) -> &str {
    &digest["sha256:".len().."sha256:".len() + 12]
}

#[test]
fn pull_stores_an_oci_layout_that_skopeo_reads() {
    let env = env();
    let out = env.strata.run(&["pull", &env.busybox]).ok();
    let last: Vec<&str> = out.lines().rev().take(3).collect();
    assert_eq!(last[0], env.busybox, "pull ends with the reference:\n{out}");
    assert_eq!(
        last[1],
        format!("Status: Downloaded newer image for {}", env.busybox)
    );
    assert_eq!(
        last[2],
        format!("Digest: {}", env.busybox_built.manifest_digest)
    );
    // The store is an OCI layout: skopeo finds the image under its full reference.
    let inspect = Command::new("skopeo")
        .args(["inspect", "--format", "{{.Digest}}"])
        .arg(format!(
            "oci:{}:{}",
            env.strata.root().display(),
            env.busybox
        ))
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&inspect.stdout).trim(),
        env.busybox_built.manifest_digest
    );
    // Again: nothing to fetch.
    let again = env.strata.run(&["pull", &env.busybox]).ok();
    assert!(
        again.contains(&format!("Status: Image is up to date for {}", env.busybox)),
        "{again}"
    );
    // -q prints the reference only.
    let quiet = env.strata.run(&["pull", "-q", &env.layers]).ok();
    assert_eq!(quiet.trim(), env.layers);
}

#[test]
fn images_lists_filters_and_formats() {
    let env = env();
    env.strata.run(&["pull", "-q", &env.busybox]).ok();
    env.strata.run(&["pull", "-q", &env.layers]).ok();
    let bb_id = short_id(&env.busybox_built.config_digest);
    let layers_id = short_id(&env.layers_built.config_digest);
    let table = env.strata.run(&["images"]).ok();
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("REPOSITORY") && lines[0].contains("IMAGE ID"),
        "{table}"
    );
    assert_eq!(lines.len(), 3, "{table}");
    let (repo, tag) = env.busybox.rsplit_once(':').unwrap();
    assert!(
        lines.iter().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() >= 3 && cols[0] == repo && cols[1] == tag && cols[2] == bb_id
        }),
        "{table}"
    );
    let mut ids = env.strata.run(&["images", "-q"]).ok();
    ids = ids.trim().to_string();
    let mut ids: Vec<&str> = ids.lines().collect();
    ids.sort();
    let mut expected = vec![bb_id, layers_id];
    expected.sort();
    assert_eq!(ids, expected);
    let full = env.strata.run(&["images", "-q", "--no-trunc"]).ok();
    assert!(full.contains(&env.busybox_built.config_digest), "{full}");
    let digests = env.strata.run(&["images", "--digests"]).ok();
    assert!(
        digests.contains(&env.busybox_built.manifest_digest),
        "{digests}"
    );
    let filtered = env
        .strata
        .run(&["images", "-q", "-f", "label=kind=layers"])
        .ok();
    assert_eq!(filtered.trim(), layers_id);
    let by_ref = env
        .strata
        .run(&[
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "-f",
            "reference=*/test/busy*",
        ])
        .ok();
    assert_eq!(by_ref.trim(), env.busybox);
    assert_eq!(
        env.strata
            .run(&["images", "-q", "-f", "dangling=true"])
            .ok()
            .trim(),
        ""
    );
    let json = env.strata.run(&["images", "--format", "json"]).ok();
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert!(
        first["ID"].is_string() && first["Repository"].is_string(),
        "{json}"
    );
    let bad = env.strata.run(&["images", "-f", "colour=blue"]).fails(1);
    assert!(bad.contains("colour"), "{bad}");
}

#[test]
fn tag_and_rmi_follow_docker_rules() {
    let env = env();
    env.strata.run(&["pull", "-q", &env.busybox]).ok();
    let id = short_id(&env.busybox_built.config_digest);
    env.strata.run(&["tag", &env.busybox, "mine:v1"]).ok();
    env.strata.run(&["tag", "mine:v1", "busybox"]).ok();
    let table = env.strata.run(&["images"]).ok();
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().take(3).eq(["busybox", "latest", id])),
        "a docker.io/library name shows short:\n{table}"
    );
    // docker.io/library/busybox:latest and busybox are the same name.
    env.strata
        .run(&[
            "inspect",
            "--format",
            "{{.Id}}",
            "docker.io/library/busybox:latest",
        ])
        .ok();
    // Removing one of several tags only untags.
    let out = env.strata.run(&["rmi", "mine:v1"]).ok();
    assert_eq!(out.trim(), "Untagged: mine:v1");
    // One row (and id) per remaining tag, as docker prints them.
    assert_eq!(
        env.strata
            .run(&["images", "-q"])
            .ok()
            .lines()
            .collect::<Vec<_>>(),
        [id, id]
    );
    // An id with several tags needs -f; then every tag goes and the image with them.
    let refused = env.strata.run(&["rmi", id]).fails(1);
    assert!(
        refused.contains("must be forced") || refused.contains("-f"),
        "{refused}"
    );
    let out = env.strata.run(&["rmi", "-f", id]).ok();
    assert!(out.contains("Untagged: busybox:latest"), "{out}");
    assert!(
        out.contains(&format!("Deleted: {}", env.busybox_built.config_digest)),
        "{out}"
    );
    assert_eq!(env.strata.run(&["images", "-aq"]).ok().trim(), "");
    let missing = env.strata.run(&["rmi", "nothere"]).fails(1);
    assert!(
        missing.contains("No such image: nothere:latest"),
        "{missing}"
    );
    // Nothing is left in the store's blobs but what index.json names (nothing).
    let blobs = std::fs::read_dir(env.strata.root().join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0, "rmi left {blobs} blobs");
}

#[test]
fn inspect_and_history_describe_the_image() {
    let env = env();
    env.strata.run(&["pull", "-q", &env.busybox]).ok();
    let json = env.strata.run(&["inspect", &env.busybox]).ok();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let image = &v[0];
    assert_eq!(image["Id"], env.busybox_built.config_digest.as_str());
    assert_eq!(image["RepoTags"][0], env.busybox.as_str());
    assert_eq!(image["Os"], "linux");
    assert_eq!(image["RootFS"]["Type"], "layers");
    let layers: Vec<&str> = image["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(layers, env.busybox_built.diff_ids);
    let cmd = env
        .strata
        .run(&[
            "inspect",
            "--format",
            "{{.Config.Cmd}} {{.Config.Labels.kind}}",
            &env.busybox,
        ])
        .ok();
    assert_eq!(cmd.trim(), "[/bin/sh] busybox");
    let history = env.strata.run(&["history", &env.busybox]).ok();
    let rows: Vec<&str> = history.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "two layers and one empty step:\n{history}");
    assert!(rows[0].starts_with(short_id(&env.busybox_built.config_digest)));
    assert!(rows[1].starts_with("<missing>") && rows[2].starts_with("<missing>"));
    assert!(rows[0].contains("CMD"), "newest first:\n{history}");
    let quiet = env.strata.run(&["history", "-q", &env.busybox]).ok();
    assert_eq!(quiet.lines().count(), 3);
    let missing = env.strata.run(&["inspect", "nothere"]).fails(1);
    assert!(missing.contains("nothere"), "{missing}");
}

#[test]
fn pull_errors_name_what_was_wrong() {
    let env = env();
    let tag = format!("{}/test/busybox:nosuchtag", env.registry.host);
    let err = env.strata.run(&["pull", &tag]).fails(1);
    assert!(err.contains("nosuchtag"), "{err}");
    assert!(
        err.to_lowercase().contains("manifest unknown"),
        "registry body shown: {err}"
    );
    let port = strata_tests::registry::free_port().unwrap();
    let err = env
        .strata
        .run(&["pull", &format!("127.0.0.1:{port}/x/y:z")])
        .fails(1);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    let err = env.strata.run(&["pull", "Not//A:Reference"]).fails(1);
    assert!(err.contains("invalid reference format"), "{err}");
    // Nothing half-stored: the store lists no image.
    assert_eq!(env.strata.run(&["images", "-aq"]).ok().trim(), "");
}

/// An image copied into the store by skopeo shows up in `strata images`.
#[test]
fn skopeo_copies_into_the_store() {
    let env = env();
    env.strata.run(&["images"]).ok(); // creates the layout
    let dest = format!("oci:{}:example.com/copied:v2", env.strata.root().display());
    let out = Command::new("skopeo")
        .args(["copy", "-q", "--src-tls-verify=false"])
        .arg(format!("docker://{}", env.busybox))
        .arg(&dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refs = env
        .strata
        .run(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .ok();
    assert_eq!(refs.trim(), "example.com/copied:v2");
}

/// Two pulls of the same image at once: both succeed and each blob is stored once.
#[test]
fn concurrent_pulls_store_the_image_once() {
    let env = env();
    let children: Vec<_> = (0..2)
        .map(|_| {
            env.strata
                .command(&["pull", "-q", &env.layers])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let blobs = std::fs::read_dir(env.strata.root().join("blobs/sha256"))
        .unwrap()
        .count();
    // Three layers, the config and the manifest.
    assert_eq!(blobs, 5);
    assert_eq!(
        env.strata.run(&["images", "-q"]).ok().trim(),
        short_id(&env.layers_built.config_digest)
    );
}

#[test]
fn rootless_pull_and_images() {
    if have_root("rootless_pull_and_images") {
        run_test_as_user(
            "images::commands::rootless_pull_and_images_child",
            Rootless::Host,
        )
        .unwrap();
    }
}

#[test]
#[ignore = "run by rootless_pull_and_images"]
fn rootless_pull_and_images_child() {
    assert!(is_child());
    assert!(!nix::unistd::getuid().is_root());
    let env = env();
    env.strata.run(&["pull", "-q", &env.layers]).ok();
    assert_eq!(
        env.strata.run(&["images", "-q"]).ok().trim(),
        short_id(&env.layers_built.config_digest)
    );
    // The default store of an unprivileged user is under XDG_DATA_HOME.
    let xdg = env.tmp.path().join("xdg");
    let out = Command::new(strata_tests::mounts::workspace_bin("strata", "STRATA_BIN").unwrap())
        .args(["pull", "-q", &env.busybox])
        .env("XDG_DATA_HOME", &xdg)
        .env_remove("STRATA_ROOT")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(xdg.join("strata/index.json").exists());
}
