//! strata's containers: everything from a `create` request to a removed container, with no
//! printing of its own (a foreground monitor's output is the container's) and one [`Error`].
//!
//! ```text
//!   create ──> flags (docker's flag grammar), containers, volumes, strata-image (the image,
//!    │          pulled or made when missing)
//!   commit (changes tar -> strata-image authoring; export tar; the rootless tar helper)
//!   lifecycle (stop, kill, remove: signals, grace, SIGKILL, cleanup)
//!    │
//!    ▼
//!   monitor ──> strata-fs (the union, served in-process), strata-runtime (the container),
//!    │          network (bridge, slirp4netns, the files), attach, terminal
//!    ▼
//!   containers (records and state.json, names, locks) ──> strata-image's store (paths, locks)
//!   volumes (named and anonymous, in-use checks)   info (docker's /info document)
//!
//!   image_mount (`strata mount`: a server process) ──> strata-image's store (the layers,
//!                                                       opened) → strata-fs (the union)
//! ```
//! The monitor and image_mount both take an image's layers opened from the store
//! (`Store::open_layers`) and build the union from them: one path opens an image's layers.
//!
//! Traits: none of its own; a pull on `create` reports through strata-image's
//! `PullObserver`, which the caller passes.

pub mod attach;
pub mod build;
pub mod commit;
pub mod containers;
pub mod create;
mod error;
pub mod flags;
pub mod fs_server;
pub mod image_mount;
pub mod info;
pub mod lifecycle;
pub mod monitor;
pub mod names;
pub mod network;
pub mod rootfs;
pub mod terminal;
pub mod volume_mount;
pub mod volume_options;
pub mod volumes;

pub use error::{Error, Result};
