//! The few syscalls the shim needs that std does not offer, each wrapped in a
//! safe function. Every `unsafe` block in the shim lives here.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub enum Fork {
    Parent(libc::pid_t),
    Child,
}

/// `fork(2)`. The shim is single-threaded, so the child may run any code.
#[allow(unsafe_code)]
pub fn fork() -> io::Result<Fork> {
    // SAFETY: the shim never starts a second thread, so no lock can be held
    // by a thread that does not exist in the child.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Fork::Child),
        pid => Ok(Fork::Parent(pid)),
    }
}

/// Leaves the process immediately, without running destructors or flushing
/// stdio that belongs to the parent.
#[allow(unsafe_code)]
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit only ends the process.
    unsafe { libc::_exit(code) }
}

#[allow(unsafe_code)]
pub fn setsid() -> io::Result<()> {
    // SAFETY: setsid takes no pointers.
    check(unsafe { libc::setsid() }).map(drop)
}

/// Closes every descriptor from `first` up: whatever the spawner leaked.
#[allow(unsafe_code)]
pub fn close_from(first: RawFd) -> io::Result<()> {
    let first = libc::c_uint::try_from(first).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: close_range takes no pointers; it is called before the shim
    // opens anything it owns, so no live OwnedFd refers to these numbers.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, 0) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `dup2(from, to)`: `to` stays open without close-on-exec.
#[allow(unsafe_code)]
pub fn dup2(from: BorrowedFd<'_>, to: RawFd) -> io::Result<()> {
    // SAFETY: dup2 takes no pointers; callers only target 0, 1 and 2.
    check(unsafe { libc::dup2(from.as_raw_fd(), to) }).map(drop)
}

/// A new descriptor for the same file, close-on-exec.
#[allow(unsafe_code)]
pub fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC takes no pointers and returns a fresh fd.
    let new = check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: `new` was just returned by fcntl and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// A close-on-exec pipe: (read end, write end).
#[allow(unsafe_code)]
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both are fresh descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[allow(unsafe_code)]
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL take no pointers.
    let flags = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(drop)
}

/// Orphaned descendants are re-parented to the shim, so it can reap the
/// container init after the runtime's `run --detach` exits.
#[allow(unsafe_code)]
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer argument only.
    check(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }).map(drop)
}

/// The signals the shim ignores: the agent stops containers through the
/// runtime, never by signalling the shim, and a terminal or session going
/// away must not take the shim down.
pub const IGNORED_SIGNALS: [libc::c_int; 5] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGQUIT,
    libc::SIGPIPE,
];

#[allow(unsafe_code)]
fn set_disposition(signal: libc::c_int, handler: libc::sighandler_t) -> io::Result<()> {
    // SAFETY: SIG_IGN and SIG_DFL are not function pointers into our code, so
    // no handler runs in signal context.
    if unsafe { libc::signal(signal, handler) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn ignore_signals() -> io::Result<()> {
    IGNORED_SIGNALS
        .iter()
        .try_for_each(|&sig| set_disposition(sig, libc::SIG_IGN))
}

#[allow(unsafe_code)]
fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it fully.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for &sig in signals {
        // SAFETY: `set` is a valid sigset_t and `sig` a valid signal number.
        unsafe { libc::sigaddset(&mut set, sig) };
    }
    set
}

/// Blocks SIGCHLD and returns a signalfd that becomes readable when a child
/// changes state, so the main loop can `poll` for exits and output together.
#[allow(unsafe_code)]
pub fn sigchld_fd() -> io::Result<OwnedFd> {
    let set = sigset(&[libc::SIGCHLD]);
    // SAFETY: `set` is a valid, initialised sigset_t; the old mask is not needed.
    check(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) })?;
    // SAFETY: `set` is valid; -1 asks for a new descriptor.
    let fd = check(unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })?;
    // SAFETY: signalfd returned a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    Code(i32),
    Signal(i32),
}

/// Reaps one exited child, if any, without blocking.
#[allow(unsafe_code)]
pub fn reap_any() -> io::Result<Option<(libc::pid_t, ExitKind)>> {
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a valid int for waitpid to fill.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    if pid < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ECHILD) => Ok(None),
            _ => Err(err),
        };
    }
    if pid == 0 {
        return Ok(None);
    }
    Ok(Some((pid, decode_status(status))))
}

/// Waits for one specific child and reaps it.
#[allow(unsafe_code)]
pub fn wait_for(pid: libc::pid_t) -> io::Result<ExitKind> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a valid int for waitpid to fill.
        let ret = unsafe { libc::waitpid(pid, &mut status, 0) };
        if ret == pid {
            return Ok(decode_status(status));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn decode_status(status: libc::c_int) -> ExitKind {
    if libc::WIFSIGNALED(status) {
        ExitKind::Signal(libc::WTERMSIG(status))
    } else {
        ExitKind::Code(libc::WEXITSTATUS(status))
    }
}

#[allow(unsafe_code)]
pub fn kill(pid: libc::pid_t, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes no pointers.
    check(unsafe { libc::kill(pid, signal) }).map(drop)
}

/// Runs `argv` in a child with the given stdio, signal dispositions reset
/// (ignored signals survive `execve`, and a container must see SIGTERM) and
/// the signal mask cleared. Returns the child's pid.
#[allow(unsafe_code)]
pub fn spawn(
    argv: &[CString],
    stdin: BorrowedFd<'_>,
    stdout: BorrowedFd<'_>,
    stderr: BorrowedFd<'_>,
) -> io::Result<libc::pid_t> {
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|arg| arg.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let empty = sigset(&[]);
    match fork()? {
        Fork::Parent(pid) => Ok(pid),
        Fork::Child => {
            for sig in IGNORED_SIGNALS {
                // SAFETY: resetting to SIG_DFL installs no handler.
                unsafe { libc::signal(sig, libc::SIG_DFL) };
            }
            // SAFETY: `empty` is a valid sigset_t.
            unsafe { libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) };
            for (fd, target) in [(stdin, 0), (stdout, 1), (stderr, 2)] {
                if dup2(fd, target).is_err() {
                    exit_now(126);
                }
            }
            // SAFETY: `ptrs` is a NULL-terminated array of pointers into
            // `argv`, whose CStrings outlive this call (execv only returns on
            // failure, and then we exit at once).
            unsafe { libc::execv(ptrs[0], ptrs.as_ptr()) };
            exit_now(127)
        }
    }
}

pub struct PollFd {
    pub fd: RawFd,
    pub readable: bool,
    pub hangup: bool,
}

/// Waits until one of `fds` is readable or hung up, or `timeout_ms` passes
/// (-1: no timeout). Fills in `readable`/`hangup`.
#[allow(unsafe_code)]
pub fn poll(fds: &mut [PollFd], timeout_ms: i32) -> io::Result<usize> {
    let mut raw: Vec<libc::pollfd> = fds
        .iter()
        .map(|p| libc::pollfd {
            fd: p.fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let nfds = libc::nfds_t::try_from(raw.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `raw` is a valid array of `nfds` pollfd structs.
    let ready = unsafe { libc::poll(raw.as_mut_ptr(), nfds, timeout_ms) };
    if ready < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(err);
    }
    for (p, r) in fds.iter_mut().zip(&raw) {
        p.readable = r.revents & libc::POLLIN != 0;
        p.hangup = r.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0;
    }
    Ok(usize::try_from(ready).unwrap_or(0))
}

/// Receives one file descriptor sent with SCM_RIGHTS (the runtime's
/// `--console-socket` protocol: it sends the pty master).
#[allow(unsafe_code)]
pub fn recv_fd(socket: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut data = [0u8; 256];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // Room for one descriptor, aligned as cmsghdr needs.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; every field we rely on is set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: `msg` points at live buffers (`iov`/`data`, `control`) sized as declared.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `msg` was filled by recvmsg; CMSG_FIRSTHDR stays within `control`.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    // SAFETY: a non-null cmsg points into `control`, which is still alive.
    if cmsg.is_null() || unsafe { (*cmsg).cmsg_type } != libc::SCM_RIGHTS {
        return Err(io::Error::other(
            "the console socket message carried no descriptor",
        ));
    }
    // SAFETY: an SCM_RIGHTS message's data is at least one int.
    let fd = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>()) };
    // SAFETY: the kernel installed `fd` in our table for us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `unshare(2)`: the process's next children go to new namespaces.
#[allow(unsafe_code)]
pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare only changes this process's namespaces.
    check(unsafe { libc::unshare(flags) }).map(|_| ())
}

/// `chroot(2)` to `dir`, then `chdir("/")`.
#[allow(unsafe_code)]
pub fn chroot(dir: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `path` is a valid NUL-terminated string.
    check(unsafe { libc::chroot(path.as_ptr()) })?;
    std::env::set_current_dir("/")
}

/// No core dumps and no ptrace access without CAP_SYS_PTRACE.
#[allow(unsafe_code)]
pub fn set_not_dumpable() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_DUMPABLE) only changes a flag of this process.
    check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) }).map(|_| ())
}

/// Blocks every signal and waits until SIGCHLD is pending (a blocked
/// signal stays pending, so none is missed between two waits).
#[allow(unsafe_code)]
pub fn wait_for_sigchld() -> io::Result<()> {
    // SAFETY: sigset_t is plain data; sigfillset initialises it fully.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `all` is a valid sigset_t.
    unsafe { libc::sigfillset(&mut all) };
    // SAFETY: `all` is valid; the old mask is not needed.
    check(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &all, std::ptr::null_mut()) })?;
    let chld = sigset(&[libc::SIGCHLD]);
    loop {
        // SAFETY: `chld` is valid; the siginfo is not needed.
        let ret = unsafe { libc::sigwaitinfo(&chld, std::ptr::null_mut()) };
        if ret >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}
