//! OCI image-spec and Docker schema-2 documents: descriptors, manifests, indexes, configs.
//! Unknown fields are kept (`extra`) so a document read and written back loses nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::Digest;
use crate::{Error, Result};

pub mod media {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// An uncompressed layer; `+gzip` and `+zstd` are the compressed ones.
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";

    /// Everything `pull` accepts, for the `Accept` header.
    pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
        application/vnd.docker.distribution.manifest.list.v2+json, \
        application/vnd.oci.image.manifest.v1+json, \
        application/vnd.docker.distribution.manifest.v2+json";
}

pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// An image manifest (OCI or Docker schema 2: the same shape).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default)]
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// An image index / manifest list, and the store's `index.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            schema_version: 2,
            media_type: Some(media::OCI_INDEX.to_string()),
            manifests: Vec::new(),
            extra: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// The image configuration. `config` (the runtime defaults: Env, Cmd, Labels, …) stays a
/// JSON value: inspect shows it as it is.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl ImageConfig {
    /// `config.Labels`, when there are any.
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.config
            .as_ref()
            .and_then(|c| c.get("Labels"))
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// What a fetched manifest document turned out to be.
#[derive(Debug)]
pub enum ManifestKind {
    Image(Box<Manifest>),
    Index(Index),
}

/// Classifies and parses a manifest document, from the `Content-Type` the registry sent (if
/// any), else its `mediaType` field, else its shape. Errors name what was wrong.
pub fn parse_manifest(content_type: Option<&str>, body: &[u8]) -> Result<(String, ManifestKind)> {
    let value: Value = serde_json::from_slice(body).map_err(Error::ManifestJson)?;
    if !value.is_object() {
        return Err(Error::ManifestNotObject);
    }
    let declared = value.get("mediaType").and_then(Value::as_str);
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty() && *c != "application/json" && *c != "text/plain");
    let media_type = match (header, declared) {
        (Some(h), _) => h.to_string(),
        (None, Some(d)) => d.to_string(),
        (None, None) if value.get("manifests").is_some() => media::OCI_INDEX.to_string(),
        (None, None) if value.get("config").is_some() => media::OCI_MANIFEST.to_string(),
        (None, None) if value.get("fsLayers").is_some() => media::DOCKER_SCHEMA1.to_string(),
        (None, None) => return Err(Error::ManifestShape),
    };
    let kind = match media_type.as_str() {
        media::OCI_MANIFEST | media::DOCKER_MANIFEST => ManifestKind::Image(Box::new(
            serde_json::from_value(value).map_err(Error::ParseManifest)?,
        )),
        media::OCI_INDEX | media::DOCKER_LIST => {
            ManifestKind::Index(serde_json::from_value(value).map_err(Error::ParseIndex)?)
        }
        media::DOCKER_SCHEMA1 | media::DOCKER_SCHEMA1_SIGNED => {
            return Err(Error::Schema1(media_type.clone()))
        }
        other => return Err(Error::ManifestMediaType(other.to_string())),
    };
    Ok((media_type, kind))
}

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From the layer's media type; `None` when the type does not say (the caller then looks
    /// at the magic bytes).
    pub fn from_media_type(mt: &str) -> Option<Compression> {
        if mt.ends_with("+gzip") || mt.ends_with(".tar.gzip") || mt.ends_with(".gzip") {
            Some(Compression::Gzip)
        } else if mt.ends_with("+zstd") || mt.ends_with(".zstd") {
            Some(Compression::Zstd)
        } else if mt.ends_with(".tar") {
            Some(Compression::None)
        } else {
            None
        }
    }

    /// The OCI layer media type for a layer compressed so.
    pub fn layer_media_type(self) -> &'static str {
        match self {
            Compression::None => media::OCI_LAYER,
            Compression::Gzip => media::OCI_LAYER_GZIP,
            Compression::Zstd => media::OCI_LAYER_ZSTD,
        }
    }

    pub fn from_magic(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// The host's platform in OCI terms.
pub fn host_platform() -> (String, String, Option<String>) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    };
    let variant = match arch {
        "arm64" => Some("v8".to_string()),
        "arm" => Some("v7".to_string()),
        _ => None,
    };
    ("linux".to_string(), arch.to_string(), variant)
}

/// A `--platform os/arch[/variant]` request.
#[derive(Clone, Debug, PartialEq)]
pub struct PlatformSpec {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl PlatformSpec {
    pub fn host() -> PlatformSpec {
        let (os, arch, variant) = host_platform();
        PlatformSpec { os, arch, variant }
    }

    pub fn parse(s: &str) -> Result<PlatformSpec> {
        let parts: Vec<&str> = s.split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, v] => (*os, *arch, Some(v.to_string())),
            _ => return Err(Error::InvalidPlatform(s.to_string())),
        };
        if os.is_empty() || arch.is_empty() {
            return Err(Error::InvalidPlatform(s.to_string()));
        }
        let arch = match arch {
            "x86_64" | "x86-64" => "amd64",
            "aarch64" => "arm64",
            a => a,
        };
        Ok(PlatformSpec {
            os: os.to_lowercase(),
            arch: arch.to_string(),
            variant,
        })
    }

    /// Picks the manifest of an index for this platform: os and architecture equal; a variant
    /// named on the command line must match, otherwise an entry with the host's default
    /// variant (or none) is preferred. Attestation manifests (`unknown/unknown`) never match.
    pub fn select<'a>(&self, manifests: &'a [Descriptor]) -> Option<&'a Descriptor> {
        let candidates: Vec<&Descriptor> = manifests
            .iter()
            .filter(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == self.os && p.architecture == self.arch)
            })
            .collect();
        let variant_of = |d: &Descriptor| d.platform.as_ref().and_then(|p| p.variant.clone());
        match &self.variant {
            Some(v) => candidates
                .iter()
                .find(|d| variant_of(d).as_deref() == Some(v.as_str()))
                .or_else(|| {
                    // arm64 images rarely spell out v8
                    (v == "v8").then(|| candidates.iter().find(|d| variant_of(d).is_none()))?
                })
                .copied(),
            None => candidates
                .iter()
                .find(|d| variant_of(d).is_none())
                .or(candidates.first())
                .copied(),
        }
    }
}

impl std::fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const D3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

    fn index() -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::DOCKER_LIST,
            "manifests": [
                {"mediaType": media::DOCKER_MANIFEST, "digest": D1, "size": 10,
                 "platform": {"architecture": "amd64", "os": "linux"}},
                {"mediaType": media::DOCKER_MANIFEST, "digest": D2, "size": 10,
                 "platform": {"architecture": "arm", "os": "linux", "variant": "v6"}},
                {"mediaType": media::DOCKER_MANIFEST, "digest": D3, "size": 10,
                 "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
                {"mediaType": media::OCI_MANIFEST, "digest": D3, "size": 10,
                 "platform": {"architecture": "unknown", "os": "unknown"}}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn parses_manifests_by_header_field_or_shape() {
        let m = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D1, "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D2, "size": 3}]
        });
        let body = serde_json::to_vec(&m).unwrap();
        let (mt, kind) = parse_manifest(None, &body).unwrap();
        assert_eq!(mt, media::OCI_MANIFEST);
        let ManifestKind::Image(man) = kind else {
            panic!()
        };
        assert_eq!(man.layers[0].digest.as_str(), D2);
        let (mt, _) = parse_manifest(
            Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
            &body,
        )
        .unwrap();
        assert_eq!(mt, media::DOCKER_MANIFEST);
        let (mt, kind) = parse_manifest(Some("application/json"), &index()).unwrap();
        assert_eq!(mt, media::DOCKER_LIST);
        assert!(matches!(kind, ManifestKind::Index(_)));
    }

    #[test]
    fn manifest_errors_are_clear() {
        let e = parse_manifest(None, b"<html>nope</html>").unwrap_err();
        assert!(format!("{e:#}").contains("not valid JSON"), "{e:#}");
        let e = parse_manifest(Some("application/vnd.example.thing+json"), b"{}").unwrap_err();
        assert!(
            format!("{e:#}").contains("unsupported manifest media type"),
            "{e:#}"
        );
        let e = parse_manifest(None, br#"{"schemaVersion":1,"fsLayers":[]}"#).unwrap_err();
        assert!(format!("{e:#}").contains("schema-1"), "{e:#}");
        let e = parse_manifest(
            None,
            br#"{"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#,
        )
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("parsing the image manifest"),
            "{e:#}"
        );
        assert!(parse_manifest(None, b"[1]").is_err());
    }

    #[test]
    fn selects_platforms() {
        let ManifestKind::Index(idx) = parse_manifest(None, &index()).unwrap().1 else {
            panic!()
        };
        let pick = |s: &str| {
            PlatformSpec::parse(s)
                .unwrap()
                .select(&idx.manifests)
                .map(|d| d.digest.to_string())
        };
        assert_eq!(pick("linux/amd64").as_deref(), Some(D1));
        assert_eq!(pick("linux/x86_64").as_deref(), Some(D1));
        assert_eq!(pick("linux/arm64").as_deref(), Some(D3));
        assert_eq!(pick("linux/arm64/v8").as_deref(), Some(D3));
        assert_eq!(pick("linux/arm/v6").as_deref(), Some(D2));
        assert_eq!(pick("linux/arm/v7"), None);
        assert_eq!(pick("windows/amd64"), None);
        assert_eq!(pick("linux/s390x"), None);
        assert!(PlatformSpec::parse("linux").is_err());
        assert!(PlatformSpec::parse("linux/amd64/v1/x").is_err());
    }

    #[test]
    fn compression_from_type_and_magic() {
        use Compression::*;
        let t = Compression::from_media_type;
        assert_eq!(t("application/vnd.oci.image.layer.v1.tar+gzip"), Some(Gzip));
        assert_eq!(t("application/vnd.oci.image.layer.v1.tar+zstd"), Some(Zstd));
        assert_eq!(t("application/vnd.oci.image.layer.v1.tar"), Some(None));
        assert_eq!(
            t("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Gzip)
        );
        assert_eq!(
            t("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"),
            Some(Gzip)
        );
        assert_eq!(t("application/octet-stream"), Option::None);
        assert_eq!(Compression::from_magic(&[0x1f, 0x8b, 8]), Gzip);
        assert_eq!(Compression::from_magic(&[0x28, 0xb5, 0x2f, 0xfd]), Zstd);
        assert_eq!(Compression::from_magic(b"etc/"), None);
    }
}
