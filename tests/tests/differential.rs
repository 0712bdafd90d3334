//! Differential test: the same seeded operations on kernel overlayfs and on strata-fs.
