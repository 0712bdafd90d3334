//! The one error of strata-image. Each variant is a step that failed and carries what it
//! failed on (a path, a digest, a reference) and the cause as its `source`, so the binary
//! prints `step: cause: …` once, as docker would word it.

use std::io;
use std::path::PathBuf;

use crate::digest::Digest;
use crate::registry::HttpError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Files of the store and of the credential file.
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("creating {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("creating store directory {}", path.display())]
    CreateStoreDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("renaming {} to {}", from.display(), to.display())]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("syncing directory {}", path.display())]
    SyncDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("syncing {}", path.display())]
    Sync {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("opening {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("opening lock file {}", path.display())]
    OpenLock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("locking {}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parsing {}", path.display())]
    ParseFile {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("serializing {what}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    // Names and documents.
    #[error("invalid digest {digest:?}: {why}")]
    InvalidDigest { digest: String, why: &'static str },
    #[error("unsupported digest algorithm {algorithm:?} in {digest:?} (only sha256)")]
    DigestAlgorithm { algorithm: String, digest: String },
    #[error("invalid reference format: {why}")]
    InvalidReference { why: String },
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    HexRepositoryName(String),
    #[error("invalid platform {0:?}: want os/arch[/variant]")]
    InvalidPlatform(String),
    #[error("the manifest is not valid JSON")]
    ManifestJson(#[source] serde_json::Error),
    #[error("the manifest is not a JSON object")]
    ManifestNotObject,
    #[error("the manifest has no mediaType and is neither a manifest nor an index")]
    ManifestShape,
    #[error("parsing the image manifest")]
    ParseManifest(#[source] serde_json::Error),
    #[error("parsing the image index")]
    ParseIndex(#[source] serde_json::Error),
    #[error("Docker schema-1 manifests ({0}) are not supported")]
    Schema1(String),
    #[error("unsupported manifest media type {0:?}")]
    ManifestMediaType(String),
    #[error("parsing image config {digest}")]
    ParseConfig {
        digest: Digest,
        #[source]
        source: serde_json::Error,
    },

    // Credentials.
    #[error("decoding credentials for {key} in {}", path.display())]
    DecodeCredentials {
        key: String,
        path: PathBuf,
        #[source]
        source: base64::DecodeError,
    },
    #[error("credentials are not UTF-8")]
    CredentialsUtf8(#[source] std::string::FromUtf8Error),
    #[error("credentials for {key} in {} are not user:password", path.display())]
    CredentialsShape { key: String, path: PathBuf },

    // The registry.
    #[error("registry {domain} is not reachable{how}")]
    Unreachable { domain: String, how: String },
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("manifest for {name}:{reference} not found: {message}")]
    ManifestNotFound {
        name: String,
        reference: String,
        message: String,
    },
    #[error("reading manifest {reference} from {domain}")]
    ReadManifest {
        reference: String,
        domain: String,
        #[source]
        source: io::Error,
    },
    #[error("manifest {want} failed verification: its content hashes to {got}")]
    ManifestVerify { want: Digest, got: Digest },
    #[error("manifest {reference}: the registry says {said} but its content hashes to {got}")]
    ManifestHeaderDigest {
        reference: String,
        said: Digest,
        got: Digest,
    },
    #[error("blob {digest} is {size} bytes, more than a config may be")]
    ConfigTooLarge { digest: Digest, size: u64 },
    #[error("fetching blob {digest}")]
    FetchBlob {
        digest: Digest,
        #[source]
        source: HttpError,
    },
    #[error("reading blob {digest}")]
    ReadRemoteBlob {
        digest: Digest,
        #[source]
        source: io::Error,
    },
    #[error("blob {digest} failed verification: its content hashes to {got}; nothing stored")]
    BlobVerify { digest: Digest, got: Digest },

    // Lazy pulling (eStargz, zstd:chunked).
    #[error("fetching bytes {offset}..{end} of layer {digest}")]
    FetchRange {
        digest: Digest,
        offset: u64,
        end: u64,
        #[source]
        source: io::Error,
    },
    #[error("layer {digest} is not eStargz: {reason}")]
    EstargzFooter {
        digest: Digest,
        reason: &'static str,
    },
    #[error("layer {digest} is not zstd:chunked: {reason}")]
    NotZstdChunked {
        digest: Digest,
        reason: &'static str,
    },
    #[error("reading the table of contents of layer {digest}")]
    ReadToc {
        digest: Digest,
        #[source]
        source: io::Error,
    },
    #[error(
        "the table of contents of layer {digest} hashes to {got}, its annotation says {expected}"
    )]
    TocVerify {
        digest: Digest,
        expected: String,
        got: Digest,
    },
    #[error("parsing the table of contents of layer {digest}")]
    ParseToc {
        digest: Digest,
        #[source]
        source: serde_json::Error,
    },
    #[error("the table of contents of layer {digest}, entry {entry:?}: {reason}")]
    TocEntry {
        digest: Digest,
        entry: String,
        reason: &'static str,
    },

    // Pull.
    #[error("manifest for {reference}")]
    Manifest {
        reference: String,
        #[source]
        source: Box<Error>,
    },
    #[error("manifest {digest} of {reference}")]
    PlatformManifest {
        digest: Digest,
        reference: String,
        #[source]
        source: Box<Error>,
    },
    #[error("no matching manifest for {platform} in the manifest list entries of {reference}")]
    NoPlatformManifest { platform: String, reference: String },
    #[error("manifest {digest} of {reference} is a nested index")]
    NestedIndex { digest: Digest, reference: String },
    #[error(
        "image with reference {reference} was found but does not match the specified \
         platform: wanted {wanted}, actual: {actual}"
    )]
    PlatformMismatch {
        reference: String,
        wanted: String,
        actual: String,
    },
    #[error("image {reference}: the manifest has {layers} layers but the config names {diff_ids} diff-ids")]
    LayerCount {
        reference: String,
        layers: usize,
        diff_ids: usize,
    },
    #[error("downloading blob {digest}")]
    Download {
        digest: Digest,
        #[source]
        source: io::Error,
    },
    #[error(
        "blob {digest} failed verification: received {received} bytes hashing to {got} \
         (expected {size} bytes); nothing stored"
    )]
    DownloadVerify {
        digest: Digest,
        received: u64,
        got: Digest,
        size: u64,
    },
    /// A layer whose content was bad, and whose blob could not be stored either.
    #[error("{layer}")]
    LayerAndBlob {
        layer: String,
        #[source]
        blob: Box<Error>,
    },

    // Push.
    #[error("An image does not exist locally with the tag: {0}")]
    NoLocalTag(String),
    #[error("blob {digest} of {reference} is missing from the store ({}); nothing pushed", path.display())]
    PushBlobMissing {
        digest: Digest,
        reference: String,
        path: PathBuf,
    },
    #[error("{step} blob {digest}")]
    PushBlob {
        digest: Digest,
        step: &'static str,
        #[source]
        source: HttpError,
    },
    #[error("reading blob {digest} to push it")]
    PushRead {
        digest: Digest,
        #[source]
        source: io::Error,
    },
    #[error("{domain} stored {said} for the blob {sent} it was sent")]
    PushDigest {
        domain: String,
        sent: Digest,
        said: String,
    },
    #[error("putting the manifest {name}:{reference}")]
    PushManifest {
        name: String,
        reference: String,
        #[source]
        source: HttpError,
    },
    #[error("recompressing layer {diff_id}")]
    Recompress {
        diff_id: Digest,
        #[source]
        source: io::Error,
    },
    #[error(
        "zstd layers need --format oci: the Docker schema 2 manifest has no zstd media type \
         (layer {digest})"
    )]
    ZstdInDockerFormat { digest: Digest },

    // Search.
    #[error("listing the catalog of {domain}")]
    Catalog {
        domain: String,
        #[source]
        source: HttpError,
    },
    #[error("reading the catalog of {domain}")]
    CatalogRead {
        domain: String,
        #[source]
        source: io::Error,
    },
    #[error("the catalog of {domain} is not JSON")]
    CatalogJson {
        domain: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("searching {url}")]
    HubSearch {
        url: String,
        #[source]
        source: HttpError,
    },
    #[error("the search results of {url} are not valid")]
    HubSearchJson {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid search term {0:?}")]
    SearchTerm(String),

    // Layers.
    #[error("reading layer {digest}")]
    ReadLayer {
        digest: Digest,
        #[source]
        source: io::Error,
    },
    #[error("starting zstd decoder for layer {digest}")]
    Zstd {
        digest: Digest,
        #[source]
        source: io::Error,
    },
    #[error(
        "layer {diff_id} of {image} was pulled lazily: its blob is in the registry, not \
         here (run 'strata pull --full {image}' first)"
    )]
    LazyLayer { diff_id: Digest, image: String },
    #[error("STRATA_LAZY_CACHE_SIZE={0:?} is not a size (say 2G, 512M or a number of bytes)")]
    LazyCacheSize(String),
    #[error("reading the chunk table {path}")]
    ParseLazyChunks {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("indexing layer {digest}")]
    IndexLayer {
        digest: Digest,
        #[source]
        source: Box<Error>,
    },
    #[error(transparent)]
    Index(#[from] strata_fs::layer::index::IndexError),
    #[error("decompressing layer {digest}")]
    Decompress {
        digest: Digest,
        #[source]
        source: io::Error,
    },
    #[error(
        "layer {blob}: its uncompressed content hashes to {diff_id}, but the image config says \
         {expected}"
    )]
    DiffId {
        blob: Digest,
        diff_id: Digest,
        expected: Digest,
    },
    #[error("writing the new layer's blob {}", path.display())]
    WriteLayerBlob {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("indexing the new layer")]
    IndexNewLayer(#[source] Box<Error>),
    #[error("reading the new layer's tar")]
    ReadNewLayer(#[source] io::Error),
    #[error("preparing layer {diff_id}")]
    PrepareLayer {
        diff_id: Digest,
        #[source]
        source: Box<Error>,
    },
    #[error("layer {diff_id} is not in the store")]
    MissingLayer { diff_id: Digest },
    #[error("opening the index of layer {diff_id}")]
    OpenLayer {
        diff_id: Digest,
        #[source]
        source: strata_fs::layer::index::IndexError,
    },
    #[error("opening layer blob {digest}")]
    OpenLayerBlob {
        digest: Digest,
        #[source]
        source: io::Error,
    },
    #[error("STRATA_MAX_LAYER_BYTES={0:?} is not a number of bytes")]
    MaxLayerBytes(String, #[source] std::num::ParseIntError),

    // The store's images.
    #[error("reading blob {digest} ({})", path.display())]
    ReadBlob {
        digest: Digest,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("manifest {digest}")]
    StoredManifest {
        digest: Digest,
        #[source]
        source: Box<Error>,
    },
    #[error("index {0} has no manifest for this platform")]
    NoHostPlatform(Digest),
    #[error("{0}: nested image indexes are not supported")]
    NestedStoredIndex(Digest),
    #[error("image ID prefix {0:?} is ambiguous")]
    AmbiguousId(String),
    #[error("No such image: {0}")]
    NoSuchImage(String),
    #[error("removing blob {digest}")]
    RemoveBlob {
        digest: Digest,
        #[source]
        source: io::Error,
    },
    #[error("removing layer index {}", path.display())]
    RemoveLayer {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    // Archives (save and load): the step names the member or layer.
    #[error("{0}")]
    Archive(String),
    #[error("{what}")]
    ArchiveIo {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{what}")]
    ArchiveJson {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}")]
    ArchiveStep {
        what: String,
        #[source]
        source: Box<Error>,
    },

    // import.
    #[error("Get \"{url}\": {message}")]
    ImportUrl { url: String, message: String },
    #[error("importing the tar")]
    Import(#[source] Box<Error>),

    // Dockerfile instructions as config changes (`commit -c`, `import -c`, build).
    #[error("{instruction}: {reason}")]
    ConfigChange { instruction: String, reason: String },

    // The demo image.
    #[error(
        "the demo image is made from the host's busybox-static, which is not installed \
         (apt-get install busybox-static)"
    )]
    NoBusybox,
    #[error("running {path} --list")]
    BusyboxList {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("building the demo layer")]
    DemoLayer(#[source] io::Error),
}

impl Error {
    /// The message with its causes, `step: cause: cause`, as the binary prints it.
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            s.push_str(": ");
            s.push_str(&c.to_string());
            cause = c.source();
        }
        s
    }
}
