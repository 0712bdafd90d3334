//! Shared harness for strata's end-to-end tests and benchmarks.
//!
//! ```text
//!   containerd.rs a private containerd, driven with ctr and ctr-remote
//!   dirstream.rs opendir/readdir with telldir/seekdir
//!   fake_registry.rs a registry that misbehaves on purpose (digests, cut transfers, auth)
//!   fixture.rs  LayerBuilder: layer content → a directory (OCI or kernel whiteouts)
//!   oci.rs      ImageBuilder: layers → an OCI image layout (gzip, zstd or plain)
//!   podman.rs   podman on a private store, as this host needs it
//!   registry.rs docker-registry on a free loopback port; push with skopeo
//!   strata.rs   the strata binary with a test store (--root), its exit code and output
//!   mounts.rs   mount/unmount strata-fs, fuse-overlayfs, kernel overlayfs; MountGuard
//!   throttle.rs a TCP proxy pacing loopback to a slow link, counting bytes
//!   tree.rs     a merged tree as comparable data (snapshot, diff)
//!   users.rs    root or not, the unprivileged test user, re-running a test as that user
//! ```

pub mod containerd;
pub mod dirstream;
pub mod fake_registry;
pub mod fixture;
pub mod mounts;
pub mod oci;
pub mod podman;
pub mod registry;
pub mod strata;
pub mod throttle;
pub mod tree;
pub mod users;
