//! uid/gid translation between the host files and the merged view, as fuse-overlayfs's
//! `uidmapping=`, `gidmapping=`, `squash_to_root`, `squash_to_uid=`, `squash_to_gid=`.

/// One mapping range: `len` ids from `container` (merged view) to `host` (on disk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub len: u32,
}

/// Parses `C:H:L[:C:H:L...]`.
pub fn parse_ranges(s: &str) -> Result<Vec<IdRange>, String> {
    let nums: Result<Vec<u32>, _> = s.split(':').map(str::parse::<u32>).collect();
    let nums = nums.map_err(|e| format!("{s:?}: {e}"))?;
    if nums.is_empty() || nums.len() % 3 != 0 {
        return Err(format!("{s:?}: expected CONTAINER:HOST:LENGTH triples"));
    }
    Ok(nums
        .chunks(3)
        .map(|c| IdRange {
            container: c[0],
            host: c[1],
            len: c[2],
        })
        .collect())
}

/// The id mapping of one mount. Ids outside every range map to the overflow id 65534.
#[derive(Clone, Debug, Default)]
pub struct IdMapper {
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
    pub squash_uid: Option<u32>,
    pub squash_gid: Option<u32>,
}

const OVERFLOW_ID: u32 = 65534;

fn to_container(ranges: &[IdRange], id: u32) -> u32 {
    if ranges.is_empty() {
        return id;
    }
    ranges
        .iter()
        .find(|r| id >= r.host && id - r.host < r.len)
        .map_or(OVERFLOW_ID, |r| r.container + (id - r.host))
}

fn to_host(ranges: &[IdRange], id: u32) -> u32 {
    if ranges.is_empty() {
        return id;
    }
    ranges
        .iter()
        .find(|r| id >= r.container && id - r.container < r.len)
        .map_or(OVERFLOW_ID, |r| r.host + (id - r.container))
}

impl IdMapper {
    /// Owner as the merged view shows it.
    pub fn uid_to_view(&self, host: u32) -> u32 {
        self.squash_uid
            .unwrap_or_else(|| to_container(&self.uids, host))
    }

    pub fn gid_to_view(&self, host: u32) -> u32 {
        self.squash_gid
            .unwrap_or_else(|| to_container(&self.gids, host))
    }

    /// Owner as stored on disk for an owner set through the merged view.
    pub fn uid_to_host(&self, view: u32) -> u32 {
        to_host(&self.uids, view)
    }

    pub fn gid_to_host(&self, view: u32) -> u32 {
        to_host(&self.gids, view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_both_ways_and_overflows_outside() {
        let m = IdMapper {
            uids: parse_ranges("0:1000:1:1:100000:65536").unwrap(),
            ..Default::default()
        };
        assert_eq!(m.uid_to_view(1000), 0);
        assert_eq!(m.uid_to_view(100004), 5);
        assert_eq!(m.uid_to_view(7), OVERFLOW_ID);
        assert_eq!(m.uid_to_host(0), 1000);
        assert_eq!(m.uid_to_host(5), 100004);
        assert_eq!(m.gid_to_view(42), 42, "no gid mapping: identity");
    }

    #[test]
    fn squash_overrides_mapping() {
        let m = IdMapper {
            squash_uid: Some(0),
            squash_gid: Some(0),
            ..Default::default()
        };
        assert_eq!(m.uid_to_view(1234), 0);
        assert_eq!(m.gid_to_view(1234), 0);
    }

    #[test]
    fn bad_ranges_are_refused() {
        assert!(parse_ranges("0:1000").is_err());
        assert!(parse_ranges("a:b:c").is_err());
    }
}
