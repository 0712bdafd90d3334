//! runc's lifecycle rules are the contract: one table of steps (start twice, kill of a
//! stopped container, delete of a running or paused one without `--force`, pause of a
//! paused one, exec in a stopped one, unknown ids …) runs against runc 1.1.5 and
//! strata-runtime, each on its own copy of the bundle; every step must end with the same
//! exit status, and strata-runtime's error must carry runc's message.

use std::time::Duration;

use strata_tests::mounts::wait_for;
use strata_tests::users::have_root;

use super::bundle::Bundle;

enum Step {
    Run(&'static [&'static str]),
    /// Polls `state` until the container reads as stopped.
    WaitStopped(&'static str),
}

use Step::{Run, WaitStopped};

const STEPS: &[Step] = &[
    Run(&["create", "c1"]),
    Run(&["create", "c1"]),
    Run(&["pause", "c1"]),
    Run(&["start", "c1"]),
    Run(&["resume", "c1"]),
    Run(&["resume", "c1"]),
    Run(&["exec", "c1", "true"]),
    Run(&["start", "c1"]),
    Run(&["start", "c1"]),
    Run(&["pause", "c1"]),
    Run(&["pause", "c1"]),
    Run(&["exec", "c1", "true"]),
    Run(&["delete", "c1"]),
    Run(&["resume", "c1"]),
    Run(&["delete", "c1"]),
    Run(&["update", "--resources", "RES", "c1"]),
    Run(&["kill", "c1", "BOGUS"]),
    Run(&["kill", "c1", "KILL"]),
    WaitStopped("c1"),
    Run(&["kill", "c1", "KILL"]),
    Run(&["kill", "--all", "c1", "KILL"]),
    Run(&["start", "c1"]),
    Run(&["pause", "c1"]),
    Run(&["resume", "c1"]),
    Run(&["exec", "c1", "true"]),
    Run(&["update", "--resources", "RES", "c1"]),
    Run(&["ps", "c1"]),
    Run(&["delete", "c1"]),
    Run(&["state", "c1"]),
    Run(&["kill", "c1"]),
    Run(&["start", "c1"]),
    Run(&["delete", "c1"]),
    Run(&["delete", "--force", "c1"]),
    Run(&["create", "c2"]),
    Run(&["kill", "c2", "KILL"]),
    WaitStopped("c2"),
    Run(&["delete", "c2"]),
];

/// runc's error message: the `msg` of its log line, without the verb's prefix.
fn runc_message(stderr: &str) -> String {
    // msg is the last field of the line: up to its last quote.
    let msg = stderr
        .lines()
        .find_map(|l| l.split_once("msg=\"").map(|(_, m)| m))
        .map(|m| &m[..m.rfind('"').unwrap_or(m.len())])
        .unwrap_or("")
        .replace("\\\"", "\"");
    let msg = msg.strip_prefix("runc create failed: ").unwrap_or(&msg);
    msg.strip_prefix("exec failed: ").unwrap_or(msg).to_string()
}

/// Runs the steps; (exit status, stderr) of each `Run`.
fn play(b: &Bundle) -> Vec<(i32, String)> {
    let dir = b.dir();
    let res = b.tmp.path().join("res.json");
    std::fs::write(&res, r#"{"pids":{"limit":100}}"#).unwrap();
    let mut out = Vec::new();
    for step in STEPS {
        match step {
            Run(args) => {
                let mut v: Vec<&str> = Vec::new();
                for a in args.iter() {
                    v.push(if *a == "RES" {
                        res.to_str().unwrap()
                    } else {
                        a
                    });
                }
                if v[0] == "create" {
                    v.splice(1..1, ["--bundle", dir.to_str().unwrap()]);
                }
                let o = b.rt(&v);
                out.push((o.code, o.stderr));
            }
            WaitStopped(id) => {
                let r = wait_for(Duration::from_secs(30), "stopped", || {
                    b.state(id)["status"] == "stopped"
                });
                assert!(r.is_ok(), "{id} did not stop");
            }
        }
    }
    out
}

#[test]
fn lifecycle_rules_match_runc() {
    if !have_root("lifecycle_rules_match_runc") {
        return;
    }
    let args = &["sleep", "1000"];
    let runc = play(&Bundle::new(args).using("runc"));
    let ours = play(&Bundle::new(args));
    let runs = STEPS.iter().filter_map(|s| match s {
        Run(args) => Some(args.join(" ")),
        WaitStopped(_) => None,
    });
    let mut refused = 0;
    for (step, ((rc, re), (sc, se))) in runs.zip(runc.iter().zip(&ours)) {
        assert_eq!(
            rc, sc,
            "{step}: runc {rc} ({re}), strata-runtime {sc} ({se})"
        );
        if *rc != 0 {
            refused += 1;
            let msg = runc_message(re);
            assert!(!msg.is_empty(), "{step}: no message from runc: {re}");
            assert!(
                se.contains(&msg),
                "{step}: runc says {msg:?}, strata-runtime {se:?}"
            );
        }
    }
    // The table exercises refusals, not only successes.
    assert!(refused >= 15, "only {refused} steps were refused");
}
