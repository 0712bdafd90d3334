//! Parsing of `create`/`run` flag values as docker parses them: sizes (`--memory`), volume
//! specs (`-v`), port specs (`-p`), `--ulimit`, and the environment (`-e`, `--env-file` over
//! the image's `Env`).

use std::path::PathBuf;

use crate::{Error, Result};
use serde_json::Value;
use strata_runtime::seccomp::Profile;
use strata_runtime::Rlimit;

use crate::containers::PortBinding;

/// docker's `RAMInBytes`: `512m`, `1g`, `1024`, `1.5G`, `100kb`.
pub fn parse_bytes(s: &str) -> Result<u64> {
    strata_image::lazy::parse_size(s)
        .ok_or_else(|| Error::InvalidFlag(format!("invalid size: '{s}'")))
}

/// `-e` and `--env-file` over the image's `Env`, by name.
pub fn environment(
    image_env: &[String],
    flags: &[String],
    files: &[PathBuf],
) -> Result<Vec<String>> {
    let mut env: Vec<String> = image_env.to_vec();
    let mut set = |kv: String| {
        let key = kv.split('=').next().unwrap_or_default().to_string();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(kv);
    };
    let mut given = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|source| Error::FlagFile {
            message: format!("open {}: no such env file", f.display()),
            source,
        })?;
        for line in text.lines() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            given.push(line.to_string());
        }
    }
    given.extend(flags.iter().cloned());
    for kv in given {
        if kv.starts_with('=') {
            return Err(Error::InvalidFlag(format!(
                "invalid environment variable: {kv}"
            )));
        }
        if kv.contains('=') {
            set(kv);
        } else if let Ok(v) = std::env::var(&kv) {
            // `-e NAME`: the caller's value, or nothing when it has none.
            set(format!("{kv}={v}"));
        }
    }
    Ok(env)
}

pub fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

pub fn keys(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// A `-v` value.
#[derive(Debug, PartialEq)]
pub enum VolumeSpec {
    Bind {
        host: PathBuf,
        ctr: String,
        ro: bool,
    },
    Named {
        name: String,
        ctr: String,
        ro: bool,
    },
    Anonymous {
        ctr: String,
    },
}

pub fn parse_volume(spec: &str) -> Result<VolumeSpec> {
    let bad = || Error::InvalidFlag(format!("invalid volume specification: '{spec}'"));
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, ctr, mode) = match parts.as_slice() {
        [ctr] => (None, *ctr, ""),
        [src, ctr] => (Some(*src), *ctr, ""),
        [src, ctr, mode] => (Some(*src), *ctr, *mode),
        _ => return Err(bad()),
    };
    if !ctr.starts_with('/') || ctr.is_empty() {
        return Err(bad());
    }
    let mut ro = false;
    for m in mode.split(',').filter(|m| !m.is_empty()) {
        match m {
            "ro" => ro = true,
            "rw" => ro = false,
            "z" | "Z" | "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave"
            | "nocopy" | "copy" | "consistent" | "cached" | "delegated" => {}
            _ => {
                return Err(Error::InvalidFlag(format!(
                    "invalid mode: {m} in volume specification '{spec}'"
                )))
            }
        }
    }
    let ctr = ctr.to_string();
    match src {
        None => Ok(VolumeSpec::Anonymous { ctr }),
        Some("") => Err(bad()),
        Some(s) if s.starts_with('/') || s.starts_with('.') => Ok(VolumeSpec::Bind {
            host: PathBuf::from(s),
            ctr,
            ro,
        }),
        Some(s) => {
            if !crate::volumes::valid_name(s) {
                return Err(Error::InvalidFlag(format!(
                    "create {s}: \"{s}\" includes invalid characters for a local volume name, \
                     only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a \
                     host directory, use absolute path"
                )));
            }
            Ok(VolumeSpec::Named {
                name: s.to_string(),
                ctr,
                ro,
            })
        }
    }
}

/// `-p [IP:]HOST:CTR[/PROTO]`, `-p CTR`.
pub fn parse_port(spec: &str) -> Result<PortBinding> {
    let bad = || Error::InvalidFlag(format!("invalid port specification: \"{spec}\""));
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p)) if p == "tcp" || p == "udp" || p == "sctp" => (r, p),
        Some(_) => return Err(bad()),
        None => (spec, "tcp"),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let port = |s: &str| -> Result<u16> {
        match s {
            "" => Ok(0),
            s => s.parse::<u16>().map_err(|_| bad()),
        }
    };
    let (ip, host, ctr) = match parts.as_slice() {
        [c] => ("", "", *c),
        [h, c] => ("", *h, *c),
        [ip, h, c] => (*ip, *h, *c),
        _ => return Err(bad()),
    };
    let container_port = port(ctr)?;
    if container_port == 0 {
        return Err(bad());
    }
    Ok(PortBinding {
        host_ip: ip.to_string(),
        host_port: port(host)?,
        container_port,
        proto: proto.to_string(),
    })
}

pub fn parse_ulimit(s: &str) -> Result<Rlimit> {
    let bad = || Error::InvalidFlag(format!("invalid ulimit argument: {s}"));
    let (kind, vals) = s.split_once('=').ok_or_else(bad)?;
    let (soft, hard) = match vals.split_once(':') {
        Some((a, b)) => (a, b),
        None => (vals, vals),
    };
    Ok(Rlimit {
        kind: kind.to_string(),
        soft: soft.parse().map_err(|_| bad())?,
        hard: hard.parse().map_err(|_| bad())?,
    })
}

/// `--security-opt seccomp=VALUE`.
pub enum Seccomp {
    /// No option: docker's default profile.
    Default,
    /// `seccomp=unconfined`.
    Unconfined,
    /// `seccomp=FILE`: the file's text (compacted, for inspect) and the profile read from it.
    File(String, Profile),
}

/// Reads `--security-opt seccomp=VALUE`: `unconfined`, `builtin` (the default) or a docker
/// JSON profile file, checked here so a bad file fails before anything is created.
pub fn seccomp_option(value: &str) -> Result<Seccomp> {
    match value {
        "unconfined" => return Ok(Seccomp::Unconfined),
        "builtin" => return Ok(Seccomp::Default),
        "" => {
            return Err(Error::InvalidFlag(
                "invalid --security-opt: seccomp needs a profile file or 'unconfined'".into(),
            ))
        }
        _ => {}
    }
    let path = PathBuf::from(value);
    let text = std::fs::read(&path).map_err(|source| Error::SeccompRead {
        path: path.clone(),
        source,
    })?;
    let profile = Profile::parse(&text).map_err(|source| Error::SeccompProfile {
        path: path.clone(),
        source,
    })?;
    let compact = serde_json::from_slice::<Value>(&text)
        .map(|v| v.to_string())
        .unwrap_or_default();
    Ok(Seccomp::File(compact, profile))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_values_parse_as_docker() {
        assert_eq!(parse_bytes("512m").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("1G").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("100kb").unwrap(), 100 << 10);
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert_eq!(parse_bytes("1.5g").unwrap(), 3 << 29);
        for bad in ["", "abc", "12x", "-1m", "1mm"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn volume_specs() {
        assert_eq!(
            parse_volume("/h:/c:ro").unwrap(),
            VolumeSpec::Bind {
                host: "/h".into(),
                ctr: "/c".into(),
                ro: true
            }
        );
        assert_eq!(
            parse_volume("data:/c").unwrap(),
            VolumeSpec::Named {
                name: "data".into(),
                ctr: "/c".into(),
                ro: false
            }
        );
        assert_eq!(
            parse_volume("/c").unwrap(),
            VolumeSpec::Anonymous { ctr: "/c".into() }
        );
        for bad in [
            "/h:relative",
            "a:b:c:d",
            ":/c",
            "/h:/c:bogus",
            "b@d:/c",
            "rel",
        ] {
            assert!(parse_volume(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn port_specs() {
        let p = parse_port("127.0.0.1:8080:80/udp").unwrap();
        assert_eq!(
            (
                p.host_ip.as_str(),
                p.host_port,
                p.container_port,
                p.proto.as_str()
            ),
            ("127.0.0.1", 8080, 80, "udp")
        );
        assert_eq!(parse_port("80").unwrap().host_port, 0);
        assert!(parse_port("x:80").is_err());
        assert!(parse_port("80/xyz").is_err());
    }

    #[test]
    fn env_flags_override_the_image() {
        let flags = ["A=2".into(), "NOPE_NOT_SET_ANYWHERE".into(), "C=3".into()];
        let env = environment(&["A=1".into(), "B=1".into()], &flags, &[]).unwrap();
        assert_eq!(env, ["B=1", "A=2", "C=3"]);
    }
}
