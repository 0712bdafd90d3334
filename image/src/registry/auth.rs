//! Registry authentication: `WWW-Authenticate` challenges (Bearer token and Basic, RFC 7235
//! syntax) and the credential file, kept like docker's `config.json`
//! (`{"auths": {"host": {"auth": base64("user:pass")}}}`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::store::fsutil;
use crate::{Error, Result};

/// One challenge of a `WWW-Authenticate` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// Lower-cased scheme: `bearer`, `basic`, …
    pub scheme: String,
    /// Parameters with lower-cased names.
    pub params: BTreeMap<String, String>,
}

/// Parses a `WWW-Authenticate` value into its challenges:
/// `Bearer realm="https://auth/token",service="reg",scope="repository:a/b:pull", Basic realm="x"`.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let b = header.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t' || b[*i] == b',') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && !matches!(b[*i], b' ' | b'\t' | b',' | b'=' | b'"') {
            *i += 1;
        }
        header[start..*i].to_string()
    };
    while i < b.len() {
        skip_ws(&mut i);
        if i >= b.len() {
            break;
        }
        let word = token(&mut i);
        if word.is_empty() {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' && !out.is_empty() {
            // a parameter of the current challenge
            i = j + 1;
            while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
                i += 1;
            }
            let value = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = String::new();
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    let ch = header[i..].chars().next().expect("in bounds");
                    v.push(ch);
                    i += ch.len_utf8();
                }
                i += 1;
                v
            } else {
                token(&mut i)
            };
            out.last_mut()
                .expect("checked non-empty")
                .params
                .insert(word.to_lowercase(), value);
        } else {
            out.push(Challenge {
                scheme: word.to_lowercase(),
                params: BTreeMap::new(),
            });
        }
    }
    out
}

/// A user name and password for one registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// The key docker uses in `auths` for a registry domain.
pub fn auth_key(domain: &str) -> String {
    if domain == crate::reference::DEFAULT_DOMAIN {
        "https://index.docker.io/v1/".to_string()
    } else {
        domain.to_string()
    }
}

/// Normalizes an `auths` key (`https://host/v2/`, `host`) to a bare `host:port`.
fn key_host(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

/// The credential file: `$DOCKER_CONFIG/config.json` when DOCKER_CONFIG is set, otherwise
/// `config.json` in the store root.
pub struct AuthFile {
    path: PathBuf,
    tmp_dir: PathBuf,
}

impl AuthFile {
    pub fn new(store_root: &Path) -> AuthFile {
        let path = match std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir).join("config.json"),
            None => store_root.join("config.json"),
        };
        let tmp_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        AuthFile { path, tmp_dir }
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<Value> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| Error::ParseFile {
                path: self.path.clone(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({})),
            Err(source) => Err(Error::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn write(&self, v: &Value) -> Result<()> {
        std::fs::create_dir_all(&self.tmp_dir).map_err(|source| Error::Create {
            path: self.tmp_dir.clone(),
            source,
        })?;
        let bytes = serde_json::to_vec_pretty(v).map_err(|source| Error::Serialize {
            what: "credentials",
            source,
        })?;
        // Written 0600 through the temp file: it holds passwords.
        let tmp = fsutil::temp_name(&self.tmp_dir, "config.json");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|source| Error::Create {
                    path: tmp.clone(),
                    source,
                })?;
            if let Err(source) = f.write_all(&bytes).and_then(|_| f.sync_all()) {
                let _ = std::fs::remove_file(&tmp);
                return Err(Error::Write { path: tmp, source });
            }
        }
        fsutil::commit_file(&tmp, &self.path)
    }

    /// The registries (`host[:port]`) credentials are stored for, sorted.
    pub fn registries(&self) -> Result<Vec<String>> {
        let v = self.read()?;
        let mut hosts: Vec<String> = v
            .get("auths")
            .and_then(Value::as_object)
            .map(|auths| auths.keys().map(|k| key_host(k).to_string()).collect())
            .unwrap_or_default();
        hosts.sort();
        hosts.dedup();
        Ok(hosts)
    }

    /// The credentials stored for `domain`, if any.
    pub fn get(&self, domain: &str) -> Result<Option<Credentials>> {
        let v = self.read()?;
        let want = key_host(&auth_key(domain)).to_string();
        let Some(auths) = v.get("auths").and_then(Value::as_object) else {
            return Ok(None);
        };
        for (key, entry) in auths {
            if key_host(key) != want {
                continue;
            }
            if let Some(auth) = entry.get("auth").and_then(Value::as_str) {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|source| Error::DecodeCredentials {
                        key: key.clone(),
                        path: self.path.clone(),
                        source,
                    })?;
                let raw = String::from_utf8(raw).map_err(Error::CredentialsUtf8)?;
                let Some((u, p)) = raw.split_once(':') else {
                    return Err(Error::CredentialsShape {
                        key: key.clone(),
                        path: self.path.clone(),
                    });
                };
                return Ok(Some(Credentials {
                    username: u.to_string(),
                    password: p.to_string(),
                }));
            }
            if let (Some(u), Some(p)) = (
                entry.get("username").and_then(Value::as_str),
                entry.get("password").and_then(Value::as_str),
            ) {
                return Ok(Some(Credentials {
                    username: u.to_string(),
                    password: p.to_string(),
                }));
            }
        }
        Ok(None)
    }

    pub fn store(&self, domain: &str, creds: &Credentials) -> Result<()> {
        let mut v = self.read()?;
        if !v.is_object() {
            v = json!({});
        }
        let raw = format!("{}:{}", creds.username, creds.password);
        let auth = base64::engine::general_purpose::STANDARD.encode(raw);
        let obj = v.as_object_mut().expect("made an object");
        let auths = obj.entry("auths").or_insert_with(|| json!({}));
        if !auths.is_object() {
            *auths = json!({});
        }
        auths
            .as_object_mut()
            .expect("made an object")
            .insert(auth_key(domain), json!({ "auth": auth }));
        self.write(&v)
    }

    /// Removes the credentials for `domain`; false when there were none.
    pub fn remove(&self, domain: &str) -> Result<bool> {
        let mut v = self.read()?;
        let want = key_host(&auth_key(domain)).to_string();
        let Some(auths) = v.get_mut("auths").and_then(Value::as_object_mut) else {
            return Ok(false);
        };
        let keys: Vec<String> = auths
            .keys()
            .filter(|k| key_host(k) == want)
            .cloned()
            .collect();
        if keys.is_empty() {
            return Ok(false);
        }
        for k in keys {
            auths.remove(&k);
        }
        self.write(&v)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic_challenges() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].params["realm"], "https://auth.docker.io/token");
        assert_eq!(c[0].params["service"], "registry.docker.io");
        assert_eq!(c[0].params["scope"], "repository:library/busybox:pull");

        let c = parse_challenges(r#"Basic realm="Registry Realm""#);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].params["realm"], "Registry Realm");

        let c = parse_challenges(r#"Basic realm="a, b", Bearer realm=https://x/t, service="s\"q""#);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].params["realm"], "a, b");
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].params["realm"], "https://x/t");
        assert_eq!(c[1].params["service"], "s\"q");
        assert!(parse_challenges("").is_empty());
        assert_eq!(parse_challenges("Negotiate")[0].scheme, "negotiate");
    }

    #[test]
    fn credential_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let f = AuthFile {
            path: dir.path().join("config.json"),
            tmp_dir: dir.path().to_path_buf(),
        };
        let c = Credentials {
            username: "u".into(),
            password: "p:w".into(),
        };
        assert_eq!(f.get("127.0.0.1:5000").unwrap(), None);
        f.store("127.0.0.1:5000", &c).unwrap();
        f.store("docker.io", &c).unwrap();
        let raw: Value = serde_json::from_slice(&std::fs::read(f.path()).unwrap()).unwrap();
        assert_eq!(raw["auths"]["127.0.0.1:5000"]["auth"], "dTpwOnc=");
        assert!(raw["auths"]["https://index.docker.io/v1/"].is_object());
        assert_eq!(f.get("127.0.0.1:5000").unwrap(), Some(c.clone()));
        assert_eq!(f.get("docker.io").unwrap(), Some(c.clone()));
        assert!(f.remove("127.0.0.1:5000").unwrap());
        assert!(!f.remove("127.0.0.1:5000").unwrap());
        assert_eq!(f.get("127.0.0.1:5000").unwrap(), None);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(f.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(c.basic_header(), "Basic dTpwOnc=");
    }
}
