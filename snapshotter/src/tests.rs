//! The table's rules without containerd: codes for bad requests, mounts over the parent
//! chain, commit and remove, persistence across a reopen.

use std::collections::BTreeMap;

use super::*;

fn open() -> (tempfile::TempDir, Snapshots) {
    let tmp = tempfile::tempdir().unwrap();
    let s = Snapshots::open(tmp.path()).unwrap();
    (tmp, s)
}

fn no_labels() -> BTreeMap<String, String> {
    BTreeMap::new()
}

#[test]
fn base_layer_is_a_bind_mount_and_children_are_strata_fs_unions() {
    let (_tmp, s) = open();
    let m = s.create(Kind::Active, "a", "", no_labels()).unwrap();
    assert_eq!(m[0].kind, "bind");
    assert_eq!(m[0].options, ["rbind", "rw"]);
    s.commit("l1", "a", no_labels()).unwrap();
    let m = s.create(Kind::Active, "b", "l1", no_labels()).unwrap();
    s.commit("l2", "b", no_labels()).unwrap();
    let m2 = s.create(Kind::Active, "c", "l2", no_labels()).unwrap();
    assert_eq!(m[0].kind, FUSE_TYPE);
    let l1 = s.fs_dir(s.stat("l1").unwrap().id);
    let l2 = s.fs_dir(s.stat("l2").unwrap().id);
    assert_eq!(
        m2[0].options[0],
        format!("lowerdir={}:{}", l2.display(), l1.display())
    );
    assert!(m2[0].options[1].starts_with("upperdir="));
    let v = s.create(Kind::View, "v", "l2", no_labels()).unwrap();
    assert!(v[0].options.contains(&"ro".to_string()));
    assert!(!v[0].options.iter().any(|o| o.starts_with("upperdir=")));
    assert_eq!(s.mounts("c").unwrap(), m2);
}

#[test]
fn bad_requests_get_the_codes_containerd_expects() {
    let (_tmp, s) = open();
    let code = |r: Result<Vec<Mount>>| r.unwrap_err().code();
    assert_eq!(
        code(s.create(Kind::Active, "a", "nope", no_labels())),
        Code::NotFound
    );
    s.create(Kind::Active, "a", "", no_labels()).unwrap();
    assert_eq!(
        code(s.create(Kind::Active, "a", "", no_labels())),
        Code::AlreadyExists
    );
    assert_eq!(
        code(s.create(Kind::Active, "b", "a", no_labels())),
        Code::InvalidArgument
    );
    assert_eq!(s.stat("x").unwrap_err().code(), Code::NotFound);
    assert_eq!(s.remove("x").unwrap_err().code(), Code::NotFound);
    assert_eq!(s.usage("x").unwrap_err().code(), Code::NotFound);
    assert_eq!(s.mounts("x").unwrap_err().code(), Code::NotFound);
    s.commit("l", "a", no_labels()).unwrap();
    assert_eq!(s.mounts("l").unwrap_err().code(), Code::FailedPrecondition);
    assert_eq!(
        s.commit("m", "l", no_labels()).unwrap_err().code(),
        Code::FailedPrecondition
    );
    s.create(Kind::Active, "c", "l", no_labels()).unwrap();
    assert_eq!(
        s.commit("l", "c", no_labels()).unwrap_err().code(),
        Code::AlreadyExists
    );
    assert_eq!(s.remove("l").unwrap_err().code(), Code::FailedPrecondition);
    assert_eq!(
        s.update_labels("c", no_labels(), &["parent".into()])
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
}

#[test]
fn labels_update_by_field_and_survive_a_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let s = Snapshots::open(tmp.path()).unwrap();
        let mut l = BTreeMap::new();
        l.insert("a".to_string(), "1".to_string());
        l.insert("b".to_string(), "2".to_string());
        s.create(Kind::Active, "k", "", l).unwrap();
        assert!(matches!(Snapshots::open(tmp.path()), Err(Error::Busy(_))));
        let mut upd = BTreeMap::new();
        upd.insert("c".to_string(), "3".to_string());
        let r = s
            .update_labels("k", upd, &["labels.c".into(), "labels.a".into()])
            .unwrap();
        assert_eq!(r.labels.keys().collect::<Vec<_>>(), ["b", "c"]);
    }
    let s = Snapshots::open(tmp.path()).unwrap();
    assert_eq!(s.stat("k").unwrap().labels.len(), 2);
    assert_eq!(s.list(&[]).unwrap().len(), 1);
}

#[test]
fn remove_and_cleanup_leave_no_directories() {
    let (tmp, s) = open();
    s.create(Kind::Active, "a", "", no_labels()).unwrap();
    let fs_dir = s.fs_dir(s.stat("a").unwrap().id);
    std::fs::write(fs_dir.join("f"), vec![1u8; 10000]).unwrap();
    assert!(s.usage("a").unwrap().size >= 10000);
    s.commit("l", "a", no_labels()).unwrap();
    assert_eq!(s.usage("l").unwrap().inodes, 2);
    s.remove("l").unwrap();
    std::fs::create_dir(tmp.path().join("snapshotter/snapshots/99")).unwrap();
    assert_eq!(s.cleanup().unwrap(), 1);
    let left: Vec<_> = std::fs::read_dir(tmp.path().join("snapshotter/snapshots"))
        .unwrap()
        .collect();
    assert!(left.is_empty());
}
