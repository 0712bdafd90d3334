//! strata-fs: a userspace union filesystem for container root filesystems.
//!
//! ```text
//!   kernel ──FUSE──▶ fuse.rs (StrataFs: requests → union calls → replies)
//!                      │
//!                    union/ (the merge: lookup, readdir, copy-up, whiteouts, rename)
//!                      │            │        changes/ (upper vs lowers, the OCI layer tar)
//!                      │            │
//!          upper.rs (CoW dir,    layer/ (read-only: the Layer trait; DirLayer)
//!            on-disk format)        │
//!                      └──── host.rs (one-name-at-a-time host access, *at() calls)
//! ```
//!
//! Traits: [`layer::Layer`] is what a read-only layer provides. The union is usable
//! without a mount (see its unit tests); `fuse.rs` is the only module that knows fuser.

pub mod attr;
pub mod changes;
pub mod errno;
pub mod fuse;
pub mod host;
pub mod ids;
pub mod inode;
pub mod layer;
pub mod mount;
pub mod options;
pub mod union;
pub mod upper;

pub use errno::Errno;
pub use union::{Union, UnionConfig};
