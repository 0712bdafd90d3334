//! Bad requests straight to the snapshotter's socket (containerd's metadata layer would
//! answer some of them itself): the status codes containerd's errdefs turn into NotFound,
//! AlreadyExists, FailedPrecondition and InvalidArgument.

use std::collections::HashMap;
use std::path::PathBuf;

use containerd_snapshots::api::snapshots::v1::snapshots_client::SnapshotsClient;
use containerd_snapshots::api::snapshots::v1::{
    CommitSnapshotRequest, MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
    StatSnapshotRequest, UsageRequest, ViewSnapshotRequest,
};
use containerd_snapshots::tonic::transport::{Channel, Endpoint};
use containerd_snapshots::tonic::Code;
use strata_tests::containerd::Snapshotter;

async fn connect(socket: PathBuf) -> SnapshotsClient<Channel> {
    // The URI is not used: the connector dials the socket.
    let channel = Endpoint::from_static("http://[::]:0")
        .connect_with_connector(tower::service_fn(move |_| {
            tokio::net::UnixStream::connect(socket.clone())
        }))
        .await
        .unwrap();
    SnapshotsClient::new(channel)
}

fn prepare(key: &str, parent: &str) -> PrepareSnapshotRequest {
    PrepareSnapshotRequest {
        snapshotter: "strata".into(),
        key: key.into(),
        parent: parent.into(),
        labels: HashMap::new(),
    }
}

#[test]
fn bad_requests_get_the_grpc_codes_containerd_expects() {
    // The view at the end mounts a union.
    if !strata_tests::users::have_root("bad_requests_get_the_grpc_codes_containerd_expects") {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("strata-snap-grpc")
        .tempdir()
        .unwrap();
    let snap = Snapshotter::start(tmp.path(), &tmp.path().join("store")).unwrap();
    let socket = tmp.path().join("snapshotter.sock");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = connect(socket).await;
        let sn = || "strata".to_string();
        let code = |r: Result<_, containerd_snapshots::tonic::Status>| match r {
            Ok(_) => panic!("accepted"),
            Err(s) => s.code(),
        };
        // Unknown keys.
        let stat = StatSnapshotRequest {
            snapshotter: sn(),
            key: "nope".into(),
        };
        assert_eq!(code(c.stat(stat).await.map(|_| ())), Code::NotFound);
        let req = MountsRequest {
            snapshotter: sn(),
            key: "nope".into(),
        };
        assert_eq!(code(c.mounts(req).await.map(|_| ())), Code::NotFound);
        let req = UsageRequest {
            snapshotter: sn(),
            key: "nope".into(),
        };
        assert_eq!(code(c.usage(req).await.map(|_| ())), Code::NotFound);
        let req = RemoveSnapshotRequest {
            snapshotter: sn(),
            key: "nope".into(),
        };
        assert_eq!(code(c.remove(req).await.map(|_| ())), Code::NotFound);
        // A parent that does not exist.
        let r = c.prepare(prepare("a", "no-such-parent")).await;
        let status = r.unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().contains("no-such-parent"), "{status:?}");
        // Twice the same key.
        c.prepare(prepare("a", "")).await.unwrap();
        assert_eq!(
            code(c.prepare(prepare("a", "")).await.map(|_| ())),
            Code::AlreadyExists
        );
        // A parent that is not committed.
        assert_eq!(
            code(c.prepare(prepare("b", "a")).await.map(|_| ())),
            Code::InvalidArgument
        );
        let commit = |name: &str, key: &str| CommitSnapshotRequest {
            snapshotter: sn(),
            name: name.into(),
            key: key.into(),
            labels: HashMap::new(),
        };
        c.commit(commit("layer", "a")).await.unwrap();
        // Committing a committed snapshot; mounts of one.
        assert_eq!(
            code(c.commit(commit("again", "layer")).await.map(|_| ())),
            Code::FailedPrecondition
        );
        let req = MountsRequest {
            snapshotter: sn(),
            key: "layer".into(),
        };
        assert_eq!(
            code(c.mounts(req).await.map(|_| ())),
            Code::FailedPrecondition
        );
        // A view over it; removing the parent of a snapshot.
        let view = ViewSnapshotRequest {
            snapshotter: sn(),
            key: "v".into(),
            parent: "layer".into(),
            labels: HashMap::new(),
        };
        let mounts = c.view(view).await.unwrap().into_inner().mounts;
        assert_eq!(mounts[0].r#type, "bind");
        assert_eq!(mounts[0].options, ["rbind", "ro"], "{mounts:?}");
        let req = RemoveSnapshotRequest {
            snapshotter: sn(),
            key: "layer".into(),
        };
        assert_eq!(
            code(c.remove(req).await.map(|_| ())),
            Code::FailedPrecondition
        );
        // The view's union goes with it.
        let req = RemoveSnapshotRequest {
            snapshotter: sn(),
            key: "v".into(),
        };
        c.remove(req).await.unwrap();
    });
    drop(snap);
}
