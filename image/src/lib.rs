//! strata's images: everything between a reference typed on the command line and the layer
//! index directories a union mounts. No printing and no terminal here: pulls report through
//! [`pull::PullObserver`], failures are one [`Error`] whose variants name the failing step.
//!
//! ```text
//!   pull ───────────────┐            (resolve, choose a platform, fetch layers 3 at a time)
//!    │                   ▼
//!    ├─> registry ──> reference, oci, digest     (HTTP client, auth challenges, credentials)
//!    ▼
//!   store ──> oci, digest, reference             (OCI layout: index.json, blobs/, layers/)
//!    ├─ table     index.json as a table of images and their tags
//!    ├─ image     an entry's manifest and config; docker's lookup by tag, digest, ID
//!    ├─ ingest    one blob streamed in, resumed, verified (trait BlobSource)
//!    ├─ layers    a blob's layer index, built by strata-fs in the same pass
//!    ├─ author    new layers from tar streams, new images (commit, import, build)
//!    ├─ gc, in_use, lock, fsutil, demo
//!   change      Dockerfile instructions as runtime-config changes (commit -c, build)
//!   import ──> store::author, registry's HTTP stack (a tar file, URL or stdin as an image)
//!   push ──> registry (upload), store        (HEAD, cross-repository mount, upload, manifest)
//!   search ──> registry (catalog)            (a registry's catalog, or Docker Hub's search)
//!   archive ──> store                         (save: docker + OCI layout in one tar; load)
//!   lazy ──> registry                         (eStargz TOC, chunks by Range, the chunk cache)
//!    ▼
//!   strata-fs (the layer indexer)
//! ```
//!
//! Traits: [`store::ingest::BlobSource`] (where a blob's bytes come from: the registry, a
//! test), [`pull::PullObserver`], [`push::PushObserver`] and [`pull::LayerObserver`] (progress,
//! implemented by the binary).

pub mod archive;
pub mod change;
pub mod digest;
mod error;
pub mod import;
pub mod lazy;
pub mod oci;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registry;
pub mod search;
pub mod store;

pub use error::{Error, Result};
