//! `strata run` starts a container the way `strata-runtime create` does: the container's
//! options become a bundle's config.json beside it (`containers/<id>/config.json`), read
//! back through the runtime's bundle code before the start.

use strata_tests::users::have_root;

use super::Env;

#[test]
fn strata_run_starts_from_a_config_json() {
    if !have_root("strata_run_starts_from_a_config_json") {
        return;
    }
    let env = Env::new();
    let id = env.detach(&[
        "--memory",
        "64m",
        "-e",
        "FROM_RUN=1",
        "--tmpfs",
        "/scratch:size=1m",
        "demo",
        "sh",
        "-c",
        "echo $FROM_RUN; exec sleep 1000",
    ]);
    let path = env.containers_dir().join(&id).join("config.json");
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        config["process"]["args"],
        serde_json::json!(["sh", "-c", "echo $FROM_RUN; exec sleep 1000"])
    );
    let env_list = config["process"]["env"].as_array().unwrap();
    assert!(env_list.iter().any(|e| e == "FROM_RUN=1"), "{config}");
    assert_eq!(config["linux"]["resources"]["memory"]["limit"], 64 << 20);
    assert_eq!(config["hostname"], id[..12]);
    let mounts = config["mounts"].as_array().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m["destination"] == "/scratch" && m["type"] == "tmpfs"),
        "{config}"
    );
    // What the file says is what runs.
    let out = env
        .run(&["exec", &id, "sh", "-c", "echo $FROM_RUN; hostname"])
        .ok();
    assert_eq!(out, format!("1\n{}\n", &id[..12]));

    // And it is a bundle runc runs (while the container's /etc/hosts and friends, bind
    // sources, exist): the same file over a plain busybox root, with a network namespace
    // of its own (the container's is held by its monitor).
    let bundle = env.tmp.path().join("bundle");
    crate::runtime_cli::busybox_rootfs(&bundle.join("rootfs"));
    let mut config = config;
    config["root"] = serde_json::json!({"path": "rootfs", "readonly": false});
    config["process"]["args"] = serde_json::json!(["sh", "-c", "echo $FROM_RUN; hostname"]);
    for ns in config["linux"]["namespaces"].as_array_mut().unwrap() {
        ns.as_object_mut().unwrap().remove("path");
    }
    std::fs::write(bundle.join("config.json"), config.to_string()).unwrap();
    let out = std::process::Command::new("runc")
        .arg("--root")
        .arg(env.tmp.path().join("runc"))
        .args(["run", "--bundle", bundle.to_str().unwrap(), "from-strata"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "runc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("1\n{}\n", &id[..12])
    );
    env.run(&["rm", "-f", &id]).ok();
}
