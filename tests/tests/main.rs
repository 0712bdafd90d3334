//! End-to-end tests through the binaries: real FUSE mounts, kernel overlayfs as the reference.
//! One test binary (STYLE.md 15): each area is a module.

mod containers;
mod differential;
mod images;
mod runtime_cli;
mod snapshotter;
mod union;
