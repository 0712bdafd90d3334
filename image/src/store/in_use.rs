//! Which images containers were made from: `rmi` refuses to delete them (`-f` only takes their
//! names) and `image prune` skips them, so a container's layers never go from under it.
//!
//! This reads only the two fields that matter, `id` and `image_id`, of each
//! `containers/<id>/container.json` (see containers.rs), so the answer does not depend on the
//! rest of the record's shape. A directory without a readable record is not a container to
//! any strata command (`ps`, `rm` skip it too), so it holds no image here either.

use std::collections::HashMap;
use std::fs;
use std::io;

use crate::{Error, Result};
use serde::Deserialize;

use super::Store;
use crate::digest::Digest;

/// The part of a container record this module reads.
#[derive(Deserialize)]
struct Uses {
    id: String,
    /// `sha256:<hex>` of the image config: the image ID.
    image_id: String,
    /// RFC 3339: containers are listed oldest first.
    #[serde(default)]
    created: String,
}

/// Image IDs containers use, each with the ids of those containers, oldest first. No
/// `containers/` directory means no container.
pub fn images_in_use(store: &Store) -> Result<HashMap<Digest, Vec<String>>> {
    let dir = store.root().join("containers");
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(source) => return Err(Error::Read { path: dir, source }),
    };
    let mut users: HashMap<Digest, Vec<(String, String)>> = HashMap::new();
    for entry in rd {
        let entry = entry.map_err(|source| Error::Read {
            path: dir.clone(),
            source,
        })?;
        let path = entry.path().join("container.json");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            // Not a container (yet, or any more): names.lock, a half-made or half-removed one.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                continue
            }
            Err(source) => return Err(Error::Read { path, source }),
        };
        let Ok(uses) = serde_json::from_slice::<Uses>(&bytes) else {
            continue;
        };
        let Ok(image) = Digest::parse(&uses.image_id) else {
            continue;
        };
        users
            .entry(image)
            .or_default()
            .push((uses.created, uses.id));
    }
    Ok(users
        .into_iter()
        .map(|(image, mut v)| {
            v.sort();
            (image, v.into_iter().map(|(_, id)| id).collect())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(store: &Store, id: &str, json: &str) {
        let dir = store.root().join("containers").join(id);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("container.json"), json).unwrap();
    }

    #[test]
    fn no_containers_directory_is_no_container() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert!(images_in_use(&store).unwrap().is_empty());
    }

    #[test]
    fn each_image_lists_its_containers_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        container(
            &store,
            "c2",
            &format!(r#"{{"id":"c2","image_id":"{a}","created":"2024-01-02T00:00:00Z","x":1}}"#),
        );
        container(
            &store,
            "c1",
            &format!(r#"{{"id":"c1","image_id":"{a}","created":"2024-01-01T00:00:00Z"}}"#),
        );
        container(&store, "c3", &format!(r#"{{"id":"c3","image_id":"{b}"}}"#));
        // Not containers: no record, a record that is not JSON, a lock file beside them.
        fs::create_dir_all(dir.path().join("containers/half")).unwrap();
        container(&store, "bad", "{not json");
        fs::write(dir.path().join("containers/names.lock"), "").unwrap();
        let used = images_in_use(&store).unwrap();
        assert_eq!(used.len(), 2);
        assert_eq!(used[&Digest::parse(&a).unwrap()], ["c1", "c2"]);
        assert_eq!(used[&Digest::parse(&b).unwrap()], ["c3"]);
    }
}
