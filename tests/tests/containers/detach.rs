//! A foreground `run -it` detaches with ctrl-p ctrl-q (or `--detach-keys`) as `attach`
//! does: the container runs on and `attach` reaches it afterwards; without detaching, its
//! status is run's and `--rm` has removed it when run returns. Driven through script(1),
//! which gives strata a terminal; as root and as `strata-test`.

use strata_tests::users::{have_root, is_child, run_test_as_user, Rootless};

use super::{terminal_session as session, Env};

fn run_it_detaches(env: &Env) {
    // ctrl-p ctrl-q: run returns 0, the shell runs on, in a pty of the terminal's size.
    let (code, text) = session(
        env,
        "run -it --name det demo sh",
        b"stty size; echo marker-$((6*7))\n",
        &[("marker-42", b"\x10\x11")],
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("33 101\r\n"), "{text}");
    assert!(text.contains("read escape sequence"), "{text}");
    assert_eq!(env.inspect("det", "{{.State.Status}}"), "running");
    assert_eq!(
        env.run(&["exec", "det", "echo", "still-there"]).ok(),
        "still-there\n"
    );
    // attach reaches the same shell; exiting it ends the container with its status.
    let (code, text) = session(
        env,
        "attach det",
        b"echo again-$((1+1))\n",
        &[("again-2\r\n", b"exit 5\n")],
    );
    assert_eq!(code, Some(5), "{text}");
    env.wait_state("det", "exited");
    assert_eq!(env.inspect("det", "{{.State.ExitCode}}"), "5");
    env.run(&["rm", "det"]).ok();

    // --detach-keys: ctrl-p is input like any other key now; ctrl-a x detaches.
    let (code, text) = session(
        env,
        "run -it --rm --name keys --detach-keys ctrl-a,x demo sh -c \
         'echo ready; read line; echo \"got:$line\" | cat -v; sleep 1000'",
        b"",
        &[("ready", b"\x10z\n"), ("got:^Pz", b"\x01x")],
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("read escape sequence"), "{text}");
    assert_eq!(env.inspect("keys", "{{.State.Status}}"), "running");
    env.run(&["rm", "-f", "keys"]).ok();

    // Not detached: the shell's status is run's, and --rm has removed it on return.
    let (code, text) = session(
        env,
        "run -it --rm demo sh",
        b"echo typed-$((6*7))\n",
        &[("typed-42\r\n", b"exit 3\n")],
    );
    assert_eq!(code, Some(3), "{text}");
    assert!(
        env.container_dirs().is_empty(),
        "{:?}",
        env.container_dirs()
    );
    // A command that cannot start: docker's 127 and its message, the --rm one gone.
    let (code, text) = session(env, "run -it --rm demo nosuchcmd", b"", &[]);
    assert_eq!(code, Some(127), "{text}");
    assert!(text.contains("nosuchcmd"), "{text}");
    assert!(env.container_dirs().is_empty());

    // start -ai of a created -it container detaches the same way.
    env.run(&["create", "-it", "--name", "st", "demo", "sh"])
        .ok();
    let (code, text) = session(
        env,
        "start -ai st",
        b"echo s-$((2+3))\n",
        &[("s-5\r\n", b"\x10\x11")],
    );
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(env.inspect("st", "{{.State.Status}}"), "running");
    env.run(&["rm", "-f", "st"]).ok();

    // Bad keys: docker's message, 125, nothing made.
    let err = env
        .run(&["run", "-it", "--detach-keys", "ctrl-1", "demo", "sh"])
        .fails(125);
    assert!(
        err.contains("Invalid detach keys (ctrl-1) provided"),
        "{err}"
    );
    let err = env
        .run(&["attach", "--detach-keys", "nope", "whatever"])
        .fails(1);
    assert!(err.contains("Invalid detach keys (nope) provided"), "{err}");
    assert!(env.container_dirs().is_empty());
}

#[test]
fn run_it_detaches_with_ctrl_p_ctrl_q_and_attach_works_afterwards() {
    if !have_root("run_it_detaches_with_ctrl_p_ctrl_q_and_attach_works_afterwards") {
        return;
    }
    run_it_detaches(&Env::new());
}

#[test]
fn rootless_run_it_detaches() {
    if !have_root("rootless_run_it_detaches") {
        return;
    }
    run_test_as_user(
        "containers::detach::rootless_run_it_detaches_child",
        Rootless::Host,
    )
    .unwrap();
}

#[test]
#[ignore = "run by rootless_run_it_detaches"]
fn rootless_run_it_detaches_child() {
    assert!(is_child());
    run_it_detaches(&Env::new());
}
