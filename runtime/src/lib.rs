//! strata-runtime: the namespace runtime (user/mount/pid/uts/ipc/net namespaces, id maps,
//! pivot_root into the FUSE rootfs, cgroups, a reaping init).
//!
//! Not built yet: the container issue brings it. The crate exists so the workspace has the
//! shape DESIGN.md lays out and `cli` can depend on it without a later reshuffle.
