//! The network docker users expect, with no internet: the default network (the strata0
//! bridge as root, slirp4netns rootless) reaches a server this test starts on the host by
//! the `host-gateway` name; `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` say what
//! the flags asked and never show in `diff`; `--network none` has only loopback; containers
//! on the bridge reach each other; many at once get distinct addresses, and `rm` leaves no
//! veth, lease or rule behind.

use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

use strata_tests::mounts::wait_for;
use strata_tests::users::{have_root, is_child, run_test_as_user, Rootless};

use super::ports::have_port_helper;
use super::Env;

/// A server on all the host's addresses that greets each connection; its port.
fn host_server(greeting: &'static str) -> u16 {
    let l = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let _ = c.write_all(greeting.as_bytes());
        }
    });
    port
}

/// Container `web`, serving `from-web` on port 8080.
fn serve_web(env: &Env) {
    env.detach(&[
        "--name",
        "web",
        "demo",
        "sh",
        "-c",
        "mkdir -p /www && echo from-web > /www/index.html && exec httpd -f -p 8080 -h /www",
    ]);
}

/// The default network's checks, as root or rootless: the host by `host-gateway`
/// (`gateway` in /etc/hosts), the files as the flags asked, the hostname resolving to the
/// container's own address, nothing in `diff`, `--network none` with loopback only.
/// Returns the address the container saw on its interface.
fn check_default_network(env: &Env, gateway: &str) -> String {
    let port = host_server("hello-from-the-host\n").to_string();
    let script = format!("nc host.docker.internal {port} </dev/null");
    let out = env
        .run(&[
            "run",
            "--rm",
            "--add-host",
            "host.docker.internal:host-gateway",
            "demo",
            "sh",
            "-c",
            &script,
        ])
        .ok();
    assert_eq!(out, "hello-from-the-host\n");

    let out = env
        .run(&[
            "run",
            "--name",
            "files",
            "-h",
            "web",
            "--add-host",
            "db:10.1.2.3",
            "--add-host",
            "gw:host-gateway",
            "--dns",
            "10.9.9.9",
            "--dns-search",
            "x.test",
            "--dns-option",
            "ndots:2",
            "demo",
            "sh",
            "-c",
            "cat /etc/hosts; echo ---; cat /etc/hostname; echo ---; cat /etc/resolv.conf; \
             echo ---; ping -c1 -W1 $(hostname) | head -1; echo ---; \
             ip -o -4 addr | grep -v ' lo ' | sed 's/.*inet \\([0-9.]*\\).*/\\1/'",
        ])
        .ok();
    let parts: Vec<&str> = out.split("---\n").collect();
    assert_eq!(parts.len(), 5, "{out}");
    let my_ip = parts[4].trim();
    assert!(!my_ip.is_empty(), "no address: {out}");
    let hosts: Vec<&str> = parts[0].lines().collect();
    assert_eq!(hosts[0], "127.0.0.1\tlocalhost", "{out}");
    assert!(hosts.contains(&"10.1.2.3\tdb"), "{out}");
    assert!(hosts.contains(&format!("{gateway}\tgw").as_str()), "{out}");
    assert_eq!(*hosts.last().unwrap(), format!("{my_ip}\tweb"), "{out}");
    assert_eq!(parts[1], "web\n");
    assert_eq!(
        parts[2],
        "search x.test\nnameserver 10.9.9.9\noptions ndots:2\n"
    );
    assert!(
        parts[3].starts_with(&format!("PING web ({my_ip})")),
        "the hostname does not resolve to the container: {out}"
    );
    assert_eq!(
        env.inspect(
            "files",
            "{{json .HostConfig.ExtraHosts}} {{json .HostConfig.Dns}}"
        ),
        r#"["db:10.1.2.3","gw:host-gateway"] ["10.9.9.9"]"#
    );
    // The files live in the container's directory, mounted over the root: not in the upper.
    assert_eq!(env.run(&["diff", "files"]).ok(), "");
    let upper = env
        .containers_dir()
        .join(env.inspect("files", "{{.Id}}"))
        .join("upper");
    assert!(
        !upper.join("etc").exists(),
        "the network files reached the upper"
    );
    env.run(&["rm", "files"]).ok();

    let out = env
        .run(&[
            "run",
            "--rm",
            "--network",
            "none",
            "demo",
            "sh",
            "-c",
            "ls /sys/class/net; ip -o -4 addr | wc -l",
        ])
        .ok();
    assert_eq!(out, "lo\n1\n");
    my_ip.to_string()
}

#[test]
fn bridge_network_reaches_the_host_and_writes_the_files() {
    if !have_root("bridge_network_reaches_the_host_and_writes_the_files") {
        return;
    }
    let env = Env::new();
    // The default network as root is the bridge: an address in 10.215.0.0/24, docker's
    // MAC derived from it.
    let id = env.detach(&["--name", "bb", "demo", "sleep", "300"]);
    let ip = env.inspect("bb", "{{.NetworkSettings.IPAddress}}");
    assert!(ip.starts_with("10.215.0."), "{ip}");
    assert_eq!(
        env.inspect(
            "bb",
            "{{.HostConfig.NetworkMode}} {{.NetworkSettings.Gateway}}"
        ),
        "bridge 10.215.0.1"
    );
    let mac = env.inspect("bb", "{{.NetworkSettings.MacAddress}}");
    assert!(mac.starts_with("02:42:0a:d7:00:"), "{mac}");
    let out = env
        .run(&["exec", "bb", "cat", "/sys/class/net/eth0/address"])
        .ok();
    assert_eq!(out.trim(), mac);
    // The veth's MTU is the host uplink's (not docker's 1500 over a smaller uplink).
    let routes = std::fs::read_to_string("/proc/net/route").unwrap();
    let uplink = routes
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("00000000"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    let host_mtu = std::fs::read_to_string(format!("/sys/class/net/{uplink}/mtu")).unwrap();
    let mtu = env
        .run(&["exec", "bb", "cat", "/sys/class/net/eth0/mtu"])
        .ok();
    assert_eq!(mtu, host_mtu);
    // No 127.x resolver of the host's: a container in its own namespace cannot reach it.
    let resolv = env.run(&["exec", "bb", "cat", "/etc/resolv.conf"]).ok();
    assert!(resolv.contains("nameserver "), "{resolv}");
    assert!(!resolv.contains("nameserver 127."), "{resolv}");
    env.run(&["rm", "-f", "bb"]).ok();
    assert!(!std::path::Path::new("/sys/class/net")
        .join(format!("st{}", &id[..12]))
        .exists());
    let ip = check_default_network(&env, "10.215.0.1");
    assert!(ip.starts_with("10.215.0."), "{ip}");
}

#[test]
fn rootless_default_network_reaches_the_host_and_writes_the_files() {
    let name = "rootless_default_network_reaches_the_host_and_writes_the_files";
    if !have_root(name) || !have_port_helper(name) {
        return;
    }
    run_test_as_user(
        &format!("containers::network::{name}_child"),
        Rootless::Host,
    )
    .unwrap();
}

#[test]
#[ignore = "run by rootless_default_network_reaches_the_host_and_writes_the_files"]
fn rootless_default_network_reaches_the_host_and_writes_the_files_child() {
    assert!(is_child());
    let env = Env::new();
    // slirp4netns: its fixed addresses; the host is 10.0.2.2 and DNS goes to 10.0.2.3.
    assert_eq!(check_default_network(&env, "10.0.2.2"), "10.0.2.100");
    let out = env
        .run(&["run", "--rm", "demo", "cat", "/etc/resolv.conf"])
        .ok();
    assert!(out.contains("nameserver 10.0.2.3\n"), "{out}");
    env.detach(&["--name", "sl", "demo", "sleep", "300"]);
    assert_eq!(
        env.inspect(
            "sl",
            "{{.HostConfig.NetworkMode}} {{.NetworkSettings.IPAddress}} {{.NetworkSettings.Gateway}}"
        ),
        "slirp4netns 10.0.2.100 10.0.2.2"
    );
    env.run(&["rm", "-f", "sl"]).ok();
    // container:NAME rootless: the monitor joins the other's user namespace to enter its
    // network namespace.
    serve_web(&env);
    let mut last = String::new();
    let r = wait_for(Duration::from_secs(30), "web through its namespace", || {
        last = env
            .run(&[
                "run",
                "--rm",
                "--network",
                "container:web",
                "demo",
                "wget",
                "-qO-",
                "http://127.0.0.1:8080/",
            ])
            .stdout;
        last == "from-web\n"
    });
    assert!(r.is_ok(), "{last}");
    env.run(&["rm", "-f", "web"]).ok();
}

/// `ip -o link` names and the iptables rules of both tables, for leftovers.
fn host_links_and_rules() -> (String, String) {
    let links = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut rules = String::new();
    for table in ["filter", "nat"] {
        let out = std::process::Command::new("iptables")
            .args(["-w", "-t", table, "-S"])
            .output()
            .unwrap();
        rules.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    (links, rules)
}

#[test]
fn bridge_containers_reach_each_other_and_share_namespaces() {
    if !have_root("bridge_containers_reach_each_other_and_share_namespaces") {
        return;
    }
    let env = Env::new();
    serve_web(&env);
    let ip = env.inspect("web", "{{.NetworkSettings.IPAddress}}");
    assert!(ip.starts_with("10.215.0."), "{ip}");
    let url = format!("http://{ip}:8080/");
    let mut last = String::new();
    let r = wait_for(
        Duration::from_secs(30),
        "web from another container",
        || {
            last = env
                .run(&["run", "--rm", "demo", "wget", "-qO-", &url])
                .stdout;
            last == "from-web\n"
        },
    );
    assert!(r.is_ok(), "{url}: {last}");
    // container:web: the same namespace (its loopback), its files.
    let out = env
        .run(&[
            "run",
            "--rm",
            "--network",
            "container:web",
            "demo",
            "sh",
            "-c",
            "wget -qO- http://127.0.0.1:8080/; tail -1 /etc/hosts | cut -f1",
        ])
        .ok();
    assert_eq!(out, format!("from-web\n{ip}\n"));
    env.run(&[
        "run",
        "--rm",
        "--network",
        "container:nosuch",
        "demo",
        "true",
    ])
    .fails(125);
    // rm takes its veth away.
    let id = env.inspect("web", "{{.Id}}");
    env.run(&["rm", "-f", "web"]).ok();
    let (links, _) = host_links_and_rules();
    assert!(!links.contains(&format!("st{}", &id[..12])), "{links}");
}

#[test]
fn bridge_many_containers_get_distinct_addresses_and_rm_cleans_up() {
    if !have_root("bridge_many_containers_get_distinct_addresses_and_rm_cleans_up") {
        return;
    }
    let env = Env::new();
    let n = 8;
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| s.spawn(|| env.detach(&["demo", "sleep", "300"])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips: Vec<String> = ids
        .iter()
        .map(|id| env.inspect(id, "{{.NetworkSettings.IPAddress}}"))
        .collect();
    for (id, ip) in ids.iter().zip(&ips) {
        assert!(ip.starts_with("10.215.0."), "{id}: {ip}");
        let veth = format!("st{}", &id[..12]);
        assert!(
            std::path::Path::new("/sys/class/net").join(&veth).exists(),
            "no {veth}"
        );
        // Each is reachable from the host on the bridge.
        let out = std::process::Command::new("ping")
            .args(["-c1", "-W5", ip])
            .output();
        if let Ok(out) = out {
            assert!(out.status.success(), "ping {ip}");
        }
    }
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), n, "addresses given twice: {ips:?}");
    let mut args = vec!["rm", "-f"];
    args.extend(ids.iter().map(String::as_str));
    env.run(&args).ok();
    let (links, rules) = host_links_and_rules();
    let leases = std::fs::read_to_string("/run/strata/strata0.json").unwrap_or_default();
    for (id, ip) in ids.iter().zip(&ips) {
        assert!(!links.contains(&format!("st{}", &id[..12])), "{links}");
        assert!(!rules.contains(&format!("{ip}/32")), "{rules}");
        assert!(!leases.contains(id.as_str()), "{leases}");
    }
}

#[test]
fn network_flags_are_checked_before_anything_is_made() {
    if !have_root("network_flags_are_checked_before_anything_is_made") {
        return;
    }
    let env = Env::new();
    for (args, want) in [
        (&["--network", "nosuch"][..], "network nosuch not found"),
        (&["--add-host", "justaname"], "bad format for add-host"),
        (&["--add-host", "db:nope"], "invalid IP address in add-host"),
        (&["--dns", "resolver"], "is not an ip address"),
        (&["--network", "none", "-p", "80"], "conflicting options"),
        (&["-p", "5353:53/udp"], "only tcp is forwarded there"),
    ] {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["demo", "true"]);
        let err = env.run(&a).fails(125);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert!(env.container_dirs().is_empty());
    // The host network: the host's resolv.conf as it is.
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap();
    let out = env
        .run(&[
            "run",
            "--rm",
            "--network",
            "host",
            "demo",
            "cat",
            "/etc/resolv.conf",
        ])
        .ok();
    let words = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.starts_with("nameserver") || l.starts_with("search"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(words(&out), words(&host));
}

#[test]
fn bridge_lease_and_veth_of_a_killed_monitor_are_given_back() {
    if !have_root("bridge_lease_and_veth_of_a_killed_monitor_are_given_back") {
        return;
    }
    let env = Env::new();
    let id = env.detach(&["--name", "orphan", "demo", "sleep", "300"]);
    let veth = std::path::Path::new("/sys/class/net").join(format!("st{}", &id[..12]));
    assert!(veth.exists());
    let leases = || std::fs::read_to_string("/run/strata/strata0.json").unwrap_or_default();
    assert!(leases().contains(&id), "{}", leases());
    let monitor = env.state(&id)["monitor_pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // The next command finds the dead monitor and gives back what it held.
    wait_for(Duration::from_secs(30), "the container marked dead", || {
        env.run(&["ps", "-a", "--format", "{{.State}}"]).stdout == "dead\n"
    })
    .unwrap();
    assert!(!leases().contains(&id), "{}", leases());
    // The veth went with the namespace (or with the cleanup).
    wait_for(Duration::from_secs(30), "the veth gone", || !veth.exists()).unwrap();
    env.run(&["rm", "-f", "orphan"]).ok();
}
