//! Starting disk writes early, off the hot path. A pull makes everything it
//! wrote durable with one `syncfs` at the end; whatever the disk has
//! already written by then is not waited for. So as soon as a blob range or
//! an unpacked file is written, its writeback is started (`sync_file_range`
//! with `SYNC_FILE_RANGE_WRITE`: start, do not wait) — by one background
//! thread, because starting writeback can block while the device queue is
//! full, and the downloads and unpackers must never wait for the disk.
//!
//! Best effort throughout: a full queue or a failed call only leaves more
//! for the final sync. Durability never depends on this module.

use std::fs::File;
use std::sync::OnceLock;
use std::sync::mpsc::{SyncSender, sync_channel};

/// Files waiting for their writeback to start. Each holds an open fd:
/// keep it well under the open-files limit.
const QUEUE: usize = 256;

struct Request {
    file: File,
    /// `(offset, len)`; `None` is the whole file.
    range: Option<(u64, u64)>,
}

fn queue() -> Option<&'static SyncSender<Request>> {
    static QUEUE_SENDER: OnceLock<Option<SyncSender<Request>>> = OnceLock::new();
    QUEUE_SENDER
        .get_or_init(|| {
            let (sender, requests) = sync_channel::<Request>(QUEUE);
            std::thread::Builder::new()
                .name("berth-writeback".into())
                .spawn(move || {
                    for request in requests {
                        start_now(&request.file, request.range);
                    }
                })
                .ok()
                .map(|_| sender)
        })
        .as_ref()
}

/// Starts writing all of `file`'s dirty pages soon; closes it afterwards.
pub fn start(file: File) {
    if let Some(queue) = queue() {
        // A full queue just drops (closes) the file: the sync writes it.
        let _ = queue.try_send(Request { file, range: None });
    }
}

/// Starts writing `len` bytes of `file` from `offset` soon (the file stays
/// open for the caller; the request holds its own descriptor).
pub fn start_range(file: &File, offset: u64, len: u64) {
    let Some(queue) = queue() else {
        return;
    };
    if let Ok(file) = file.try_clone() {
        let _ = queue.try_send(Request {
            file,
            range: Some((offset, len)),
        });
    }
}

#[allow(unsafe_code)]
fn start_now(file: &File, range: Option<(u64, u64)>) {
    use std::os::fd::AsRawFd;
    let (offset, len) = range.unwrap_or((0, 0));
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range takes only integers; the fd stays open for the
    // whole call because `file` is borrowed.
    let _ = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
}
