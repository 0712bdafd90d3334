//! Lazy layers through containerd: an eStargz image made by `ctr-remote image convert`,
//! pulled with `ctr-remote image rpull --snapshotter strata`, runs without containerd
//! downloading its layers.

use super::{setup, unique, TaskGuard};
use strata_tests::users::have_root;

#[test]
fn rpull_of_an_estargz_image_starts_without_downloading_its_layers() {
    if !have_root("rpull_of_an_estargz_image_starts_without_downloading_its_layers") {
        return;
    }
    let mut s = setup();
    let src = &s.env.busybox;
    let esgz = format!("{}-esgz", src);
    s.ctd.push_estargz(src, &esgz).unwrap();
    s.ctd.ctr_ok(&["image", "rm", "--sync", src, &esgz]);
    let out = s.ctd.ctr_remote(&[
        "image",
        "rpull",
        "--plain-http",
        "--snapshotter",
        "strata",
        &esgz,
    ]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let out = s.run(&[], &esgz, "lazy1", &["cat", "/hello"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "world\n"),
        "{}\n{}",
        out.stderr,
        s.snap.log()
    );
    // containerd fetched the manifest and config, no layer (a layer it downloads gets the
    // `containerd.io/uncompressed` label at unpack).
    let content = s.ctd.ctr_ok(&["content", "ls"]);
    assert!(
        !content.contains("containerd.io/uncompressed="),
        "containerd downloaded layers:\n{content}\n{}",
        s.snap.log()
    );
    // Both layers are lazy: an index each, no files in their directories.
    let lazy: Vec<_> = s
        .snapshot_dirs()
        .into_iter()
        .filter(|d| d.join("lazy/index").is_file())
        .collect();
    assert_eq!(lazy.len(), 2, "{}", s.snap.log());
    for d in &lazy {
        assert_eq!(std::fs::read_dir(d.join("fs")).unwrap().count(), 0);
    }
    // A write lands in the container's upper, over the lazy layers.
    let out = s.run(
        &[],
        &esgz,
        "lazy2",
        &[
            "sh",
            "-c",
            "echo x >> /hello && cat /hello && ls /bin | wc -l",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[..2], ["world", "x"], "{}", out.stdout);
    // busybox's applet links, listed from the lazy base layer's index.
    assert!(
        lines[2].trim().parse::<u32>().unwrap() > 10,
        "{}",
        out.stdout
    );

    // A running container's union over lazy layers keeps serving with the snapshotter
    // gone: its server (`serve-union`) is a process of its own.
    let id = unique("lazylong");
    s.ctd.ctr_ok(&[
        "run",
        "-d",
        "--snapshotter",
        "strata",
        &esgz,
        &id,
        "sleep",
        "1000",
    ]);
    let task = TaskGuard(&s.ctd, &id);
    s.snap.kill().unwrap();
    let out = s.ctd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        &id,
        "sh",
        "-c",
        "cat /hello && wc -c < /bin/busybox",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "world", "{}", out.stdout);
    assert!(
        lines[1].trim().parse::<u64>().unwrap() > 100_000,
        "{}",
        out.stdout
    );
    drop(task);
    s.snap.restart().unwrap();
}
