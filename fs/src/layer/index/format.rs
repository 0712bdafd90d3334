//! The on-disk layout of `index`, shared by the writer (`build.rs`) and the reader
//! (`layer.rs`). Everything is little-endian and read field by field from the mapped bytes,
//! so no alignment or `unsafe` transmute is involved.
//!
//! ```text
//! header   96 bytes   magic "STRATAIX", version, counts, section offsets (below)
//! entries  24 bytes each, breadth-first from the root (entry 0): each directory's children
//!          are one contiguous run sorted by name bytes, so a lookup is a binary search
//! inodes   56 bytes each: mode, ids, nlink, size, times, data offset | link | rdev, xattrs;
//!          hard links are entries sharing one inode
//! names    entry names, concatenated (an entry holds offset + length)
//! extra    symlink targets and xattr blocks (u32 count, then per xattr u32 key length,
//!          u32 value length, key, value)
//! ```

/// First bytes of every index.
pub const MAGIC: [u8; 8] = *b"STRATAIX";
/// The layout version this code writes and reads. Bump on any change of the records.
pub const VERSION: u32 = 1;
pub const HEADER_LEN: usize = 96;
pub const ENTRY_LEN: usize = 24;
pub const INODE_LEN: usize = 56;

/// Entry flag: a whiteout for this name (either lower format: OCI `.wh.NAME` or a char 0/0).
pub const FLAG_WHITEOUT: u8 = 1;
/// Entry flag: an opaque directory (`.wh..wh..opq` or an `*.overlay.opaque=y` xattr).
pub const FLAG_OPAQUE: u8 = 2;
/// The inode number of an entry that has none (a whiteout).
pub const NO_INODE: u32 = u32::MAX;

/// The fixed part at offset 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub entries: u64,
    pub inodes: u64,
    pub names_len: u64,
    pub extra_len: u64,
    /// Size of the `data` file: the layer tar, byte for byte.
    pub data_len: u64,
    pub entries_off: u64,
    pub inodes_off: u64,
    pub names_off: u64,
    pub extra_off: u64,
}

/// Why a header was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderProblem {
    Magic,
    Version(u32),
    /// A section or count does not fit in the file.
    Bounds(&'static str),
}

/// One name in a directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryRec {
    pub name_off: u32,
    pub name_len: u8,
    pub flags: u8,
    pub inode: u32,
    /// For a directory: its children are entries `first_child .. first_child + child_count`.
    pub first_child: u32,
    pub child_count: u32,
    pub parent: u32,
}

/// One file: what `stat` shows, and where its contents are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InodeRec {
    /// `st_mode`: type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime_nsec: u32,
    /// Bytes of this inode's xattr block in `extra` (0: none).
    pub xattrs_len: u32,
    /// Regular file: its length; symlink: the target's length.
    pub size: u64,
    /// Regular file: offset of its contents in `data`; symlink: offset of the target in
    /// `extra`; char/block device: `rdev`.
    pub data: u64,
    pub mtime: i64,
    pub xattrs_off: u64,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        let fields = [
            self.entries,
            self.inodes,
            self.names_len,
            self.extra_len,
            self.data_len,
            self.entries_off,
            self.inodes_off,
            self.names_off,
            self.extra_off,
        ];
        for (i, v) in fields.iter().enumerate() {
            b[16 + 8 * i..24 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Reads and checks the header of an index of `file_len` bytes: every section must lie
    /// inside the file, so later reads of records only check their own indexes.
    pub fn decode(b: &[u8]) -> Result<Header, HeaderProblem> {
        if b.len() < 16 || b[0..8] != MAGIC {
            return Err(HeaderProblem::Magic);
        }
        let version = u32_at(b, 8);
        if version != VERSION {
            return Err(HeaderProblem::Version(version));
        }
        if b.len() < HEADER_LEN || u32_at(b, 12) as usize != HEADER_LEN {
            return Err(HeaderProblem::Bounds("header"));
        }
        let f = |i: usize| u64_at(b, 16 + 8 * i);
        let h = Header {
            entries: f(0),
            inodes: f(1),
            names_len: f(2),
            extra_len: f(3),
            data_len: f(4),
            entries_off: f(5),
            inodes_off: f(6),
            names_off: f(7),
            extra_off: f(8),
        };
        let len = b.len() as u64;
        let fits = |off: u64, count: u64, size: u64| {
            count
                .checked_mul(size)
                .and_then(|n| n.checked_add(off))
                .is_some_and(|end| off >= HEADER_LEN as u64 && end <= len)
        };
        if h.entries == 0 || h.entries > u64::from(u32::MAX) || h.inodes >= u64::from(NO_INODE) {
            return Err(HeaderProblem::Bounds("counts"));
        }
        if !fits(h.entries_off, h.entries, ENTRY_LEN as u64) {
            return Err(HeaderProblem::Bounds("entries"));
        }
        if !fits(h.inodes_off, h.inodes, INODE_LEN as u64) {
            return Err(HeaderProblem::Bounds("inodes"));
        }
        if !fits(h.names_off, h.names_len, 1) {
            return Err(HeaderProblem::Bounds("names"));
        }
        if !fits(h.extra_off, h.extra_len, 1) {
            return Err(HeaderProblem::Bounds("extra"));
        }
        Ok(h)
    }
}

impl EntryRec {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.name_off.to_le_bytes());
        out.push(self.name_len);
        out.push(self.flags);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.inode.to_le_bytes());
        out.extend_from_slice(&self.first_child.to_le_bytes());
        out.extend_from_slice(&self.child_count.to_le_bytes());
        out.extend_from_slice(&self.parent.to_le_bytes());
    }

    /// `b` is exactly one record.
    pub fn decode(b: &[u8]) -> EntryRec {
        EntryRec {
            name_off: u32_at(b, 0),
            name_len: b[4],
            flags: b[5],
            inode: u32_at(b, 8),
            first_child: u32_at(b, 12),
            child_count: u32_at(b, 16),
            parent: u32_at(b, 20),
        }
    }
}

impl InodeRec {
    pub fn encode(&self, out: &mut Vec<u8>) {
        for v in [
            self.mode,
            self.uid,
            self.gid,
            self.nlink,
            self.mtime_nsec,
            self.xattrs_len,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.data.to_le_bytes());
        out.extend_from_slice(&self.mtime.to_le_bytes());
        out.extend_from_slice(&self.xattrs_off.to_le_bytes());
    }

    /// `b` is exactly one record.
    pub fn decode(b: &[u8]) -> InodeRec {
        InodeRec {
            mode: u32_at(b, 0),
            uid: u32_at(b, 4),
            gid: u32_at(b, 8),
            nlink: u32_at(b, 12),
            mtime_nsec: u32_at(b, 16),
            xattrs_len: u32_at(b, 20),
            size: u64_at(b, 24),
            data: u64_at(b, 32),
            mtime: u64_at(b, 40) as i64,
            xattrs_off: u64_at(b, 48),
        }
    }
}

/// One extended attribute: name, value.
pub type Xattr = (Box<[u8]>, Box<[u8]>);

/// Appends an xattr block for `xattrs` to `extra`.
pub fn encode_xattrs(xattrs: &[Xattr], extra: &mut Vec<u8>) {
    extra.extend_from_slice(&(xattrs.len() as u32).to_le_bytes());
    for (k, v) in xattrs {
        extra.extend_from_slice(&(k.len() as u32).to_le_bytes());
        extra.extend_from_slice(&(v.len() as u32).to_le_bytes());
        extra.extend_from_slice(k);
        extra.extend_from_slice(v);
    }
}

/// The (key, value) pairs of an xattr block; `None` when the block is malformed.
pub fn decode_xattrs(block: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    if block.is_empty() {
        return Some(Vec::new());
    }
    let count = u32_at(block.get(..4)?, 0) as usize;
    let mut out = Vec::with_capacity(count.min(64));
    let mut at = 4usize;
    for _ in 0..count {
        let head = block.get(at..at.checked_add(8)?)?;
        let (klen, vlen) = (u32_at(head, 0) as usize, u32_at(head, 4) as usize);
        at += 8;
        let key = block.get(at..at.checked_add(klen)?)?;
        at += klen;
        let value = block.get(at..at.checked_add(vlen)?)?;
        at += vlen;
        out.push((key, value));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let e = EntryRec {
            name_off: 7,
            name_len: 255,
            flags: FLAG_OPAQUE,
            inode: 3,
            first_child: 9,
            child_count: 2,
            parent: 1,
        };
        let mut b = Vec::new();
        e.encode(&mut b);
        assert_eq!(b.len(), ENTRY_LEN);
        assert_eq!(EntryRec::decode(&b), e);
        let i = InodeRec {
            mode: libc::S_IFREG | 0o4755,
            uid: 1,
            gid: 2,
            nlink: 3,
            mtime_nsec: 999_999_999,
            xattrs_len: 10,
            size: 1 << 40,
            data: 512,
            mtime: -5,
            xattrs_off: 11,
        };
        let mut b = Vec::new();
        i.encode(&mut b);
        assert_eq!(b.len(), INODE_LEN);
        assert_eq!(InodeRec::decode(&b), i);
        let x: Vec<Xattr> = vec![
            (b"user.a"[..].into(), b"1"[..].into()),
            (
                b"security.capability"[..].into(),
                vec![0u8, 1, 2][..].into(),
            ),
        ];
        let mut extra = Vec::new();
        encode_xattrs(&x, &mut extra);
        let back = decode_xattrs(&extra).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1], (&b"security.capability"[..], &[0u8, 1, 2][..]));
        assert!(decode_xattrs(&extra[..extra.len() - 1]).is_none());
    }

    #[test]
    fn header_checks_magic_version_and_bounds() {
        let h = Header {
            entries: 1,
            inodes: 1,
            entries_off: HEADER_LEN as u64,
            inodes_off: (HEADER_LEN + ENTRY_LEN) as u64,
            names_off: (HEADER_LEN + ENTRY_LEN + INODE_LEN) as u64,
            extra_off: (HEADER_LEN + ENTRY_LEN + INODE_LEN) as u64,
            ..Header::default()
        };
        let mut file = h.encode().to_vec();
        file.resize(HEADER_LEN + ENTRY_LEN + INODE_LEN, 0);
        assert_eq!(Header::decode(&file), Ok(h));
        assert_eq!(
            Header::decode(&file[..file.len() - 1]),
            Err(HeaderProblem::Bounds("inodes"))
        );
        let mut bad = file.clone();
        bad[0] = b'X';
        assert_eq!(Header::decode(&bad), Err(HeaderProblem::Magic));
        let mut v2 = file.clone();
        v2[8] = 2;
        assert_eq!(Header::decode(&v2), Err(HeaderProblem::Version(2)));
    }
}
