//! The chunk cache: one per store (`chunks/`), shared by every lazily pulled layer, bounded
//! in bytes, least recently used chunks evicted.
//!
//! Per blob, as nydus lays it out: `chunks/<hex>/data`, a sparse file holding each fetched
//! chunk's decompressed bytes at its offset in the layer's virtual data, and
//! `chunks/<hex>/ready`, one byte per chunk (1 = present). A chunk is written and synced
//! before its byte is set, and its byte cleared before its hole is punched, so after a
//! `kill -9` a set byte always means whole, verified bytes (a torn chunk is only ever
//! marked absent and fetched again).
//!
//! Locking, in a process: one mutex over the whole table (the LRU, the bytes used, the
//! chunks being read or fetched). A reader pins its chunks; a pinned chunk is never
//! evicted, and a chunk being fetched by one reader is waited for by the others (a condvar,
//! with the lazy timeout) rather than fetched twice.
//!
//! Between processes (every container's monitor and every `strata mount` serves its own
//! mount over the same files): byte `n` of `ready` is locked (open file description locks)
//! shared by a reader of chunk `n` while it reads the readiness byte and the data, and
//! exclusively by an evictor, which skips a chunk it cannot lock at once. So a chunk is
//! never punched under a reader of another process, and a reader that finds its chunk
//! evicted by another process fetches it again. Each process bounds the chunks it knows:
//! those present when it opened the blob and those it fetched.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::fcntl::{fallocate, FallocateFlags};

use super::Chunk;

/// One chunk: the blob's hex digest and the chunk's number in its table.
type Key = (Arc<str>, u32);

struct Table {
    /// Present chunks and their lengths; the front is the most recently used.
    lru: lru::LruCache<Key, u64>,
    used: u64,
    /// Readers using a present chunk right now.
    pinned: HashMap<Key, u32>,
    /// Chunks one reader is fetching.
    fetching: HashSet<Key>,
}

/// The store's chunk cache.
pub struct ChunkCache {
    dir: PathBuf,
    limit: u64,
    table: Mutex<Table>,
    changed: Condvar,
}

impl std::fmt::Debug for ChunkCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ChunkCache({}, {} bytes)",
            self.dir.display(),
            self.limit
        )
    }
}

/// What [`ChunkCache::acquire`] found for a chunk.
pub enum Slot {
    /// Present and pinned: read it, then [`ChunkCache::release`].
    Ready,
    /// This reader fetches it: then [`BlobCache::store`] or [`ChunkCache::abandon`].
    Fetch,
}

impl ChunkCache {
    /// The cache in `dir` (created), holding at most `limit` bytes of chunks.
    pub fn open(dir: &Path, limit: u64) -> std::io::Result<Arc<ChunkCache>> {
        std::fs::create_dir_all(dir)?;
        Ok(Arc::new(ChunkCache {
            dir: dir.to_path_buf(),
            limit,
            table: Mutex::new(Table {
                lru: lru::LruCache::unbounded(),
                used: 0,
                pinned: HashMap::new(),
                fetching: HashSet::new(),
            }),
            changed: Condvar::new(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().expect("not poisoned")
    }

    /// The bound, in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes of chunks present.
    pub fn used(&self) -> u64 {
        self.lock().used
    }

    /// Waits (at most `timeout`) until chunk `key` is present (pinned for this reader) or
    /// nobody fetches it (then this reader does). `None`: the timeout passed.
    pub fn acquire(&self, key: &Key, timeout: Duration) -> Option<Slot> {
        let deadline = Instant::now() + timeout;
        let mut t = self.lock();
        loop {
            if t.lru.get(key).is_some() {
                *t.pinned.entry(key.clone()).or_default() += 1;
                return Some(Slot::Ready);
            }
            if t.fetching.insert(key.clone()) {
                return Some(Slot::Fetch);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            t = self.changed.wait_timeout(t, left).expect("not poisoned").0;
        }
    }

    /// Takes chunk `key` to fetch if it is neither present nor being fetched (then
    /// [`BlobCache::store`] or [`ChunkCache::abandon`] it); never waits.
    pub fn try_fetch(&self, key: &Key) -> bool {
        let mut t = self.lock();
        if t.lru.peek(key).is_some() {
            return false;
        }
        t.fetching.insert(key.clone())
    }

    /// Unpins a chunk [`Slot::Ready`] (or a store) gave; evicts if the cache is over its
    /// bound now that it may go.
    pub fn release(&self, key: &Key) {
        let victims = {
            let mut t = self.lock();
            if let Some(n) = t.pinned.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    t.pinned.remove(key);
                }
            }
            self.choose_victims(&mut t)
        };
        self.evict(victims);
    }

    /// Gives up fetching `key` (the fetch failed); a waiting reader tries in turn.
    pub fn abandon(&self, key: &Key) {
        self.lock().fetching.remove(key);
        self.changed.notify_all();
    }

    /// Records `key` (`len` bytes) present and pinned, then evicts while over the bound.
    fn insert(&self, key: Key, len: u64) {
        let victims = {
            let mut t = self.lock();
            t.fetching.remove(&key);
            if t.lru.put(key.clone(), len).is_none() {
                t.used += len;
            }
            *t.pinned.entry(key).or_default() += 1;
            self.choose_victims(&mut t)
        };
        self.changed.notify_all();
        self.evict(victims);
    }

    /// Takes unpinned least recently used chunks out of the table while the cache is over
    /// its bound. Pinned chunks stay: a read larger than the bound overflows it until the
    /// read ends.
    fn choose_victims(&self, t: &mut Table) -> Vec<Key> {
        let mut victims = Vec::new();
        while t.used > self.limit {
            let Some(victim) = t
                .lru
                .iter()
                .rev()
                .map(|(k, _)| k.clone())
                .find(|k| !t.pinned.contains_key(k))
            else {
                break;
            };
            t.used -= t.lru.pop(&victim).unwrap_or(0);
            victims.push(victim);
        }
        victims
    }

    /// Marks the victims absent on disk, then punches their holes.
    fn evict(&self, victims: Vec<Key>) {
        for (blob, n) in victims {
            // Best effort: a chunk whose hole is not punched is still marked absent.
            if let Err(e) = self.punch(&blob, n) {
                log::warn!("evicting chunk {n} of blob {blob}: {e}");
            }
        }
    }

    fn punch(&self, blob: &str, n: u32) -> std::io::Result<()> {
        let dir = self.dir.join(blob);
        // Its own open file description: its lock conflicts with every reader's.
        let ready = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join("ready"))?;
        if !lock_byte(&ready, n, LockKind::Exclusive)? {
            // Another process reads it right now: it stays, present.
            return Ok(());
        }
        ready.write_all_at(&[0], u64::from(n))?;
        ready.sync_data()?;
        let data = OpenOptions::new().write(true).open(dir.join("data"))?;
        let chunks = std::fs::read(dir.join("chunks"))?;
        let at = n as usize * 16;
        let (Some(off), Some(len)) = (chunks.get(at..at + 8), chunks.get(at + 8..at + 16)) else {
            return Ok(());
        };
        let off = i64::from_le_bytes(off.try_into().expect("8 bytes"));
        let len = i64::from_le_bytes(len.try_into().expect("8 bytes"));
        fallocate(
            data.as_raw_fd(),
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            off,
            len,
        )?;
        Ok(())
    }
}

enum LockKind {
    /// A reader: waits for an evictor (who holds the lock only to clear and punch).
    Shared,
    /// An evictor: does not wait; `false` when a reader holds the byte.
    Exclusive,
}

/// Locks byte `n` of `file` (an open file description lock, released on close or
/// [`unlock_byte`]). `Ok(false)`: an exclusive lock that another holder prevents.
fn lock_byte(file: &File, n: u32, kind: LockKind) -> std::io::Result<bool> {
    use nix::fcntl::{fcntl, FcntlArg};
    let lock = nix::libc::flock {
        l_type: match kind {
            LockKind::Shared => nix::libc::F_RDLCK,
            LockKind::Exclusive => nix::libc::F_WRLCK,
        } as nix::libc::c_short,
        l_whence: nix::libc::SEEK_SET as nix::libc::c_short,
        l_start: i64::from(n),
        l_len: 1,
        l_pid: 0,
    };
    let arg = match kind {
        LockKind::Shared => FcntlArg::F_OFD_SETLKW(&lock),
        LockKind::Exclusive => FcntlArg::F_OFD_SETLK(&lock),
    };
    match fcntl(file.as_raw_fd(), arg) {
        Ok(_) => Ok(true),
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn unlock_byte(file: &File, n: u32) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg};
    let lock = nix::libc::flock {
        l_type: nix::libc::F_UNLCK as nix::libc::c_short,
        l_whence: nix::libc::SEEK_SET as nix::libc::c_short,
        l_start: i64::from(n),
        l_len: 1,
        l_pid: 0,
    };
    fcntl(file.as_raw_fd(), FcntlArg::F_OFD_SETLK(&lock))?;
    Ok(())
}

/// This process fetches a chunk; dropped (after [`BlobCache::store`] or a failure), the
/// others may look again.
pub struct Claim {
    _fd: File,
}

/// What [`BlobCache::claim`] found.
pub enum Claimed {
    /// This process fetches it.
    Mine(Claim),
    /// Another process fetched it meanwhile: present and pinned.
    Present,
    /// Another process fetches it now.
    Busy,
}

/// One blob's files in the cache.
#[derive(Debug)]
pub struct BlobCache {
    cache: Arc<ChunkCache>,
    blob: Arc<str>,
    data: File,
    ready: File,
    ready_path: PathBuf,
    /// `fetching`: byte `n` locked by the process fetching chunk `n`, so that another
    /// process waits for it instead of fetching it too.
    claims_path: PathBuf,
    /// Descriptions of `ready` for readers' locks: one per concurrent read, as threads
    /// sharing one description would share (and release) each other's locks.
    readers: Mutex<Vec<File>>,
}

impl BlobCache {
    /// Ends a read's hold on this blob's chunks: the claims on `claimed` chunks it did not
    /// get are given up (another reader may fetch them), the `pinned` ones released.
    pub fn let_go(&self, claimed: &[u32], pinned: Vec<u32>) {
        for n in claimed {
            if !pinned.contains(n) {
                self.cache().abandon(&self.key(*n));
            }
        }
        for n in pinned {
            self.cache().release(&self.key(n));
        }
    }

    /// Opens (creating) the files of blob `hex`, whose chunk table is `chunks`, and enters
    /// the chunks its readiness bytes say are present into the cache's table.
    pub fn open(cache: &Arc<ChunkCache>, hex: &str, chunks: &[Chunk]) -> std::io::Result<Self> {
        let dir = cache.dir.join(hex);
        std::fs::create_dir_all(&dir)?;
        let open = |name: &str| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(dir.join(name))
        };
        let data = open("data")?;
        let ready = open("ready")?;
        open("fetching")?;
        // Where each chunk lies, for eviction by another layer's reader.
        let mut table = Vec::with_capacity(chunks.len() * 16);
        for c in chunks {
            table.extend_from_slice(&c.offset.to_le_bytes());
            table.extend_from_slice(&c.len.to_le_bytes());
        }
        // Atomic (temp, sync, rename): eviction punches where this table says, so a torn
        // table must never be read.
        crate::store::fsutil::atomic_write(&dir, &dir.join("chunks"), &table)
            .map_err(std::io::Error::other)?;
        ready.set_len(chunks.len() as u64)?;
        let mut bits = vec![0u8; chunks.len()];
        ready.read_exact_at(&mut bits, 0)?;
        let blob: Arc<str> = Arc::from(hex);
        {
            let mut t = cache.lock();
            for (n, c) in chunks.iter().enumerate() {
                let key = (blob.clone(), n as u32);
                if bits[n] == 1 && t.lru.put(key, c.len).is_none() {
                    t.used += c.len;
                }
            }
        }
        Ok(BlobCache {
            cache: cache.clone(),
            blob,
            data,
            ready,
            ready_path: dir.join("ready"),
            claims_path: dir.join("fetching"),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// The key of chunk `n` of this blob.
    pub fn key(&self, n: u32) -> Key {
        (self.blob.clone(), n)
    }

    /// The cache this blob's chunks count against.
    pub fn cache(&self) -> &ChunkCache {
        &self.cache
    }

    /// Keeps chunk `n`'s verified bytes: written and synced, then marked present (and
    /// pinned for the caller, who releases it after reading).
    pub fn store(&self, n: u32, chunk: &Chunk, bytes: &[u8]) -> std::io::Result<()> {
        let done = self
            .data
            .write_all_at(bytes, chunk.offset)
            .and_then(|_| self.data.sync_data())
            .and_then(|_| self.ready.write_all_at(&[1], u64::from(n)));
        match done {
            Ok(()) => {
                self.cache.insert(self.key(n), chunk.len);
                Ok(())
            }
            Err(e) => {
                self.cache.abandon(&self.key(n));
                Err(e)
            }
        }
    }

    /// Claims the fetch of chunk `n` (`len` bytes) among processes, once this process's
    /// table gave it to this reader ([`Slot::Fetch`]). Another process fetching it is
    /// waited for, up to `wait` (`None`: not at all, [`Claimed::Busy`]); if it turns up
    /// present, it is entered in the table, pinned ([`Claimed::Present`]).
    pub fn claim(&self, n: u32, len: u64, wait: Option<Duration>) -> std::io::Result<Claimed> {
        let deadline = wait.map(|w| Instant::now() + w);
        loop {
            let fd = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.claims_path)?;
            if lock_byte(&fd, n, LockKind::Exclusive)? {
                let mut flag = [0u8];
                self.ready.read_exact_at(&mut flag, u64::from(n))?;
                if flag[0] == 1 {
                    self.cache.insert(self.key(n), len);
                    return Ok(Claimed::Present);
                }
                return Ok(Claimed::Mine(Claim { _fd: fd }));
            }
            match deadline {
                None => return Ok(Claimed::Busy),
                Some(d) if Instant::now() >= d => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("chunk {n}: another process's fetch did not end in time"),
                    ))
                }
                Some(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    /// Reads `buf.len()` bytes at `offset` of chunk `n`, which this process's table says is
    /// present. `Ok(false)`: another process evicted it (fetch it again).
    pub fn read_chunk(&self, n: u32, buf: &mut [u8], offset: u64) -> std::io::Result<bool> {
        let spare = self.readers.lock().expect("not poisoned").pop();
        let fd = match spare {
            Some(f) => f,
            None => File::open(&self.ready_path)?,
        };
        lock_byte(&fd, n, LockKind::Shared)?;
        let mut flag = [0u8];
        let read = fd
            .read_exact_at(&mut flag, u64::from(n))
            .and_then(|_| match flag[0] {
                1 => self.data.read_exact_at(buf, offset).map(|_| true),
                _ => Ok(false),
            });
        let unlocked = unlock_byte(&fd, n);
        self.readers.lock().expect("not poisoned").push(fd);
        let present = read?;
        unlocked?;
        Ok(present)
    }
}
