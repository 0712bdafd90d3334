//! A directory stream with `telldir`/`seekdir`, which std does not expose: the tests check
//! that a union's readdir offsets stay valid.

use std::ffi::{CStr, CString, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::ptr::NonNull;

pub struct DirStream(NonNull<libc::DIR>);

impl DirStream {
    pub fn open(path: &Path) -> io::Result<DirStream> {
        let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
        // SAFETY: `c` is NUL-terminated; a null result is checked.
        #[allow(unsafe_code)]
        let dir = unsafe { libc::opendir(c.as_ptr()) };
        NonNull::new(dir)
            .map(DirStream)
            .ok_or_else(io::Error::last_os_error)
    }

    /// The next name (`.` and `..` included), or `None` at the end.
    pub fn next_name(&mut self) -> io::Result<Option<OsString>> {
        // readdir reports errors only through errno, so clear it first.
        nix::errno::Errno::clear();
        // SAFETY: the stream is open; the entry is copied out before the next call.
        #[allow(unsafe_code)]
        let name = unsafe {
            let entry = libc::readdir(self.0.as_ptr());
            if entry.is_null() {
                None
            } else {
                Some(CStr::from_ptr((*entry).d_name.as_ptr()).to_bytes().to_vec())
            }
        };
        match name {
            Some(bytes) => Ok(Some(OsString::from_vec(bytes))),
            None => match nix::errno::Errno::last_raw() {
                0 => Ok(None),
                e => Err(io::Error::from_raw_os_error(e)),
            },
        }
    }

    pub fn tell(&mut self) -> i64 {
        // SAFETY: the stream is open.
        #[allow(unsafe_code)]
        unsafe {
            libc::telldir(self.0.as_ptr())
        }
    }

    pub fn seek(&mut self, position: i64) {
        // SAFETY: the stream is open; `position` came from `tell` on this stream.
        #[allow(unsafe_code)]
        unsafe {
            libc::seekdir(self.0.as_ptr(), position)
        }
    }

    /// Every remaining name except `.` and `..`.
    pub fn rest(&mut self) -> io::Result<Vec<OsString>> {
        let mut names = Vec::new();
        while let Some(name) = self.next_name()? {
            if name != "." && name != ".." {
                names.push(name);
            }
        }
        Ok(names)
    }
}

impl Drop for DirStream {
    fn drop(&mut self) {
        // SAFETY: the stream is open and not used after this.
        #[allow(unsafe_code)]
        unsafe {
            libc::closedir(self.0.as_ptr());
        }
    }
}
