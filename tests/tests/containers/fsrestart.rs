//! The server of a running container's root file system killed with SIGKILL, again and
//! again, while the container writes and reads: strata starts another on the same FUSE
//! connection and the container never notices (its open file, its working directory, the
//! files it creates), and no completed write is lost.

use std::time::Duration;

use strata_tests::mounts::wait_for;
use strata_tests::users::{have_root, is_child, run_test_as_user, Rootless};

use super::{processes_with, Env};

/// The container's loop: appends numbered lines to a file it keeps open (fd 3) from its
/// working directory, writes and reads back a file per round, publishes its round count;
/// once `stop` appears it checks the whole log and exits 0, or exits with the step that
/// failed.
const SCRIPT: &str = r#"mkdir -p /work && cd /work && exec 3>>log || exit 10
i=0
while [ ! -e stop ]; do
  i=$((i+1))
  echo "line $i" >&3 || exit 11
  f=f$((i % 50))
  printf 'payload %s %s\n' $i $((i * 7919)) > $f || exit 12
  [ "$(cat $f)" = "payload $i $((i * 7919))" ] || exit 13
  echo $i > progress.tmp && mv progress.tmp progress || exit 14
done
n=0
while read -r l; do n=$((n+1)); [ "$l" = "line $n" ] || exit 15; done < log
[ $n = $i ] || exit 16
exit 0"#;

const KILLS: usize = 20;

#[test]
fn the_root_file_systems_server_killed_twenty_times_loses_nothing() {
    if !have_root("the_root_file_systems_server_killed_twenty_times_loses_nothing") {
        return;
    }
    kill_the_server_under_a_write_loop(&Env::new());
}

#[test]
fn rootless_server_killed_twenty_times_loses_nothing() {
    if !have_root("rootless_server_killed_twenty_times_loses_nothing") {
        return;
    }
    run_test_as_user(
        "containers::fsrestart::rootless_server_killed_twenty_times_loses_nothing_child",
        Rootless::Host,
    )
    .unwrap();
}

#[test]
#[ignore = "run by rootless_server_killed_twenty_times_loses_nothing"]
fn rootless_server_killed_twenty_times_loses_nothing_child() {
    assert!(is_child());
    kill_the_server_under_a_write_loop(&Env::new());
}

fn kill_the_server_under_a_write_loop(env: &Env) {
    let out = env
        .strata
        .command(&["run", "-d", "--name", "writer", "demo", "sh", "-c", SCRIPT])
        .env("STRATA_FS_SERVER", "strata")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let upper = env.containers_dir().join(&id).join("upper/work");
    let progress = || -> u64 {
        std::fs::read_to_string(upper.join("progress"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    let needle = format!("__fs-server {id}");
    let server = || processes_with(&needle);
    for round in 0..KILLS {
        let before = progress();
        // The loop moves on through the current server.
        wait_for(Duration::from_secs(30), "the container's loop", || {
            progress() > before
        })
        .unwrap_or_else(|_| {
            panic!(
                "round {round}: the loop stopped at {before} (container {}, exit code {}, servers {:?})",
                env.inspect("writer", "{{.State.Status}}"),
                env.inspect("writer", "{{.State.ExitCode}}"),
                server()
            )
        });
        let pids = server();
        assert_eq!(pids.len(), 1, "round {round}: servers {pids:?}");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pids[0]),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        wait_for(Duration::from_secs(30), "a new server", || {
            let now = server();
            now.len() == 1 && now[0] != pids[0]
        })
        .unwrap_or_else(|_| panic!("round {round}: no server after {:?}", pids[0]));
    }
    let last = progress();
    wait_for(
        Duration::from_secs(30),
        "the loop after the last kill",
        || progress() > last,
    )
    .unwrap();
    // Through the mount: the kernel caches that `stop` is not there.
    env.run(&["exec", "writer", "touch", "/work/stop"]).ok();
    env.wait_state("writer", "exited");
    assert_eq!(env.inspect("writer", "{{.State.ExitCode}}"), "0");
    // Every line, read from the upper directory on the host.
    let log = std::fs::read_to_string(upper.join("log")).unwrap();
    let rounds = progress();
    assert!(rounds > last, "{rounds} rounds");
    let want: String = (1..=rounds).map(|i| format!("line {i}\n")).collect();
    assert!(log == want, "the log differs after {rounds} rounds");
    env.run(&["rm", "writer"]).ok();
}
