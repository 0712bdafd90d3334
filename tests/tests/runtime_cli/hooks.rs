//! OCI hooks through `strata-runtime`: createRuntime, createContainer, startContainer,
//! poststart and poststop each run at their point with the state JSON on stdin; a failing
//! or timed-out hook fails `create` and leaves no container.

use std::path::Path;
use std::time::Duration;

use strata_tests::mounts::wait_for;
use strata_tests::users::have_root;

use super::bundle::Bundle;

/// A hook that saves its stdin to `to` (a host path, or for startContainer a path in the
/// container: both have /bin/sh) and appends its file name to `order` beside it.
fn save_stdin(to: &Path) -> serde_json::Value {
    let order = to.with_file_name("order");
    let name = to.file_stem().unwrap().to_string_lossy();
    serde_json::json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", format!("cat > {}; echo {name} >> {}", to.display(), order.display())],
        "env": ["PATH=/bin:/usr/bin"],
    })
}

fn state_in(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}: {text}", path.display()))
}

#[test]
fn bundle_hooks_get_state_on_stdin() {
    if !have_root("bundle_hooks_get_state_on_stdin") {
        return;
    }
    let b = Bundle::new(&["sh", "-c", "touch /done; exec sleep 1000"]);
    let out = b.tmp.path().join("hooks");
    std::fs::create_dir(&out).unwrap();
    let at = |name: &str| out.join(format!("{name}.json"));
    let (cr, cc, pst, pstop) = (
        at("createRuntime"),
        at("createContainer"),
        at("poststart"),
        at("poststop"),
    );
    b.config(|c| {
        c["hooks"] = serde_json::json!({
            "createRuntime": [save_stdin(&cr)],
            "createContainer": [save_stdin(&cc)],
            "startContainer": [save_stdin(Path::new("/startContainer.json"))],
            "poststart": [save_stdin(&pst)],
            "poststop": [save_stdin(&pstop)],
        });
    });
    b.create("h1", &[]);
    let pid = b.state("h1")["pid"].clone();
    for path in [&cr, &cc] {
        let s = state_in(path);
        assert_eq!(s["id"], "h1", "{s}");
        assert_eq!(s["pid"], pid, "{s}");
        assert_eq!(s["bundle"], b.dir().to_str().unwrap(), "{s}");
    }
    assert_eq!(state_in(&cr)["status"], "creating");
    // createRuntime before createContainer, both at create.
    let order = || std::fs::read_to_string(out.join("order")).unwrap();
    assert_eq!(order(), "createRuntime\ncreateContainer\n");
    assert!(
        !b.rootfs("startContainer.json").exists() && !pst.exists(),
        "start hooks ran at create"
    );
    b.ok(&["start", "h1"]);
    wait_for(Duration::from_secs(30), "/done", || {
        b.rootfs("done").exists()
    })
    .unwrap();
    // startContainer ran in the container, before the process.
    assert_eq!(state_in(&b.rootfs("startContainer.json"))["id"], "h1");
    let s = state_in(&pst);
    assert_eq!(
        (&s["status"], &s["pid"]),
        (&serde_json::json!("running"), &pid),
        "{s}"
    );
    assert!(!pstop.exists());
    b.ok(&["delete", "--force", "h1"]);
    assert_eq!(
        order(),
        "createRuntime\ncreateContainer\npoststart\npoststop\n"
    );
    let s = state_in(&pstop);
    assert_eq!(
        (&s["id"], &s["status"]),
        (&serde_json::json!("h1"), &serde_json::json!("stopped")),
        "{s}"
    );

    // A failing createRuntime hook, and a createContainer hook over its timeout, fail create.
    b.config(|c| {
        c["hooks"] = serde_json::json!({"createRuntime": [{"path": "/bin/false"}]});
    });
    let dir = b.dir();
    b.fails(
        &["create", "--bundle", dir.to_str().unwrap(), "h2"],
        "createRuntime hook /bin/false",
    );
    b.fails(&["state", "h2"], "does not exist");
    b.config(|c| {
        c["hooks"] = serde_json::json!({"createContainer": [
            {"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}
        ]});
    });
    b.fails(
        &["create", "--bundle", dir.to_str().unwrap(), "h3"],
        "timed out",
    );
    b.fails(&["state", "h3"], "does not exist");
}
