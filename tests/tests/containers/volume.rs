//! `strata volume`: create (labels, options, driver, generated names), ls (quiet, filters,
//! format), inspect (docker's JSON, format), rm (in use refused, -f), prune (anonymous only
//! unless -a), as root and as `strata-test`.

use strata_tests::users::{have_root, is_child, run_test_as_user, Rootless};

use super::{run_input, Env};

fn names(env: &Env, args: &[&str]) -> Vec<String> {
    let mut a = vec!["volume", "ls", "-q"];
    a.extend_from_slice(args);
    env.run(&a).ok().lines().map(str::to_string).collect()
}

/// Every volume command and flag on one store; `strata-test` runs it too.
fn volume_commands(env: &Env) {
    // create: a name, labels, options; without a name 64 hex digits (anonymous, as docker).
    assert_eq!(
        env.run(&["volume", "create", "--label", "env=prod", "--label", "tier", "named1"])
            .ok(),
        "named1\n"
    );
    assert_eq!(env.run(&["volume", "create", "named1"]).ok(), "named1\n");
    env.run(&[
        "volume",
        "create",
        "-d",
        "local",
        "-o",
        "type=tmpfs",
        "withopts",
    ])
    .ok();
    let anon = env.run(&["volume", "create"]).ok().trim().to_string();
    assert!(
        anon.len() == 64 && anon.bytes().all(|b| b.is_ascii_hexdigit()),
        "{anon}"
    );
    // Bad input: docker's words, status 1, nothing made.
    let err = env
        .run(&["volume", "create", "--driver", "nfs", "x1"])
        .fails(1);
    assert!(
        err.contains("error looking up volume plugin nfs: plugin \"nfs\" not found"),
        "{err}"
    );
    let err = env
        .run(&["volume", "create", "-o", "color=red", "x2"])
        .fails(1);
    assert!(err.contains("invalid option: \"color\""), "{err}");
    let err = env.run(&["volume", "create", "bad/name"]).fails(1);
    assert!(err.contains("includes invalid characters"), "{err}");
    let mut all = vec![anon.clone(), "named1".into(), "withopts".into()];
    all.sort();
    assert_eq!(names(env, &[]), all);

    // ls: docker's table, by name.
    let table = env.run(&["volume", "ls"]).ok();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "DRIVER    VOLUME NAME");
    assert!(
        lines[1..].iter().all(|l| l.starts_with("local     ")),
        "{table}"
    );
    assert_eq!(lines.len(), 4, "{table}");

    // inspect: docker's fields; --format.
    let doc: serde_json::Value =
        serde_json::from_str(&env.run(&["volume", "inspect", "named1"]).ok()).unwrap();
    let v = &doc[0];
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "CreatedAt",
            "Driver",
            "Labels",
            "Mountpoint",
            "Name",
            "Options",
            "Scope"
        ]
    );
    assert_eq!(v["Labels"], serde_json::json!({"env": "prod", "tier": ""}));
    assert_eq!(v["Options"], serde_json::json!({}));
    assert_eq!(
        (v["Driver"].as_str(), v["Scope"].as_str()),
        (Some("local"), Some("local"))
    );
    let mountpoint = env.strata.root().join("volumes/named1/_data");
    assert_eq!(v["Mountpoint"], mountpoint.to_str().unwrap());
    assert!(mountpoint.is_dir());
    let created = v["CreatedAt"].as_str().unwrap();
    let age = jiff::Timestamp::now().as_second()
        - created.parse::<jiff::Timestamp>().unwrap().as_second();
    assert!((0..3600).contains(&age), "{created}");
    assert_eq!(
        env.run(&[
            "volume",
            "inspect",
            "-f",
            "{{.Name}} {{.Options.type}}",
            "withopts"
        ])
        .ok(),
        "withopts tmpfs\n"
    );
    let r = env.run(&["volume", "inspect", "named1", "nosuch"]);
    let err = r.fails(1);
    assert!(err.contains("no such volume"), "{err}");
    // A volume with driver options is mounted as they say (more in volume_options).
    let mounts = env
        .run(&[
            "run",
            "--rm",
            "-v",
            "withopts:/w",
            "demo",
            "cat",
            "/proc/mounts",
        ])
        .ok();
    assert!(
        mounts.lines().any(|l| l.starts_with("tmpfs /w tmpfs ")),
        "{mounts}"
    );

    // In use (running or not) is refused, -f or not; the data stays.
    env.detach(&[
        "--name",
        "user1",
        "-v",
        "named1:/data",
        "demo",
        "sleep",
        "1000",
    ]);
    let id1 = env.inspect("user1", "{{.Id}}");
    env.run(&[
        "run",
        "--name",
        "user2",
        "-v",
        "named1:/data",
        "demo",
        "sh",
        "-c",
        "echo kept > /data/f",
    ])
    .ok();
    let id2 = env.inspect("user2", "{{.Id}}");
    for args in [
        &["volume", "rm", "named1"][..],
        &["volume", "rm", "-f", "named1"],
    ] {
        let err = env.run(args).fails(1);
        assert!(
            err.contains("Error response from daemon: remove named1: volume is in use - [")
                && err.contains(&id1)
                && err.contains(&id2),
            "{err}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(mountpoint.join("f")).unwrap(),
        "kept\n"
    );
    // A volume made by run is listed and dangling=false; the others dangling=true.
    env.run(&[
        "run", "-d", "--name", "user3", "-v", "/anon", "demo", "sleep", "1000",
    ])
    .ok();
    let mut in_use = names(env, &["-f", "dangling=false"]);
    assert_eq!(in_use.len(), 2, "{in_use:?}");
    in_use.retain(|n| n != "named1");
    let run_anon = in_use.pop().unwrap();
    assert_eq!(run_anon.len(), 64);
    let mut dangling = vec![anon.clone(), "withopts".to_string()];
    dangling.sort();
    assert_eq!(names(env, &["-f", "dangling=true"]), dangling);
    // Filters: name (contains), label (key, key=value; alternatives), AND across keys.
    assert_eq!(names(env, &["-f", "name=amed"]), ["named1"]);
    assert_eq!(names(env, &["-f", "label=env=prod"]), ["named1"]);
    assert_eq!(names(env, &["-f", "label=tier"]), ["named1"]);
    assert!(names(env, &["-f", "label=env=dev"]).is_empty());
    let mut anons = vec![anon.clone(), run_anon.clone()];
    anons.sort();
    assert_eq!(
        names(env, &["-f", "label=com.docker.volume.anonymous"]),
        anons
    );
    assert_eq!(
        names(
            env,
            &[
                "-f",
                "label=com.docker.volume.anonymous",
                "-f",
                "dangling=true"
            ]
        ),
        [anon.as_str()]
    );
    assert_eq!(
        names(
            env,
            &["-f", "label=env", "-f", "label=com.docker.volume.anonymous"]
        )
        .len(),
        3
    );
    let err = env.run(&["volume", "ls", "-f", "color=red"]).fails(1);
    assert!(err.contains("invalid filter 'color'"), "{err}");
    // --format: a template, json.
    assert_eq!(
        env.run(&[
            "volume",
            "ls",
            "-f",
            "name=named1",
            "--format",
            "{{.Name}}|{{.Driver}}|{{.Labels}}|{{.Mountpoint}}"
        ])
        .ok(),
        format!("named1|local|env=prod,tier=|{}\n", mountpoint.display())
    );
    let json = env
        .run(&["volume", "ls", "-f", "name=withopts", "--format", "json"])
        .ok();
    let row: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(
        (row["Name"].as_str(), row["Scope"].as_str()),
        (Some("withopts"), Some("local"))
    );
    let table = env
        .run(&[
            "volume",
            "ls",
            "-f",
            "name=named1",
            "--format",
            "table {{.Name}}\t{{.Scope}}",
        ])
        .ok();
    assert_eq!(table, "VOLUME NAME   SCOPE\nnamed1        local\n");

    // rm: several at once, -f ignores a missing one, a missing one without -f fails.
    env.run(&["volume", "create", "gone1"]).ok();
    env.run(&["volume", "create", "gone2"]).ok();
    assert_eq!(
        env.run(&["volume", "rm", "gone1", "gone2"]).ok(),
        "gone1\ngone2\n"
    );
    let r = env.run(&["volume", "rm", "nosuch"]);
    assert!(r.fails(1).contains("no such volume"));
    assert_eq!(env.run(&["volume", "rm", "-f", "nosuch"]).ok(), "nosuch\n");

    // prune: the question; then only unused anonymous volumes; -a all unused ones.
    let out = run_input(&env.strata, &["volume", "prune"], b"n\n").ok();
    assert_eq!(
        out,
        "WARNING! This will remove anonymous local volumes not used by at least one \
         container.\nAre you sure you want to continue? [y/N] "
    );
    std::fs::write(
        env.strata
            .root()
            .join("volumes")
            .join(&anon)
            .join("_data/f"),
        "12345",
    )
    .unwrap();
    assert_eq!(
        env.run(&["volume", "prune", "-f"]).ok(),
        format!("Deleted Volumes:\n{anon}\n\nTotal reclaimed space: 5B\n")
    );
    assert_eq!(
        env.run(&["volume", "prune", "-f"]).ok(),
        "Total reclaimed space: 0B\n"
    );
    let out = run_input(&env.strata, &["volume", "prune", "-a"], b"y\n").ok();
    assert!(
        out.starts_with(
            "WARNING! This will remove all local volumes not used by at least one container."
        ) && out.ends_with("Deleted Volumes:\nwithopts\n\nTotal reclaimed space: 0B\n"),
        "{out}"
    );
    let mut left = vec!["named1".to_string(), run_anon.clone()];
    left.sort();
    assert_eq!(names(env, &[]), left);
    // Once no container uses them: rm -v takes the anonymous one, volume rm the named one.
    env.run(&["rm", "-f", "-v", "user3"]).ok();
    assert_eq!(names(env, &[]), ["named1"]);
    env.run(&["rm", "-f", "user1", "user2"]).ok();
    assert_eq!(env.run(&["volume", "rm", "named1"]).ok(), "named1\n");
    assert!(names(env, &[]).is_empty());
    assert!(!env.strata.root().join("volumes/named1").exists());
}

#[test]
fn volume_create_ls_inspect_rm_prune() {
    if !have_root("volume_create_ls_inspect_rm_prune") {
        return;
    }
    volume_commands(&Env::new());
}

#[test]
fn rootless_volume_create_ls_inspect_rm_prune() {
    if !have_root("rootless_volume_create_ls_inspect_rm_prune") {
        return;
    }
    run_test_as_user(
        "containers::volume::rootless_volume_create_ls_inspect_rm_prune_child",
        Rootless::Host,
    )
    .unwrap();
}

#[test]
#[ignore = "run by rootless_volume_create_ls_inspect_rm_prune"]
fn rootless_volume_create_ls_inspect_rm_prune_child() {
    assert!(is_child());
    volume_commands(&Env::new());
}

/// `volume rm` racing `run -v` on the same new volume: either the run got the volume (and
/// its data is there, rm refused) or rm removed it first (and run made it again): never a
/// container whose volume is gone.
#[test]
fn volume_rm_racing_run_never_loses_a_containers_volume() {
    if !have_root("volume_rm_racing_run_never_loses_a_containers_volume") {
        return;
    }
    let env = Env::new();
    for i in 0..8 {
        let name = format!("race{i}");
        env.run(&["volume", "create", &name]).ok();
        let spec = format!("{name}:/data");
        std::thread::scope(|s| {
            let create = s.spawn(|| env.run(&["create", "-v", &spec, "demo", "true"]));
            let rm = s.spawn(|| env.run(&["volume", "rm", &name]));
            let (create, rm) = (create.join().unwrap(), rm.join().unwrap());
            let id = create.ok().trim().to_string();
            if rm.code == 0 {
                assert_eq!(rm.stdout, format!("{name}\n"));
            } else {
                assert!(rm.stderr.contains("volume is in use"), "{}", rm.stderr);
            }
            // Whichever won, the container's volume exists.
            assert!(
                env.strata
                    .root()
                    .join("volumes")
                    .join(&name)
                    .join("_data")
                    .is_dir(),
                "{name}: the container {id} lost its volume"
            );
            let err = env.run(&["volume", "rm", &name]).fails(1);
            assert!(err.contains(&id), "{err}");
            env.run(&["rm", &id]).ok();
        });
    }
}
