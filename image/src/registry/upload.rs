//! The upload half of the distribution API, as push uses it: does the repository have a blob
//! (HEAD), mount it from another repository of the same registry, upload it (POST, then one
//! monolithic streaming PUT — the bytes are read once, from the store's file), and put a
//! manifest. Each answer's `Docker-Content-Digest` is checked against what was sent.

use std::io::Read;

use super::{Client, HttpError};
use crate::digest::Digest;
use crate::{Error, Result};

/// What a mount request did.
pub enum Mounted {
    /// The registry linked the blob into this repository.
    Yes,
    /// It could not (the blob is not in `from`, or not readable there): it opened an upload
    /// at this location instead.
    Upload(String),
}

impl Client {
    /// Whether this repository already has `digest` (HEAD on the blob).
    pub fn has_blob(&self, digest: &Digest) -> Result<bool> {
        match self.call("HEAD", &self.url(&format!("blobs/{digest}")), &[]) {
            Ok(_) => Ok(true),
            Err(e) if e.status == 404 => Ok(false),
            Err(source) => Err(Error::PushBlob {
                digest: digest.clone(),
                step: "checking whether the registry has",
                source,
            }),
        }
    }

    /// Asks the registry to link `digest` from repository `from` (a path on the same
    /// registry) into this one.
    pub fn mount_blob(&self, digest: &Digest, from: &str) -> Result<Mounted> {
        let url = self.url(&format!(
            "blobs/uploads/?mount={}&from={}",
            digest,
            super::urlencode(from)
        ));
        let resp = self
            .call("POST", &url, &[("Content-Length", "0".into())])
            .map_err(|source| Error::PushBlob {
                digest: digest.clone(),
                step: "mounting",
                source,
            })?;
        if resp.status() == 201 {
            return Ok(Mounted::Yes);
        }
        Ok(Mounted::Upload(self.location(&resp, digest)?))
    }

    /// Opens an upload session; returns its location.
    pub fn start_upload(&self, digest: &Digest) -> Result<String> {
        let resp = self
            .call(
                "POST",
                &self.url("blobs/uploads/"),
                &[("Content-Length", "0".into())],
            )
            .map_err(|source| Error::PushBlob {
                digest: digest.clone(),
                step: "starting the upload of",
                source,
            })?;
        self.location(&resp, digest)
    }

    /// The absolute upload URL from an answer's `Location` (registries often send a path).
    fn location(&self, resp: &ureq::Response, digest: &Digest) -> Result<String> {
        let loc = resp.header("Location").ok_or_else(|| Error::PushBlob {
            digest: digest.clone(),
            step: "starting the upload of",
            source: HttpError {
                status: resp.status(),
                message: format!("{} sent no upload Location", self.domain),
            },
        })?;
        Ok(
            if loc.starts_with("http://") || loc.starts_with("https://") {
                loc.to_string()
            } else {
                format!("{}{loc}", self.base)
            },
        )
    }

    /// Uploads `size` bytes from `body` to the session at `location` in one PUT, and checks
    /// the digest the registry computed.
    pub fn finish_upload(
        &self,
        location: &str,
        digest: &Digest,
        size: u64,
        body: impl Read,
    ) -> Result<()> {
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={digest}");
        let mut req = self
            .agent
            .put(&url)
            .set("Content-Type", "application/octet-stream")
            .set("Content-Length", &size.to_string());
        if let Some(a) = self.authorization.lock().expect("not poisoned").clone() {
            req = req.set("Authorization", &a);
        }
        let resp = match req.send(body) {
            Ok(r) => r,
            Err(ureq::Error::Status(code, resp)) => {
                return Err(Error::PushBlob {
                    digest: digest.clone(),
                    step: "uploading",
                    source: self.status_error(code, resp, true),
                })
            }
            Err(ureq::Error::Transport(t)) => {
                return Err(Error::PushBlob {
                    digest: digest.clone(),
                    step: "uploading",
                    source: HttpError {
                        status: 0,
                        message: format!("{}: {t}", self.domain),
                    },
                })
            }
        };
        self.check_digest(&resp, digest)
    }

    /// A `Docker-Content-Digest` that names other content than what was sent is an error.
    fn check_digest(&self, resp: &ureq::Response, sent: &Digest) -> Result<()> {
        match resp.header("Docker-Content-Digest") {
            Some(said) if said != sent.as_str() => Err(Error::PushDigest {
                domain: self.domain.clone(),
                sent: sent.clone(),
                said: said.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Puts a manifest under `reference` (a tag); returns its digest.
    pub fn put_manifest(&self, reference: &str, media_type: &str, bytes: &[u8]) -> Result<Digest> {
        let url = self.url(&format!("manifests/{reference}"));
        let digest = Digest::of(bytes);
        let mut req = self.agent.put(&url).set("Content-Type", media_type);
        if let Some(a) = self.authorization.lock().expect("not poisoned").clone() {
            req = req.set("Authorization", &a);
        }
        let resp = match req.send_bytes(bytes) {
            Ok(r) => r,
            Err(ureq::Error::Status(code, resp)) => {
                return Err(Error::PushManifest {
                    name: self.repository(),
                    reference: reference.to_string(),
                    source: self.status_error(code, resp, true),
                })
            }
            Err(ureq::Error::Transport(t)) => {
                return Err(Error::PushManifest {
                    name: self.repository(),
                    reference: reference.to_string(),
                    source: HttpError {
                        status: 0,
                        message: format!("{}: {t}", self.domain),
                    },
                })
            }
        };
        self.check_digest(&resp, &digest)?;
        Ok(digest)
    }
}
