//! berth-shim: one per container, in the role of conmon or
//! containerd-shim-runc-v2, small on purpose (libc only, no async runtime).
//!
//! 1. Detach: fork (the spawner's `wait` returns at once), `setsid`, close
//!    every inherited descriptor. Standard output, at start, is the sync
//!    channel to the agent: one `ok <pid>` or `error <message>` report.
//! 2. Become a child subreaper, so the container init is re-parented to the
//!    shim when the runtime exits.
//! 3. `RUNTIME run --detach` with stdio pipes the shim owns (or a console
//!    socket for a tty); report the result.
//! 4. Copy the container's output into a CRI-format log, reap every child,
//!    and when the container init exits write `exit.json` atomically.
//!
//! The shim ignores SIGHUP, SIGINT, SIGTERM and SIGQUIT: the agent stops
//! containers with `RUNTIME kill`, and the shim ends only after writing the
//! exit file, so it outlives agent restarts.

mod args;
mod crilog;
mod pod_init;
mod state;
mod supervise;
mod sys;
mod timefmt;
mod userns_hold;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;

use args::Args;

fn main() {
    let mut argv = std::env::args_os().skip(1);
    let first = argv.next();
    if first.as_deref() == Some(std::ffi::OsStr::new("--userns-hold")) {
        userns_hold::run();
    }
    if first.as_deref() == Some(std::ffi::OsStr::new("--pod-init")) {
        match argv.next() {
            Some(root) => pod_init::run(std::path::Path::new(&root)),
            None => {
                println!("error usage: berth-shim --pod-init EMPTY-ROOT-DIR");
                std::process::exit(2);
            }
        }
    }
    let args = match Args::parse(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(msg) => {
            // Before detaching, stdout is still the agent's pipe.
            println!("error {msg}");
            std::process::exit(2);
        }
    };
    match sys::fork() {
        Ok(sys::Fork::Parent(_)) => sys::exit_now(0),
        Ok(sys::Fork::Child) => {}
        Err(err) => {
            println!("error berth-shim: fork: {err}");
            std::process::exit(1);
        }
    }
    let sync = match detach(&args) {
        Ok(sync) => sync,
        Err(msg) => {
            println!("error berth-shim: {msg}");
            sys::exit_now(1);
        }
    };
    let code = supervise::run(&args, sync);
    sys::exit_now(code)
}

/// Makes the process its own session, drops inherited descriptors and
/// points stdio away from the agent. Returns the sync channel.
fn detach(args: &Args) -> Result<File, String> {
    sys::setsid().map_err(|e| format!("setsid: {e}"))?;
    sys::close_from(3).map_err(|e| format!("closing inherited descriptors: {e}"))?;
    let sync = sys::dup(1).map_err(|e| format!("dup of the sync pipe: {e}"))?;
    let devnull = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/null")
        .map_err(|e| format!("opening /dev/null: {e}"))?;
    let diag = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC)
        .open(args.state_dir.join(state::SHIM_LOG))
        .map_err(|e| format!("opening {}: {e}", args.state_dir.display()))?;
    for (file, target) in [(&devnull, 0), (&devnull, 1), (&diag, 2)] {
        sys::dup2(file.as_fd(), target).map_err(|e| format!("redirecting stdio: {e}"))?;
    }
    // Keep no directory busy: the agent unmounts and removes things.
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    sys::set_child_subreaper().map_err(|e| format!("becoming a subreaper: {e}"))?;
    sys::ignore_signals().map_err(|e| format!("ignoring signals: {e}"))?;
    let mut sync = File::from(sync);
    // A crashed shim must not leave the agent waiting: if nothing is written
    // the agent sees EOF when this process exits.
    sync.flush().map_err(|e| format!("sync pipe: {e}"))?;
    Ok(sync)
}
