//! The one error of strata-engine: each variant is the step that failed, with the container,
//! path or flag it failed on and the cause as `source`. Refusals keep docker's words, which
//! users and tests know.

use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Image(#[from] strata_image::Error),
    #[error(transparent)]
    Runtime(#[from] strata_runtime::Error),

    // Files of the container store.
    #[error("creating {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parsing {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("serializing {}", path.display())]
    Serialize {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("removing {}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A system call of the engine's own (pipe2, fcntl, a namespace), named by its step.
    #[error("{step}")]
    Os {
        step: &'static str,
        #[source]
        source: io::Error,
    },

    /// A runtime call of the monitor's own (a namespace to enter), named by its step.
    #[error("{step}")]
    RuntimeStep {
        step: &'static str,
        #[source]
        source: strata_runtime::Error,
    },

    // Containers.
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    #[error("multiple containers match the id prefix {0}: use more of the id")]
    AmbiguousId(String),
    #[error(
        "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". \
         You have to remove (or rename) that container to be able to reuse that name."
    )]
    NameInUse { name: String, id: String },
    #[error("Invalid container name ({0}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidName(String),
    #[error(
        "cannot remove container \"/{name}\": container is {state}: stop the container \
         before removing or force remove"
    )]
    RemoveActive { name: String, state: &'static str },
    #[error("cannot kill container: {name}: container {id} is not running")]
    KillStopped { name: String, id: String },
    #[error("the container has no process")]
    NoProcess,
    #[error("container {0} did not stop after SIGKILL")]
    StopTimeout(String),
    #[error("layer {diff_id} of image {image} is not in the store (was the image removed?)")]
    MissingLayer { diff_id: String, image: String },
    #[error("mounting the container's root filesystem")]
    MountRoot(#[source] Box<Error>),
    #[error(transparent)]
    MountOptions(#[from] strata_fs::options::OptionsError),
    #[error(transparent)]
    Mount(#[from] strata_fs::mount::MountError),

    // commit and export.
    #[error("the image of the container ({image})")]
    CommitBase {
        image: String,
        #[source]
        source: strata_image::Error,
    },
    #[error("pausing container {id} for the commit")]
    CommitPause {
        id: String,
        #[source]
        source: strata_runtime::Error,
    },
    #[error("opening layer {}", path.display())]
    OpenLayer {
        path: PathBuf,
        #[source]
        source: strata_fs::layer::index::IndexError,
    },
    #[error("reading the filesystem of container {id}")]
    Changes {
        id: String,
        #[source]
        source: strata_fs::changes::ChangesError,
    },
    #[error("writing the {kind} tar of container {id}")]
    TarStream {
        kind: &'static str,
        id: String,
        #[source]
        source: io::Error,
    },
    #[error("the {kind} tar of container {id}: {message}")]
    TarWriter {
        kind: &'static str,
        id: String,
        message: String,
    },

    // Volumes.
    #[error("invalid volume name {0:?}")]
    InvalidVolume(String),
    #[error("creating volume {}", path.display())]
    CreateVolume {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    VolumeName(String),
    #[error("get {0}: no such volume")]
    NoSuchVolume(String),
    #[error("remove {name}: volume is in use - [{}]", ids.join(", "))]
    VolumeInUse { name: String, ids: Vec<String> },
    #[error("error looking up volume plugin {0}: plugin \"{0}\" not found")]
    VolumeDriver(String),
    /// A `-o` option of a volume that cannot be mounted as given.
    #[error("volume {name}: {message}")]
    VolumeOption { name: String, message: String },
    #[error("mounting volume {name} ({options})")]
    MountVolume {
        name: String,
        /// The volume's options, as `volume create` took them.
        options: String,
        #[source]
        source: io::Error,
    },

    // build: the Dockerfile, its context and its steps.
    #[error("dockerfile parse error line {line}: {message}")]
    Dockerfile { line: usize, message: String },
    #[error("reading the build context: {}", path.display())]
    BuildContext {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("forbidden path outside the build context: {0}")]
    CopyOutside(String),
    #[error("file not found in build context or excluded by .dockerignore: stat {0}: file does not exist")]
    CopyMissing(String),
    #[error("When using COPY with more than one source file, the destination must be a directory and end with a /")]
    CopyDestination,
    #[error("writing the layer tar")]
    WriteLayerTar {
        #[source]
        source: io::Error,
    },
    #[error("failed to reach build target {0} in Dockerfile")]
    BuildTarget(String),
    #[error("No image was generated. Is your Dockerfile empty?")]
    EmptyBuild,
    /// `note`: empty, or why it failed when the builder can tell (a full disk).
    #[error("The command '{command}' returned a non-zero code: {code}{note}")]
    RunFailed {
        command: String,
        code: i32,
        note: String,
    },
    #[error("reading {path} of the image")]
    ImageTree {
        path: String,
        #[source]
        source: io::Error,
    },

    // create: the flags and the request, refused in docker's words.
    #[error("{0}")]
    InvalidFlag(String),
    #[error("{message}")]
    FlagFile {
        message: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    InvalidRequest(String),
    /// `--security-opt seccomp=FILE`: the file cannot be read.
    #[error("opening seccomp profile ({}) failed", path.display())]
    SeccompRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `--security-opt seccomp=FILE`: the file is not a usable profile.
    #[error("seccomp profile {}", path.display())]
    SeccompProfile {
        path: PathBuf,
        #[source]
        source: strata_runtime::seccomp::SeccompError,
    },
    #[error("making the demo image")]
    Demo(#[source] strata_image::Error),
    #[error("bind source {}", path.display())]
    BindSource {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("creating the bind source {}", path.display())]
    CreateBindSource {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    // The network (bridge, slirp4netns).
    #[error("setting up slirp4netns")]
    Publish(#[source] Box<Error>),
    #[error(
        "the slirp4netns network (rootless default, -p) needs slirp4netns, which is not \
         installed: apt-get install slirp4netns"
    )]
    NoSlirp,
    #[error("setting up the container's network")]
    NetworkSetup(#[source] Box<Error>),
    /// An `ip` or `iptables` command failed at `step`; `message` is its stderr.
    #[error("{step}: {message}")]
    Network { step: &'static str, message: String },
    #[error("starting {}", path.display())]
    StartHelper {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Slirp(String),
    #[error("connecting to slirp4netns's API socket")]
    SlirpSocket(#[source] io::Error),
    #[error("slirp4netns's reply {0} is not JSON")]
    SlirpReply(String, #[source] serde_json::Error),
}

impl Error {
    /// A system call's failure (an errno from nix) at `step`.
    pub(crate) fn os(step: &'static str) -> impl FnOnce(nix::errno::Errno) -> Error {
        move |e| Error::Os {
            step,
            source: e.into(),
        }
    }

    /// The message with its causes, `step: cause: cause`, as the binary prints it.
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            s.push_str(": ");
            s.push_str(&c.to_string());
            cause = c.source();
        }
        s
    }
}
