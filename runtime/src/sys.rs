//! Every `unsafe` call of the crate, one small function each with its `// SAFETY:`.
