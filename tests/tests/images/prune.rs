//! `image prune`, `rmi` of an image a container uses, and `system df`'s accounting (a layer
//! shared by two images counted once).

use strata_tests::fixture::LayerBuilder;
use strata_tests::oci::busybox_layer;

use super::{env, nasty_layer};
use crate::containers::run_input;

/// The image ID of `reference` in the store.
fn image_id(env: &super::Env, reference: &str) -> String {
    env.strata
        .run(&["inspect", "-f", "{{.Id}}", reference])
        .ok()
        .trim()
        .to_string()
}

#[test]
fn prune_removes_dangling_then_unused_images_and_spares_a_containers() {
    let env = env();
    env.strata.run(&["pull", "-q", &env.layers]).ok();
    env.strata.run(&["pull", "-q", &env.busybox]).ok();
    // The demo image (no repo digest) will lose its only name: dangling.
    let c = env
        .strata
        .run(&["create", "--name", "maker", "demo", "true"]);
    assert_eq!(c.code, 0, "{}", c.stderr);
    let demo = image_id(&env, "localhost/demo:latest");
    env.strata.run(&["rm", "maker"]).ok();
    env.strata
        .run(&["tag", &env.layers, "localhost/demo:latest"])
        .ok();
    let dangling = env
        .strata
        .run(&["images", "-q", "-f", "dangling=true", "--no-trunc"]);
    assert_eq!(dangling.ok().trim(), demo);

    let out = env.strata.run(&["image", "prune", "-f"]).ok();
    assert!(out.starts_with("Deleted Images:\n"), "{out}");
    assert!(out.contains(&format!("deleted: {demo}")), "{out}");
    assert!(out.contains("Total reclaimed space: "), "{out}");
    let all = env.strata.run(&["images", "-aq", "--no-trunc"]).ok();
    assert!(!all.contains(&demo), "{all}");
    let distinct: std::collections::BTreeSet<&str> = all.lines().collect();
    assert_eq!(distinct.len(), 2, "{all}");

    // Nothing dangling now.
    let out = env.strata.run(&["image", "prune", "-f"]).ok();
    assert_eq!(out, "Total reclaimed space: 0B\n");

    // A container's image stays through prune -a, and rmi refuses it.
    env.strata
        .run(&["create", "--name", "user", &env.layers, "true"])
        .ok();
    let out = env.strata.run(&["image", "prune", "-a", "-f"]).ok();
    assert!(
        out.contains(&format!("deleted: {}", env.busybox_built.config_digest)),
        "{out}"
    );
    let left = env.strata.run(&["images", "-aq", "--no-trunc"]).ok();
    assert!(
        left.lines().all(|l| l == env.layers_built.config_digest),
        "{left}"
    );
    // Its other name goes first (an untag only), then the last one is refused.
    env.strata.run(&["rmi", "localhost/demo:latest"]).ok();
    let err = env.strata.run(&["rmi", &env.layers]).fails(1);
    assert!(
        err.contains("conflict: unable to remove repository reference")
            && err.contains("is using its referenced image"),
        "{err}"
    );
    // -f takes the names away and keeps what the container runs on.
    env.strata.run(&["rmi", "-f", &env.layers]).ok();
    let left = env.strata.run(&["images", "-aq", "--no-trunc"]).ok();
    assert_eq!(left.trim(), env.layers_built.config_digest);
    env.strata.run(&["start", "-a", "user"]).ok();
    // Once the container is gone, the image goes too.
    env.strata.run(&["rm", "user"]).ok();
    env.strata.run(&["image", "prune", "-f"]).ok();
    assert_eq!(env.strata.run(&["images", "-aq"]).ok().trim(), "");
}

/// `rmi ID` of an image containers use: refused naming a stopped container without -f;
/// while one runs, refused even with -f; -f with none running takes only the names.
#[test]
fn rmi_by_id_of_an_image_in_use_follows_docker() {
    let env = env();
    env.strata.run(&["pull", "-q", &env.busybox]).ok();
    let id = image_id(&env, &env.busybox);
    let short = &id["sha256:".len()..][..12];
    let created = env
        .strata
        .run(&["create", "--name", "stopped", &env.busybox, "true"])
        .ok();
    let stopped = &created.trim()[..12];
    let err = env.strata.run(&["rmi", short]).fails(1);
    assert!(
        err.contains(&format!(
            "conflict: unable to delete {short} (must be forced) - image is being used by \
             stopped container {stopped}"
        )),
        "{err}"
    );
    let running = env
        .strata
        .run(&[
            "run",
            "-d",
            "--name",
            "running",
            &env.busybox,
            "sleep",
            "60",
        ])
        .ok();
    let running = &running.trim()[..12];
    let err = env.strata.run(&["rmi", "-f", short]).fails(1);
    assert!(
        err.contains(&format!(
            "conflict: unable to delete {short} (cannot be forced) - image is being used by \
             running container {running}"
        )),
        "{err}"
    );
    assert_eq!(image_id(&env, &env.busybox), id);
    env.strata.run(&["rm", "-f", "running"]).ok();
    // Stopped only: -f takes the names, the image stays for the container.
    let out = env.strata.run(&["rmi", "-f", short]).ok();
    assert!(out.contains(&format!("Untagged: {}", env.busybox)), "{out}");
    assert!(!out.contains("Deleted:"), "{out}");
    assert_eq!(
        env.strata.run(&["images", "-q", "--no-trunc"]).ok().trim(),
        id
    );
    assert!(!env.strata.run(&["images"]).ok().contains(&env.busybox));
    env.strata.run(&["start", "-a", "stopped"]).ok();
    env.strata.run(&["rm", "stopped"]).ok();
    let out = env.strata.run(&["rmi", short]).ok();
    assert!(out.contains(&format!("Deleted: {id}")), "{out}");
}

#[test]
fn prune_asks_first_and_a_no_keeps_everything() {
    let env = env();
    env.strata.run(&["pull", "-q", &env.busybox]).ok();
    let id = image_id(&env, &env.busybox);
    let prompt = "WARNING! This will remove all images without at least one container \
                  associated to them.\nAre you sure you want to continue? [y/N] ";
    // Only y or Y is a yes (docker's rule: not even "yes").
    for no in ["n\n", "", "yes\n"] {
        let out = run_input(&env.strata, &["image", "prune", "-a"], no.as_bytes());
        let what = format!("answer {no:?}");
        assert_eq!(out.ok(), prompt, "{what}");
        assert_eq!(image_id(&env, &env.busybox), id, "{what}");
    }
    let out = run_input(&env.strata, &["image", "prune", "-a"], b" Y \n").ok();
    let rest = out.strip_prefix(prompt).unwrap_or_else(|| panic!("{out}"));
    assert!(rest.starts_with("Deleted Images:\n"), "{out}");
    assert!(rest.contains(&format!("deleted: {id}\n")), "{out}");
    assert_eq!(env.strata.run(&["images", "-aq"]).ok(), "");
    // Without -a, the dangling images' warning.
    let out = run_input(&env.strata, &["image", "prune"], b"N\n").ok();
    assert_eq!(
        out,
        "WARNING! This will remove all dangling images.\nAre you sure you want to continue? \
         [y/N] "
    );
}

/// docker's `units.HumanSize`: three significant digits, decimal units.
fn human(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB"];
    let (mut v, mut i) = (bytes as f64, 0);
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.digits$}");
    let s = match s.contains('.') {
        true => s.trim_end_matches('0').trim_end_matches('.').to_string(),
        false => s,
    };
    format!("{s}{}", units[i])
}

#[test]
fn system_df_counts_a_shared_layer_once() {
    let env = env();
    env.strata.run(&["pull", "-q", &env.layers]).ok();
    env.strata.run(&["pull", "-q", &env.busybox]).ok();
    let tar = |l: &LayerBuilder| l.tar_bytes(1_700_000_000).unwrap().len() as u64;
    let base = tar(&busybox_layer().unwrap());
    let hello = tar(&LayerBuilder::new().file("hello", "world\n"));
    let middle = tar(&LayerBuilder::new()
        .file("old/gone", "g")
        .file("old/kept", "k"));
    let nasty = tar(&nasty_layer());
    let total = base + hello + middle + nasty;
    let out = env
        .strata
        .run(&[
            "system",
            "df",
            "--format",
            "{{.Type}}|{{.TotalCount}}|{{.Active}}|{{.Size}}|{{.Reclaimable}}",
        ])
        .ok();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!("Images|2|0|{}|{} (100%)", human(total), human(total))
    );
    // Nothing at all: no percentage, as docker.
    assert_eq!(lines[1], "Containers|0|0|0B|0B");
    assert_eq!(lines[2], "Local Volumes|0|0|0B|0B");
    assert_eq!(lines[3], "Build Cache|0|0|0B|0B");

    // A container on the busybox image and a named volume holding 5 bytes.
    env.strata
        .run(&[
            "run",
            "--name",
            "writer",
            "-v",
            "vol:/data",
            &env.busybox,
            "sh",
            "-c",
            "echo abcd > /data/f",
        ])
        .ok();
    // A second name: still one row for the image (docker shows its first tag).
    env.strata
        .run(&["tag", &env.busybox, "zz/second:name"])
        .ok();
    let out = env.strata.run(&["system", "df", "-v"]).ok();
    let short = &env.busybox_built.config_digest["sha256:".len()..][..12];
    assert_eq!(
        out.lines().filter(|l| l.contains(short)).count(),
        1,
        "{out}"
    );
    assert!(!out.contains("zz/second"), "{out}");
    let row = |prefix: &str| {
        out.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} row in:\n{out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    // busybox: SIZE, SHARED SIZE (the busybox layer), UNIQUE SIZE (hello), CONTAINERS
    let busybox_repo = format!("{} ", env.busybox.rsplit_once(':').unwrap().0);
    let b = row(&busybox_repo);
    let n = b.len();
    assert_eq!(
        &b[n - 4..],
        [
            human(base + hello).as_str(),
            human(base).as_str(),
            human(hello).as_str(),
            "1"
        ],
        "{out}"
    );
    let v = row("vol ");
    assert_eq!(v, ["vol", "1", "5B"], "{out}");
    let out = env
        .strata
        .run(&[
            "system",
            "df",
            "--format",
            "{{.Type}}|{{.Active}}|{{.Reclaimable}}",
        ])
        .ok();
    // The layers image (its own layers, busybox's being shared) is what could go.
    assert!(
        out.contains(&format!("Images|1|{} (", human(middle + nasty))),
        "{out}"
    );
    assert!(out.contains("Local Volumes|1|0B (0%)"), "{out}");
}

/// `system prune`: stopped containers, anonymous volumes with `--volumes`, then images as
/// `image prune`; a running container keeps its image and its volumes.
#[test]
fn system_prune_removes_stopped_containers_volumes_and_images() {
    let env = env();
    env.strata.run(&["pull", "-q", &env.layers]).ok();
    env.strata.run(&["pull", "-q", &env.busybox]).ok();
    let volumes = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(env.strata.root().join("volumes"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let keep = env
        .strata
        .run(&[
            "run",
            "-d",
            "--name",
            "keep",
            "-v",
            "named:/n",
            "-v",
            "/anon",
            &env.busybox,
            "sleep",
            "60",
        ])
        .ok();
    let before = volumes();
    let gone = env
        .strata
        .run(&[
            "create",
            "--name",
            "gone",
            "-v",
            "/data",
            &env.layers,
            "true",
        ])
        .ok();
    let anonymous: Vec<String> = volumes()
        .into_iter()
        .filter(|v| !before.contains(v))
        .collect();
    assert_eq!(anonymous.len(), 1, "{:?}", volumes());
    std::fs::write(
        env.strata
            .root()
            .join("volumes")
            .join(&anonymous[0])
            .join("_data/f"),
        "12345678",
    )
    .unwrap();

    // The question, and a no.
    let out = run_input(&env.strata, &["system", "prune", "--volumes"], b"n\n").ok();
    assert_eq!(
        out,
        "WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by \
         at least one container\n  - all anonymous volumes not used by at least one \
         container\n  - all dangling images\n  - unused build cache\n\nAre you sure you want \
         to continue? [y/N] "
    );
    assert_eq!(env.strata.run(&["ps", "-aq"]).ok().lines().count(), 2);

    let out = env.strata.run(&["system", "prune", "-f", "--volumes"]).ok();
    assert_eq!(
        out,
        format!(
            "Deleted Containers:\n{}\n\nDeleted Volumes:\n{}\n\nTotal reclaimed space: 8B\n",
            gone.trim(),
            anonymous[0]
        )
    );
    assert_eq!(volumes(), before);
    assert_eq!(
        env.strata.run(&["ps", "-aq", "--no-trunc"]).ok().trim(),
        keep.trim()
    );

    // -a: every image no container uses; the running one's stays.
    let out = env.strata.run(&["system", "prune", "-a", "-f"]).ok();
    assert!(
        out.starts_with(&format!("Deleted Images:\nuntagged: {}\n", env.layers)),
        "{out}"
    );
    assert!(
        out.contains(&format!("deleted: {}\n", env.layers_built.config_digest)),
        "{out}"
    );
    assert_eq!(
        env.strata.run(&["images", "-q", "--no-trunc"]).ok().trim(),
        env.busybox_built.config_digest
    );
    env.strata.run(&["rm", "-f", "keep"]).ok();
}
