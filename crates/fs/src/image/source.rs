//! Where one layer's tar bytes come from: a plain tar read in place on host disk, or a
//! gzip-compressed tar decompressed once into memory.
//!
//! A plain tar can be indexed by seeking past file data and read later with positioned reads,
//! so it costs no memory for its contents. gzip cannot be read at an offset: reaching byte
//! `n` means inflating every byte before it. Rather than unpack a compressed image to host
//! disk (a place the run would have to own, clean up and keep other processes out of), it is
//! inflated once, at mount time, into one buffer that the index then addresses exactly as it
//! addresses a plain tar file. The buffer is bounded by the caller's limit (by default
//! [`MAX_DECOMPRESSED_BYTES`](super::MAX_DECOMPRESSED_BYTES)): it grows only as decompressed
//! bytes arrive and never beyond the limit, so a gzip bomb (a few kilobytes claiming
//! gigabytes) is refused once the limit is reached, having cost at most the limit.
//!
//! A compressed image is recognised by the gzip magic bytes `1f 8b` at its start, not by its
//! name: the two bytes cannot begin a tar (whose first bytes are an entry name, and `8b` does
//! not start a UTF-8 character), so the test is unambiguous.

use std::fs::File;
use std::io::{self, Cursor, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use flate2::read::MultiGzDecoder;

use super::ImageError;

/// The first two bytes of every gzip member (RFC 1952).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Decompressed bytes the buffer starts with, and its smallest growth step: a tenth of a
/// small image, and enough that tiny images do not reallocate many times.
const FIRST_CHUNK: usize = 64 << 10;

/// One layer's bytes.
pub(super) enum Source {
    /// A plain tar: read with positioned reads, never through the shared file cursor once
    /// indexed, so that many readers need no lock.
    Disk { file: File, len: u64 },
    /// A gzip-compressed tar, decompressed.
    Memory(Box<[u8]>),
}

impl Source {
    /// Opens the image at `path`, decompressing it if it is gzip-compressed, into at most
    /// `max_decompressed` bytes.
    pub(super) fn open(path: &Path, max_decompressed: u64) -> Result<Source, ImageError> {
        let io_error = |action, source| ImageError::Io {
            image: path.to_owned(),
            action,
            source,
        };
        // Check before opening: opening a FIFO would block until a writer came along.
        let pre = std::fs::metadata(path).map_err(|e| io_error("read its metadata", e))?;
        if !pre.is_file() {
            return Err(ImageError::NotAFile {
                image: path.to_owned(),
            });
        }
        let file = File::open(path).map_err(|e| io_error("open it", e))?;
        let metadata = file
            .metadata()
            .map_err(|e| io_error("read its metadata", e))?;
        if !metadata.is_file() {
            return Err(ImageError::NotAFile {
                image: path.to_owned(),
            });
        }
        // A positioned read: the indexer reads a plain tar from the cursor, which must stay at 0.
        let mut magic = [0; 2];
        let sniffed = read_full_at(&file, &mut magic, 0).map_err(|e| io_error("read it", e))?;
        if sniffed == magic.len() && magic == GZIP_MAGIC {
            return gunzip(path, &file, max_decompressed).map(Source::Memory);
        }
        Ok(Source::Disk {
            file,
            len: metadata.len(),
        })
    }

    /// The length of the tar: the file's size, or the decompressed size.
    pub(super) fn len(&self) -> u64 {
        match self {
            Source::Disk { len, .. } => *len,
            Source::Memory(bytes) => bytes.len() as u64,
        }
    }

    /// Whether the tar was decompressed into memory.
    pub(super) fn is_compressed(&self) -> bool {
        matches!(self, Source::Memory(_))
    }

    /// Fills `buf` with the tar's bytes from `pos`; the caller has checked that they exist.
    pub(super) fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        match self {
            Source::Disk { file, .. } => {
                if read_full_at(file, buf, pos)? < buf.len() {
                    // The index said these bytes exist; if they no longer do, the image was
                    // changed underneath us, and a short read would pass for end of file.
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                Ok(())
            }
            Source::Memory(bytes) => {
                let start = usize::try_from(pos).map_err(|_| io::ErrorKind::UnexpectedEof)?;
                let data = start
                    .checked_add(buf.len())
                    .and_then(|end| bytes.get(start..end))
                    .ok_or(io::ErrorKind::UnexpectedEof)?;
                buf.copy_from_slice(data);
                Ok(())
            }
        }
    }

    /// Runs `index` over the tar's bytes as a reader that starts at offset 0 and can seek.
    pub(super) fn with_reader<T>(&self, index: impl FnOnce(&mut dyn ReadSeek) -> T) -> T {
        match self {
            Source::Disk { file, .. } => index(&mut &*file),
            Source::Memory(bytes) => index(&mut Cursor::new(&bytes[..])),
        }
    }
}

/// What the indexer reads a tar through.
pub(super) trait ReadSeek: Read + io::Seek {}

impl<T: Read + io::Seek> ReadSeek for T {}

/// Reads from `pos` until `buf` is full or the file ends; returns the bytes read.
fn read_full_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Decompresses the gzip file `file` (every member, as `gzip -d` does) into a buffer of at
/// most `limit` bytes.
///
/// The buffer is grown by hand rather than by `read_to_end`, whose doubling could reserve up
/// to twice the limit; growth is fallible, so a host short of memory gets an error rather
/// than an abort.
fn gunzip(path: &Path, file: &File, limit: u64) -> Result<Box<[u8]>, ImageError> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut decoder = MultiGzDecoder::new(file);
    let mut buf: Vec<u8> = Vec::new();
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            if filled == limit {
                // Full: the image fits only if the stream ends exactly here.
                let mut probe = [0; 1];
                match read_retrying(&mut decoder, &mut probe) {
                    Ok(0) => break,
                    Ok(_) => {
                        return Err(ImageError::DecompressedTooLarge {
                            image: path.to_owned(),
                            limit: limit as u64,
                        });
                    }
                    Err(e) => return Err(gzip_error(path, e)),
                }
            }
            let grow = buf.len().max(FIRST_CHUNK).min(limit - filled);
            buf.try_reserve_exact(grow).map_err(|_| ImageError::Io {
                image: path.to_owned(),
                action: "hold it in memory once decompressed",
                source: io::ErrorKind::OutOfMemory.into(),
            })?;
            buf.resize(filled + grow, 0);
        }
        match read_retrying(&mut decoder, &mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => return Err(gzip_error(path, e)),
        }
    }
    buf.truncate(filled);
    Ok(buf.into_boxed_slice())
}

fn read_retrying(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match reader.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// A host error reading the file is the host's; anything else the decoder says is about the
/// data (a bad header, a corrupt deflate stream, a checksum mismatch, a cut-off end).
fn gzip_error(path: &Path, source: io::Error) -> ImageError {
    if source.raw_os_error().is_some() {
        ImageError::Io {
            image: path.to_owned(),
            action: "read it",
            source,
        }
    } else {
        ImageError::Gzip {
            image: path.to_owned(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(bytes).unwrap();
        file.flush().unwrap();
        file
    }

    fn contents(source: &Source) -> Vec<u8> {
        let mut buf = vec![0; source.len() as usize];
        source.read_exact_at(&mut buf, 0).unwrap();
        buf
    }

    #[test]
    fn gzip_is_recognised_by_its_magic_not_its_name() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let file = file_with(&gzip(&data));
        let source = Source::open(file.path(), 1 << 20).unwrap();
        assert!(source.is_compressed());
        assert_eq!(source.len(), data.len() as u64);
        assert_eq!(contents(&source), data);

        // Plain bytes are read in place, whatever they are.
        let file = file_with(b"\x1f not gzip");
        let source = Source::open(file.path(), 1 << 20).unwrap();
        assert!(!source.is_compressed());
        assert_eq!(contents(&source), b"\x1f not gzip");
        for short in [&b""[..], b"\x1f"] {
            let file = file_with(short);
            assert!(!Source::open(file.path(), 1 << 20).unwrap().is_compressed());
        }
    }

    #[test]
    fn every_gzip_member_is_decompressed() {
        let mut bytes = gzip(b"first member, ");
        bytes.extend(gzip(b"second member"));
        let file = file_with(&bytes);
        let source = Source::open(file.path(), 1 << 20).unwrap();
        assert_eq!(contents(&source), b"first member, second member");
    }

    #[test]
    fn decompression_stops_at_the_limit() {
        let data = vec![0; 10_000];
        let file = file_with(&gzip(&data));
        // Exactly the limit fits.
        let source = Source::open(file.path(), 10_000).unwrap();
        assert_eq!(source.len(), 10_000);
        // One byte less does not.
        let Err(err) = Source::open(file.path(), 9_999) else {
            panic!("a decompressed size over the limit was accepted");
        };
        assert!(
            matches!(err, ImageError::DecompressedTooLarge { limit: 9_999, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn reads_outside_the_buffer_fail() {
        let source = Source::Memory(b"0123456789".to_vec().into_boxed_slice());
        let mut buf = [0; 4];
        source.read_exact_at(&mut buf, 6).unwrap();
        assert_eq!(&buf, b"6789");
        for pos in [7, u64::MAX] {
            let err = source.read_exact_at(&mut buf, pos).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        }
    }
}
