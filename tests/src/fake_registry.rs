//! A registry that misbehaves on purpose, for the bad-input tests the real registry cannot
//! stage: a blob whose bytes do not match its digest, a transfer cut off half-way (then a
//! Range request to resume), a manifest that is not JSON or has an unknown media type,
//! Basic auth, Bearer tokens that expire. It serves one image from memory over plain HTTP/1.1 on a loopback port.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How the server departs from the protocol.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Serve these bytes instead of the blob with this digest.
    pub wrong_blob: Option<(String, Vec<u8>)>,
    /// Cut the first full transfer of this blob after this many bytes.
    pub truncate_once: Option<(String, usize)>,
    /// Serve this body and media type as the manifest.
    pub manifest: Option<(Vec<u8>, String)>,
    /// Require `Authorization: Basic base64(user:pass)`.
    pub basic_auth: Option<(String, String)>,
    /// Require `Authorization: Bearer TOKEN`, tokens handed out anonymously at `/token`
    /// (the challenge's realm) and refused (401) once older than this.
    pub token_lifetime: Option<Duration>,
    /// Refuse an expired token with 403 and no challenge (as some registries do) rather
    /// than 401.
    pub expired_is_forbidden: bool,
}

/// What the server saw, for assertions.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// `METHOD path [range]` per request.
    pub requests: Vec<String>,
}

pub struct FakeRegistry {
    pub host: String,
    seen: Arc<Mutex<Seen>>,
}

struct Content {
    manifest: (Vec<u8>, String),
    blobs: HashMap<String, Vec<u8>>,
    faults: Mutex<Faults>,
    /// The loopback address, for the token realm.
    host: String,
    /// Bearer tokens handed out, with when.
    tokens: Mutex<HashMap<String, Instant>>,
}

impl FakeRegistry {
    /// Serves the image tagged `tag` of the OCI layout `layout` as `REGISTRY/REPO:TAG` for
    /// any repository name.
    pub fn serve(layout: &Path, tag: &str, faults: Faults) -> Result<FakeRegistry> {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
        let desc = index["manifests"]
            .as_array()
            .and_then(|m| {
                m.iter()
                    .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
            })
            .with_context(|| format!("no {tag} in the layout"))?;
        let blob = |digest: &str| std::fs::read(layout.join("blobs/sha256").join(&digest[7..]));
        let manifest_bytes = blob(desc["digest"].as_str().context("digest")?)?;
        let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes)?;
        let mut blobs = HashMap::new();
        let config = manifest["config"]["digest"].as_str().context("config")?;
        blobs.insert(config.to_string(), blob(config)?);
        for layer in manifest["layers"].as_array().context("layers")? {
            let d = layer["digest"].as_str().context("layer digest")?;
            blobs.insert(d.to_string(), blob(d)?);
        }
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let host = listener.local_addr()?.to_string();
        let content = Arc::new(Content {
            manifest: faults
                .manifest
                .clone()
                .unwrap_or((manifest_bytes, crate::oci::MANIFEST_MEDIA_TYPE.to_string())),
            blobs,
            faults: Mutex::new(faults),
            host: host.clone(),
            tokens: Mutex::new(HashMap::new()),
        });
        let seen = Arc::new(Mutex::new(Seen::default()));
        let seen_by_server = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let content = content.clone();
                let seen = seen_by_server.clone();
                std::thread::spawn(move || {
                    let _ = handle(conn, &content, &seen);
                });
            }
        });
        Ok(FakeRegistry { host, seen })
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().expect("seen").clone()
    }
}

fn handle(conn: TcpStream, content: &Content, seen: &Mutex<Seen>) -> Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        if let Some(len) = headers
            .get("content-length")
            .and_then(|l| l.parse::<usize>().ok())
        {
            let mut body = vec![0; len];
            reader.read_exact(&mut body)?;
        }
        let range = headers.get("range").cloned();
        seen.lock().expect("seen").requests.push(format!(
            "{method} {path}{}",
            range
                .as_deref()
                .map(|r| format!(" {r}"))
                .unwrap_or_default()
        ));
        let faults = content.faults.lock().expect("faults").clone();
        if let Some((user, pass)) = &faults.basic_auth {
            let expected = format!("Basic {}", base64(&format!("{user}:{pass}")));
            if headers.get("authorization") != Some(&expected) {
                respond(
                    &mut conn,
                    "401 Unauthorized",
                    &[("WWW-Authenticate", "Basic realm=\"fake\"".into())],
                    br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
                )?;
                continue;
            }
        }
        if let Some(lifetime) = faults.token_lifetime {
            if path.starts_with("/token") {
                let mut tokens = content.tokens.lock().expect("tokens");
                let token = format!("t{}", tokens.len());
                tokens.insert(token.clone(), Instant::now());
                drop(tokens);
                let body = serde_json::json!({ "token": token }).to_string();
                respond(&mut conn, "200 OK", &[], body.as_bytes())?;
                continue;
            }
            let fresh = headers
                .get("authorization")
                .and_then(|a| a.strip_prefix("Bearer "))
                .and_then(|t| content.tokens.lock().expect("tokens").get(t).copied())
                .is_some_and(|issued| issued.elapsed() < lifetime);
            let known = headers
                .get("authorization")
                .and_then(|a| a.strip_prefix("Bearer "))
                .is_some_and(|t| content.tokens.lock().expect("tokens").contains_key(t));
            if !fresh && known && faults.expired_is_forbidden {
                respond(
                    &mut conn,
                    "403 Forbidden",
                    &[],
                    br#"{"errors":[{"code":"DENIED","message":"token expired"}]}"#,
                )?;
                continue;
            }
            if !fresh {
                let challenge = format!(
                    "Bearer realm=\"http://{}/token\",service=\"fake\"",
                    content.host
                );
                respond(
                    &mut conn,
                    "401 Unauthorized",
                    &[("WWW-Authenticate", challenge)],
                    br#"{"errors":[{"code":"UNAUTHORIZED","message":"token expired"}]}"#,
                )?;
                continue;
            }
        }
        if path == "/v2/" {
            respond(&mut conn, "200 OK", &[], b"{}")?;
        } else if path.contains("/manifests/") {
            let (body, media_type) = &content.manifest;
            let digest = crate::oci::digest(body);
            let headers = [
                ("Content-Type", media_type.clone()),
                ("Docker-Content-Digest", digest),
            ];
            let body: &[u8] = if method == "HEAD" { b"" } else { body };
            respond(&mut conn, "200 OK", &headers, body)?;
        } else if let Some(digest) = path.split("/blobs/").nth(1) {
            let Some(data) = content.blobs.get(digest) else {
                respond(
                    &mut conn,
                    "404 Not Found",
                    &[],
                    br#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#,
                )?;
                continue;
            };
            let mut data = data.clone();
            if let Some((d, bytes)) = &faults.wrong_blob {
                if d == digest {
                    data = bytes.clone();
                }
            }
            if let Some(start) = range
                .as_deref()
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.split('-').next())
                .and_then(|s| s.parse::<usize>().ok())
            {
                let start = start.min(data.len());
                let content_range =
                    format!("bytes {start}-{}/{}", data.len().max(1) - 1, data.len());
                respond(
                    &mut conn,
                    "206 Partial Content",
                    &[("Content-Range", content_range)],
                    &data[start..],
                )?;
                continue;
            }
            if let Some((d, at)) = &faults.truncate_once {
                if d == digest {
                    content.faults.lock().expect("faults").truncate_once = None;
                    // Promise the whole blob, send a part, and hang up.
                    write!(
                        conn,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\n\r\n",
                        data.len()
                    )?;
                    conn.write_all(&data[..*at.min(&data.len())])?;
                    conn.flush()?;
                    return Ok(());
                }
            }
            respond(
                &mut conn,
                "200 OK",
                &[("Accept-Ranges", "bytes".into())],
                &data,
            )?;
        } else {
            respond(&mut conn, "404 Not Found", &[], b"{}")?;
        }
    }
}

fn respond(
    conn: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Result<()> {
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n",
        body.len()
    )?;
    for (k, v) in headers {
        write!(conn, "{k}: {v}\r\n")?;
    }
    conn.write_all(b"\r\n")?;
    conn.write_all(body)?;
    conn.flush()?;
    Ok(())
}

fn base64(s: &str) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(super::base64("user:pass"), "dXNlcjpwYXNz");
        assert_eq!(super::base64("a"), "YQ==");
        assert_eq!(super::base64("ab"), "YWI=");
    }
}
