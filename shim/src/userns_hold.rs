//! `berth-shim --userns-hold`: makes a user namespace with an IPC, a UTS
//! and a network namespace owned by it (a pod with `hostUsers: false`), reports
//! `ok`, and holds them until its stdin closes. The agent meanwhile writes
//! the ID maps and keeps the namespaces as bind mounts of their nsfs files.
//! (The agent itself cannot: joining or making a user namespace needs a
//! single-threaded process.)

use std::io::{Read, Write};

use crate::sys;

pub fn run() -> ! {
    if let Err(err) = sys::unshare(
        libc::CLONE_NEWUSER | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_NEWNET,
    ) {
        println!("error berth-shim: unshare of a user namespace: {err}");
        sys::exit_now(1);
    }
    let mut stdout = std::io::stdout();
    if writeln!(stdout, "ok")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        sys::exit_now(1);
    }
    // EOF (or any error) ends the hold.
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin();
    while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
    sys::exit_now(0)
}
