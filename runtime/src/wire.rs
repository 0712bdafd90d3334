//! Errors crossing from a container's setup process to the caller, over a close-on-exec
//! pipe: a serialized [`crate::Error`], rebuilt on the caller's side with the same variant
//! (errno values included) so the CLI can branch on it.

use std::os::fd::AsFd;
use std::path::PathBuf;

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use crate::Error;

#[derive(Serialize, Deserialize)]
enum Wire {
    Sys {
        what: String,
        errno: i32,
    },
    Io {
        path: PathBuf,
        errno: Option<i32>,
        message: String,
    },
    UnknownCapability(String),
    UnknownUser(String),
    UnknownGroup(String),
    UnknownSignal(String),
    UnknownRlimit(String),
    Rlimit {
        kind: String,
        soft: u64,
        hard: u64,
        max: u64,
        errno: i32,
    },
    CgroupsUnavailable {
        flag: String,
    },
    NotFound {
        path: String,
    },
    NotExecutable {
        path: String,
        reason: String,
    },
    Capabilities {
        step: String,
        reason: String,
    },
    Paused {
        pid: i32,
    },
    Unmapped {
        kind: String,
        id: u32,
    },
    InvalidId(String),
    NoCommand,
    Seccomp(crate::seccomp::SeccompError),
    Other(String),
}

fn to_wire(e: &Error) -> Wire {
    match e {
        Error::Sys { what, source } => Wire::Sys {
            what: what.clone(),
            errno: *source as i32,
        },
        Error::Io { path, source } => Wire::Io {
            path: path.clone(),
            errno: source.raw_os_error(),
            message: source.to_string(),
        },
        Error::UnknownCapability(s) => Wire::UnknownCapability(s.clone()),
        Error::UnknownUser(s) => Wire::UnknownUser(s.clone()),
        Error::UnknownGroup(s) => Wire::UnknownGroup(s.clone()),
        Error::UnknownSignal(s) => Wire::UnknownSignal(s.clone()),
        Error::UnknownRlimit(s) => Wire::UnknownRlimit(s.clone()),
        Error::Rlimit {
            kind,
            soft,
            hard,
            max,
            source,
        } => Wire::Rlimit {
            kind: kind.clone(),
            soft: *soft,
            hard: *hard,
            max: *max,
            errno: *source as i32,
        },
        Error::CgroupsUnavailable { flag } => Wire::CgroupsUnavailable { flag: flag.clone() },
        Error::NotFound { path } => Wire::NotFound { path: path.clone() },
        Error::NotExecutable { path, reason } => Wire::NotExecutable {
            path: path.clone(),
            reason: reason.clone(),
        },
        Error::Capabilities { step, reason } => Wire::Capabilities {
            step: step.clone(),
            reason: reason.clone(),
        },
        Error::Paused { pid } => Wire::Paused { pid: *pid },
        Error::Unmapped { kind, id } => Wire::Unmapped {
            kind: kind.to_string(),
            id: *id,
        },
        Error::InvalidId(s) => Wire::InvalidId(s.clone()),
        Error::NoCommand => Wire::NoCommand,
        Error::Seccomp(e) => Wire::Seccomp(e.clone()),
        Error::Other(s) => Wire::Other(s.clone()),
        // The caller's own errors (strata-runtime's state): never met in a child.
        Error::Bundle { .. }
        | Error::Hook { .. }
        | Error::NoSuchContainer(_)
        | Error::Exists(_)
        | Error::WrongState(_) => Wire::Other(e.to_string()),
    }
}

fn from_wire(w: Wire) -> Error {
    match w {
        Wire::Sys { what, errno } => Error::Sys {
            what,
            source: Errno::from_raw(errno),
        },
        Wire::Io {
            path,
            errno,
            message,
        } => Error::Io {
            path,
            source: match errno {
                Some(n) => std::io::Error::from_raw_os_error(n),
                None => std::io::Error::other(message),
            },
        },
        Wire::UnknownCapability(s) => Error::UnknownCapability(s),
        Wire::UnknownUser(s) => Error::UnknownUser(s),
        Wire::UnknownGroup(s) => Error::UnknownGroup(s),
        Wire::UnknownSignal(s) => Error::UnknownSignal(s),
        Wire::UnknownRlimit(s) => Error::UnknownRlimit(s),
        Wire::Rlimit {
            kind,
            soft,
            hard,
            max,
            errno,
        } => Error::Rlimit {
            kind,
            soft,
            hard,
            max,
            source: Errno::from_raw(errno),
        },
        Wire::CgroupsUnavailable { flag } => Error::CgroupsUnavailable { flag },
        Wire::NotFound { path } => Error::NotFound { path },
        Wire::NotExecutable { path, reason } => Error::NotExecutable { path, reason },
        Wire::Capabilities { step, reason } => Error::Capabilities { step, reason },
        Wire::Paused { pid } => Error::Paused { pid },
        Wire::Unmapped { kind, id } => Error::Unmapped {
            kind: if kind == "gid" { "gid" } else { "uid" },
            id,
        },
        Wire::InvalidId(s) => Error::InvalidId(s),
        Wire::NoCommand => Error::NoCommand,
        Wire::Seccomp(e) => Error::Seccomp(e),
        Wire::Other(s) => Error::Other(s),
    }
}

fn encode(e: &Error) -> Vec<u8> {
    serde_json::to_vec(&to_wire(e)).unwrap_or_default()
}

/// Writes `e` to the pipe `fd` (the reader reads to EOF).
pub(crate) fn send(fd: impl AsFd, e: &Error) {
    let bytes = encode(e);
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        match nix::unistd::write(&fd, rest) {
            Ok(0) => break,
            Ok(n) => rest = &rest[n..],
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
}

/// The error in `bytes` (everything read from the pipe); `None` for none (the process
/// exec'd).
pub(crate) fn decode(bytes: &[u8]) -> Option<Error> {
    if bytes.is_empty() {
        return None;
    }
    Some(match serde_json::from_slice::<Wire>(bytes) {
        Ok(w) => from_wire(w),
        Err(_) => Error::Other(String::from_utf8_lossy(bytes).into_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_survive_the_pipe() {
        let round = |e: Error| decode(&encode(&e)).unwrap();
        let e = round(Error::Sys {
            what: "mounting /data".into(),
            source: Errno::EROFS,
        });
        assert!(
            matches!(&e, Error::Sys { what, source: Errno::EROFS } if what == "mounting /data")
        );
        let e = round(Error::Io {
            path: "/x".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        });
        assert_eq!(e.to_string(), "/x: No such file or directory (os error 2)");
        let e = round(Error::NotFound {
            path: "nope".into(),
        });
        assert_eq!(e.exit_code(), 127);
        let e = round(Error::NotExecutable {
            path: "/etc/passwd".into(),
            reason: "permission denied".into(),
        });
        assert_eq!(e.exit_code(), 126);
        assert!(decode(b"").is_none());
    }
}
