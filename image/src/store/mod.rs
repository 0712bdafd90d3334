//! The image store: an OCI image layout plus strata's own directories beside it.
//!
//! ```text
//! ROOT/oci-layout            {"imageLayoutVersion": "1.0.0"}
//! ROOT/index.json            one descriptor per (image, tag) — see table.rs
//! ROOT/blobs/sha256/<hex>    manifests, configs, layer blobs; stored only once verified
//! ROOT/layers/<diffid-hex>/  a layer's index (built while pulling) + strata-layer.json
//! ROOT/chunks/<blob-hex>/    chunks of lazily pulled layers (see lazy.rs)
//! ROOT/tmp/                  temp files, partial downloads (<hex>.partial), ingest locks
//! ROOT/locks/index           exclusive while index.json is rewritten
//! ROOT/locks/gc              shared while a pull holds unreferenced blobs; exclusive for GC
//! ```
//!
//! Every write is atomic (temp + fsync + rename). Readers take no lock: index.json and blobs
//! only ever change by rename. Images are listed from index.json alone, so an image that
//! `skopeo copy` writes here shows up too (its layer indexes are built when first needed).
//! The store hands out an image's layers opened, as a union's lowers (`Vec<Arc<dyn Layer>>`,
//! [`Store::image_layers`], [`Store::open_layers`]): nothing else opens a layer's index.

pub mod author;
pub mod demo;
pub mod fsutil;
pub mod gc;
pub mod image;
pub mod in_use;
pub mod ingest;
pub mod layers;
pub mod lazy;
pub mod lock;
pub mod table;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::oci::Index;
use crate::{Error, Result};
use lock::Lock;
use table::ImageTable;

const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store at `root`; nothing is created until something is written.
    pub fn new(root: &Path) -> Store {
        Store {
            root: root.to_path_buf(),
        }
    }

    /// The default root: `/var/lib/strata` as root, `$XDG_DATA_HOME/strata` otherwise.
    pub fn default_root() -> PathBuf {
        if nix::unistd::geteuid().is_root() {
            return PathBuf::from("/var/lib/strata");
        }
        let data = std::env::var_os("XDG_DATA_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("."));
        data.join("strata")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    /// `layers/<diffid hex>`: the layer's index directory.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.layers_dir().join(diff_id.hex())
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// Creates the layout if it is not there (idempotent, safe to race).
    pub fn init(&self) -> Result<()> {
        for dir in [
            self.blobs_dir(),
            self.layers_dir(),
            self.tmp_dir(),
            self.root.join("locks"),
        ] {
            fs::create_dir_all(&dir)
                .map_err(|source| Error::CreateStoreDir { path: dir, source })?;
        }
        let layout = self.root.join("oci-layout");
        if !layout.exists() {
            fsutil::atomic_write(&self.tmp_dir(), &layout, OCI_LAYOUT.as_bytes())?;
        }
        if !self.index_path().exists() {
            let _lock = self.lock_index()?;
            if !self.index_path().exists() {
                self.write_index(&Index::default())?;
            }
        }
        Ok(())
    }

    pub fn lock_index(&self) -> Result<Lock> {
        Lock::exclusive(&self.root.join("locks").join("index"))
    }

    /// Held (shared) by pulls while their blobs are not referenced by index.json yet.
    pub fn gc_guard(&self) -> Result<Lock> {
        Lock::shared(&self.root.join("locks").join("gc"))
    }

    pub fn lock_gc_exclusive(&self) -> Result<Lock> {
        Lock::exclusive(&self.root.join("locks").join("gc"))
    }

    pub fn try_lock_gc_exclusive(&self) -> Result<Option<Lock>> {
        Lock::try_exclusive(&self.root.join("locks").join("gc"))
    }

    /// index.json as it is now (lock-free). A missing store reads as empty.
    pub fn read_index(&self) -> Result<Index> {
        let path = self.index_path();
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| Error::ParseFile { path, source })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Index::default()),
            Err(source) => Err(Error::Read { path, source }),
        }
    }

    pub fn table(&self) -> Result<ImageTable> {
        Ok(ImageTable::from_index(&self.read_index()?))
    }

    fn write_index(&self, index: &Index) -> Result<()> {
        let bytes = serde_json::to_vec(index).map_err(|source| Error::Serialize {
            what: "index.json",
            source,
        })?;
        fsutil::atomic_write(&self.tmp_dir(), &self.index_path(), &bytes)
    }

    /// Read-modify-write of the image table under the index lock. `f`'s changes are written
    /// only when it returns Ok; its error is the caller's own (a command's refusal).
    pub fn update<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&mut ImageTable) -> Result<T, E>,
    ) -> Result<T, E> {
        self.init()?;
        let _lock = self.lock_index()?;
        let mut table = self.table()?;
        let out = f(&mut table)?;
        self.write_index(&table.to_index())?;
        Ok(out)
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        fs::read(&path).map_err(|source| Error::ReadBlob {
            digest: digest.clone(),
            path,
            source,
        })
    }

    /// Stores a small blob held in memory, after checking its digest.
    pub fn put_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        let got = Digest::of(bytes);
        if &got != digest {
            return Err(Error::BlobVerify {
                digest: digest.clone(),
                got,
            });
        }
        if self.has_blob(digest) {
            return Ok(());
        }
        fsutil::atomic_write(&self.tmp_dir(), &self.blob_path(digest), bytes)
    }
}
