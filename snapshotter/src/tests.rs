//! The table's rules without containerd: codes for bad requests, mounts over the parent
//! chain, commit and remove, persistence across a reopen.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use super::*;

/// Records the unions asked for and keeps a set of what is mounted.
#[derive(Clone, Default)]
struct Fake {
    mounted: Arc<Mutex<BTreeSet<PathBuf>>>,
    unions: Arc<Mutex<Vec<(PathBuf, Union)>>>,
}

impl Mounter for Fake {
    fn mount(&self, union: &Union, at: &Path) -> Result<()> {
        self.mounted.lock().unwrap().insert(at.to_path_buf());
        self.unions
            .lock()
            .unwrap()
            .push((at.to_path_buf(), union.clone()));
        Ok(())
    }
    fn unmount(&self, at: &Path) -> Result<()> {
        self.mounted.lock().unwrap().remove(at);
        Ok(())
    }
    fn is_mounted(&self, at: &Path) -> bool {
        self.mounted.lock().unwrap().contains(at)
    }
}

fn open() -> (tempfile::TempDir, Snapshots) {
    let (tmp, s, _) = open_fake();
    (tmp, s)
}

fn open_fake() -> (tempfile::TempDir, Snapshots, Fake) {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let s = Snapshots::open_with(tmp.path(), Box::new(fake.clone())).unwrap();
    (tmp, s, fake)
}

fn no_labels() -> BTreeMap<String, String> {
    BTreeMap::new()
}

#[test]
fn base_layer_is_its_directory_and_children_are_unions_the_snapshotter_holds() {
    let (_tmp, s, fake) = open_fake();
    let m = s.create(Kind::Active, "a", "", no_labels()).unwrap();
    let a = s.stat("a").unwrap().id;
    assert_eq!(m[0].kind, "bind");
    assert_eq!(m[0].source, s.fs_dir(a).display().to_string());
    assert_eq!(m[0].options, ["rbind", "rw"]);
    s.commit("l1", "a", no_labels()).unwrap();
    s.create(Kind::Active, "b", "l1", no_labels()).unwrap();
    let b_mnt = s.snapshot_dir(s.stat("b").unwrap().id).join("mnt");
    assert!(fake.is_mounted(&b_mnt));
    s.commit("l2", "b", no_labels()).unwrap();
    assert!(!fake.is_mounted(&b_mnt), "commit leaves the upper mounted");
    let m2 = s.create(Kind::Active, "c", "l2", no_labels()).unwrap();
    let c = s.stat("c").unwrap().id;
    assert_eq!(
        m2[0].source,
        s.snapshot_dir(c).join("mnt").display().to_string()
    );
    let l1 = s.fs_dir(s.stat("l1").unwrap().id);
    let l2 = s.fs_dir(s.stat("l2").unwrap().id);
    let (_, union) = fake.unions.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        union.lowers,
        [Lower::Dir(l2.clone()), Lower::Dir(l1.clone())]
    );
    assert_eq!(
        union.options(),
        format!(
            "lowerdir={}:{},upperdir={},workdir={},allow_other",
            l2.display(),
            l1.display(),
            s.fs_dir(c).display(),
            s.snapshot_dir(c).join("work").display()
        )
    );
    let v = s.create(Kind::View, "v", "l2", no_labels()).unwrap();
    assert_eq!(v[0].options, ["rbind", "ro"]);
    let (_, union) = fake.unions.lock().unwrap().last().cloned().unwrap();
    assert!(union.upper.is_none());
    assert!(union.options().contains(",ro,"));
    // A union found dead is mounted again when containerd asks.
    let c_mnt = s.snapshot_dir(c).join("mnt");
    fake.unmount(&c_mnt).unwrap();
    assert_eq!(s.mounts("c").unwrap(), m2);
    assert!(fake.is_mounted(&c_mnt));
    s.remove("c").unwrap();
    assert!(!fake.is_mounted(&c_mnt));
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
        let s = Snapshots::open_with(tmp.path(), Box::new(Fake::default())).unwrap();
        let mut l = BTreeMap::new();
        l.insert("a".to_string(), "1".to_string());
        l.insert("b".to_string(), "2".to_string());
        s.create(Kind::Active, "k", "", l).unwrap();
        assert!(matches!(
            Snapshots::open_with(tmp.path(), Box::new(Fake::default())),
            Err(Error::Busy(_))
        ));
        let mut upd = BTreeMap::new();
        upd.insert("c".to_string(), "3".to_string());
        let r = s
            .update_labels("k", upd, &["labels.c".into(), "labels.a".into()])
            .unwrap();
        assert_eq!(r.labels.keys().collect::<Vec<_>>(), ["b", "c"]);
    }
    let s = Snapshots::open_with(tmp.path(), Box::new(Fake::default())).unwrap();
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

#[test]
fn a_layer_that_cannot_be_made_lazy_is_prepared_for_containerd_to_download() {
    let (_tmp, s) = open();
    let labels: BTreeMap<String, String> = [
        (lazy::TARGET_LABEL, "sha256:target"),
        (
            "containerd.io/snapshot/remote/stargz.reference",
            // Nothing listens on port 1.
            "127.0.0.1:1/test/busybox:esgz",
        ),
        (
            "containerd.io/snapshot/remote/stargz.digest",
            "sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ),
        ("containerd.io/snapshot/stargz/toc.digest", "sha256:00"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let req = lazy::Request::from_labels(&labels).unwrap();
    assert_eq!(req.target, "sha256:target");
    let m = s.create(Kind::Active, "extract", "", labels).unwrap();
    assert_eq!(m[0].kind, "bind");
    assert!(s.stat("sha256:target").is_err());
    assert!(lazy::Request::from_labels(&BTreeMap::new()).is_none());
}
