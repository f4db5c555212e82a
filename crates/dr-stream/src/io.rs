//! Small `Read`/`Write` adapters: counting, hashing, and cutting a stream into equal parts.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};

/// Counts bytes read.
pub struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R> CountingReader<R> {
    pub fn new(inner: R) -> Self {
        CountingReader { inner, count: 0 }
    }
    pub fn count(&self) -> u64 {
        self.count
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Hashes and counts what passes through to `inner`.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    /// (bytes, sha256 hex, inner)
    pub fn finish(self) -> (u64, String, W) {
        (self.count, hex::encode(self.hasher.finalize()), self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes and counts what is read from `inner`; remembers whether `inner` itself failed, so a
/// network error is not mistaken for corrupt data.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    source_error: Option<io::Error>,
}

impl<R> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
            source_error: None,
        }
    }
    /// The first error `inner` returned, if any.
    pub fn source_error(&mut self) -> Option<io::Error> {
        self.source_error.take()
    }
    /// (bytes, sha256 hex)
    pub fn finish(self) -> (u64, String) {
        (self.count, hex::encode(self.hasher.finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                self.count += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.source_error = Some(e);
                Err(copy)
            }
        }
    }
}

/// Cuts a byte stream into parts of exactly `part_size` bytes (the last may be shorter) and
/// hands each to `sink`. R2 requires equal non-trailing parts; this is where that holds.
///
/// A part's buffer is used again once whoever took the part (the upload) has let go of it:
/// a stream of any length allocates a handful of buffers, not one per part. Freeing a part
/// per part and allocating the next left glibc holding freed buffers beside the live ones
/// (a backup's RSS was twice its buffers).
pub struct PartWriter<F: FnMut(Bytes) -> io::Result<()>> {
    part_size: usize,
    buf: BytesMut,
    sink: F,
    parts: u64,
    /// The parts handed to `sink` most recently (references, not copies): their buffers,
    /// once no one else holds them.
    sent: VecDeque<Bytes>,
    /// Buffers allocated so far.
    allocated: u64,
}

/// Sent parts whose buffers are kept for reuse: more than a stream has queued and in
/// flight at once, so a buffer is let go only when the caller keeps parts longer than that.
const REUSED_BUFFERS: usize = 6;

impl<F: FnMut(Bytes) -> io::Result<()>> PartWriter<F> {
    pub fn new(part_size: usize, sink: F) -> Self {
        PartWriter {
            part_size,
            buf: BytesMut::with_capacity(part_size),
            sink,
            parts: 0,
            sent: VecDeque::with_capacity(REUSED_BUFFERS),
            allocated: 1,
        }
    }

    /// The buffer of a sent part nobody holds any more, else a new one.
    fn next_buffer(&mut self) -> BytesMut {
        for _ in 0..self.sent.len() {
            let Some(part) = self.sent.pop_front() else {
                break;
            };
            match part.try_into_mut() {
                Ok(mut buf) if buf.capacity() >= self.part_size => {
                    buf.clear();
                    return buf;
                }
                Ok(_) => {}
                Err(part) => self.sent.push_back(part),
            }
        }
        self.allocated += 1;
        BytesMut::with_capacity(self.part_size)
    }

    fn send(&mut self, part: Bytes) -> io::Result<()> {
        if self.sent.len() == REUSED_BUFFERS {
            self.sent.pop_front();
        }
        self.sent.push_back(part.clone());
        (self.sink)(part)
    }

    /// How many sent parts are kept for their buffers, how many buffers were allocated.
    #[cfg(test)]
    fn buffers(&self) -> (usize, u64) {
        (self.sent.len(), self.allocated)
    }
    /// Send the trailing part (if any); returns the number of parts sent.
    pub fn finish(mut self) -> io::Result<u64> {
        if !self.buf.is_empty() || self.parts == 0 {
            let part = self.buf.split().freeze();
            self.send(part)?;
            self.parts += 1;
        }
        Ok(self.parts)
    }
}

impl<F: FnMut(Bytes) -> io::Result<()>> Write for PartWriter<F> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let total = data.len();
        while !data.is_empty() {
            let room = self.part_size - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == self.part_size {
                let part = std::mem::take(&mut self.buf).freeze();
                self.send(part)?;
                self.buf = self.next_buffer();
                self.parts += 1;
            }
        }
        Ok(total)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_equal_but_the_last() {
        let mut sizes = Vec::new();
        let mut w = PartWriter::new(10, |b: Bytes| {
            sizes.push(b.len());
            Ok(())
        });
        for _ in 0..7 {
            w.write_all(&[1u8; 4]).expect("write");
        }
        let n = w.finish().expect("finish");
        assert_eq!(n, 3);
        assert_eq!(sizes, vec![10, 10, 8]);
    }

    #[test]
    fn buffers_come_back_once_the_parts_are_dropped() {
        let mut held: Vec<Bytes> = Vec::new();
        let mut w = PartWriter::new(1024, |b: Bytes| {
            held.push(b);
            // The uploader keeps at most two parts.
            if held.len() > 2 {
                held.remove(0);
            }
            Ok(())
        });
        for _ in 0..100 {
            w.write_all(&[7u8; 1024]).expect("write");
        }
        let (kept, allocated) = w.buffers();
        assert!(kept <= REUSED_BUFFERS);
        // Two held by the uploader, one being filled, one just let go: four buffers in all.
        assert!(allocated <= 4, "{allocated} buffers for 100 parts");
        w.finish().expect("finish");
    }

    #[test]
    fn a_part_still_held_is_never_written_over() {
        let mut parts: Vec<Bytes> = Vec::new();
        let mut w = PartWriter::new(4, |b: Bytes| {
            parts.push(b);
            Ok(())
        });
        for i in 0..40u8 {
            w.write_all(&[i; 4]).expect("write");
        }
        w.finish().expect("finish");
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p.as_ref(), &[i as u8; 4]);
        }
    }

    #[test]
    fn an_empty_stream_is_one_empty_part() {
        let mut sizes = Vec::new();
        let w = PartWriter::new(10, |b: Bytes| {
            sizes.push(b.len());
            Ok(())
        });
        assert_eq!(w.finish().expect("finish"), 1);
        assert_eq!(sizes, vec![0]);
    }
}
