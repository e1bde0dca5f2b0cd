//! `berth-shim --pod-init DIR`: the init (PID 1) of a pod's shared PID
//! namespace (`shareProcessNamespace: true`), in the role of the pause
//! container. A PID namespace whose init exits is dead (its processes are
//! killed, no new one can join), so a process must hold it for the pod's
//! life; the containers join it through `/proc/<pid>/ns/pid`.
//!
//! The launcher unshares the PID namespace, forks the init into it,
//! reports `ok <pid>` (the init's PID as the host sees it) and exits. The
//! init detaches, drops into an empty root (`DIR`) so the containers that
//! see it as their `/proc/1` find nothing of the host there, becomes
//! undumpable, and reaps every process re-parented to it, for ever. The
//! agent kills it (SIGKILL) when it removes the pod.

use std::fs::OpenOptions;
use std::os::fd::AsFd;
use std::path::Path;

use crate::sys;

pub fn run(root: &Path) -> ! {
    if let Err(err) = sys::unshare(libc::CLONE_NEWPID) {
        println!("error berth-shim: unshare of a PID namespace: {err}");
        sys::exit_now(1);
    }
    match sys::fork() {
        Ok(sys::Fork::Parent(pid)) => {
            println!("ok {pid}");
            sys::exit_now(0);
        }
        Ok(sys::Fork::Child) => {}
        Err(err) => {
            println!("error berth-shim: fork into the PID namespace: {err}");
            sys::exit_now(1);
        }
    }
    if let Err(msg) = confine(root) {
        // stdout may already point away from the agent: the agent sees the
        // init gone and reports that.
        eprintln!("berth-shim pod-init: {msg}");
        sys::exit_now(1);
    }
    loop {
        while let Ok(Some(_)) = sys::reap_any() {}
        if sys::wait_for_sigchld().is_err() {
            sys::exit_now(1);
        }
    }
}

fn confine(root: &Path) -> Result<(), String> {
    sys::setsid().map_err(|e| format!("setsid: {e}"))?;
    let devnull = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("opening /dev/null: {e}"))?;
    for target in 0..3 {
        sys::dup2(devnull.as_fd(), target).map_err(|e| format!("redirecting stdio: {e}"))?;
    }
    drop(devnull);
    sys::close_from(3).map_err(|e| format!("closing inherited descriptors: {e}"))?;
    sys::chroot(root).map_err(|e| format!("chroot to {}: {e}", root.display()))?;
    sys::set_not_dumpable().map_err(|e| format!("prctl: {e}"))
}
