//! Byte streams passed between threads in chunks. Unpacking a layer runs
//! decompression (and the diffID hash) on one thread and extraction on
//! another, so even the largest layer, the critical path of a pull, uses
//! two cores; a download hands its bytes to the unpacker the same way.

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::{Scope, ScopedJoinHandle};

use sha2::{Digest as _, Sha256};

/// Decompressed bytes per chunk.
const CHUNK: usize = 256 << 10;
/// Chunks in flight between the decompressor and the extractor.
const IN_FLIGHT: usize = 8;

/// Reads chunks a producer thread sends, as one stream. The stream ends
/// when the producer hangs up; an error it sends is returned once.
pub struct ChunkReader<C> {
    chunks: Receiver<io::Result<C>>,
    current: Option<C>,
    position: usize,
    /// Where finished chunks go back for reuse, if anywhere.
    recycle: Option<SyncSender<C>>,
}

impl<C: AsRef<[u8]>> ChunkReader<C> {
    pub fn new(chunks: Receiver<io::Result<C>>) -> Self {
        Self {
            chunks,
            current: None,
            position: 0,
            recycle: None,
        }
    }
}

impl<C: AsRef<[u8]>> Read for ChunkReader<C> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(chunk) = &self.current {
                let rest = &chunk.as_ref()[self.position..];
                if !rest.is_empty() {
                    let n = buf.len().min(rest.len());
                    buf[..n].copy_from_slice(&rest[..n]);
                    self.position += n;
                    return Ok(n);
                }
                if let (Some(recycle), Some(done)) = (&self.recycle, self.current.take()) {
                    // A full return queue just means one more allocation.
                    let _ = recycle.try_send(done);
                }
            }
            match self.chunks.recv() {
                Ok(Ok(chunk)) => {
                    self.current = Some(chunk);
                    self.position = 0;
                }
                Ok(Err(err)) => return Err(err),
                Err(_) => return Ok(0),
            }
        }
    }
}

/// A reusable buffer and how much of it holds data (reused buffers keep
/// their full length, so they are never zeroed again).
pub struct Chunk {
    buf: Vec<u8>,
    len: usize,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Reads `source` to its end on a thread of `scope`, hashing every byte
/// (sha256), and returns a reader of the same bytes plus the thread, which
/// yields the hash once the stream is fully read. If the reader is dropped
/// early, the thread stops reading `source` and yields `None`.
pub fn read_ahead_hashed<'scope, 'env>(
    scope: &'scope Scope<'scope, 'env>,
    mut source: Box<dyn Read + Send + 'env>,
) -> (
    ChunkReader<Chunk>,
    ScopedJoinHandle<'scope, Option<[u8; 32]>>,
) {
    let (chunks, received) = sync_channel::<io::Result<Chunk>>(IN_FLIGHT);
    let (recycle, reused) = sync_channel::<Chunk>(IN_FLIGHT);
    let producer = scope.spawn(move || {
        let mut hasher = Sha256::new();
        loop {
            let mut chunk = reused.try_recv().unwrap_or_else(|_| Chunk {
                buf: vec![0; CHUNK],
                len: 0,
            });
            chunk.len = match read_some(&mut source, &mut chunk.buf) {
                Ok(0) => return Some(hasher.finalize().into()),
                Ok(n) => n,
                Err(err) => {
                    let _ = chunks.send(Err(err));
                    return None;
                }
            };
            hasher.update(chunk.as_ref());
            if chunks.send(Ok(chunk)).is_err() {
                return None;
            }
        }
    });
    let mut reader = ChunkReader::new(received);
    reader.recycle = Some(recycle);
    (reader, producer)
}

/// One `read`, retried on `Interrupted`.
fn read_some(source: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match source.read(buf) {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_arrive_in_order_and_are_hashed() {
        let data: Vec<u8> = (0..3 * CHUNK + 17)
            .map(|i| (i % 251).to_le_bytes()[0])
            .collect();
        let (copied, hash) = std::thread::scope(|scope| {
            let (mut reader, producer) = read_ahead_hashed(scope, Box::new(&data[..]));
            let mut copied = Vec::new();
            reader.read_to_end(&mut copied).expect("read");
            (copied, producer.join().expect("producer"))
        });
        assert_eq!(copied, data);
        assert_eq!(hash, Some(Sha256::digest(&data).into()));
    }

    #[test]
    fn a_source_error_reaches_the_reader_and_an_early_drop_stops_the_producer() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "corrupt deflate stream",
                ))
            }
        }
        std::thread::scope(|scope| {
            let (mut reader, producer) = read_ahead_hashed(scope, Box::new(Failing));
            let err = reader.read(&mut [0; 8]).expect_err("the error");
            assert_eq!(err.to_string(), "corrupt deflate stream");
            assert_eq!(producer.join().expect("producer"), None);
        });
        let endless = io::repeat(7);
        std::thread::scope(|scope| {
            let (reader, producer) = read_ahead_hashed(scope, Box::new(endless));
            drop(reader);
            assert_eq!(producer.join().expect("producer"), None);
        });
    }
}
