//! `-p`/`-P`: host ports forwarded into the container's own network namespace: through the
//! bridge's proxy as root, through slirp4netns rootless (and as root with `--network
//! slirp4netns`); a clear error when slirp4netns is asked for and not installed.

use std::io::{Read, Write};
use std::time::Duration;

use strata_tests::mounts::wait_for;
use strata_tests::users::{have_root, run_test_as_user, Rootless};

use super::{processes_with, Env};

/// Whether slirp4netns is in PATH (the rootless network's helper too); when not, the test
/// says it skipped (or fails under STRATA_PRIVILEGED_TESTS=1, where CI installs slirp4netns).
pub(super) fn have_port_helper(test: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("slirp4netns").is_file()));
    if !found {
        if std::env::var_os("STRATA_PRIVILEGED_TESTS").is_some_and(|v| v == "1") {
            panic!("{test}: STRATA_PRIVILEGED_TESTS=1 but slirp4netns is not installed");
        }
        eprintln!("{test}: skipped, needs slirp4netns");
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET / from 127.0.0.1:`port`, retried until the server answers.
fn http_get(port: u16) -> String {
    let mut body = String::new();
    let r = wait_for(Duration::from_secs(30), "the published port", || {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
            return false;
        }
        body.clear();
        s.read_to_string(&mut body).is_ok() && body.contains("200 OK")
    });
    assert!(r.is_ok(), "no answer on port {port}: {body:?}");
    body
}

const SERVE: &str = "mkdir -p /www && echo served-from-the-container > /www/index.html && exec httpd -f -p 80 -h /www";

/// `-p`/`-P` on `network` (empty: the default, the bridge as root and slirp4netns
/// rootless): a page served in the container is fetched on the host port; after `rm -f`
/// the port is free again (the proxy or slirp4netns went with the container).
fn publish_and_fetch(env: &Env, network: &[&str]) {
    let port = free_port();
    let spec = format!("{port}:80");
    let mut args = vec!["--name", "web"];
    args.extend_from_slice(network);
    args.extend_from_slice(&[
        "-p", &spec, "--expose", "8082", "-P", "demo", "sh", "-c", SERVE,
    ]);
    let id = env.detach(&args);
    assert!(http_get(port).contains("served-from-the-container"));
    let listed = env.run(&["port", "web"]).ok();
    let mut lines: Vec<&str> = listed.lines().collect();
    lines.sort();
    assert_eq!(lines.len(), 2, "{listed}");
    assert_eq!(lines[0], format!("80/tcp -> 0.0.0.0:{port}"));
    assert!(lines[1].starts_with("8082/tcp -> 0.0.0.0:"), "{listed}");
    assert_eq!(
        env.run(&["port", "web", "80"]).ok(),
        format!("0.0.0.0:{port}\n")
    );
    let ps = env.run(&["ps", "--format", "{{.Ports}}"]).ok();
    assert!(ps.contains(&format!("0.0.0.0:{port}->80/tcp")), "{ps}");
    let dir = env.containers_dir().join(&id);
    let slirp = env.inspect("web", "{{.HostConfig.NetworkMode}}") == "slirp4netns";
    // slirp4netns names the namespace by the monitor's descriptor of it.
    let monitor = env.state(&id)["monitor_pid"].as_i64().unwrap();
    let helper = format!("/proc/{monitor}/fd/");
    if slirp {
        assert_eq!(
            processes_with(&helper).len(),
            1,
            "no slirp4netns for the container"
        );
    }
    env.run(&["rm", "-f", "web"]).ok();
    // The monitor may still be ending when rm returns.
    wait_for(Duration::from_secs(30), "the published port freed", || {
        std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
    })
    .unwrap();
    wait_for(Duration::from_secs(30), "slirp4netns gone", || {
        processes_with(&helper).is_empty()
    })
    .unwrap();
    assert!(!dir.exists());
}

#[test]
fn publish_forwards_host_ports_into_the_container() {
    let name = "publish_forwards_host_ports_into_the_container";
    if !have_root(name) || !have_port_helper(name) {
        return;
    }
    publish_and_fetch(&Env::new(), &[]);
    publish_and_fetch(&Env::new(), &["--network", "slirp4netns"]);
}

#[test]
fn rootless_publish_forwards_host_ports_into_the_container() {
    let name = "rootless_publish_forwards_host_ports_into_the_container";
    if !have_root(name) || !have_port_helper(name) {
        return;
    }
    // slirp4netns opens /dev/net/tun in the container's namespace; distributions ship it
    // usable by everyone (CI makes it so, as it does /dev/fuse).
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata("/dev/net/tun")
        .map(|m| m.permissions().mode())
        .unwrap_or(0);
    if mode & 0o006 != 0o006 {
        if std::env::var_os("STRATA_PRIVILEGED_TESTS").is_some_and(|v| v == "1") {
            panic!("{name}: /dev/net/tun is not usable by other users (mode {mode:o})");
        }
        eprintln!("{name}: skipped, /dev/net/tun is mode {mode:o}");
        return;
    }
    run_test_as_user(
        "containers::ports::rootless_publish_forwards_host_ports_into_the_container_child",
        Rootless::Host,
    )
    .unwrap();
}

#[test]
#[ignore = "run by rootless_publish_forwards_host_ports_into_the_container"]
fn rootless_publish_forwards_host_ports_into_the_container_child() {
    publish_and_fetch(&Env::new(), &[]);
}

#[test]
fn publish_without_slirp4netns_fails_clearly() {
    if !have_root("publish_without_slirp4netns_fails_clearly") {
        return;
    }
    let env = Env::new();
    let empty = env.tmp.path().join("empty-path");
    std::fs::create_dir(&empty).unwrap();
    for args in [
        &[
            "run",
            "--network",
            "slirp4netns",
            "-p",
            "8080:80",
            "demo",
            "true",
        ][..],
        &[
            "create",
            "--net",
            "slirp4netns",
            "-P",
            "--expose",
            "80",
            "demo",
        ],
    ] {
        let out = env
            .strata
            .command(args)
            .env("PATH", &empty)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("needs slirp4netns, which is not installed"),
            "{err}"
        );
    }
    assert!(env.container_dirs().is_empty());
    // Host networking needs no helper: the ports are the host's already.
    let out = env
        .strata
        .command(&[
            "run",
            "--rm",
            "--network",
            "host",
            "-p",
            "8080:80",
            "demo",
            "true",
        ])
        .env("PATH", &empty)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
