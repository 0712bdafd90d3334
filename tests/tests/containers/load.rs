//! The engine under load: many containers at once through the binary, as users run them in
//! scripts and CI. Every command must succeed, generated names must never collide, and
//! nothing may be left behind (mounts, processes, cgroups, state directories).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use strata_tests::users::have_root;

use super::{cgroup_dir, mounts_under, processes_with, Env};

/// `run --rm` of this many containers…
const RUNS: usize = 200;
/// …with this many at a time.
const PARALLEL: usize = 16;
/// Detached containers stopped and removed by one command each.
const DETACHED: usize = 50;

/// Runs `job(i)` for i in 0..n on `parallel` threads; returns the failures' descriptions.
fn run_parallel(
    n: usize,
    parallel: usize,
    job: impl Fn(usize) -> Option<String> + Sync,
) -> Vec<String> {
    let next = AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                if let Some(f) = job(i) {
                    failures.lock().unwrap().push(f);
                }
            });
        }
    });
    failures.into_inner().unwrap()
}

/// Asserts that nothing of the store's containers is left on the host.
fn assert_nothing_left(env: &Env, ids: &[String]) {
    assert!(
        env.container_dirs().is_empty(),
        "state dirs left: {:?}",
        env.container_dirs()
    );
    let root = env.strata.root();
    assert!(mounts_under(root).is_empty(), "{:?}", mounts_under(root));
    let procs = processes_with(&root.to_string_lossy());
    assert!(procs.is_empty(), "processes left: {procs:?}");
    for id in ids {
        let cg = cgroup_dir("pids", id);
        assert!(!cg.exists(), "cgroup left: {}", cg.display());
    }
}

#[test]
fn two_hundred_parallel_run_rm_all_succeed_and_leave_nothing() {
    if !have_root("two_hundred_parallel_run_rm_all_succeed_and_leave_nothing") {
        return;
    }
    let env = Env::new();
    let started = Instant::now();
    // No warm-up: the first runs race to make the demo image, as a fresh machine's would.
    let failures = run_parallel(RUNS, PARALLEL, |i| {
        let r = env.run(&[
            "run",
            "--rm",
            "--network",
            "none",
            "demo",
            "echo",
            &format!("n{i}"),
        ]);
        (r.code != 0 || r.stdout != format!("n{i}\n"))
            .then(|| format!("run {i}: exit {}: {}{}", r.code, r.stdout, r.stderr))
    });
    eprintln!(
        "{RUNS} run --rm, {PARALLEL} at a time: {:?}",
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
    assert_nothing_left(&env, &[]);
}

#[test]
fn fifty_detached_containers_stop_and_rm_in_one_command_each() {
    if !have_root("fifty_detached_containers_stop_and_rm_in_one_command_each") {
        return;
    }
    let env = Env::new();
    env.run(&["run", "--rm", "demo", "true"]).ok();
    let ids = std::sync::Mutex::new(Vec::new());
    // pid 1 is `sleep`: as a namespace's init it ignores SIGTERM, so stop must escalate.
    let failures = run_parallel(DETACHED, PARALLEL, |i| {
        let r = env.run(&["run", "-d", "--network", "none", "demo", "sleep", "1000"]);
        if r.code != 0 {
            return Some(format!("run -d {i}: exit {}: {}", r.code, r.stderr));
        }
        ids.lock().unwrap().push(r.stdout.trim().to_string());
        None
    });
    assert!(failures.is_empty(), "{failures:#?}");
    let ids = ids.into_inner().unwrap();
    let names = env.run(&["ps", "--format", "{{.Names}}"]).ok();
    let mut names: Vec<&str> = names.lines().collect();
    assert_eq!(names.len(), DETACHED, "{names:?}");
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), DETACHED, "generated names collided");

    let mut stop = vec!["stop", "-t", "1"];
    stop.extend(ids.iter().map(String::as_str));
    let started = Instant::now();
    let out = env.run(&stop).ok();
    eprintln!(
        "stop -t 1 of {DETACHED} containers ignoring SIGTERM: {:?}",
        started.elapsed()
    );
    // docker prints the names as given, in their order.
    assert_eq!(out.lines().collect::<Vec<_>>(), ids, "stop's output");
    let running = env.run(&["ps", "-q"]).ok();
    assert!(running.trim().is_empty(), "still running: {running}");
    for id in &ids {
        assert_eq!(env.inspect(id, "{{.State.ExitCode}}"), "137", "{id}");
    }

    let mut rm = vec!["rm"];
    rm.extend(ids.iter().map(String::as_str));
    let out = env.run(&rm).ok();
    assert_eq!(out.lines().count(), DETACHED);
    assert_nothing_left(&env, &ids);
}

#[test]
fn rm_f_of_running_and_missing_containers_reports_each_in_order() {
    if !have_root("rm_f_of_running_and_missing_containers_reports_each_in_order") {
        return;
    }
    let env = Env::new();
    let a = env.detach(&["--name", "load-a", "demo", "sleep", "1000"]);
    let b = env.detach(&["--name", "load-b", "demo", "sleep", "1000"]);
    let r = env.run(&["rm", "-f", "load-a", "nosuch", "load-b"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.lines(), ["load-a", "load-b"]);
    assert!(
        r.stderr.contains("No such container: nosuch"),
        "{}",
        r.stderr
    );
    assert_nothing_left(&env, &[a, b]);
}
