//! Volumes: `ROOT/volumes/<name>/_data`, the directory a container sees. A named volume
//! (`-v NAME:/path`) is made on first use and outlives its containers; an anonymous one (an
//! image's `Volumes`) is named by 64 random hex digits and removed by `rm -v`.

use std::fs;
use std::path::PathBuf;

use strata_image::store::Store;

use crate::{Error, Result};

pub struct Volumes {
    dir: PathBuf,
}

/// docker's rule for volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(name: &str) -> bool {
    crate::containers::valid_name(name)
}

impl Volumes {
    pub fn new(store: &Store) -> Volumes {
        Volumes {
            dir: store.root().join("volumes"),
        }
    }

    /// `volumes/<name>/_data`.
    pub fn data(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("_data")
    }

    /// The volume's data directory, made when missing. Safe to race.
    pub fn ensure(&self, name: &str) -> Result<PathBuf> {
        if !valid_name(name) {
            return Err(Error::VolumeName(format!(
                "create {name}: \"{name}\" includes invalid characters for a local volume name, \
                 only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed"
            )));
        }
        let data = self.data(name);
        fs::create_dir_all(&data).map_err(|source| Error::CreateVolume {
            path: data.clone(),
            source,
        })?;
        Ok(data)
    }

    pub fn exists(&self, name: &str) -> bool {
        self.data(name).is_dir()
    }

    pub fn remove(&self, name: &str) -> Result<()> {
        if !valid_name(name) {
            return Err(Error::InvalidVolume(name.to_string()));
        }
        let dir = self.dir.join(name);
        if !dir.exists() {
            return Ok(());
        }
        crate::containers::remove_tree(&dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_are_made_on_demand_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let v = Volumes::new(&Store::new(dir.path()));
        let data = v.ensure("data1").unwrap();
        assert!(data.ends_with("volumes/data1/_data") && data.is_dir());
        assert_eq!(v.ensure("data1").unwrap(), data);
        assert!(v.ensure("../x").is_err());
        v.remove("data1").unwrap();
        assert!(!v.exists("data1"));
    }
}
