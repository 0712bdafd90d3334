//! A container's life after `create`: stop (its stop signal, a grace period, then SIGKILL
//! to the whole cgroup), kill, and remove (a running one only when forced; the monitor
//! cleans up, else this does). Each acts on one container; callers run several at once.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use strata_image::store::Store;
use strata_runtime::cgroups::Cgroup;

use crate::containers::{Containers, Record, State, Status};
use crate::monitor;
use crate::{Error, Result};

/// Waits until `id`'s monitor has recorded the end (or is gone), at most `timeout`.
pub fn wait_stopped(c: &Containers, id: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match c.state(id) {
            Ok(st) if st.status.is_active() => {}
            _ => return true,
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `sig` to the container's pid 1.
pub fn signal_pid1(st: &State, sig: Signal) -> Result<()> {
    if st.pid <= 0 {
        return Err(Error::NoProcess);
    }
    Ok(strata_runtime::process::signal(st.pid, sig)?)
}

/// The signal `stop` sends first: `-s`, else the image's StopSignal, else SIGTERM.
pub fn stop(
    c: &Containers,
    rec: &Record,
    timeout: Option<i64>,
    signal: Option<&str>,
) -> Result<()> {
    let st = c.state(&rec.id)?;
    if !st.status.is_active() {
        return Ok(());
    }
    let sig = match signal.or((!rec.stop_signal.is_empty()).then_some(rec.stop_signal.as_str())) {
        Some(s) => strata_runtime::process::parse_signal(s)?,
        None => Signal::SIGTERM,
    };
    let timeout = timeout.or(rec.stop_timeout).unwrap_or(10);
    if st.status == Status::Paused {
        let _ = Cgroup::of(&rec.id).thaw();
    }
    let _ = signal_pid1(&st, sig);
    let grace = Duration::from_secs(timeout.max(0) as u64);
    if timeout >= 0 && wait_stopped(c, &rec.id, grace) {
        return Ok(());
    }
    let _ = signal_pid1(&st, Signal::SIGKILL);
    Cgroup::of(&rec.id).kill_all(Signal::SIGKILL);
    if !wait_stopped(c, &rec.id, Duration::from_secs(10)) {
        return Err(Error::StopTimeout(rec.name.clone()));
    }
    Ok(())
}

/// Sends `sig` to a running container's pid 1 (a paused one is thawed for SIGKILL). `name`
/// is how the caller named it (docker's message repeats it).
pub fn kill(c: &Containers, rec: &Record, name: &str, sig: Signal) -> Result<()> {
    let st = c.state(&rec.id)?;
    if !st.status.is_active() {
        return Err(Error::KillStopped {
            name: name.to_string(),
            id: rec.id.clone(),
        });
    }
    if st.status == Status::Paused && sig == Signal::SIGKILL {
        let _ = Cgroup::of(&rec.id).thaw();
    }
    signal_pid1(&st, sig)
}

/// Removes one container; a running one only with `force` (SIGKILL, then everything the
/// monitor would have cleaned up).
pub fn remove(
    store: &Store,
    c: &Containers,
    rec: &Record,
    force: bool,
    volumes: bool,
) -> Result<()> {
    let st = c.state(&rec.id)?;
    if st.status.is_active() {
        if !force {
            let what = if st.status == Status::Paused {
                "paused"
            } else {
                "running"
            };
            return Err(Error::RemoveActive {
                name: rec.name.clone(),
                state: what,
            });
        }
        let cg = Cgroup::of(&rec.id);
        if st.status == Status::Paused {
            let _ = cg.thaw();
        }
        let _ = signal_pid1(&st, Signal::SIGKILL);
        cg.kill_all(Signal::SIGKILL);
        wait_stopped(c, &rec.id, Duration::from_secs(10));
    }
    // The monitor unmounts and cleans up once its pid 1 is gone; give it the time, then
    // take over.
    let st = c.raw_state(&rec.id).unwrap_or_default();
    if !st.wait_monitor_gone(Duration::from_secs(10)) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(st.monitor_pid), Signal::SIGKILL);
        st.wait_monitor_gone(Duration::from_secs(5));
    }
    monitor::kill_leftovers(rec, &st);
    monitor::remove_container(store, rec, volumes)
}
