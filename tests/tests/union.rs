//! The union filesystem's semantics through a real mount (issue: strata-fs).
