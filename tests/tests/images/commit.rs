//! Authoring images from containers and tars: `commit` (every kind of change, `-c`, history,
//! pause), `export` (the merged view), `import` (plain, gzip, zstd, xz, bzip2; a file, stdin, an
//! http URL), `cp` with `-`, bad input leaving the store as it was, rootless owners, and the
//! same container changes committed by podman giving the same export listing.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use strata_tests::mounts::Tmpfs;
use strata_tests::strata::store_state;
use strata_tests::users::{have_root, is_child, run_test_as_user, Rootless};

use crate::containers::{run_input, Env};

/// What every kind of change looks like in a container of the demo image.
const CHANGES: &str = "set -e; \
    echo new > /new; ln /new /new2; \
    echo more >> /etc/passwd; rm /etc/group; \
    rm -r /home; mkdir /home; echo fresh > /home/fresh; \
    mkdir -p /data/sub; echo f > /data/sub/f; \
    chmod 4711 /bin/busybox; chmod 700 /root; \
    touch /owned; chown 1000:1000 /owned";

/// Every name under / on the container's own filesystem as `path owner mode type size`
/// (the files the runtime mounts over it left out: they are no part of an image).
const LISTING: &str = "cd / && find . -xdev ! -path ./etc/hosts ! -path ./etc/hostname \
    ! -path ./etc/resolv.conf | sort | while read -r p; do \
    stat -c '%n %u:%g %a %F %s' \"$p\"; done";

/// The files a runtime gives each container (docker's init layer: the network files under
/// their bind mounts): in an export, never in a commit.
fn runtime_file(path: &str) -> bool {
    matches!(
        path.trim_start_matches("./"),
        "etc/hosts" | "etc/hostname" | "etc/resolv.conf"
    )
}

fn listing(out: &str) -> Vec<String> {
    // A directory's size is the filesystem's business.
    out.lines()
        .map(|l| match l.contains(" directory ") {
            true => l.rsplit_once(' ').unwrap().0.to_string(),
            false => l.to_string(),
        })
        .collect()
}

fn image_id(out: &str) -> String {
    let id = out.trim().to_string();
    assert!(
        id.starts_with("sha256:") && id.len() == 71,
        "not an image ID: {id:?}"
    );
    id
}

/// The committed image shows exactly the container's files: added, changed (data, mode,
/// owner), deleted, an opaque directory, hard links, a renamed directory with its contents,
/// a device node, an xattr; the container keeps running through the commit (paused, then
/// thawed).
#[test]
fn commit_of_every_kind_of_change_shows_exactly_the_containers_files() {
    if !have_root("commit_of_every_kind_of_change_shows_exactly_the_containers_files") {
        return;
    }
    let env = Env::new();
    env.detach(&[
        "--name",
        "c1",
        "demo",
        "sh",
        "-c",
        &format!("{CHANGES}; mknod /dev-null c 1 3; echo ready > /ready; exec sleep 1000"),
    ]);
    env.exec_until("c1", "cat /ready", "ready");
    let before = listing(&env.run(&["exec", "c1", "sh", "-c", LISTING]).ok());
    let id = image_id(&env.run(&["commit", "c1", "step1"]).ok());
    assert_eq!(env.inspect("c1", "{{.State.Status}}"), "running");
    // Thawed: it still answers.
    env.run(&["exec", "c1", "true"]).ok();
    let after = listing(&env.run(&["run", "--rm", "step1", "sh", "-c", LISTING]).ok());
    assert_eq!(before, after);
    for want in [
        "./new 0:0 644 regular file 4",
        "./bin/busybox 0:0 4711 regular file",
        "./owned 1000:1000 644 regular empty file 0",
        "./dev-null 0:0 644 character special file 0",
        "./home/fresh 0:0 644 regular file 6",
    ] {
        assert!(
            after.iter().any(|l| l.starts_with(want)),
            "{want} missing:\n{}",
            after.join("\n")
        );
    }
    assert!(!after.iter().any(|l| l.starts_with("./etc/group ")));
    let out = env
        .run(&[
            "run",
            "--rm",
            "step1",
            "sh",
            "-c",
            "[ $(stat -c %i /new) = $(stat -c %i /new2) ] && stat -c %h /new && ls -a /home && tail -1 /etc/passwd",
        ])
        .ok();
    assert_eq!(out, "2\n.\n..\nfresh\nmore\n");
    env.run(&["rm", "-f", "c1"]).ok();

    // A renamed image directory with its contents, a deleted one, an xattr.
    let c2 = env.detach(&[
        "--name",
        "c2",
        "step1",
        "sh",
        "-c",
        "mv /data /moved && rm -r /home && echo ready > /ready2 && exec sleep 1000",
    ]);
    // (step1 has /ready already: c1 wrote it.)
    env.exec_until("c2", "cat /ready2", "ready");
    let upper = env.containers_dir().join(&c2).join("upper");
    xattr::set(upper.join("ready2"), "user.note", b"kept").unwrap();
    let id2 = image_id(&env.run(&["commit", "-p=false", "c2", "step2"]).ok());
    assert_ne!(id, id2);
    let out = env
        .run(&[
            "run",
            "--rm",
            "step2",
            "sh",
            "-c",
            "find /moved /data /home 2>&1; cat /moved/sub/f",
        ])
        .ok();
    assert!(out.contains("/moved\n/moved/sub\n/moved/sub/f\n"), "{out}");
    assert!(out.contains("/data: No such file or directory"), "{out}");
    assert!(out.contains("/home: No such file or directory"), "{out}");
    assert!(out.ends_with("f\n"), "{out}");
    // The xattr went into the layer (as its PAX record): the exported tar carries it.
    env.run(&["create", "--name", "c3", "step2"]).ok();
    let tar = env.run(&["export", "c3"]);
    assert_eq!(tar.code, 0, "{}", tar.stderr);
    let bytes = env
        .strata
        .command(&["export", "c3"])
        .output()
        .unwrap()
        .stdout;
    let mut ar = tar::Archive::new(&bytes[..]);
    let mut found = false;
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("ready2") {
            for x in e.pax_extensions().unwrap().unwrap() {
                let x = x.unwrap();
                found |= x.key().unwrap() == "SCHILY.xattr.user.note" && x.value_bytes() == b"kept";
            }
        }
    }
    assert!(found, "user.note missing from the committed /ready2");
}

/// `-a`, `-m`, `-c` reach inspect and history; the printed ID is the image's; the committed
/// config is the container's (its command, its `-e`), then the changes.
#[test]
fn commit_changes_author_message_and_history() {
    if !have_root("commit_changes_author_message_and_history") {
        return;
    }
    let env = Env::new();
    env.run(&[
        "run",
        "--name",
        "hist",
        "-e",
        "FROM_RUN=1",
        "demo",
        "sh",
        "-c",
        "echo hi > /hi",
    ])
    .ok();
    let id = image_id(
        &env.run(&[
            "commit",
            "-a",
            "Ann <ann@example.com>",
            "-m",
            "first commit",
            "-c",
            "ENV A=1 B=\"two words\"",
            "-c",
            "CMD [\"cat\", \"/hi\"]",
            "-c",
            "EXPOSE 8080",
            "-c",
            "LABEL team=fs",
            "-c",
            "USER nobody",
            "-c",
            "VOLUME /vol",
            "-c",
            "WORKDIR /tmp",
            "hist",
            "mine:1",
        ])
        .ok(),
    );
    assert_eq!(env.inspect("mine:1", "{{.Id}}"), id);
    assert_eq!(
        env.inspect("mine:1", "{{.Author}}"),
        "Ann <ann@example.com>"
    );
    assert_eq!(env.inspect("mine:1", "{{.Comment}}"), "first commit");
    let config: serde_json::Value =
        serde_json::from_str(&env.inspect("mine:1", "{{json .Config}}")).unwrap();
    assert_eq!(config["Cmd"], serde_json::json!(["cat", "/hi"]));
    let env_list: Vec<&str> = config["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for want in ["FROM_RUN=1", "A=1", "B=two words"] {
        assert!(env_list.contains(&want), "{env_list:?}");
    }
    assert_eq!(config["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
    assert_eq!(config["Labels"]["team"], "fs");
    assert_eq!(config["User"], "nobody");
    assert_eq!(config["Volumes"], serde_json::json!({"/vol": {}}));
    assert_eq!(config["WorkingDir"], "/tmp");
    let history = env
        .run(&[
            "history",
            "--no-trunc",
            "--format",
            "{{.CreatedBy}}|{{.Comment}}",
            "mine:1",
        ])
        .ok();
    assert_eq!(
        history.lines().next().unwrap(),
        "sh -c echo hi > /hi|first commit"
    );
    assert_eq!(history.lines().count(), 2);
    // USER nobody, WORKDIR /tmp and the command apply when it runs.
    assert_eq!(
        env.run(&["run", "--rm", "mine:1"]).ok(),
        "hi\n",
        "the committed Cmd"
    );
    // No name: a dangling image, by ID.
    let anon = image_id(&env.run(&["commit", "hist"]).ok());
    assert_eq!(env.inspect(&anon, "{{.Id}}"), anon);
}

/// `export` writes the merged view: the same names a `find` in the container lists, with
/// the container's changes; `-o` writes a file; `export | head` ends quietly.
#[test]
fn export_lists_the_merged_view() {
    if !have_root("export_lists_the_merged_view") {
        return;
    }
    let env = Env::new();
    env.run(&["run", "--name", "ex", "demo", "sh", "-c", CHANGES])
        .ok();
    let file = env.tmp.path().join("ex.tar");
    env.run(&["export", "-o", file.to_str().unwrap(), "ex"])
        .ok();
    let bytes = std::fs::read(&file).unwrap();
    let mut names = BTreeSet::new();
    let mut ar = tar::Archive::new(&bytes[..]);
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let name = format!(
            "./{}",
            e.path().unwrap().to_string_lossy().trim_end_matches('/')
        );
        if !runtime_file(&name) {
            names.insert(name);
        }
    }
    let want: BTreeSet<String> = env
        .run(&[
            "run",
            "--rm",
            "demo",
            "sh",
            "-c",
            &format!("{CHANGES}; cd / && find . -xdev ! -path ./etc/hosts ! -path ./etc/hostname ! -path ./etc/resolv.conf"),
        ])
        .ok()
        .lines()
        .filter(|l| *l != ".")
        .map(str::to_string)
        .collect();
    assert_eq!(
        names.difference(&want).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "exported but not in the container"
    );
    assert_eq!(
        want.difference(&names).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "in the container but not exported"
    );
    assert!(names.contains("./new") && !names.contains("./etc/group"));
    // stdout gives the same bytes as -o.
    let out = env.strata.command(&["export", "ex"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, bytes);
    // A terminal as stdout is refused (docker's words and status), nothing written to it.
    let (code, shown) = crate::containers::terminal_session(&env, "export ex", b"", &[]);
    assert_eq!(code, Some(1), "{shown}");
    assert!(
        shown.contains("cowardly refusing to save to a terminal. Use the -o flag or redirect")
            && !shown.contains("ustar"),
        "{shown}"
    );
    // A reader that stops early is no error.
    let mut child = env
        .strata
        .command(&["export", "ex"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 512];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Serves `body` to every GET on a loopback port until the test ends; returns the URL.
fn serve(body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut req = [0u8; 4096];
            let _ = conn.read(&mut req);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body);
        }
    });
    format!("http://127.0.0.1:{port}/rootfs.tar")
}

/// `import` of the exported tar, plain and compressed, from a file, stdin and a URL: the
/// same layer each time, docker's history row, `-c` and `-m`.
#[test]
fn import_plain_gzip_zstd_xz_bzip2_stdin_and_url() {
    if !have_root("import_plain_gzip_zstd_xz_bzip2_stdin_and_url") {
        return;
    }
    let env = Env::new();
    env.run(&[
        "run",
        "--name",
        "src",
        "demo",
        "sh",
        "-c",
        "echo imported > /mark",
    ])
    .ok();
    let plain = env.tmp.path().join("rootfs.tar");
    env.run(&["export", "-o", plain.to_str().unwrap(), "src"])
        .ok();
    let raw = std::fs::read(&plain).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&raw[..], 3).unwrap();
    let xz_out = Command::new("xz")
        .args(["-1", "-c"])
        .arg(&plain)
        .output()
        .unwrap();
    assert!(xz_out.status.success());
    let bz_out = Command::new("bzip2")
        .args(["-1", "-c"])
        .arg(&plain)
        .output()
        .unwrap();
    assert!(bz_out.status.success());
    let mut diff_ids = BTreeSet::new();
    for (name, bytes) in [
        ("gz", &gz),
        ("zst", &zst),
        ("xz", &xz_out.stdout),
        ("bz2", &bz_out.stdout),
    ] {
        let p = env.tmp.path().join(format!("rootfs.tar.{name}"));
        std::fs::write(&p, bytes).unwrap();
        let tag = format!("imp:{name}");
        image_id(&env.run(&["import", p.to_str().unwrap(), &tag]).ok());
        assert_eq!(
            env.run(&["run", "--rm", &tag, "cat", "/mark"]).ok(),
            "imported\n"
        );
        diff_ids.insert(env.inspect(&tag, "{{json .RootFS.Layers}}"));
        assert_eq!(
            env.run(&["history", "--format", "{{.Comment}}", &tag]).ok(),
            format!("Imported from {}\n", p.display())
        );
    }
    let id = image_id(
        &run_input(
            &env.strata,
            &[
                "import",
                "-m",
                "from stdin",
                "-c",
                "CMD [\"cat\", \"/mark\"]",
                "-",
                "imp:stdin",
            ],
            &raw,
        )
        .ok(),
    );
    assert_eq!(env.inspect("imp:stdin", "{{.Id}}"), id);
    assert_eq!(env.run(&["run", "--rm", "imp:stdin"]).ok(), "imported\n");
    assert_eq!(
        env.run(&["history", "--format", "{{.Comment}}", "imp:stdin"])
            .ok(),
        "from stdin\n"
    );
    diff_ids.insert(env.inspect("imp:stdin", "{{json .RootFS.Layers}}"));
    let url = serve(gz.clone());
    image_id(&env.run(&["import", &url, "imp:url"]).ok());
    assert_eq!(
        env.run(&["run", "--rm", "imp:url", "cat", "/mark"]).ok(),
        "imported\n"
    );
    assert_eq!(
        env.run(&["history", "--format", "{{.Comment}}", "imp:url"])
            .ok(),
        format!("Imported from {url}\n")
    );
    diff_ids.insert(env.inspect("imp:url", "{{json .RootFS.Layers}}"));
    assert_eq!(diff_ids.len(), 1, "{diff_ids:?}");
}

/// Bad input: docker's messages and exit status, and the store as it was.
#[test]
fn bad_commit_and_import_input_leave_the_store_as_it_was() {
    if !have_root("bad_commit_and_import_input_leave_the_store_as_it_was") {
        return;
    }
    let env = Env::new();
    env.run(&["run", "--name", "bad", "demo", "true"]).ok();
    let before = store_state(env.strata.root());
    let err = env.run(&["commit", "nosuch", "x:1"]).fails(1);
    assert_eq!(
        err,
        "Error response from daemon: No such container: nosuch\n"
    );
    let err = env
        .run(&["commit", "-c", "RUN true", "bad", "x:1"])
        .fails(1);
    assert!(err.contains("RUN is not a valid change command"), "{err}");
    let err = env.run(&["commit", "bad", "Bad:Name:x"]).fails(1);
    assert!(err.contains("invalid reference format"), "{err}");
    let err = env.run(&["export", "nosuch"]).fails(1);
    assert!(err.contains("No such container: nosuch"), "{err}");

    let not_tar = env.tmp.path().join("not.tar");
    std::fs::write(&not_tar, "this is no tar archive, just words\n".repeat(40)).unwrap();
    let err = env
        .run(&["import", not_tar.to_str().unwrap(), "x:1"])
        .fails(1);
    assert!(
        err.starts_with("Error response from daemon: importing the tar"),
        "{err}"
    );
    let missing = env.tmp.path().join("missing.tar");
    let err = env
        .run(&["import", missing.to_str().unwrap(), "x:1"])
        .fails(1);
    assert!(
        err.contains("missing.tar") && err.contains("No such file"),
        "{err}"
    );
    // A hostile tar: a name that climbs out.
    let mut hostile = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.as_gnu_mut().unwrap().name[..12].copy_from_slice(b"../../escape");
    h.set_cksum();
    hostile.append(&h, &b"x"[..]).unwrap();
    let hostile = hostile.into_inner().unwrap();
    let err = run_input(&env.strata, &["import", "-", "x:1"], &hostile).fails(1);
    assert!(err.contains("../../escape"), "{err}");
    // Unreachable: nothing listens on a port just closed.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/rootfs.tar");
    let err = env.run(&["import", &url, "x:1"]).fails(1);
    assert!(
        err.contains(&format!("Get \"{url}\"")) && err.contains("refused"),
        "{err}"
    );
    assert_eq!(store_state(env.strata.root()), before);
    assert!(env.run(&["images", "-q"]).ok().lines().count() == 1);
}

/// `cp` with `-`: a tar of a container's path on stdout, a tar on stdin extracted into a
/// container's directory (running and stopped).
#[test]
fn cp_streams_tars_from_and_to_stdin_and_stdout() {
    if !have_root("cp_streams_tars_from_and_to_stdin_and_stdout") {
        return;
    }
    let env = Env::new();
    env.run(&[
        "create",
        "--name",
        "st",
        "demo",
        "sh",
        "-c",
        "cat /in/sub/f /in/top",
    ])
    .ok();
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [("in/sub/f", "deep\n"), ("in/top", "top\n")] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o640);
        b.append_data(&mut h, name, data.as_bytes()).unwrap();
    }
    // A second name of in/top: the stream out marks it as a hard link, as tar does.
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Link);
    h.set_mode(0o640);
    h.set_size(0);
    b.append_link(&mut h, "in/hl", "in/top").unwrap();
    let input = b.into_inner().unwrap();
    run_input(&env.strata, &["cp", "-", "st:/"], &input).ok();
    assert_eq!(env.run(&["start", "-a", "st"]).ok(), "deep\ntop\n");
    let out = env.strata.command(&["cp", "st:/in", "-"]).output().unwrap();
    assert!(out.status.success());
    let mut names = Vec::new();
    let mut ar = tar::Archive::new(&out.stdout[..]);
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let link = match e.header().entry_type() {
            tar::EntryType::Link => {
                format!(" link to {}", e.link_name().unwrap().unwrap().display())
            }
            _ => String::new(),
        };
        names.push(format!(
            "{} {:o}{link}",
            e.path().unwrap().to_string_lossy().trim_end_matches('/'),
            e.header().mode().unwrap() & 0o7777
        ));
    }
    names.sort();
    assert_eq!(
        names,
        [
            "in 755",
            "in/hl 640",
            "in/sub 755",
            "in/sub/f 640",
            "in/top 640 link to in/hl"
        ]
    );
    // Into a running container; a file as the target is refused.
    env.detach(&["--name", "run1", "demo", "sleep", "1000"]);
    run_input(&env.strata, &["cp", "-", "run1:/tmp"], &input).ok();
    assert_eq!(
        env.run(&["exec", "run1", "cat", "/tmp/in/top"]).ok(),
        "top\n"
    );
    let err = run_input(&env.strata, &["cp", "-", "run1:/etc/passwd"], &input).fails(1);
    assert!(err.contains("not a directory"), "{err}");
}

/// Rootless: a commit keeps the owners the container gave (through its user namespace, or
/// the override xattr where the host refused them), and runs as the user's own.
#[test]
fn rootless_commit_keeps_owners_and_export_shows_them() {
    if !have_root("rootless_commit_keeps_owners_and_export_shows_them") {
        return;
    }
    run_test_as_user(
        "images::commit::rootless_commit_keeps_owners_and_export_shows_them_child",
        Rootless::Host,
    )
    .unwrap();
}

#[test]
#[ignore = "run by rootless_commit_keeps_owners_and_export_shows_them"]
fn rootless_commit_keeps_owners_and_export_shows_them_child() {
    assert!(is_child());
    let env = Env::new();
    env.run(&[
        "run",
        "--name",
        "rl",
        "demo",
        "sh",
        "-c",
        "echo x > /mine; touch /other; chown 7:8 /other; chmod 640 /other; rm /etc/group; mkdir /d; ln /mine /d/link",
    ])
    .ok();
    let listing_script =
        "stat -c '%n %u:%g %a' /mine /other /d/link; ls /etc/group 2>&1; stat -c %h /mine";
    let want = "/mine 0:0 644\n/other 7:8 640\n/d/link 0:0 644\n\
                ls: /etc/group: No such file or directory\n2\n";
    image_id(&env.run(&["commit", "rl", "rl:1"]).ok());
    assert_eq!(
        env.run(&["run", "--rm", "rl:1", "sh", "-c", listing_script])
            .ok(),
        want
    );
    let out = env.strata.command(&["export", "rl"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut ar = tar::Archive::new(&out.stdout[..]);
    let mut seen = 0;
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        match e.path().unwrap().to_str().unwrap() {
            "other" => {
                assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (7, 8));
                assert_eq!(h.mode().unwrap() & 0o7777, 0o640);
                seen += 1;
            }
            "mine" => {
                assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
                seen += 1;
            }
            "etc/group" => panic!("a deleted file was exported"),
            _ => {}
        }
    }
    assert_eq!(seen, 2);
}

/// podman on a private store under `dir` (vfs: nothing stays mounted when the test's
/// directory goes); its stdout.
fn podman(dir: &Path, args: &[&str]) -> String {
    let out = strata_tests::podman::command(dir, "vfs")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tar's entries as `path type mode uid:gid size link`, sorted (times left out: each
/// tool writes its own).
fn tar_listing(bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut ar = tar::Archive::new(bytes);
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        let link = e
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push(format!(
            "{} {:?} {:o} {}:{} {} {link}",
            e.path().unwrap().to_string_lossy().trim_end_matches('/'),
            h.entry_type(),
            h.mode().unwrap() & 0o7777,
            h.uid().unwrap(),
            h.gid().unwrap(),
            h.size().unwrap(),
        ));
    }
    out.sort();
    out
}

/// The same container changes committed by `podman commit` and by `strata commit` give the
/// same `export` listing of a container of the committed image. The files each runtime
/// gives its containers are left out on both sides (the network files; podman's
/// `/etc/mtab` and `/run/.containerenv`, which it creates in every container's upper).
#[test]
fn podman_commit_of_the_same_changes_exports_the_same_files() {
    if !have_root("podman_commit_of_the_same_changes_exports_the_same_files") {
        return;
    }
    let env = Env::new();
    let pm = env.tmp.path().join("podman");
    // The demo image into podman's store, from strata's OCI layout.
    env.run(&["run", "--rm", "demo", "true"]).ok();
    let out = Command::new("skopeo")
        .arg("copy")
        .arg(format!(
            "oci:{}:localhost/demo:latest",
            env.strata.root().display()
        ))
        .arg(strata_tests::podman::storage_ref(
            &pm,
            "vfs",
            "localhost/demo:latest",
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Hard links and renames are where the tools' layer writers differ most.
    let script = "set -e; echo new > /new; ln /new /new2; rm /etc/group; echo x >> /etc/passwd; \
                  mkdir -p /data/sub; echo f > /data/sub/f; mv /home /home2; \
                  chmod 700 /root; touch /owned; chown 5:6 /owned";
    podman(
        &pm,
        &[
            "run",
            "--ulimit",
            strata_tests::podman::ULIMITS[1],
            "--ulimit",
            strata_tests::podman::ULIMITS[3],
            "--network",
            "none",
            "--name",
            "p1",
            "localhost/demo:latest",
            "sh",
            "-c",
            script,
        ],
    );
    podman(&pm, &["commit", "p1", "localhost/pimg"]);
    podman(&pm, &["create", "--name", "p2", "localhost/pimg", "true"]);
    let ptar = env.tmp.path().join("p.tar");
    podman(&pm, &["export", "-o", ptar.to_str().unwrap(), "p2"]);
    let podman_side: Vec<String> = tar_listing(&std::fs::read(&ptar).unwrap())
        .into_iter()
        .filter(|l| {
            let p = l.split(' ').next().unwrap();
            !runtime_file(p) && !matches!(p, "etc/mtab" | "run" | "run/.containerenv")
        })
        .collect();
    env.run(&["run", "--name", "s1", "demo", "sh", "-c", script])
        .ok();
    env.run(&["commit", "s1", "simg"]).ok();
    env.run(&["create", "--name", "s2", "simg", "true"]).ok();
    let out = env.strata.command(&["export", "s2"]).output().unwrap();
    assert!(out.status.success());
    let strata_side: Vec<String> = tar_listing(&out.stdout)
        .into_iter()
        .filter(|l| !runtime_file(l.split(' ').next().unwrap()))
        .collect();
    assert_eq!(strata_side, podman_side);
    let _ = strata_tests::podman::command(&pm, "vfs")
        .args(["rm", "-a", "-f"])
        .output();
}

/// A full disk during a commit (the store on a small tmpfs): a clear error, the container
/// thawed and untouched, and nothing of the half-written layer left in the store.
#[test]
fn commit_on_a_full_disk_leaves_the_store_as_it_was() {
    if !have_root("commit_on_a_full_disk_leaves_the_store_as_it_was") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("strata-full")
        .tempdir()
        .unwrap();
    let root = dir.path().join("root");
    let _mounted = Tmpfs::mount(&root, "size=12m").unwrap();
    let strata = strata_tests::strata::Strata::new(&root).unwrap();
    // 4 MiB of incompressible data: the upper holds it; its blob and layer data (8 MiB
    // more) do not fit beside the demo image.
    let r = strata.run(&[
        "run",
        "--name",
        "full",
        "demo",
        "sh",
        "-c",
        "head -c 4194304 /dev/urandom > /big",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let before = store_state(&root);
    let err = strata.run(&["commit", "full", "big:1"]).fails(1);
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(store_state(&root), before);
    assert_eq!(strata.run(&["images", "-q"]).ok().lines().count(), 1);
    strata.run(&["rm", "full"]).ok();
}
