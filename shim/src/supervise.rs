//! The shim's life after detaching: start the container through the
//! runtime, report, pump its output into the log, and record how it ended.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixListener;
use std::path::Path;

use crate::args::Args;
use crate::crilog::{CriLog, LogLimits, Stream};
use crate::state::{self, ExitRecord};
use crate::sys::{self, ExitKind, PollFd};
use crate::timefmt;

/// How often, without any event, the shim checks that the container's init
/// still exists.
const LIVENESS_CHECK_MS: i32 = 10_000;

/// Reported when the init's real exit status is unknowable.
const UNKNOWN_EXIT: i32 = 255;

/// Runs the whole life of the shim; returns its exit code.
pub fn run(args: &Args, mut sync: File) -> i32 {
    let mut supervisor = match Supervisor::new(args) {
        Ok(supervisor) => supervisor,
        Err(msg) => {
            report(&mut sync, &format!("error {msg}"));
            return 1;
        }
    };
    match supervisor.start() {
        Ok(pid) => {
            report(&mut sync, &format!("ok {pid}"));
            // Closing the pipe is what tells the agent the report is complete.
            drop(sync);
        }
        Err(msg) => {
            let record = ExitRecord {
                pid: None,
                exit: None,
                oom_killed: false,
                started_at_ns: None,
                finished_at_ns: timefmt::now_ns(),
                start_error: Some(msg.clone()),
            };
            if let Err(err) = supervisor.write_exit(&record) {
                eprintln!("berth-shim: writing the exit file: {err}");
            }
            report(&mut sync, &format!("error {msg}"));
            return 1;
        }
    }
    match supervisor.supervise() {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("berth-shim: {err}");
            1
        }
    }
}

fn report(sync: &mut File, line: &str) {
    // The agent may be gone; then nobody is waiting for this line.
    let _ = sync
        .write_all(line.as_bytes())
        .and_then(|()| sync.write_all(b"\n"));
}

/// One output of the container: a pipe (stdout/stderr) or the pty master.
struct Output {
    file: File,
    stream: Stream,
    open: bool,
}

struct Supervisor<'a> {
    args: &'a Args,
    sigchld: OwnedFd,
    devnull: File,
    /// The read ends of the container's stdout and stderr pipes, or the pty
    /// master once the runtime sent it.
    outputs: Vec<Output>,
    /// The write ends handed to `RUNTIME run`; dropped once it ran.
    child_stdio: Option<(OwnedFd, OwnedFd)>,
    console: Option<UnixListener>,
    log: CriLog,
    container_pid: libc::pid_t,
    started_at_ns: u64,
    /// Opened right after `run`, while the container's cgroup exists.
    oom_file: Option<File>,
}

impl<'a> Supervisor<'a> {
    fn new(args: &'a Args) -> Result<Self, String> {
        let own_pid = libc::pid_t::try_from(std::process::id()).map_err(|e| e.to_string())?;
        state::write_pid_file(&args.state_dir, state::SHIM_PID, own_pid)
            .map_err(|e| format!("writing {}: {e}", state::SHIM_PID))?;
        let sigchld = sys::sigchld_fd().map_err(|e| format!("signalfd: {e}"))?;
        let devnull = File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| format!("opening /dev/null: {e}"))?;
        let mut outputs = Vec::new();
        let mut child_stdio = None;
        let mut console = None;
        if args.tty {
            let path = args.state_dir.join(state::CONSOLE_SOCKET);
            let _ = std::fs::remove_file(&path);
            let listener = UnixListener::bind(&path)
                .map_err(|e| format!("binding {}: {e}", path.display()))?;
            listener
                .set_nonblocking(true)
                .map_err(|e| format!("console socket: {e}"))?;
            console = Some(listener);
        } else {
            let (out_r, out_w) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
            let (err_r, err_w) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
            for (fd, stream) in [(out_r, Stream::Stdout), (err_r, Stream::Stderr)] {
                sys::set_nonblocking(fd.as_fd()).map_err(|e| format!("pipe: {e}"))?;
                outputs.push(Output {
                    file: File::from(fd),
                    stream,
                    open: true,
                });
            }
            child_stdio = Some((out_w, err_w));
        }
        let limits = LogLimits {
            max_size: args.log_limits.max_size,
            max_files: args.log_limits.max_files,
            max_line: args.log_limits.max_line,
        };
        Ok(Self {
            args,
            sigchld,
            devnull,
            outputs,
            child_stdio,
            console,
            log: CriLog::new(args.log_file.clone(), limits),
            container_pid: 0,
            started_at_ns: 0,
            oom_file: None,
        })
    }

    fn runtime_argv(&self, command: &[&OsStr]) -> Result<Vec<CString>, String> {
        let mut argv: Vec<&OsStr> = vec![self.args.runtime.as_os_str()];
        argv.extend(self.args.runtime_args.iter().map(|a| a.as_os_str()));
        argv.push(OsStr::new("--root"));
        argv.push(self.args.runtime_root.as_os_str());
        argv.extend_from_slice(command);
        argv.iter()
            .map(|arg| {
                CString::new(arg.as_bytes())
                    .map_err(|_| format!("argument {} contains a NUL byte", arg.to_string_lossy()))
            })
            .collect()
    }

    /// `RUNTIME run --detach`: one runtime invocation creates and starts
    /// the container (a `create` + `start` pair costs a second exec of the
    /// runtime and a round trip through its exec fifo). Returns the
    /// container's pid or the runtime's error output.
    fn start(&mut self) -> Result<libc::pid_t, String> {
        let pid_file = self.args.state_dir.join(state::RUNTIME_PID);
        let console_path = self.args.state_dir.join(state::CONSOLE_SOCKET);
        let mut run: Vec<&OsStr> = vec![
            OsStr::new("run"),
            OsStr::new("--detach"),
            OsStr::new("--bundle"),
            self.args.bundle.as_os_str(),
            OsStr::new("--pid-file"),
            pid_file.as_os_str(),
        ];
        if self.args.tty {
            run.push(OsStr::new("--console-socket"));
            run.push(console_path.as_os_str());
        }
        run.push(OsStr::new(&self.args.id));
        let argv = self.runtime_argv(&run)?;

        let (status, output) = match self.child_stdio.take() {
            // Pipe mode: the runtime hands its own stdio to the container, so
            // its error messages arrive on the container's pipes.
            Some((out_w, err_w)) => {
                let pid = sys::spawn(&argv, self.devnull.as_fd(), out_w.as_fd(), err_w.as_fd())
                    .map_err(|e| format!("running {}: {e}", self.args.runtime.display()))?;
                drop((out_w, err_w));
                let status = sys::wait_for(pid).map_err(|e| format!("waiting for run: {e}"))?;
                let mut output = Vec::new();
                if status != ExitKind::Code(0) {
                    for out in &mut self.outputs {
                        read_available(&mut out.file, &mut output);
                    }
                }
                (status, output)
            }
            None => self.run_captured(&argv)?,
        };
        if status != ExitKind::Code(0) {
            let msg = runtime_failure("run", status, &output);
            // The runtime normally cleans up after itself; make sure.
            let argv = self.runtime_argv(&[
                OsStr::new("delete"),
                OsStr::new("--force"),
                OsStr::new(&self.args.id),
            ])?;
            let _ = self.run_captured(&argv);
            return Err(msg);
        }
        self.started_at_ns = timefmt::now_ns();

        if let Some(listener) = self.console.take() {
            let master = receive_console(&listener)?;
            sys::set_nonblocking(master.as_fd()).map_err(|e| format!("pty: {e}"))?;
            self.outputs.push(Output {
                file: File::from(master),
                stream: Stream::Stdout,
                open: true,
            });
            let _ = std::fs::remove_file(&console_path);
        }

        // The container may have exited already: it stays a zombie (this
        // process is its subreaper) until `supervise` reaps it, so its pid
        // and start time are still readable.
        let pid = read_pid(&pid_file)?;
        self.container_pid = pid;
        state::write_pid_file(&self.args.state_dir, state::CONTAINER_PID, pid)
            .map_err(|e| format!("writing {}: {e}", state::CONTAINER_PID))?;
        if let Some(path) = &self.args.oom_file {
            // Not fatal: the container runs, only OOM detection is lost. The
            // cgroup stays until the container is deleted.
            match File::open(path) {
                Ok(file) => self.oom_file = Some(file),
                Err(err) => eprintln!("berth-shim: opening {}: {err}", path.display()),
            }
        }
        Ok(pid)
    }

    /// Runs a runtime command whose output is not the container's, and
    /// returns how it ended and what it printed.
    fn run_captured(&self, argv: &[CString]) -> Result<(ExitKind, Vec<u8>), String> {
        let (read, write) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
        let pid = sys::spawn(argv, self.devnull.as_fd(), write.as_fd(), write.as_fd())
            .map_err(|e| format!("running {}: {e}", self.args.runtime.display()))?;
        drop(write);
        let mut output = Vec::new();
        // EOF comes when the runtime exits (it keeps no helper around).
        let _ = File::from(read).take(64 << 10).read_to_end(&mut output);
        let status = sys::wait_for(pid).map_err(|e| format!("waiting for the runtime: {e}"))?;
        Ok((status, output))
    }

    /// Pumps output until the container's init has exited and its output is
    /// drained, then writes the exit file.
    fn supervise(&mut self) -> io::Result<()> {
        let mut exit: Option<(ExitKind, u64)> = None;
        let mut buf = vec![0u8; 32 << 10];
        loop {
            let mut fds = vec![PollFd {
                fd: self.sigchld.as_raw_fd(),
                readable: false,
                hangup: false,
            }];
            let open: Vec<usize> = (0..self.outputs.len())
                .filter(|&i| self.outputs[i].open)
                .collect();
            fds.extend(open.iter().map(|&i| PollFd {
                fd: self.outputs[i].file.as_raw_fd(),
                readable: false,
                hangup: false,
            }));
            let timeout = match exit {
                // Wake up now and then to check the init still exists: if
                // it were not our child (it always should be) its exit would
                // never come as SIGCHLD.
                None => LIVENESS_CHECK_MS,
                Some((_, finished)) => {
                    let waited_ms = (timefmt::now_ns().saturating_sub(finished)) / 1_000_000;
                    let left = u64::try_from(self.args.drain_ms)
                        .unwrap_or(0)
                        .saturating_sub(waited_ms);
                    if open.is_empty() || left == 0 {
                        break;
                    }
                    i32::try_from(left).unwrap_or(i32::MAX)
                }
            };
            let ready = sys::poll(&mut fds, timeout)?;
            if fds[0].readable {
                drain(&self.sigchld, &mut buf);
                if let Some(kind) = self.reap()? {
                    exit = Some((kind, timefmt::now_ns()));
                }
            }
            if ready == 0
                && exit.is_none()
                && let Err(err) = sys::kill(self.container_pid, 0)
                && err.raw_os_error() == Some(libc::ESRCH)
            {
                eprintln!(
                    "berth-shim: container init {} vanished without being reaped here",
                    self.container_pid
                );
                exit = Some((ExitKind::Code(UNKNOWN_EXIT), timefmt::now_ns()));
            }
            for (poll, &i) in fds[1..].iter().zip(&open) {
                if poll.readable || poll.hangup {
                    self.pump(i, &mut buf);
                }
            }
        }
        for i in 0..self.outputs.len() {
            if self.outputs[i].open {
                self.outputs[i].open = false;
                self.log.finish(self.outputs[i].stream);
            }
        }
        let (kind, finished_at_ns) =
            exit.unwrap_or((ExitKind::Code(UNKNOWN_EXIT), timefmt::now_ns()));
        let oom_killed = self.oom_file.as_mut().is_some_and(|file| {
            let mut text = String::new();
            file.read_to_string(&mut text).is_ok() && state::oom_kills(&text) > 0
        });
        self.write_exit(&ExitRecord {
            pid: Some(self.container_pid),
            exit: Some(kind),
            oom_killed,
            started_at_ns: Some(self.started_at_ns),
            finished_at_ns,
            start_error: None,
        })
    }

    /// Reaps every exited child; returns how the container init ended if it
    /// was among them.
    fn reap(&self) -> io::Result<Option<ExitKind>> {
        let mut container = None;
        while let Some((pid, kind)) = sys::reap_any()? {
            if pid == self.container_pid {
                container = Some(kind);
            }
        }
        Ok(container)
    }

    fn pump(&mut self, index: usize, buf: &mut [u8]) {
        let out = &mut self.outputs[index];
        match out.file.read(buf) {
            Ok(0) => {
                out.open = false;
                self.log.finish(out.stream);
            }
            Ok(n) => self.log.feed(out.stream, &buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            // A pty master reports EIO once the last slave is closed.
            Err(_) => {
                out.open = false;
                self.log.finish(out.stream);
            }
        }
    }

    fn write_exit(&self, record: &ExitRecord) -> io::Result<()> {
        state::write_atomic(
            &self.args.state_dir,
            state::EXIT_FILE,
            record.to_json().as_bytes(),
        )
    }
}

fn drain(fd: &OwnedFd, buf: &mut [u8]) {
    let mut file = match fd.try_clone() {
        Ok(fd) => File::from(fd),
        Err(_) => return,
    };
    while matches!(file.read(buf), Ok(n) if n > 0) {}
}

fn read_available(file: &mut File, out: &mut Vec<u8>) {
    let mut buf = [0u8; 4096];
    while out.len() < 64 << 10 {
        match file.read(&mut buf) {
            Ok(n) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
}

fn runtime_failure(command: &str, status: ExitKind, output: &[u8]) -> String {
    let how = match status {
        ExitKind::Code(code) => format!("exit code {code}"),
        ExitKind::Signal(sig) => format!("signal {sig}"),
    };
    let text = String::from_utf8_lossy(output);
    let text = text.trim();
    if text.is_empty() {
        format!("runtime {command} failed ({how}) without output")
    } else {
        format!("runtime {command} failed ({how}): {text}")
    }
}

fn receive_console(listener: &UnixListener) -> Result<OwnedFd, String> {
    let (conn, _) = listener
        .accept()
        .map_err(|e| format!("the runtime did not connect to the console socket: {e}"))?;
    conn.set_nonblocking(false)
        .map_err(|e| format!("console socket: {e}"))?;
    sys::recv_fd(conn.as_fd()).map_err(|e| format!("receiving the pty from the runtime: {e}"))
}

fn read_pid(path: &Path) -> Result<libc::pid_t, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("the runtime wrote no pid file {}: {e}", path.display()))?;
    text.trim()
        .parse()
        .map_err(|_| format!("{} holds {text:?}, not a pid", path.display()))
}
