//! The process's side of the start, in the container's root: rlimits, umask, working
//! directory, capabilities (bounding set, then the user with PR_SET_KEEPCAPS, then
//! effective/permitted/inheritable), no_new_privs, then execve with the PATH lookup of
//! execvp done inside the container, its failures typed (127 not found, 126 not
//! executable).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::unistd::{chdir, setgid, setgroups, setuid, Gid, Uid};

use crate::seccomp::Profile;
use crate::spec::{ProcessSpec, Rlimit};
use crate::{caps, idmap, sys, Error, Result};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The kernel resource for a docker `--ulimit` name.
pub(crate) fn rlimit_resource(kind: &str) -> Result<Resource> {
    let lower = kind.to_ascii_lowercase();
    let name = lower.strip_prefix("rlimit_").unwrap_or(&lower);
    Ok(match name {
        "as" => Resource::RLIMIT_AS,
        "core" => Resource::RLIMIT_CORE,
        "cpu" => Resource::RLIMIT_CPU,
        "data" => Resource::RLIMIT_DATA,
        "fsize" => Resource::RLIMIT_FSIZE,
        "locks" => Resource::RLIMIT_LOCKS,
        "memlock" => Resource::RLIMIT_MEMLOCK,
        "msgqueue" => Resource::RLIMIT_MSGQUEUE,
        "nice" => Resource::RLIMIT_NICE,
        "nofile" => Resource::RLIMIT_NOFILE,
        "nproc" => Resource::RLIMIT_NPROC,
        "rss" => Resource::RLIMIT_RSS,
        "rtprio" => Resource::RLIMIT_RTPRIO,
        "rttime" => Resource::RLIMIT_RTTIME,
        "sigpending" => Resource::RLIMIT_SIGPENDING,
        "stack" => Resource::RLIMIT_STACK,
        _ => return Err(Error::UnknownRlimit(kind.to_string())),
    })
}

fn set_rlimit(r: &Rlimit) -> Result<()> {
    let res = rlimit_resource(&r.kind)?;
    setrlimit(res, r.soft, r.hard).map_err(|source| Error::Rlimit {
        kind: r.kind.clone(),
        soft: r.soft,
        hard: r.hard,
        max: getrlimit(res).map(|(_, h)| h).unwrap_or(0),
        source,
    })
}

/// What is left once the process's credentials are in place: the exec itself.
pub(crate) struct Exec {
    argv0: String,
    argv: Vec<CString>,
    env: Vec<CString>,
    path: String,
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Other(format!("{s:?} contains a NUL byte")))
}

/// The environment: the process's, plus PATH, HOSTNAME, HOME and (under a terminal) TERM
/// when it lacks them.
fn environment(p: &ProcessSpec) -> Vec<String> {
    let mut env = p.env.clone();
    let mut default = |k: &str, v: &dyn Fn() -> String| {
        if !env.iter().any(|kv| kv.split('=').next() == Some(k)) {
            env.push(format!("{k}={}", v()));
        }
    };
    default("PATH", &|| DEFAULT_PATH.to_string());
    default("HOSTNAME", &|| {
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    default("HOME", &|| crate::user::home(Path::new("/"), p.user.uid));
    if p.terminal {
        default("TERM", &|| "xterm".to_string());
    }
    env
}

/// In the container's root: rlimits, working directory, capabilities (bounding set, then
/// the user with PR_SET_KEEPCAPS, then effective/permitted/inheritable), no_new_privs, and
/// the seccomp filter: last with no_new_privs, else while CAP_SYS_ADMIN is still held (the
/// kernel needs one of the two; runc's order), so the filter must allow the credential
/// calls that follow.
pub(crate) fn prepare(
    p: &ProcessSpec,
    privileged: bool,
    seccomp: Option<&Profile>,
) -> Result<Exec> {
    let argv0 = p.args.first().ok_or(Error::NoCommand)?.clone();
    let env = environment(p);
    let path = env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    let exec = Exec {
        argv0,
        argv: p.args.iter().map(|a| cstring(a)).collect::<Result<_>>()?,
        env: env.iter().map(|e| cstring(e)).collect::<Result<_>>()?,
        path,
    };
    for r in &p.rlimits {
        set_rlimit(r)?;
    }
    // runc's default: files the process creates are not group/world-writable.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let cwd = match p.cwd.as_str() {
        "" => "/",
        c => c,
    };
    // As root first (the user may not search every parent), as runc.
    chdir(cwd).map_err(Error::sys(format!("chdir to the working directory {cwd}")))?;
    let set = caps::resolve(privileged, &p.cap_add, &p.cap_drop)?;
    if let (Some(f), false) = (seccomp, p.no_new_privileges) {
        f.install()?;
    }
    caps::limit_bounding(&set)?;
    nix::sys::prctl::set_keepcaps(true).map_err(Error::sys("PR_SET_KEEPCAPS"))?;
    let u = &p.user;
    // Say why a rootless single-id namespace cannot take the image's user, rather than
    // setuid's bare EINVAL.
    if !idmap::uid_mapped(u.uid) {
        return Err(Error::Unmapped {
            kind: "uid",
            id: u.uid,
        });
    }
    if let Some(g) = std::iter::once(&u.gid)
        .chain(&u.additional_gids)
        .find(|g| !idmap::gid_mapped(**g))
    {
        return Err(Error::Unmapped {
            kind: "gid",
            id: *g,
        });
    }
    let mut groups: Vec<Gid> = vec![Gid::from_raw(u.gid)];
    groups.extend(u.additional_gids.iter().map(|g| Gid::from_raw(*g)));
    groups.dedup();
    match setgroups(&groups) {
        // A user namespace with setgroups denied (single-id rootless map): keep none.
        Err(Errno::EPERM) if idmap::in_user_namespace() && u.additional_gids.is_empty() => {}
        r => r.map_err(Error::sys(format!("setgroups {:?}", groups)))?,
    }
    setgid(Gid::from_raw(u.gid)).map_err(Error::sys(format!("setgid {}", u.gid)))?;
    setuid(Uid::from_raw(u.uid)).map_err(Error::sys(format!("setuid {}", u.uid)))?;
    caps::apply(&set)?;
    nix::sys::prctl::set_keepcaps(false).map_err(Error::sys("PR_SET_KEEPCAPS"))?;
    if p.no_new_privileges {
        nix::sys::prctl::set_no_new_privs().map_err(Error::sys("PR_SET_NO_NEW_PRIVS"))?;
        if let Some(f) = seccomp {
            f.install()?;
        }
    }
    Ok(exec)
}

fn not_executable(path: &str, reason: impl Into<String>) -> Error {
    Error::NotExecutable {
        path: path.to_string(),
        reason: reason.into(),
    }
}

/// The error `exec` would meet for a missing command, found without exec'ing: lets a
/// created container refuse at `create`, as runc does, rather than at `start`.
pub(crate) fn check_command(e: &Exec) -> Result<()> {
    let runnable =
        |p: &Path| nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok() && !p.is_dir();
    let found = if e.argv0.contains('/') {
        Path::new(&e.argv0).exists()
    } else {
        e.path.split(':').any(|dir| {
            let dir = if dir.is_empty() { "." } else { dir };
            Path::new(dir).join(&e.argv0).exists()
        })
    };
    if !found {
        return Err(Error::NotFound {
            path: e.argv0.clone(),
        });
    }
    if e.argv0.contains('/') && !runnable(Path::new(&e.argv0)) {
        return Err(not_executable(&e.argv0, "permission denied"));
    }
    Ok(())
}

/// execve with the PATH lookup of execvp, done in the container; returns only the error.
pub(crate) fn exec(e: &Exec) -> Error {
    if let Err(err) = sys::reset_signals() {
        return Error::sys("resetting signal dispositions")(err);
    }
    let try_one = |path: &Path| -> Errno {
        let c = match CString::new(path.as_os_str().as_bytes()) {
            Ok(c) => c,
            Err(_) => return Errno::ENOENT,
        };
        match nix::unistd::execve(&c, &e.argv, &e.env) {
            Err(errno) => errno,
            Ok(never) => match never {},
        }
    };
    let explain = |path: &Path, errno: Errno| -> Error {
        match errno {
            Errno::ENOENT | Errno::ENOTDIR => Error::NotFound {
                path: e.argv0.clone(),
            },
            Errno::EACCES if path.is_dir() => not_executable(&e.argv0, "is a directory"),
            Errno::EACCES | Errno::EPERM => not_executable(&e.argv0, "permission denied"),
            Errno::ENOEXEC => not_executable(&e.argv0, "exec format error"),
            other => Error::Sys {
                what: format!("exec {}", path.display()),
                source: other,
            },
        }
    };
    if e.argv0.contains('/') {
        let p = Path::new(&e.argv0);
        return explain(p, try_one(p));
    }
    let mut denied = None;
    for dir in e.path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(&e.argv0);
        match try_one(&candidate) {
            Errno::ENOENT | Errno::ENOTDIR | Errno::ESTALE => continue,
            Errno::EACCES => {
                denied.get_or_insert(candidate);
            }
            errno => return explain(&candidate, errno),
        }
    }
    match denied {
        Some(p) => explain(&p, Errno::EACCES),
        None => Error::NotFound {
            path: e.argv0.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rlimit_names() {
        for n in ["nofile", "NOFILE", "RLIMIT_NOFILE", "rlimit_nofile"] {
            assert_eq!(rlimit_resource(n).unwrap(), Resource::RLIMIT_NOFILE);
        }
        assert!(matches!(rlimit_resource("bogus"), Err(Error::UnknownRlimit(k)) if k == "bogus"));
    }
}
