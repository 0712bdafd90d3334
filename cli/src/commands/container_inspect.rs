//! The container half of `inspect`: docker's container document (`Id`, `State`, `Config`,
//! `HostConfig`, `Mounts`, `NetworkSettings`, …) from container.json and state.json.

use serde_json::{json, Value};

use crate::store::Store;
use strata_engine::containers::{Containers, Record, Status};

/// docker's container inspect document.
pub fn container_json(store: &Store, rec: &Record) -> Value {
    let c = Containers::new(store);
    let st = c.state(&rec.id).unwrap_or_default();
    let dir = c.dir(&rec.id);
    let zero = "0001-01-01T00:00:00Z";
    let time = |t: &str| {
        if t.is_empty() {
            zero.to_string()
        } else {
            crate::format::rfc3339_nano(t)
        }
    };
    let mounts: Vec<Value> = rec
        .volumes
        .iter()
        .filter(|v| v.kind != "tmpfs")
        .map(|v| {
            let mut m = json!({
                "Type": v.kind,
                "Source": v.source,
                "Destination": v.destination,
                "Mode": if v.rw { "" } else { "ro" },
                "RW": v.rw,
                "Propagation": if v.kind == "bind" { "rprivate" } else { "" },
            });
            if v.kind == "volume" {
                m["Name"] = json!(v.name);
                m["Driver"] = json!("local");
            }
            m
        })
        .collect();
    let binds: Vec<String> = rec
        .volumes
        .iter()
        .filter(|v| v.kind != "tmpfs" && !rec.anonymous_volumes.contains(&v.name))
        .map(|v| {
            let src = if v.kind == "volume" {
                v.name.clone()
            } else {
                v.source.display().to_string()
            };
            format!("{src}:{}{}", v.destination, if v.rw { "" } else { ":ro" })
        })
        .collect();
    let tmpfs: serde_json::Map<String, Value> = rec
        .spec
        .mounts
        .iter()
        .filter_map(|m| match m {
            strata_runtime::MountSpec::Tmpfs {
                destination,
                options,
            } => Some((destination.clone(), json!(options))),
            _ => None,
        })
        .collect();
    let mut port_bindings = serde_json::Map::new();
    let mut ports = serde_json::Map::new();
    for p in &rec.ports {
        let b = json!([{"HostIp": p.host_ip, "HostPort": p.host_port.to_string()}]);
        port_bindings.insert(format!("{}/{}", p.container_port, p.proto), b);
    }
    for p in &st.ports(rec) {
        let b = json!([{"HostIp": p.host_ip, "HostPort": p.host_port.to_string()}]);
        ports.insert(format!("{}/{}", p.container_port, p.proto), b);
    }
    for e in &rec.exposed {
        ports.entry(e.clone()).or_insert(Value::Null);
    }
    let network = strata_engine::network::mode_name(rec);
    let res = &rec.spec.resources;
    let or_null = |v: &[String]| {
        if v.is_empty() {
            Value::Null
        } else {
            json!(v)
        }
    };
    let state = json!({
        "Status": st.status.as_str(),
        "Running": st.status.is_active(),
        "Paused": st.status == Status::Paused,
        "Restarting": false,
        "OOMKilled": st.oom_killed,
        "Dead": st.status == Status::Dead,
        "Pid": st.pid,
        "ExitCode": st.exit_code,
        "Error": st.error,
        "StartedAt": time(&st.started_at),
        "FinishedAt": time(&st.finished_at),
    });
    let ulimits: Vec<Value> = rec
        .spec
        .process
        .rlimits
        .iter()
        .map(|r| json!({"Name": r.kind, "Soft": r.soft, "Hard": r.hard}))
        .collect();
    let host_config = json!({
        "Binds": or_null(&binds),
        "NetworkMode": network,
        "Dns": rec.network.dns,
        "DnsOptions": rec.network.dns_options,
        "DnsSearch": rec.network.dns_search,
        "ExtraHosts": or_null(&rec.network.extra_hosts),
        "PortBindings": port_bindings,
        "AutoRemove": rec.auto_remove,
        "CapAdd": or_null(&rec.spec.process.cap_add),
        "CapDrop": or_null(&rec.spec.process.cap_drop),
        "Privileged": rec.spec.privileged,
        "ReadonlyRootfs": rec.spec.readonly_rootfs,
        "SecurityOpt": or_null(&rec.security_opt),
        "Tmpfs": if tmpfs.is_empty() { Value::Null } else { Value::Object(tmpfs) },
        "Memory": res.memory.unwrap_or(0),
        "MemorySwap": res.memory.unwrap_or(0),
        "NanoCpus": res.cpus.map(|c| (c * 1e9) as i64).unwrap_or(0),
        "PidsLimit": res.pids_limit,
        "Init": rec.spec.init,
        "Ulimits": ulimits,
    });
    let lower: Vec<String> = rec
        .diff_ids
        .iter()
        .rev()
        .filter_map(|d| crate::digest::Digest::parse(d).ok())
        .map(|d| store.layer_dir(&d).display().to_string())
        .collect();
    let graph = json!({
        "Name": "strata-fs",
        "Data": {
            "UpperDir": dir.join("upper"),
            "WorkDir": dir.join("work"),
            "MergedDir": dir.join("rootfs"),
            "LowerDir": lower.join(":"),
        },
    });
    let exposed: serde_json::Map<String, Value> =
        rec.exposed.iter().map(|e| (e.clone(), json!({}))).collect();
    let volumes: serde_json::Map<String, Value> = rec
        .volumes
        .iter()
        .filter(|v| rec.anonymous_volumes.contains(&v.name))
        .map(|v| (v.destination.clone(), json!({})))
        .collect();
    let config = json!({
        "Hostname": rec.spec.hostname.clone().unwrap_or_default(),
        "Domainname": "",
        "User": rec.user,
        "AttachStdin": false,
        "AttachStdout": false,
        "AttachStderr": false,
        "ExposedPorts": if exposed.is_empty() { Value::Null } else { Value::Object(exposed) },
        "Tty": rec.tty,
        "OpenStdin": rec.interactive,
        "StdinOnce": false,
        "Env": rec.spec.process.env,
        "Cmd": or_null(&rec.cmd),
        "Image": rec.image,
        "Volumes": if volumes.is_empty() { Value::Null } else { Value::Object(volumes) },
        "WorkingDir": rec.spec.process.cwd,
        "Entrypoint": or_null(&rec.entrypoint),
        "OnBuild": Value::Null,
        "StopSignal": if rec.stop_signal.is_empty() { Value::Null } else { json!(rec.stop_signal) },
        "StopTimeout": rec.stop_timeout,
        "Labels": rec.labels,
    });
    let addr = &st.address;
    let mut networks = serde_json::Map::new();
    if !addr.ip.is_empty() || matches!(network.as_str(), "bridge" | "slirp4netns") {
        networks.insert(
            network.clone(),
            json!({
                "Gateway": addr.gateway,
                "IPAddress": addr.ip,
                "IPPrefixLen": addr.prefix_len,
                "MacAddress": addr.mac,
            }),
        );
    } else if !network.starts_with("container:") {
        networks.insert(
            network.clone(),
            json!({"IPAddress": "", "Gateway": "", "MacAddress": ""}),
        );
    }
    let network_settings = json!({
        "Ports": ports,
        "SandboxKey": if st.pid > 0 { format!("/proc/{}/ns/net", st.pid) } else { String::new() },
        "Gateway": addr.gateway,
        "IPAddress": addr.ip,
        "IPPrefixLen": addr.prefix_len,
        "MacAddress": addr.mac,
        "Networks": networks,
    });
    let files = |name: &str| {
        let p = dir.join(name);
        if p.exists() {
            p.display().to_string()
        } else {
            String::new()
        }
    };
    json!({
        "Id": rec.id,
        "Created": time(&rec.created),
        "Path": rec.path,
        "Args": rec.args,
        "State": state,
        "Image": rec.image_id,
        "ResolvConfPath": files("resolv.conf"),
        "HostnamePath": files("hostname"),
        "HostsPath": files("hosts"),
        "LogPath": dir.join("ctr.log"),
        "Name": format!("/{}", rec.name),
        "RestartCount": 0,
        "Driver": "strata-fs",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": Value::Null,
        "HostConfig": host_config,
        "GraphDriver": graph,
        "Mounts": mounts,
        "Config": config,
        "NetworkSettings": network_settings,
    })
}

/// For `inspect`: the container named `name`, if there is one.
pub fn find_container_json(store: &Store, name: &str) -> Option<Value> {
    crate::monitor::cleanup_stale(store);
    let rec = Containers::new(store).find(name).ok()?;
    Some(container_json(store, &rec))
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_as_docker_prints_them() {
        let t = "2024-01-02T03:04:05.12Z";
        assert_eq!(crate::format::rfc3339_nano(t), "2024-01-02T03:04:05.12Z");
        assert_eq!(
            crate::format::rfc3339_nano_fixed(t),
            "2024-01-02T03:04:05.120000000Z"
        );
        assert_eq!(
            crate::format::rfc3339_nano("2024-01-02T03:04:05Z"),
            "2024-01-02T03:04:05Z"
        );
    }
}
