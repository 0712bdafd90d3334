//! A real OCI distribution registry for tests: Debian's `docker-registry` on 127.0.0.1 with
//! a free port and a temporary storage directory, stopped on drop. Images go in with skopeo.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

use crate::mounts::wait_for;

pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`
    pub host: String,
    storage: TempDir,
    auth: bool,
}

/// Starts `docker-registry serve CONFIG`.
fn spawn(config: &Path) -> Result<Child> {
    Command::new("docker-registry")
        .arg("serve")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting docker-registry (apt-get install docker-registry)")
}

/// A port nobody listens on right now.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The status code of `GET path` on `host`, over plain HTTP/1.0.
pub fn http_status(host: &str, path: &str) -> Result<u16> {
    let mut conn = TcpStream::connect(host)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut head = [0u8; 12];
    conn.read_exact(&mut head)?;
    let text = String::from_utf8_lossy(&head);
    text.get(9..12)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad HTTP status line {text:?}"))
}

/// The one user of [`Registry::start_with_auth`] and its password.
pub const AUTH_USER: &str = "alice";
pub const AUTH_PASSWORD: &str = "s3cret";
/// bcrypt of [`AUTH_PASSWORD`] at cost 4 (the registry checks it on every request).
const AUTH_HTPASSWD: &str = "alice:$2b$04$050.pb5nIA4qoiNv.XrBKuRSaaJkJ9tlzBldmkprTUn4x9CSwR7JS";

impl Registry {
    pub fn start() -> Result<Registry> {
        Registry::start_with(false)
    }

    /// A registry that asks for Basic auth ([`AUTH_USER`], [`AUTH_PASSWORD`]; htpasswd).
    pub fn start_with_auth() -> Result<Registry> {
        Registry::start_with(true)
    }

    fn start_with(auth: bool) -> Result<Registry> {
        let storage = tempfile::Builder::new()
            .prefix("strata-registry")
            .tempdir()?;
        let port = free_port()?;
        let host = format!("127.0.0.1:{port}");
        let config = storage.path().join("config.yml");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    \
             rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
            storage.path().join("data").display()
        );
        if auth {
            let htpasswd = storage.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{AUTH_HTPASSWD}\n"))?;
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(&config, yaml)?;
        let child = spawn(&config)?;
        let mut registry = Registry {
            child,
            host,
            storage,
            auth,
        };
        registry.wait_ready()?;
        Ok(registry)
    }

    /// Waits until the registry answers `/v2/`; an exit is an error.
    fn wait_ready(&mut self) -> Result<()> {
        let host = self.host.clone();
        let child = &mut self.child;
        let ready = if self.auth { 401 } else { 200 };
        wait_for(Duration::from_secs(30), "the registry", || {
            matches!(child.try_wait(), Ok(Some(_)))
                || http_status(&host, "/v2/").ok() == Some(ready)
        })?;
        if let Ok(Some(status)) = self.child.try_wait() {
            bail!("docker-registry exited at start: {status}");
        }
        Ok(())
    }

    /// Kills the registry (`SIGKILL`) and waits for it to be gone: requests fail from now on.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Starts the registry again on the same address and storage, after [`Registry::kill`].
    pub fn restart(&mut self) -> Result<()> {
        self.child = spawn(&self.storage.path().join("config.yml"))?;
        self.wait_ready()
    }

    /// Pushes tag `tag` of the OCI layout `layout` as `REGISTRY/repo`; returns that reference.
    pub fn push(&self, layout: &Path, tag: &str, repo: &str) -> Result<String> {
        let reference = format!("{}/{repo}", self.host);
        let out = Command::new("skopeo")
            // Credentials of our own (none): skopeo's default for a non-root user without
            // XDG_RUNTIME_DIR is /run/containers/UID/auth.json, unreadable once podman has
            // made /run/containers root's.
            .env("REGISTRY_AUTH_FILE", self.storage.path().join("auth.json"))
            // Layers go up as built: uncompressed ones stay uncompressed.
            .args([
                "copy",
                "--quiet",
                "--preserve-digests",
                "--dest-tls-verify=false",
            ])
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{reference}"))
            .output()
            .context("running skopeo (apt-get install skopeo)")?;
        if !out.status.success() {
            bail!(
                "skopeo copy to {reference} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(reference)
    }

    /// Where the registry keeps its data (tests corrupt blobs there).
    pub fn storage(&self) -> &Path {
        self.storage.path()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
