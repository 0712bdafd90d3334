//! The order in which a layer's chunks were first read (issue 11, point 4 "beyond the
//! anchors"): recorded while a mount reads, prefetched in that order on the next open.
//!
//! The record is a file of little-endian `u32` chunk numbers, one per chunk, in first-read
//! order, at most [`MAX_RECORDED`] of them. It is written as reads come (one 4-byte write
//! per newly read chunk) rather than when the mount ends, so that a monitor killed with -9
//! leaves its record too; a run's first read starts the file over, so the record is the
//! last run's.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Chunks recorded per layer at most: bounds the file (16 KiB) and the prefetch it drives.
pub const MAX_RECORDED: usize = 4096;

/// Records first reads of one layer's chunks into a file.
#[derive(Debug)]
pub struct AccessRecorder {
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Whether chunk `n` was read in this run.
    seen: Vec<bool>,
    recorded: usize,
    /// Opened (truncated) at the run's first read.
    file: Option<File>,
    /// Set after a write failed: recording is best effort and stops.
    broken: bool,
}

impl AccessRecorder {
    /// A recorder for a layer of `chunks` chunks into `path` (left as it is until the
    /// first read).
    pub fn new(path: &Path, chunks: usize) -> AccessRecorder {
        AccessRecorder {
            path: path.to_path_buf(),
            state: Mutex::new(State {
                seen: vec![false; chunks],
                recorded: 0,
                file: None,
                broken: false,
            }),
        }
    }

    /// Notes that chunks `ns` were read; those read for the first time are appended.
    pub fn read(&self, ns: impl IntoIterator<Item = u32>) {
        let mut st = self.state.lock().expect("not poisoned");
        if st.broken {
            return;
        }
        let mut new = Vec::new();
        for n in ns {
            let n_us = n as usize;
            if st.recorded + new.len() / 4 >= MAX_RECORDED {
                break;
            }
            if st.seen.get(n_us) == Some(&false) {
                st.seen[n_us] = true;
                new.extend_from_slice(&n.to_le_bytes());
            }
        }
        if new.is_empty() {
            return;
        }
        st.recorded += new.len() / 4;
        let written = (|| -> io::Result<()> {
            if st.file.is_none() {
                // Appending: two mounts of one layer interleave their records rather than
                // leave holes (read back as chunk 0) in each other's.
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?;
                file.set_len(0)?;
                st.file = Some(file);
            }
            st.file.as_mut().expect("opened above").write_all(&new)
        })();
        if let Err(e) = written {
            log::warn!("recording the access order in {}: {e}", self.path.display());
            st.broken = true;
        }
    }
}

/// The recorded order in `path` for a layer of `chunks` chunks: numbers out of range and
/// repeats dropped, at most [`MAX_RECORDED`]. No file (or an unreadable one): empty.
pub fn load(path: &Path, chunks: usize) -> Vec<u32> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let mut seen = vec![false; chunks];
    bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        .filter(|n| {
            let fresh = seen.get(*n as usize) == Some(&false);
            if fresh {
                seen[*n as usize] = true;
            }
            fresh
        })
        .take(MAX_RECORDED)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_first_reads_once_in_order_and_loads_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("order");
        std::fs::write(&path, [9u8; 8]).unwrap();
        let rec = AccessRecorder::new(&path, 10);
        // Nothing read yet: the last run's record stays.
        assert_eq!(std::fs::read(&path).unwrap(), [9u8; 8]);
        rec.read([5, 6]);
        rec.read([6, 2, 42]);
        rec.read([5]);
        assert_eq!(load(&path, 10), [5, 6, 2]);
        // A record with junk: out of range and repeated numbers are dropped.
        let junk: Vec<u8> = [3u32, 99, 3, 1]
            .iter()
            .flat_map(|n| n.to_le_bytes())
            .collect();
        std::fs::write(&path, junk).unwrap();
        assert_eq!(load(&path, 10), [3, 1]);
        assert!(load(&dir.path().join("none"), 10).is_empty());
    }

    #[test]
    fn the_record_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("order");
        let rec = AccessRecorder::new(&path, MAX_RECORDED * 2);
        rec.read(0..(MAX_RECORDED as u32 * 2));
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            MAX_RECORDED as u64 * 4
        );
    }
}
