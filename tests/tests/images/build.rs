//! `strata build` on the demo image (busybox-static) and FROM scratch, as root and as the
//! unprivileged `strata-test` user: the instructions, multi-stage builds, the layer cache,
//! `.dockerignore`, bad input; and the same Dockerfile built by buildah gives the same files.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use strata_tests::strata::{store_state, Run, Strata};
use strata_tests::tree::{diff, snapshot};
use strata_tests::users::{have_root, is_child, run_test_as_user, Rootless};
use tempfile::TempDir;

/// A store and a build context of the test's own.
struct Env {
    strata: Strata,
    tmp: TempDir,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::Builder::new()
            .prefix("strata-build")
            .tempdir()
            .unwrap();
        std::fs::create_dir(tmp.path().join("ctx")).unwrap();
        let strata = Strata::new(&tmp.path().join("root")).unwrap();
        Env { strata, tmp }
    }

    fn ctx(&self) -> PathBuf {
        self.tmp.path().join("ctx")
    }

    /// Writes `text` at `rel` in the context (parents made).
    fn file(&self, rel: &str, text: &str) {
        let p = self.ctx().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn run(&self, args: &[&str]) -> Run {
        self.strata.run(args)
    }

    /// `build ARGS… CONTEXT`.
    fn build(&self, args: &[&str]) -> Run {
        let ctx = self.ctx();
        let mut a = vec!["build"];
        a.extend_from_slice(args);
        a.push(ctx.to_str().unwrap());
        self.run(&a)
    }

    /// The image's config (`inspect`).
    fn inspect(&self, image: &str) -> serde_json::Value {
        let out = self.run(&["inspect", image]).ok();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0].clone()
    }

    fn container_dirs(&self) -> usize {
        std::fs::read_dir(self.strata.root().join("containers"))
            .map(|d| d.flatten().filter(|e| e.path().is_dir()).count())
            .unwrap_or(0)
    }
}

/// The `Step N/M : …` lines and what follows them, and the image ID `Successfully built`
/// names.
fn built_id(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("Successfully built "))
        .unwrap_or_else(|| panic!("no 'Successfully built' in:\n{out}"))
        .to_string()
}

fn as_user(name: &str) {
    if !have_root(name) {
        return;
    }
    run_test_as_user(&format!("images::build::{name}_child"), Rootless::Host).unwrap();
}

const ALL: &str = r#"# syntax=docker/dockerfile:1
# escape=\
ARG BASE=demo
from ${BASE} AS base
ARG WHO=world
ARG UNSET
ENV GREETING="hello ${WHO}" \
    # a comment inside a continuation
    EMPTY= \
    DEF=${UNSET:-fallback} ALT=${WHO:+set}
RUN echo "$GREETING $WHO" > /greet && mkdir -p /data && echo run-output
run ["/bin/sh", "-c", "echo exec-form > /exec"]
COPY a.txt /app/
COPY --chown=nobody:nogroup sub /app/sub
COPY *.md /docs/
ADD bundle.tar /opt/
ADD plain.txt /opt/plain.txt
WORKDIR /app
WORKDIR rel
USER nobody
EXPOSE 8080 53/udp
VOLUME /vol
LABEL org.example.who="${WHO}" other=x
STOPSIGNAL SIGUSR1
SHELL ["/bin/sh", "-c"]
HEALTHCHECK --interval=5s --retries=2 CMD true
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /greet"]
"#;

/// The context for [`ALL`]: files, an ignored one, a tar for ADD.
fn all_context(env: &Env) {
    env.file("Dockerfile", ALL);
    env.file("a.txt", "a\n");
    env.file("sub/b.txt", "b\n");
    env.file("sub/skip.log", "ignored\n");
    env.file("README.md", "readme\n");
    env.file("NOTES.md", "notes\n");
    env.file("secret.md", "secret\n");
    env.file("plain.txt", "plain\n");
    env.file(
        ".dockerignore",
        "# docker's rules\n**/*.log\n*.md\n!README.md\n!NOTES.md\n",
    );
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(6);
    h.set_mode(0o640);
    h.set_uid(7);
    h.set_gid(8);
    b.append_data(&mut h, "inner/file", &b"inside"[..]).unwrap();
    std::fs::write(env.ctx().join("bundle.tar"), b.into_inner().unwrap()).unwrap();
}

fn instructions_on_the_demo_image() {
    let env = Env::new();
    all_context(&env);
    let out = env.build(&["-t", "all:1", "--build-arg", "WHO=you"]).ok();
    let steps: Vec<&str> = out.lines().filter(|l| l.starts_with("Step ")).collect();
    assert_eq!(steps.len(), 23, "{out}");
    assert_eq!(steps[0], "Step 1/23 : ARG BASE=demo");
    assert_eq!(steps[1], "Step 2/23 : from ${BASE} AS base");
    assert!(out.contains(" ---> Running in "), "{out}");
    assert!(
        out.contains("run-output\n"),
        "the RUN's output is shown:\n{out}"
    );
    assert!(out.contains("Removing intermediate container "), "{out}");
    assert!(out.contains("Successfully tagged all:1\n"), "{out}");
    let id = built_id(&out);

    let files = env
        .run(&[
            "run",
            "--rm",
            "-u",
            "0",
            "--entrypoint",
            "",
            "all:1",
            "sh",
            "-c",
            "cat /greet /exec; pwd; ls -ln /app/sub | tail -n +2; ls /docs; \
             stat -c '%a %u:%g %n' /opt/inner/file; cat /opt/plain.txt; ls -d /data; \
             echo $GREETING $DEF $ALT [$EMPTY]",
        ])
        .ok();
    let expected = "hello you you\nexec-form\n/app/rel\n";
    assert!(files.starts_with(expected), "{files}");
    assert!(
        files.contains(" 65534    65534 "),
        "--chown owners:\n{files}"
    );
    assert!(
        files.contains("b.txt") && !files.contains("skip.log"),
        "{files}"
    );
    assert!(
        files.contains("NOTES.md\nREADME.md\n") && !files.contains("secret"),
        "{files}"
    );
    assert!(
        files.contains("640 7:8 /opt/inner/file\n"),
        "ADD extracts: {files}"
    );
    assert!(
        files.contains("plain\n/data\nhello you fallback set []\n"),
        "{files}"
    );
    // The default command: ENTRYPOINT + CMD, as nobody.
    assert_eq!(env.run(&["run", "--rm", "all:1"]).ok(), "hello you you\n");

    let img = env.inspect("all:1");
    assert!(img["Id"].as_str().unwrap().contains(&id), "{img}");
    let c = &img["Config"];
    assert_eq!(c["User"], "nobody");
    assert_eq!(c["WorkingDir"], "/app/rel");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(c["Cmd"], serde_json::json!(["cat /greet"]));
    assert_eq!(c["StopSignal"], "SIGUSR1");
    assert_eq!(c["Labels"]["org.example.who"], "you");
    assert!(c["ExposedPorts"].get("8080/tcp").is_some(), "{c}");
    assert!(c["ExposedPorts"].get("53/udp").is_some(), "{c}");
    assert!(c["Volumes"].get("/vol").is_some(), "{c}");
    assert_eq!(
        c["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "true"])
    );
    assert_eq!(c["Healthcheck"]["Interval"], 5_000_000_000i64);
    let env_list: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env_list.contains(&"GREETING=hello you"), "{env_list:?}");
    assert!(
        !env_list.iter().any(|e| e.starts_with("WHO=")),
        "ARG is not ENV"
    );
    // --label: one more LABEL step at the end (docker's classic builder), over the
    // Dockerfile's; every step before it from the cache.
    let out = env
        .build(&[
            "-t",
            "all:labels",
            "--build-arg",
            "WHO=you",
            "--label",
            "other=flag",
            "--label",
            "by.flag=yes",
        ])
        .ok();
    assert!(out.contains("Step 24/24 : LABEL "), "{out}");
    assert_eq!(out.matches(" ---> Using cache").count(), 23 - 2, "{out}");
    let labels = &env.inspect("all:labels")["Config"]["Labels"];
    assert_eq!(labels["other"], "flag", "{labels}");
    assert_eq!(labels["by.flag"], "yes", "{labels}");
    assert_eq!(labels["org.example.who"], "you", "{labels}");

    // A history row per instruction of the stage (ARG BASE and FROM add none), buildah's
    // created_by, metadata rows marked empty_layer.
    let hist = env
        .run(&[
            "history",
            "--no-trunc",
            "--format",
            "{{.CreatedBy}}|{{.Size}}",
            "all:1",
        ])
        .ok();
    let rows: Vec<&str> = hist.lines().collect();
    assert_eq!(rows.len(), 21 + 1, "{hist}");
    assert!(
        rows[0].starts_with("/bin/sh -c #(nop) CMD [\"cat /greet\"]|0B"),
        "{hist}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("/bin/sh -c #(nop) ENV GREETING=hello you")),
        "{hist}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("/bin/sh -c echo \"$GREETING $WHO\" > /greet")),
        "{hist}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("/bin/sh -c #(nop) COPY dir:")),
        "{hist}"
    );
    // No container left behind.
    assert_eq!(env.container_dirs(), 0);
}

#[test]
fn build_instructions_on_the_demo_image() {
    if !have_root("build_instructions_on_the_demo_image") {
        return;
    }
    instructions_on_the_demo_image();
}

#[test]
fn rootless_build_instructions_on_the_demo_image() {
    as_user("rootless_build_instructions_on_the_demo_image");
}

#[test]
#[ignore = "run by rootless_build_instructions_on_the_demo_image"]
fn rootless_build_instructions_on_the_demo_image_child() {
    assert!(is_child());
    instructions_on_the_demo_image();
}

fn multi_stage_scratch_and_target() {
    let env = Env::new();
    env.file(
        "Dockerfile",
        "FROM demo AS tools\nRUN echo built > /artifact && mkdir /d && echo deep > /d/f\n\
         FROM scratch AS final\nCOPY --from=tools /artifact /d /out/\nCOPY --from=0 /bin/busybox /bin/\n\
         FROM final AS last\nCOPY --from=final /out/artifact /again\n",
    );
    let out = env.build(&["-t", "ms"]).ok();
    assert!(
        out.contains("Step 7/7 : COPY --from=final /out/artifact /again"),
        "{out}"
    );
    let listing = env
        .run(&[
            "run",
            "--rm",
            "ms",
            "/bin/busybox",
            "find",
            "/",
            "-xdev",
            "-type",
            "f",
        ])
        .ok();
    let mut files: Vec<&str> = listing.lines().collect();
    files.sort();
    // The three network files are the container's, bind-mounted as docker mounts them
    // (empty files made in the init layer below the image's).
    assert_eq!(
        files,
        [
            "/again",
            "/bin/busybox",
            "/etc/hostname",
            "/etc/hosts",
            "/etc/resolv.conf",
            "/out/artifact",
            "/out/f"
        ],
        "{listing}"
    );
    // --target stops at a stage: `tools` has no /out.
    let out = env.build(&["-t", "ms:tools", "--target", "tools"]).ok();
    assert!(out.contains("Step 2/2 :"), "{out}");
    env.run(&["run", "--rm", "ms:tools", "test", "-f", "/artifact"])
        .ok();
    let err = env.build(&["--target", "nosuch"]).fails(1);
    assert!(err.contains("failed to reach build target nosuch"), "{err}");
    // FROM scratch alone generates nothing.
    env.file("Dockerfile", "FROM scratch\n");
    let err = env.build(&[]).fails(1);
    assert!(err.contains("No image was generated"), "{err}");
}

#[test]
fn build_multi_stage_scratch_and_target() {
    if !have_root("build_multi_stage_scratch_and_target") {
        return;
    }
    multi_stage_scratch_and_target();
}

#[test]
fn rootless_build_multi_stage_scratch_and_target() {
    as_user("rootless_build_multi_stage_scratch_and_target");
}

#[test]
#[ignore = "run by rootless_build_multi_stage_scratch_and_target"]
fn rootless_build_multi_stage_scratch_and_target_child() {
    assert!(is_child());
    multi_stage_scratch_and_target();
}

#[test]
fn build_cache_hits_invalidates_from_the_changed_copy_and_no_cache_rebuilds() {
    if !have_root("build_cache_hits_invalidates_from_the_changed_copy_and_no_cache_rebuilds") {
        return;
    }
    cache_hits_invalidation_and_no_cache();
}

#[test]
fn rootless_build_cache() {
    as_user("rootless_build_cache");
}

#[test]
#[ignore = "run by rootless_build_cache"]
fn rootless_build_cache_child() {
    assert!(is_child());
    cache_hits_invalidation_and_no_cache();
}

fn cache_hits_invalidation_and_no_cache() {
    let env = Env::new();
    env.file(
        "Dockerfile",
        "FROM demo\nENV A=1\nRUN echo one > /one\nCOPY f /f\nRUN cat /f > /g\nCMD [\"cat\", \"/g\"]\n",
    );
    env.file("f", "first\n");
    let first = env.build(&["-t", "c:1"]).ok();
    assert!(!first.contains("Using cache"), "{first}");
    let id = built_id(&first);
    // The same build: every step from the cache, the same image.
    let second = env.build(&["-t", "c:2"]).ok();
    assert_eq!(second.matches(" ---> Using cache").count(), 5, "{second}");
    assert!(!second.contains("Running in"), "{second}");
    assert_eq!(built_id(&second), id);
    assert_eq!(env.inspect("c:1")["Id"], env.inspect("c:2")["Id"]);
    // A changed file: the steps before its COPY from the cache, the rest anew.
    env.file("f", "second\n");
    let third = env.build(&["-t", "c:3"]).ok();
    assert_eq!(third.matches(" ---> Using cache").count(), 2, "{third}");
    let after_copy = third.split("Step 4/6 : COPY f /f").nth(1).unwrap();
    assert!(!after_copy.contains("Using cache"), "{third}");
    assert_ne!(built_id(&third), id);
    assert_eq!(env.run(&["run", "--rm", "c:3"]).ok(), "second\n");
    assert_eq!(env.run(&["run", "--rm", "c:1"]).ok(), "first\n");
    // --no-cache: everything again, a new image.
    let fourth = env.build(&["--no-cache", "-q"]).ok();
    assert!(
        fourth.trim().starts_with("sha256:"),
        "-q prints only the ID: {fourth}"
    );
    assert_eq!(fourth.lines().count(), 1, "{fourth}");
    assert!(!fourth.contains(&built_id(&third)));
    // A new --build-arg value is a new RUN.
    env.file("Dockerfile", "FROM demo\nARG V=1\nRUN echo $V > /v\n");
    env.build(&[]).ok();
    let again = env.build(&["--build-arg", "V=2", "-t", "v"]).ok();
    assert!(again.contains("Running in"), "{again}");
    assert_eq!(env.run(&["run", "--rm", "v", "cat", "/v"]).ok(), "2\n");
}

#[test]
fn build_bad_input_is_refused_and_tags_nothing() {
    if !have_root("build_bad_input_is_refused_and_tags_nothing") {
        return;
    }
    bad_input();
}

#[test]
fn rootless_build_bad_input() {
    as_user("rootless_build_bad_input");
}

#[test]
#[ignore = "run by rootless_build_bad_input"]
fn rootless_build_bad_input_child() {
    assert!(is_child());
    bad_input();
}

fn bad_input() {
    let env = Env::new();
    env.file("f", "x");
    let cases: &[(&str, i32, &str)] = &[
        (
            "FROM demo\n\nRUN true\nFOO bar\n",
            1,
            "dockerfile parse error line 4: unknown instruction: FOO",
        ),
        (
            "FROM demo\nRUN echo before; exit 7\nRUN true\n",
            7,
            "The command '/bin/sh -c echo before; exit 7' returned a non-zero code: 7",
        ),
        (
            "FROM demo\nCOPY missing /x\n",
            1,
            "file not found in build context or excluded by .dockerignore: stat missing",
        ),
        (
            "FROM demo\nCOPY ../x /x\n",
            1,
            "forbidden path outside the build context: ../x",
        ),
        (
            "FROM demo\nCOPY out /x\n",
            1,
            "forbidden path outside the build context: out",
        ),
        (
            "FROM demo AS a\nCOPY --from=b /f /f\nFROM demo AS b\nCOPY --from=a /f /f\n",
            1,
            "circular dependency detected on stage: b",
        ),
        (
            "FROM demo\nCOPY f\n",
            1,
            "COPY requires at least two arguments",
        ),
        ("FROM demo\nCOPY --bogus=1 f /f\n", 1, "Unknown flag: bogus"),
        (
            "RUN true\nFROM demo\n",
            1,
            "line 1: no build stage in current context",
        ),
    ];
    std::os::unix::fs::symlink("/etc/passwd", env.ctx().join("out")).unwrap();
    for (dockerfile, code, message) in cases {
        env.file("Dockerfile", dockerfile);
        let err = env.build(&["-t", "bad"]).fails(*code);
        assert!(err.contains(message), "{dockerfile}: {err}");
        assert_eq!(
            env.run(&["images", "-q", "bad"]).ok(),
            "",
            "{dockerfile}: tagged"
        );
        assert_eq!(env.container_dirs(), 0, "{dockerfile}: a container is left");
    }
    // The failing RUN's output was shown before its status.
    env.file("Dockerfile", "FROM demo\nRUN echo shown-output; exit 3\n");
    let r = env.build(&[]);
    assert!(r.stdout.contains("shown-output"), "{r:?}");
    r.fails(3);
}

/// A full disk during a build (the store on a small tmpfs), in a COPY step and in a RUN
/// step: the error names the step and the disk, no image is tagged, no build container is
/// left, and nothing of the half-written layer stays in the store.
#[test]
fn build_on_a_full_disk_leaves_the_store_as_it_was() {
    if !have_root("build_on_a_full_disk_leaves_the_store_as_it_was") {
        return;
    }
    let env = Env::new();
    let root = env.strata.root().to_path_buf();
    let _mounted = strata_tests::mounts::Tmpfs::mount(&root, "size=12m").unwrap();
    env.file("Dockerfile", "FROM demo\n");
    env.build(&[]).ok();
    // 4 MiB of incompressible data: its blob and layer data (8 MiB) do not fit beside the
    // demo image (and, for RUN, the upper that holds it).
    let mut big = vec![0u8; 4 << 20];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut big))
        .unwrap();
    std::fs::write(env.ctx().join("big"), &big).unwrap();
    let before = store_state(&root);
    for (dockerfile, step) in [
        ("FROM demo\nCOPY big /big\n", "Step 2/2 : COPY big /big"),
        (
            "FROM demo\nRUN head -c 4194304 /dev/urandom > /big\n",
            "Step 2/2 : RUN head",
        ),
    ] {
        env.file("Dockerfile", dockerfile);
        let r = env.build(&["-t", "full"]);
        assert!(r.stdout.contains(step), "{dockerfile}: {r:?}");
        let err = r.fails(1);
        assert!(
            err.contains("No space left on device"),
            "{dockerfile}: {err}"
        );
        assert_eq!(env.run(&["images", "-q", "full"]).ok(), "", "{dockerfile}");
        assert_eq!(env.container_dirs(), 0, "{dockerfile}: a container is left");
        assert_eq!(store_state(&root), before, "{dockerfile}");
    }
}

/// Files of a root as a sorted map, buildah's RUN mount points left out (it leaves the empty
/// /etc/hosts, /etc/hostname, /etc/resolv.conf and /run it bind-mounted; docker's classic
/// builder and strata keep them out of the image).
fn listing(root: &Path) -> strata_tests::tree::Tree {
    let mut t = snapshot(root).unwrap();
    for p in ["etc/hosts", "etc/hostname", "etc/resolv.conf", "run"] {
        t.remove(Path::new(p));
    }
    t
}

#[test]
fn build_gives_the_files_buildah_bud_gives() {
    if !have_root("build_gives_the_files_buildah_bud_gives") {
        return;
    }
    let env = Env::new();
    env.file(
        "Dockerfile",
        "FROM localhost/demo:latest\nRUN mkdir -p /made/deep && echo hi > /made/f && rm /etc/group \
         && ln -s /made/f /made/link && chmod 700 /made/deep\n\
         COPY a.txt /app/\nCOPY --chown=65534:65534 sub /app/sub\nWORKDIR /w\nRUN echo x > rel\n",
    );
    env.file("a.txt", "a\n");
    env.file("sub/b.txt", "b\n");
    let id = env.build(&["-q", "-t", "peer"]).ok();
    assert!(id.starts_with("sha256:"));
    // buildah: the demo image copied in with skopeo, a private vfs storage.
    let t = env.tmp.path();
    let storage = format!(
        "[vfs@{}+{}]",
        t.join("bh-root").display(),
        t.join("bh-run").display()
    );
    let sh = |cmd: &mut Command| {
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh(Command::new("skopeo").args([
        "copy",
        "-q",
        &format!("oci:{}:localhost/demo:latest", env.strata.root().display()),
        &format!("containers-storage:{storage}localhost/demo:latest"),
    ]));
    let buildah = |args: &[&str]| {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(t.join("bh-root"))
            .arg("--runroot")
            .arg(t.join("bh-run"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        c
    };
    sh(buildah(&["bud", "--isolation", "chroot", "-q", "-t", "peer"]).arg(env.ctx()));
    let layout = t.join("oci");
    sh(buildah(&["push", "-q", "peer"]).arg(format!("oci:{}:peer", layout.display())));
    sh(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:peer", layout.display()))
        .arg(t.join("bundle")));
    let mnt = t.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    env.run(&["mount", "peer", mnt.to_str().unwrap()]).ok();
    let ours = listing(&mnt);
    env.run(&["umount", mnt.to_str().unwrap()]).ok();
    let theirs = listing(&t.join("bundle/rootfs"));
    let d = diff(&theirs, &ours);
    assert!(
        d.is_empty(),
        "strata build differs from buildah bud (- buildah only, + strata only):\n{}",
        d.join("\n")
    );
    assert!(
        ours.contains_key(Path::new("made/link")) && !ours.contains_key(Path::new("etc/group"))
    );
}

#[test]
fn build_run_steps_see_add_host_and_keep_the_hosts_file_out_of_the_layer() {
    let env = Env::new();
    env.file(
        "Dockerfile",
        "FROM demo\nRUN grep 'registry.test' /etc/hosts > /seen\n",
    );
    let out = env
        .build(&[
            "-t",
            "hosts:1",
            "--network",
            "none",
            "--add-host",
            "registry.test:10.1.2.3",
        ])
        .ok();
    built_id(&out);
    let seen = env
        .run(&[
            "run",
            "--rm",
            "--network",
            "none",
            "hosts:1",
            "cat",
            "/seen",
        ])
        .ok();
    assert_eq!(
        seen.split_whitespace().collect::<Vec<_>>(),
        ["10.1.2.3", "registry.test"]
    );
    // The step's /etc/hosts was the network's, bind-mounted: not in the image.
    let hosts = env
        .run(&[
            "run",
            "--rm",
            "--network",
            "none",
            "hosts:1",
            "cat",
            "/etc/hosts",
        ])
        .ok();
    assert!(!hosts.contains("registry.test"), "{hosts}");
}

#[test]
fn build_context_on_stdin() {
    if !have_root("build_context_on_stdin") {
        return;
    }
    let env = Env::new();
    // A Dockerfile alone on stdin: an empty context.
    let mut cmd = env.strata.command(&["build", "-q", "-"]);
    let out = feed(&mut cmd, b"FROM demo\nRUN echo stdin > /s\n");
    assert!(out.starts_with("sha256:"), "{out}");
    // A tar context on stdin, its Dockerfile inside.
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("Dockerfile", &b"FROM demo\nCOPY in.txt /in.txt\n"[..]),
        ("in.txt", &b"from the tar\n"[..]),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    }
    let mut cmd = env.strata.command(&["build", "-t", "fromtar", "-"]);
    let out = feed(&mut cmd, &b.into_inner().unwrap());
    assert!(out.contains("Successfully tagged fromtar:latest"), "{out}");
    assert_eq!(
        env.run(&["run", "--rm", "fromtar", "cat", "/in.txt"]).ok(),
        "from the tar\n"
    );
}

/// Runs `cmd` with `input` on stdin; its stdout, failing the test unless it exited 0.
fn feed(cmd: &mut Command, input: &[u8]) -> String {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
