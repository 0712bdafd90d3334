//! Shared harness for strata's end-to-end tests and benchmarks.
