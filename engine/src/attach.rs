//! The attach protocol between a container's monitor and `strata attach` (also `start -a`
//! on a running container), on the monitor's `containers/<id>/attach.sock`:
//!
//! ```text
//! monitor ──ToClient::Output(Out|Err, bytes)…──▶ client   (the container's output)
//!         ──ToClient::Exit(status)────────────▶          (the container ended)
//! monitor ◀──ToMonitor::Input(bytes)…────────── client   (typed input, with -i)
//!         ◀──ToMonitor::CloseInput──────────────          (stdin's EOF)
//!         ◀──ToMonitor::Resize { rows, cols }───          (the client's terminal size)
//! ```
//!
//! On the wire each message is a frame `[kind u8][len u32 BE][payload]`; frames over 1 MiB
//! are refused. A client the monitor is started with (a foreground `run -it`, which must be
//! able to detach and so cannot be the monitor itself) is connected before the container
//! starts, and sends its terminal's size first.
//!
//! [`DetachKeys`] is the client's side of detaching: docker's `--detach-keys` sequence
//! (ctrl-p ctrl-q by default) taken out of a terminal's input.

use std::io::{self, Read, Write};

/// Which of the container's outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

impl Stream {
    /// docker's json-file name for it.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Out => "stdout",
            Stream::Err => "stderr",
        }
    }
}

/// From the monitor to an attached client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToClient {
    Output(Stream, Vec<u8>),
    /// The container's exit status.
    Exit(i32),
}

/// From an attached client to the monitor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToMonitor {
    Input(Vec<u8>),
    CloseInput,
    Resize { rows: u16, cols: u16 },
}

const OUT: u8 = 1;
const ERR: u8 = 2;
const EXIT: u8 = 3;
const IN: u8 = 4;
const CLOSE_IN: u8 = 5;
const RESIZE: u8 = 6;
const MAX_FRAME: usize = 1 << 20;

fn write_frame(w: &mut impl Write, kind: u8, data: &[u8]) -> io::Result<()> {
    // One write per frame: writers on other threads never interleave inside it.
    let mut buf = Vec::with_capacity(5 + data.len());
    buf.push(kind);
    buf.extend_from_slice(&(data.len() as u32).to_be_bytes());
    buf.extend_from_slice(data);
    w.write_all(&buf)
}

/// One frame; `None` at EOF.
fn read_frame(r: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::other("attach frame too large"));
    }
    let mut data = vec![0u8; len];
    r.read_exact(&mut data)?;
    Ok(Some((head[0], data)))
}

fn bad(kind: u8) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected attach frame {kind}"),
    )
}

impl ToClient {
    pub fn send(&self, w: &mut impl Write) -> io::Result<()> {
        match self {
            ToClient::Output(Stream::Out, d) => write_frame(w, OUT, d),
            ToClient::Output(Stream::Err, d) => write_frame(w, ERR, d),
            ToClient::Exit(code) => write_frame(w, EXIT, code.to_string().as_bytes()),
        }
    }

    /// The next message; `None` when the monitor closed the connection.
    pub fn recv(r: &mut impl Read) -> io::Result<Option<ToClient>> {
        let Some((kind, data)) = read_frame(r)? else {
            return Ok(None);
        };
        Ok(Some(match kind {
            OUT => ToClient::Output(Stream::Out, data),
            ERR => ToClient::Output(Stream::Err, data),
            EXIT => ToClient::Exit(
                String::from_utf8_lossy(&data)
                    .parse()
                    .map_err(|_| bad(kind))?,
            ),
            k => return Err(bad(k)),
        }))
    }
}

impl ToMonitor {
    pub fn send(&self, w: &mut impl Write) -> io::Result<()> {
        match self {
            ToMonitor::Input(d) => write_frame(w, IN, d),
            ToMonitor::CloseInput => write_frame(w, CLOSE_IN, b""),
            ToMonitor::Resize { rows, cols } => {
                let mut b = rows.to_be_bytes().to_vec();
                b.extend_from_slice(&cols.to_be_bytes());
                write_frame(w, RESIZE, &b)
            }
        }
    }

    /// The next message; `None` when the client went away.
    pub fn recv(r: &mut impl Read) -> io::Result<Option<ToMonitor>> {
        let Some((kind, data)) = read_frame(r)? else {
            return Ok(None);
        };
        Ok(Some(match (kind, data.len()) {
            (IN, _) => ToMonitor::Input(data),
            (CLOSE_IN, 0) => ToMonitor::CloseInput,
            (RESIZE, 4) => ToMonitor::Resize {
                rows: u16::from_be_bytes([data[0], data[1]]),
                cols: u16::from_be_bytes([data[2], data[3]]),
            },
            (k, _) => return Err(bad(k)),
        }))
    }
}

/// The detach sequence in a terminal's input: a prefix of it is held back until the next
/// key shows whether the sequence goes on (then it is passed on, as docker does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetachKeys {
    keys: Vec<u8>,
    held: usize,
}

impl Default for DetachKeys {
    /// docker's default: ctrl-p ctrl-q.
    fn default() -> DetachKeys {
        DetachKeys {
            keys: vec![0x10, 0x11],
            held: 0,
        }
    }
}

impl DetachKeys {
    /// docker's `--detach-keys` syntax: comma-separated keys, each one character or
    /// `ctrl-X` with X one of `a`-`z`, `@`, `[`, `\`, `]`, `^`, `_`.
    pub fn parse(spec: &str) -> Result<DetachKeys, crate::Error> {
        let bad = || crate::Error::InvalidFlag(format!("Invalid detach keys ({spec}) provided"));
        let mut keys = Vec::new();
        for key in spec.split(',') {
            let code = match key.as_bytes() {
                [c] => *c,
                _ => match key
                    .to_ascii_lowercase()
                    .strip_prefix("ctrl-")
                    .map(str::as_bytes)
                {
                    Some([c @ b'a'..=b'z']) => c - b'a' + 1,
                    Some([b'@']) => 0,
                    Some([c @ (b'[' | b'\\' | b']' | b'^' | b'_')]) => c - b'[' + 27,
                    _ => return Err(bad()),
                },
            };
            keys.push(code);
        }
        Ok(DetachKeys { keys, held: 0 })
    }

    /// The input to pass on, and whether the sequence was typed (input after it is dropped).
    pub fn filter(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            // What is held plus this key: its longest end that starts the sequence stays
            // held, the rest goes on.
            let mut pending = self.keys[..self.held].to_vec();
            pending.push(b);
            let mut k = pending.len().min(self.keys.len());
            while k > 0 && pending[pending.len() - k..] != self.keys[..k] {
                k -= 1;
            }
            out.extend_from_slice(&pending[..pending.len() - k]);
            self.held = k;
            if self.held == self.keys.len() {
                self.held = 0;
                return (out, true);
            }
        }
        (out, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_p_ctrl_q_detaches_and_other_input_passes() {
        let mut k = DetachKeys::default();
        assert_eq!(k.filter(b"ls\n"), (b"ls\n".to_vec(), false));
        assert_eq!(k.filter(b"a\x10"), (b"a".to_vec(), false));
        assert_eq!(k.filter(b"\x10"), (b"\x10".to_vec(), false));
        assert_eq!(k.filter(b"b"), (b"\x10b".to_vec(), false));
        assert_eq!(k.filter(b"x\x10\x11rest"), (b"x".to_vec(), true));
        let mut k = DetachKeys::default();
        assert_eq!(k.filter(b"\x10"), (Vec::new(), false));
        assert_eq!(k.filter(b"\x11"), (Vec::new(), true));
    }

    #[test]
    fn detach_keys_parse_as_docker() {
        let keys = |s: &str| DetachKeys::parse(s).unwrap().keys;
        assert_eq!(keys("ctrl-p,ctrl-q"), [0x10, 0x11]);
        assert_eq!(keys("ctrl-a,x"), [1, b'x']);
        assert_eq!(
            keys("ctrl-@,ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_"),
            [0, 27, 28, 29, 30, 31]
        );
        assert_eq!(keys("ctrl-Z"), [26]);
        for bad in ["", "ctrl-", "ctrl-1", "ab", "ctrl-p,,ctrl-q", "alt-x"] {
            let err = DetachKeys::parse(bad).unwrap_err().to_string();
            assert_eq!(err, format!("Invalid detach keys ({bad}) provided"));
        }
        // A single key; a three-key sequence whose start repeats.
        let mut k = DetachKeys::parse("ctrl-e").unwrap();
        assert_eq!(k.filter(b"ab\x05cd"), (b"ab".to_vec(), true));
        let mut k = DetachKeys::parse("a,a,b").unwrap();
        assert_eq!(k.filter(b"xaac"), (b"xaac".to_vec(), false));
        assert_eq!(k.filter(b"aaab"), (b"a".to_vec(), true));
    }

    #[test]
    fn messages_round_trip() {
        let mut buf = Vec::new();
        let to_client = [
            ToClient::Output(Stream::Out, b"hello".to_vec()),
            ToClient::Output(Stream::Err, b"".to_vec()),
            ToClient::Exit(137),
        ];
        for m in &to_client {
            m.send(&mut buf).unwrap();
        }
        let mut r = &buf[..];
        for m in &to_client {
            assert_eq!(ToClient::recv(&mut r).unwrap().as_ref(), Some(m));
        }
        assert_eq!(ToClient::recv(&mut r).unwrap(), None);
        let mut buf = Vec::new();
        let to_monitor = [
            ToMonitor::Input(b"ls\n".to_vec()),
            ToMonitor::Resize { rows: 24, cols: 80 },
            ToMonitor::CloseInput,
        ];
        for m in &to_monitor {
            m.send(&mut buf).unwrap();
        }
        let mut r = &buf[..];
        for m in &to_monitor {
            assert_eq!(ToMonitor::recv(&mut r).unwrap().as_ref(), Some(m));
        }
    }

    #[test]
    fn bad_frames_are_refused() {
        let huge = [OUT, 0xff, 0xff, 0xff, 0xff];
        assert!(ToClient::recv(&mut &huge[..]).is_err());
        let wrong_way = [IN, 0, 0, 0, 0];
        assert!(ToClient::recv(&mut &wrong_way[..]).is_err());
        let short_resize = [RESIZE, 0, 0, 0, 1, 9];
        assert!(ToMonitor::recv(&mut &short_resize[..]).is_err());
        let truncated = [OUT, 0, 0, 0, 9, b'x'];
        assert!(ToClient::recv(&mut &truncated[..]).is_err());
    }
}
