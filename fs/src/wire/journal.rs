//! What the kernel holds of a connection, written down so a server that takes the
//! connection over after its predecessor died can honour it: each node id handed out (with
//! the parent and name it was found under, as inode numbers are stable a lookup of that
//! name finds the same node again) and each open handle (the node and open flags, to open
//! it again under the same number).
//!
//! The journal is a file the server's supervisor owns (a memfd in the monitor) and passes
//! to each server. Records are appended before the reply that hands the kernel the node or
//! handle is sent: `[len u32][kind u8][payload]`, native byte order. A server killed while
//! writing leaves a torn last record, which loading stops at (its reply was never sent).
//! Not done yet: compaction (forgotten nodes and closed handles stay until the supervisor
//! starts over).

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

const NODE: u8 = 1;
const OPEN_FILE: u8 = 2;
const OPEN_DIR: u8 = 3;
const CLOSE: u8 = 4;
const DONE: u8 = 5;

/// An open handle the kernel holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Open {
    File { ino: u64, flags: i32 },
    Dir { ino: u64 },
}

/// The journal's contents: the latest record of each node and handle.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Node id → (parent node id, name).
    pub nodes: HashMap<u64, (u64, OsString)>,
    /// Handle number → what it opened.
    pub handles: HashMap<u64, Open>,
    /// The requests (by unique id) that changed the namespace and were answered, or were
    /// about to be: one the kernel sends again must not be done twice.
    pub done: HashSet<u64>,
}

struct Inner {
    state: State,
    /// Where the next record goes: after the last whole one.
    end: u64,
}

/// A journal file, loaded, appended to.
pub struct Journal {
    file: File,
    inner: Mutex<Inner>,
}

impl Journal {
    /// Loads `file` (empty for a connection's first server).
    pub fn open(file: File) -> std::io::Result<Journal> {
        // Positional: the descriptor's offset is shared with the supervisor's copy.
        let mut bytes = vec![0; file.metadata()?.len() as usize];
        file.read_exact_at(&mut bytes, 0)?;
        let mut state = State::default();
        let end = replay(&bytes, &mut state) as u64;
        Ok(Journal {
            file,
            inner: Mutex::new(Inner { state, end }),
        })
    }

    /// A copy of what the journal holds.
    pub fn state(&self) -> State {
        self.inner.lock().expect("journal").state.clone()
    }

    /// The node `parent`/`name` is `ino` (written only when that is news).
    pub fn node(&self, ino: u64, parent: u64, name: &OsStr) -> std::io::Result<()> {
        let mut inner = self.inner.lock().expect("journal");
        if let Some((p, n)) = inner.state.nodes.get(&ino) {
            if *p == parent && n == name {
                return Ok(());
            }
        }
        let mut payload = Vec::with_capacity(16 + name.len());
        payload.extend_from_slice(&ino.to_ne_bytes());
        payload.extend_from_slice(&parent.to_ne_bytes());
        payload.extend_from_slice(name.as_bytes());
        self.append(&mut inner, NODE, &payload)?;
        inner.state.nodes.insert(ino, (parent, name.to_os_string()));
        Ok(())
    }

    /// Handle `fh` was handed out.
    pub fn opened(&self, fh: u64, open: Open) -> std::io::Result<()> {
        let mut inner = self.inner.lock().expect("journal");
        let mut payload = fh.to_ne_bytes().to_vec();
        let kind = match open {
            Open::File { ino, flags } => {
                payload.extend_from_slice(&ino.to_ne_bytes());
                payload.extend_from_slice(&flags.to_ne_bytes());
                OPEN_FILE
            }
            Open::Dir { ino } => {
                payload.extend_from_slice(&ino.to_ne_bytes());
                OPEN_DIR
            }
        };
        self.append(&mut inner, kind, &payload)?;
        inner.state.handles.insert(fh, open);
        Ok(())
    }

    /// Request `unique` changed the namespace; its answer is about to be sent.
    pub fn done(&self, unique: u64) -> std::io::Result<()> {
        let mut inner = self.inner.lock().expect("journal");
        self.append(&mut inner, DONE, &unique.to_ne_bytes())?;
        inner.state.done.insert(unique);
        Ok(())
    }

    /// Whether request `unique` was done (by this server or one before).
    pub fn was_done(&self, unique: u64) -> bool {
        self.inner
            .lock()
            .expect("journal")
            .state
            .done
            .contains(&unique)
    }

    /// Handle `fh` was released.
    pub fn closed(&self, fh: u64) -> std::io::Result<()> {
        let mut inner = self.inner.lock().expect("journal");
        self.append(&mut inner, CLOSE, &fh.to_ne_bytes())?;
        inner.state.handles.remove(&fh);
        Ok(())
    }

    fn append(&self, inner: &mut Inner, kind: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut rec = Vec::with_capacity(5 + payload.len());
        rec.extend_from_slice(&(payload.len() as u32).to_ne_bytes());
        rec.push(kind);
        rec.extend_from_slice(payload);
        // One write: a server killed midway leaves at most this record torn.
        self.file.write_all_at(&rec, inner.end)?;
        inner.end += rec.len() as u64;
        Ok(())
    }
}

/// Applies the whole records of `bytes` to `state`; returns where they end.
fn replay(bytes: &[u8], state: &mut State) -> usize {
    let mut at = 0;
    while let Some(head) = bytes.get(at..at + 5) {
        let len = u32::from_ne_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let Some(p) = bytes.get(at + 5..at + 5 + len) else {
            break;
        };
        let u64_at = |i: usize| {
            p.get(i..i + 8)
                .map(|b| u64::from_ne_bytes(b.try_into().expect("8")))
        };
        match (head[4], u64_at(0), u64_at(8)) {
            (NODE, Some(ino), Some(parent)) => {
                let name = OsString::from_vec(p[16..].to_vec());
                state.nodes.insert(ino, (parent, name));
            }
            (OPEN_FILE, Some(fh), Some(ino)) if p.len() == 20 => {
                let flags = i32::from_ne_bytes(p[16..20].try_into().expect("4 bytes"));
                state.handles.insert(fh, Open::File { ino, flags });
            }
            (OPEN_DIR, Some(fh), Some(ino)) => {
                state.handles.insert(fh, Open::Dir { ino });
            }
            (CLOSE, Some(fh), _) => {
                state.handles.remove(&fh);
            }
            (DONE, Some(unique), _) => {
                state.done.insert(unique);
            }
            // A record this code does not know: a torn one or garbage. Stop here.
            _ => break,
        }
        at += 5 + len;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> File {
        tempfile::tempfile().unwrap()
    }

    #[test]
    fn a_second_server_reads_what_the_first_wrote() {
        let f = temp();
        let j = Journal::open(f.try_clone().unwrap()).unwrap();
        j.node(10, 1, OsStr::new("dir")).unwrap();
        j.node(11, 10, OsStr::new("file")).unwrap();
        j.node(11, 10, OsStr::new("file")).unwrap();
        j.opened(3, Open::File { ino: 11, flags: 2 }).unwrap();
        j.opened(4, Open::Dir { ino: 10 }).unwrap();
        j.closed(4).unwrap();
        j.done(77).unwrap();
        // A rename: the node's latest name wins.
        j.node(11, 1, OsStr::new("moved")).unwrap();
        let again = Journal::open(f.try_clone().unwrap()).unwrap().state();
        assert_eq!(again, j.state());
        assert_eq!(again.nodes[&11], (1, OsString::from("moved")));
        assert_eq!(again.handles.len(), 1);
        assert_eq!(again.handles[&3], Open::File { ino: 11, flags: 2 });
        assert!(Journal::open(f.try_clone().unwrap()).unwrap().was_done(77));
    }

    #[test]
    fn a_torn_last_record_is_left_out_and_overwritten() {
        let f = temp();
        let j = Journal::open(f.try_clone().unwrap()).unwrap();
        j.node(10, 1, OsStr::new("dir")).unwrap();
        let whole = f.metadata().unwrap().len();
        j.node(11, 10, OsStr::new("file")).unwrap();
        f.set_len(whole + 7).unwrap();
        let second = Journal::open(f.try_clone().unwrap()).unwrap();
        assert_eq!(second.state().nodes.len(), 1);
        second.node(12, 1, OsStr::new("other")).unwrap();
        let third = Journal::open(f).unwrap().state();
        assert_eq!(third.nodes.len(), 2);
        assert_eq!(third.nodes[&12], (1, OsString::from("other")));
    }
}
