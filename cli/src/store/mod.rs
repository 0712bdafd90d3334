//! The image store (strata-image) and, beside it, the containers and volumes.

pub use strata_image::store::*;

pub mod containers;
pub mod names;
pub mod volumes;
