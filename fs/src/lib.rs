//! strata-fs
