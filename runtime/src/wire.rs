//! Errors crossing from a container's setup process to the caller, over a close-on-exec
//! pipe: a serialized [`crate::Error`].
