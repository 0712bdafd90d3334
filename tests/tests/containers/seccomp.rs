//! Seccomp: docker's default profile refuses namespace, keyring and mount calls with EPERM;
//! `seccomp=unconfined` and `--privileged` lift it; a docker JSON profile file applies
//! (here one denying `mkdir`); a bad file is refused with 125 before anything is made.
//! A tiny static C program (built with the host's cc) makes the raw calls busybox lacks
//! (`add_key`, `keyctl`) and prints each call's errno name.

use std::path::Path;

use strata_tests::users::{have_root, is_child, run_test_as_user, Rootless};

use super::Env;

const PROBE: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>
/* Ask for mount before unshare: after unshare(CLONE_NEWUSER) the process is in a user
   namespace that does not own its mount namespace. */
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *n = argv[i];
        long r = -1;
        errno = 0;
        if (!strcmp(n, "unshare")) r = unshare(CLONE_NEWUSER);
        else if (!strcmp(n, "add_key"))
            r = syscall(SYS_add_key, "user", "strata", "x", 1, -2 /* process keyring */);
        else if (!strcmp(n, "keyctl"))
            r = syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -1 /* thread keyring */, 1);
        else if (!strcmp(n, "mount")) r = mount("none", "/tmp", "tmpfs", 0, "");
        printf("%s=%s\n", n, r < 0 ? strerrorname_np(errno) : "ok");
    }
    return 0;
}
"#;

/// Builds the probe into `dir` (a static binary: the demo image has no libc).
fn build_probe(dir: &Path) {
    std::fs::write(dir.join("probe.c"), PROBE).unwrap();
    let st = std::process::Command::new("cc")
        .args(["-static", "-O", "-o"])
        .arg(dir.join("probe"))
        .arg(dir.join("probe.c"))
        .status()
        .expect("cc (the tests build a static probe with the host's C compiler)");
    assert!(st.success());
}

/// The seccomp checks, shared by root and the `strata-test` user.
fn seccomp_checks(env: &Env) {
    let bin = env.tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    build_probe(&bin);
    let vol = format!("{}:/p:ro", bin.display());
    let probe = |extra: &[&str]| {
        let mut a = vec!["run", "--rm", "-v", &vol];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["demo", "/p/probe", "mount", "add_key", "keyctl", "unshare"]);
        env.run(&a).ok()
    };
    assert_eq!(
        probe(&[]),
        "mount=EPERM\nadd_key=EPERM\nkeyctl=EPERM\nunshare=EPERM\n"
    );
    // Unconfined, with the capability mount needs: every call goes through.
    let free = [
        "--security-opt",
        "seccomp=unconfined",
        "--cap-add",
        "SYS_ADMIN",
    ];
    assert_eq!(
        probe(&free),
        "mount=ok\nadd_key=ok\nkeyctl=ok\nunshare=ok\n"
    );
    // Unconfined alone: only the capability check is left for mount.
    let out = probe(&["--security-opt", "seccomp=unconfined"]);
    assert_eq!(out, "mount=EPERM\nadd_key=ok\nkeyctl=ok\nunshare=ok\n");
    let field = |extra: &[&str]| {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["demo", "grep", "^Seccomp:", "/proc/self/status"]);
        env.run(&a).ok()
    };
    assert_eq!(field(&[]), "Seccomp:\t2\n");
    assert_eq!(field(&["--privileged"]), "Seccomp:\t0\n");

    // A docker JSON profile denying mkdir (both calls libc may use) with EPERM.
    let profile = env.tmp.path().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                          "errnoRet": 1, "args": []}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    let id = env.detach(&["--security-opt", &opt, "demo", "sleep", "1000"]);
    let err = env.run(&["exec", &id, "mkdir", "/d"]).fails(1);
    assert!(err.contains("Operation not permitted"), "{err}");
    env.run(&["exec", &id, "touch", "/f"]).ok();
    // inspect shows the profile's content, as docker does.
    let sec = env.inspect(&id, "{{json .HostConfig.SecurityOpt}}");
    assert!(
        sec.contains("seccomp={") && sec.contains("mkdirat"),
        "{sec}"
    );
    env.run(&["rm", "-f", &id]).ok();
    let id = env.detach(&["--security-opt", "seccomp=unconfined", "demo", "true"]);
    let sec = env.inspect(&id, "{{json .HostConfig.SecurityOpt}}");
    assert_eq!(sec, r#"["seccomp=unconfined"]"#);
    env.run(&["rm", "-f", &id]).ok();

    // Bad profiles: 125, a message naming the file and the fault, nothing created.
    let bad = env.tmp.path().join("bad.json");
    std::fs::write(&bad, r#"{"defaultAction": "SCMP_ACT_MAYBE"}"#).unwrap();
    let opt = format!("seccomp={}", bad.display());
    let err = env
        .run(&["run", "--rm", "--security-opt", &opt, "demo", "true"])
        .fails(125);
    assert!(
        err.contains("bad.json") && err.contains("SCMP_ACT_MAYBE"),
        "{err}"
    );
    let err = env
        .run(&[
            "run",
            "--security-opt",
            "seccomp=/nonexistent.json",
            "demo",
            "true",
        ])
        .fails(125);
    assert!(err.contains("/nonexistent.json"), "{err}");
    assert!(env.container_dirs().is_empty());
}

#[test]
fn seccomp_default_unconfined_and_profile_files() {
    if !have_root("seccomp_default_unconfined_and_profile_files") {
        return;
    }
    seccomp_checks(&Env::new());
}

#[test]
fn rootless_seccomp() {
    if !have_root("rootless_seccomp") {
        return;
    }
    run_test_as_user(
        "containers::seccomp::rootless_seccomp_child",
        Rootless::Host,
    )
    .unwrap();
}

#[test]
#[ignore = "run by rootless_seccomp"]
fn rootless_seccomp_child() {
    assert!(is_child());
    seccomp_checks(&Env::new());
}
