//! The snapshots API over [`Snapshots`]: containerd-snapshots' `Snapshotter` trait, each call
//! run on tokio's blocking pool (the table writes files and measures directories), each error
//! turned into the gRPC status containerd reads back as its errdefs kind.

// The trait's streams and results carry tonic's `Status` by value, as the crate defines them.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use containerd_snapshots::api::types::Mount as ApiMount;
use containerd_snapshots::tonic::{self, Status};
use containerd_snapshots::{Info, Snapshotter, Usage as ApiUsage};

use crate::{Code, Error, Kind, Mount, Record, Snapshots};

/// The gRPC face of a [`Snapshots`].
pub struct Service {
    inner: Arc<Snapshots>,
}

impl Service {
    pub fn new(inner: Snapshots) -> Service {
        Service {
            inner: Arc::new(inner),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Snapshots) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Status> {
        let inner = self.inner.clone();
        match tokio::task::spawn_blocking(move || f(&inner)).await {
            Ok(r) => r.map_err(status),
            Err(e) => Err(Status::internal(format!("snapshotter task failed: {e}"))),
        }
    }
}

/// The status for `e`, its message the error's own.
fn status(e: Error) -> Status {
    let msg = e.to_string();
    log::debug!("answering: {msg}");
    match e.code() {
        Code::NotFound => Status::not_found(msg),
        Code::AlreadyExists => Status::already_exists(msg),
        Code::FailedPrecondition => Status::failed_precondition(msg),
        Code::InvalidArgument => Status::invalid_argument(msg),
        Code::Unavailable => Status::unavailable(msg),
        Code::Internal => Status::internal(msg),
    }
}

fn info(name: String, r: Record) -> Info {
    Info {
        kind: match r.kind {
            Kind::View => containerd_snapshots::Kind::View,
            Kind::Active => containerd_snapshots::Kind::Active,
            Kind::Committed => containerd_snapshots::Kind::Committed,
        },
        name,
        parent: r.parent,
        labels: r.labels.into_iter().collect(),
        created_at: r.created,
        updated_at: r.updated,
    }
}

fn api_mounts(m: Vec<Mount>) -> Vec<ApiMount> {
    m.into_iter()
        .map(|m| ApiMount {
            r#type: m.kind,
            source: m.source,
            target: String::new(),
            options: m.options,
        })
        .collect()
}

fn sorted(labels: HashMap<String, String>) -> BTreeMap<String, String> {
    labels.into_iter().collect()
}

type InfoStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<Info, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Snapshotter for Service {
    type Error = Status;

    async fn stat(&self, key: String) -> Result<Info, Status> {
        self.blocking(move |s| s.stat(&key).map(|r| info(key, r)))
            .await
    }

    async fn update(&self, i: Info, fields: Option<Vec<String>>) -> Result<Info, Status> {
        self.blocking(move |s| {
            let r = s.update_labels(&i.name, sorted(i.labels), &fields.unwrap_or_default())?;
            Ok(info(i.name, r))
        })
        .await
    }

    async fn usage(&self, key: String) -> Result<ApiUsage, Status> {
        let u = self.blocking(move |s| s.usage(&key)).await?;
        Ok(ApiUsage {
            size: u.size,
            inodes: u.inodes,
        })
    }

    async fn mounts(&self, key: String) -> Result<Vec<ApiMount>, Status> {
        self.blocking(move |s| s.mounts(&key).map(api_mounts)).await
    }

    async fn prepare(
        &self,
        key: String,
        parent: String,
        labels: HashMap<String, String>,
    ) -> Result<Vec<ApiMount>, Status> {
        log::debug!("prepare {key:?} over {parent:?} labels {labels:?}");
        self.blocking(move |s| {
            s.create(Kind::Active, &key, &parent, sorted(labels))
                .map(api_mounts)
        })
        .await
    }

    async fn view(
        &self,
        key: String,
        parent: String,
        labels: HashMap<String, String>,
    ) -> Result<Vec<ApiMount>, Status> {
        log::debug!("view {key:?} over {parent:?}");
        self.blocking(move |s| {
            s.create(Kind::View, &key, &parent, sorted(labels))
                .map(api_mounts)
        })
        .await
    }

    async fn commit(
        &self,
        name: String,
        key: String,
        labels: HashMap<String, String>,
    ) -> Result<(), Status> {
        log::debug!("commit {key:?} as {name:?}");
        self.blocking(move |s| s.commit(&name, &key, sorted(labels)))
            .await
    }

    async fn remove(&self, key: String) -> Result<(), Status> {
        log::debug!("remove {key:?}");
        self.blocking(move |s| s.remove(&key)).await
    }

    async fn clear(&self) -> Result<(), Status> {
        let n = self.blocking(|s| s.cleanup()).await?;
        log::debug!("cleanup removed {n} directories");
        Ok(())
    }

    type InfoStream = InfoStream;

    async fn list(&self, _snapshotter: String, filters: Vec<String>) -> Result<InfoStream, Status> {
        let all = self.blocking(move |s| s.list(&filters)).await?;
        Ok(Box::pin(tokio_stream::iter(
            all.into_iter().map(|(k, r)| Ok(info(k, r))),
        )))
    }
}
