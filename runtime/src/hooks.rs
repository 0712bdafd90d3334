//! OCI hooks: programs run at lifecycle points with the container's state JSON on stdin.
//!
//! ```text
//! createRuntime                        the strata-runtime binary, in its own namespaces,
//!                                      while pid 1 waits before pivot_root
//!                                      ([`crate::Container::start_with`])
//! poststart, poststop                  the strata-runtime binary
//! createContainer                      pid 1, in the container's namespaces, after the
//!                                      mounts and before pivot_root
//! startContainer                       pid 1, at `start`, in the container's root, before
//!                                      the process's exec
//! ```
//! A hook that exits non-zero or outlives its `timeout` fails the step (createRuntime,
//! createContainer, startContainer); poststart and poststop failures are the caller's to
//! log.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::spec::{ContainerSpec, Hook};
use crate::{Error, Result};

/// Runs `hook` with `state` on its stdin and waits for it (at most its timeout).
pub fn run(hook: &Hook, state: &str, stage: &str) -> Result<()> {
    let fail = |reason: String| Error::Hook {
        stage: stage.to_string(),
        path: hook.path.clone(),
        reason,
    };
    let mut cmd = Command::new(&hook.path);
    if let Some((argv0, rest)) = hook.args.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear();
    for kv in &hook.env {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    // Its output goes where the runtime's stderr goes; stdout is the caller's data channel.
    cmd.stdin(Stdio::piped()).stdout(Stdio::null());
    let mut child = cmd.spawn().map_err(|e| fail(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its state is not an error (EPIPE).
        let _ = stdin.write_all(state.as_bytes());
    }
    let deadline = hook
        .timeout
        .map(|t| Instant::now() + Duration::from_secs(t));
    loop {
        match child.try_wait().map_err(|e| fail(e.to_string()))? {
            Some(status) if status.success() => return Ok(()),
            Some(status) => return Err(fail(status.to_string())),
            None => {}
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!(
                "timed out after {}s",
                hook.timeout.unwrap_or(0)
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `hooks` in order; the first failure stops.
pub fn run_all(hooks: &[Hook], state: &str, stage: &str) -> Result<()> {
    hooks.iter().try_for_each(|h| run(h, state, stage))
}

/// The state pid 1 gives its hooks: [`ContainerSpec::hook_state`] with its host pid, read
/// through the host's /proc (still mounted at /proc before pivot_root).
pub(crate) fn state_of_pid1(spec: &ContainerSpec) -> String {
    let mut state = spec.hook_state.clone().unwrap_or_default();
    let pid = std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str()?.parse::<i32>().ok())
        .unwrap_or(0);
    if state.is_object() {
        state["pid"] = serde_json::json!(pid);
    }
    state.to_string()
}
