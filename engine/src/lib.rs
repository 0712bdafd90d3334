//! strata's containers: everything from a `create` request to a removed container, with no
//! printing of its own (a foreground monitor's output is the container's) and one [`Error`].
//!
//! ```text
//!   create ──> flags (docker's flag grammar), containers, volumes, strata-image (the image,
//!    │          pulled or made when missing)
//!   lifecycle (stop, kill, remove: signals, grace, SIGKILL, cleanup)
//!    │
//!    ▼
//!   monitor ──> strata-fs (the union, served in-process), strata-runtime (the container),
//!    │          network (slirp4netns), attach (its socket protocol), terminal
//!    ▼
//!   containers (records and state.json, names, locks) ──> strata-image's store (paths, locks)
//!   volumes (named and anonymous, in-use checks)   info (docker's /info document)
//! ```
//!
//! Traits: none of its own; a pull on `create` reports through strata-image's
//! `PullObserver`, which the caller passes.

pub mod attach;
pub mod containers;
pub mod create;
mod error;
pub mod flags;
pub mod info;
pub mod lifecycle;
pub mod monitor;
pub mod names;
pub mod network;
pub mod terminal;
pub mod volumes;

pub use error::{Error, Result};
