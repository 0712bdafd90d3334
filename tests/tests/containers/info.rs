//! `strata info` (and `system info`): every field checked against its source (nproc,
//! /proc/meminfo, uname, the store), the container counts through run -d, pause, stop, and
//! the registries credentials are kept for; as root and as `strata-test` (rootless).

use strata_tests::users::{have_root, is_child, run_test_as_user, Rootless};

use super::{cgroup_v2, Env};

fn field(env: &Env, template: &str) -> String {
    env.run(&["info", "--format", template])
        .ok()
        .trim_end_matches('\n')
        .to_string()
}

fn counts(env: &Env) -> String {
    field(
        env,
        "{{.Containers}} {{.ContainersRunning}} {{.ContainersPaused}} {{.ContainersStopped}}",
    )
}

fn host(cmd: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(cmd).args(args).output().unwrap();
    assert!(out.status.success(), "{cmd} {args:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The checks both variants share; `rootless`: what the user runs as.
fn info_fields(env: &Env, rootless: bool) {
    assert_eq!(counts(env), "0 0 0 0");
    // Each field against where it comes from.
    assert_eq!(field(env, "{{.NCPU}}"), host("nproc", &[]));
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .unwrap();
    assert_eq!(field(env, "{{.MemTotal}}"), (mem_kib * 1024).to_string());
    assert_eq!(field(env, "{{.KernelVersion}}"), host("uname", &["-r"]));
    assert_eq!(field(env, "{{.Architecture}}"), host("uname", &["-m"]));
    assert_eq!(field(env, "{{.Name}}"), host("hostname", &[]));
    assert_eq!(field(env, "{{.OSType}}"), "linux");
    let pretty = std::fs::read_to_string("/etc/os-release")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .unwrap()
        .trim_matches('"')
        .to_string();
    assert_eq!(field(env, "{{.OperatingSystem}}"), pretty);
    assert_eq!(
        field(env, "{{.DockerRootDir}}"),
        env.strata.root().display().to_string()
    );
    assert_eq!(field(env, "{{.Driver}}"), "strata-fs");
    assert_eq!(
        field(env, "{{.CgroupVersion}}"),
        if cgroup_v2() { "2" } else { "1" }
    );
    let driver = field(env, "{{.CgroupDriver}}");
    match (rootless, cgroup_v2()) {
        (false, _) => assert_eq!(driver, "cgroupfs"),
        // cgroup v1 hierarchies belong to root: a user's containers get none.
        (true, false) => assert_eq!(driver, "none"),
        (true, true) => assert!(driver == "cgroupfs" || driver == "none", "{driver}"),
    }
    let security = field(env, "{{json .SecurityOptions}}");
    assert_eq!(
        security.contains("\"name=rootless\""),
        rootless,
        "{security}"
    );
    let id = field(env, "{{.ID}}");
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(field(env, "{{.ID}}"), id, "the ID is the store's, kept");

    // Counts follow run -d, pause, stop, and a container that ran to its end.
    env.detach(&["--name", "one", "demo", "sleep", "1000"]);
    assert_eq!(counts(env), "1 1 0 0");
    env.detach(&["--name", "two", "demo", "sleep", "1000"]);
    // Pausing needs the freezer: a user without a delegated cgroup is refused it.
    let pause = env.run(&["pause", "two"]);
    let p = match pause.code {
        0 => 1,
        _ if rootless => {
            assert!(pause.stderr.contains("cgroup"), "{}", pause.stderr);
            0
        }
        _ => panic!("pause: {}", pause.stderr),
    };
    assert_eq!(counts(env), format!("2 {} {p} 0", 2 - p));
    env.run(&["stop", "-t", "0", "one"]).ok();
    assert_eq!(counts(env), format!("2 {} {p} 1", 1 - p));
    env.run(&["run", "--name", "three", "demo", "true"]).ok();
    env.run(&["create", "--name", "four", "demo", "true"]).ok();
    assert_eq!(counts(env), format!("4 {} {p} 3", 1 - p));
    let images = env.run(&["images", "-q"]).ok().lines().count();
    assert_eq!(field(env, "{{.Images}}"), images.to_string());

    // The text: docker's lines.
    let text = env.run(&["info"]).ok();
    for line in [
        format!(
            "Server:\n Containers: 4\n  Running: {}\n  Paused: {p}\n  Stopped: 3\n",
            1 - p
        ),
        format!(" Images: {images}\n"),
        " Storage Driver: strata-fs\n  Backing Filesystem: ".into(),
        format!(" CPUs: {}\n", host("nproc", &[])),
        format!(" Docker Root Dir: {}\n", env.strata.root().display()),
        format!(" ID: {id}\n"),
        " Insecure Registries:\n  127.0.0.0/8\n".into(),
    ] {
        assert!(text.contains(&line), "{line:?} not in:\n{text}");
    }
    assert_eq!(text.contains("\n  rootless\n"), rootless, "{text}");
    assert_eq!(env.run(&["system", "info"]).ok(), text);

    // {{json .}}: the whole document, docker's field names.
    let doc: serde_json::Value = serde_json::from_str(&field(env, "{{json .}}")).unwrap();
    for key in [
        "ID",
        "Containers",
        "ContainersRunning",
        "ContainersPaused",
        "ContainersStopped",
        "Images",
        "Driver",
        "DriverStatus",
        "CgroupDriver",
        "CgroupVersion",
        "KernelVersion",
        "OperatingSystem",
        "OSType",
        "Architecture",
        "NCPU",
        "MemTotal",
        "DockerRootDir",
        "Name",
        "ServerVersion",
        "Runtimes",
        "DefaultRuntime",
        "SecurityOptions",
        "IndexServerAddress",
        "RegistryConfig",
    ] {
        assert!(doc.get(key).is_some(), "{key} missing: {doc}");
    }
    assert_eq!(doc["ContainersPaused"], p);
    let default_runtime = doc["DefaultRuntime"].as_str().unwrap();
    assert!(doc["Runtimes"].get(default_runtime).is_some(), "{doc}");

    // Registries: those credentials are kept for; loopback ones are not TLS.
    let auth = serde_json::json!({"auths": {
        "registry.example:5000": {"auth": "dTpw"},
        "https://localhost:5001/v2/": {"auth": "dTpw"},
    }});
    std::fs::write(env.strata.root().join("config.json"), auth.to_string()).unwrap();
    let configs = field(env, "{{json .RegistryConfig.IndexConfigs}}");
    let configs: serde_json::Value = serde_json::from_str(&configs).unwrap();
    assert_eq!(configs["registry.example:5000"]["Secure"], true);
    assert_eq!(configs["localhost:5001"]["Secure"], false);
    assert_eq!(configs["docker.io"]["Official"], true);
    let text = env.run(&["info"]).ok();
    assert!(
        text.contains(" Registries:\n  localhost:5001\n  registry.example:5000\n"),
        "{text}"
    );

    // A bad template: an error, status 1.
    let err = env.run(&["info", "--format", "{{.Containers"]).fails(1);
    assert!(err.starts_with("Error"), "{err}");
    env.run(&["rm", "-f", "one", "two", "three", "four"]).ok();
    assert_eq!(counts(env), "0 0 0 0");
}

#[test]
fn info_fields_are_the_hosts_and_counts_follow_containers() {
    if !have_root("info_fields_are_the_hosts_and_counts_follow_containers") {
        return;
    }
    info_fields(&Env::new(), false);
}

#[test]
fn rootless_info_says_rootless() {
    if !have_root("rootless_info_says_rootless") {
        return;
    }
    run_test_as_user(
        "containers::info::rootless_info_says_rootless_child",
        Rootless::Host,
    )
    .unwrap();
}

#[test]
#[ignore = "run by rootless_info_says_rootless"]
fn rootless_info_says_rootless_child() {
    assert!(is_child());
    info_fields(&Env::new(), true);
}
