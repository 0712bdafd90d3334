//! A stack of read-only layers as the union merges them below its upper.
//!
//! A name is looked up top-down: a whiteout ends the search, a non-directory ends it, an
//! opaque directory ends the merge below it, and a directory that carries a redirect (a
//! renamed directory of an upper that became a layer) continues at the place it names in
//! the layers below it, as kernel overlayfs follows redirects in lower layers. The union's
//! lookups and the changes walk both ask this module, so they cannot disagree on what the
//! lowers show.

use std::ffi::OsStr;
use std::sync::Arc;

use super::{Layer, LayerPath, Lookup};
use crate::attr::{Attr, FileKind};
use crate::errno::Result;

/// A directory of a lower layer that a merged directory includes, or a lower file: the
/// layer (an index into the lowers, top first) and its path there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LowerRef {
    pub layer: usize,
    pub path: LayerPath,
}

/// The result of looking a name up in a stack of lower directories.
#[derive(Clone, Debug)]
pub enum LowerHit {
    Missing,
    Found {
        attr: Attr,
        /// The topmost entry.
        top: LowerRef,
        /// For a directory: every lower directory merged into it, top first.
        dirs: Vec<LowerRef>,
    },
}

/// The root directories of `lowers`, top first: the stack of the merged root.
pub fn root_stack(lowers: &[Arc<dyn Layer>]) -> Vec<LowerRef> {
    (0..lowers.len())
        .map(|layer| LowerRef {
            layer,
            path: LayerPath::root(),
        })
        .collect()
}

/// Looks `name` up in `stack`, a merged directory's lower directories (top first).
pub fn lookup(lowers: &[Arc<dyn Layer>], stack: &[LowerRef], name: &OsStr) -> Result<LowerHit> {
    let mut top: Option<(Attr, LowerRef)> = None;
    let mut dirs = Vec::new();
    for (i, r) in stack.iter().enumerate() {
        match lowers[r.layer].lookup(&r.path, name)? {
            Lookup::Missing => continue,
            Lookup::Whiteout => break,
            Lookup::Found { attr, opaque } => {
                let here = LowerRef {
                    layer: r.layer,
                    path: r.path.join(name),
                };
                let is_dir = attr.kind == FileKind::Directory;
                match &top {
                    None => top = Some((attr, here.clone())),
                    Some(_) if !is_dir => break,
                    Some(_) => {}
                }
                if !is_dir {
                    break;
                }
                dirs.push(here.clone());
                if opaque {
                    break;
                }
                let below = r.layer + 1;
                if below < lowers.len() {
                    if let Some(to) = lowers[r.layer].redirect(&here.path)? {
                        dirs.extend(follow_redirect(lowers, &stack[i + 1..], below, &to)?);
                        break;
                    }
                }
            }
        }
    }
    Ok(match top {
        Some((attr, top)) => LowerHit::Found { attr, top, dirs },
        None => LowerHit::Missing,
    })
}

/// The directories of layers `below..` a redirect leads to: an absolute path is walked from
/// the root of those layers; a bare name (the kernel writes one for a rename within the
/// same directory) is looked up in the rest of the parent's stack, `siblings`. Empty when
/// the redirect leads to no directory.
pub fn follow_redirect(
    lowers: &[Arc<dyn Layer>],
    siblings: &[LowerRef],
    below: usize,
    redirect: &[u8],
) -> Result<Vec<LowerRef>> {
    let mut stack: Vec<LowerRef> = if redirect.starts_with(b"/") {
        root_stack(lowers).split_off(below.min(lowers.len()))
    } else {
        siblings
            .iter()
            .filter(|r| r.layer >= below)
            .cloned()
            .collect()
    };
    for comp in LayerPath::from_bytes(redirect).components() {
        match lookup(lowers, &stack, comp)? {
            LowerHit::Found { attr, dirs, .. } if attr.kind == FileKind::Directory => stack = dirs,
            _ => return Ok(Vec::new()),
        }
    }
    Ok(stack)
}
