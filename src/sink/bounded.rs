//! The one way bedrock-keyd reads a file or a stream: bounded by the bytes actually
//! read, after checking the file type on the open descriptor.
//!
//! `stat` sizes lie: a sparse file claims 64 GiB it would take minutes to read (and an
//! allocation of its claimed size aborts the process), `/dev/zero` and `/proc` files
//! claim 0 and never end, and a FIFO blocks the reader until some other process
//! writes, which freezes a daemon's whole runtime. So every file is opened with
//! `O_NONBLOCK` (a FIFO's open does not wait for a writer), `fstat`ed, refused unless
//! it is a regular file, and read to at most `max + 1` bytes: one byte more than
//! allowed means "too large", whatever the size claims. Streams (`inspect -` on stdin)
//! get the same cap.
//!
//! Used for sinks and env-files (through [`super::atomic`]), the config, pid files,
//! and the inputs of `inspect` and `status`.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use zeroize::Zeroizing;

use super::path::{describe_type, is_regular};

/// Reads all of `reader`, refusing more than `max` bytes.
pub fn read_stream(reader: impl Read, max: u64) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::new());
    reader.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(too_large(max));
    }
    Ok(out)
}

/// Reads an open file: refused unless it is a regular file, or when it holds more
/// than `max` bytes.
pub fn read_file(file: &File, max: u64) -> io::Result<Zeroizing<Vec<u8>>> {
    check_regular(file)?;
    read_stream(file, max)
}

/// Opens `path` without waiting on a FIFO and reads it as [`read_file`] does. For
/// paths given by the user running the command (`inspect --file`, `status`); paths
/// followed with privileges go through [`super::path`] first.
pub fn read_path(path: &Path, max: u64) -> io::Result<Zeroizing<Vec<u8>>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY).bits())
        .open(path)?;
    read_file(&file, max)
}

/// Refuses anything but a regular file, judged on the open descriptor.
pub fn check_regular(file: &File) -> io::Result<()> {
    let stat = nix::sys::stat::fstat(file)?;
    if is_regular(&stat) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file (it is {})", describe_type(&stat)),
        ))
    }
}

fn too_large(max: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("larger than {max} bytes, which no file of this kind is"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_up_to_the_cap_and_refuses_one_byte_more() {
        assert_eq!(read_stream(&b"abcd"[..], 4).unwrap().as_slice(), b"abcd");
        let err = read_stream(&b"abcde"[..], 4).unwrap_err();
        assert!(err.to_string().contains("larger than 4 bytes"), "{err}");
        let err = read_stream(io::repeat(0), 1 << 16).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn refuses_devices_and_directories() {
        let err = read_path(Path::new("/dev/zero"), 10).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
        let err = read_path(Path::new("/"), 10).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
