//! strata-fs: a userspace union filesystem for container root filesystems.
//!
//! ```text
//!   kernel ──FUSE──▶ fuse.rs (StrataFs: requests → union calls → replies), or
//!                    wire/ (strata's own loop: fuse.h parsed here, over a Transport; a
//!                      │    journal lets a restarted server take the connection over)
//!                      │
//!                    union/ (the merge: lookup, readdir, copy-up, namespace ops, attrs)
//!                      │                      │      changes/ (upper vs lowers, the OCI
//!                      │                      │        layer tar; reads both through the
//!                      │                      │        same Upper and Layer calls)
//!          upper/ (Upper: the CoW dir;     layer/ (read-only: the Layer trait)
//!            owns its on-disk format)        ├─ DirLayer   a host directory
//!                      │                     ├─ IndexedLayer<S: DataSource>  index + tar
//!                      │                     │    (LocalData today; remote chunks later)
//!                      │                     └─ MemLayer   in memory, for tests
//!                      └──── host.rs (one-name-at-a-time host access, *at() calls)
//! ```
//!
//! Traits: [`layer::Layer`] is what a read-only layer provides; [`layer::LayerFile`] is
//! an open lower file (positional reads, length, a host descriptor only where the file is
//! a whole host file, for passthrough and `copy_file_range`); [`layer::DataSource`] is
//! where an indexed layer's bytes come from (it needs no host descriptor, so it may be
//! remote and slow). The union is usable without a mount (its unit tests and the
//! in-process conformance suite run on [`layer::MemLayer`]s); `fuse.rs` is the only module
//! that knows fuser.
//!
//! Building a mount from layers opened elsewhere (an image store's
//! `Vec<Arc<dyn Layer>>`): [`mount::build_union`] (or [`Union::new`] with a [`UnionConfig`]:
//! `lowers`, top first, and an optional [`upper::Upper`]), then [`mount::mount`] and
//! [`mount::Mounted::serve`]; the `strata-fs` command line opens its `lowerdir=`/`layers=`
//! paths with [`mount::open_lowers`] first.

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
pub mod passthrough;
pub mod union;
pub mod upper;
pub mod wire;

pub use errno::Errno;
pub use union::{Union, UnionConfig};
