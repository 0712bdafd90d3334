//! `build`: a Dockerfile and its context to an image, as docker's classic builder does it.
//!
//! ```text
//!   parse (the Dockerfile's syntax) ──> lex (variable expansion, words)
//!   ignore (.dockerignore)
//! ```

pub mod copy;
pub mod ignore;
pub mod lex;
pub mod parse;
pub mod tree;
