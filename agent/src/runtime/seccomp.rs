//! berth's RuntimeDefault seccomp profile: deny (EPERM) by default, allow
//! the system calls ordinary programs make, and allow the privileged ones
//! only when the container holds the capability they need anyway.
//!
//! Written here as data, grouped by purpose, rather than imported from
//! another project's JSON. Names a kernel or architecture does not know are
//! skipped by the runtimes (runc and crun resolve names through libseccomp).

use std::collections::BTreeSet;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

/// Files, directories, descriptors and I/O.
const FILES: &[&str] = &[
    "access",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "close",
    "close_range",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "arm_fadvise64_64",
    "fallocate",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futimesat",
    "getcwd",
    "getdents",
    "getdents64",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_setup",
    "io_submit",
    "ioctl",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "memfd_create",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "name_to_handle_at",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pipe",
    "pipe2",
    "pread64",
    "preadv",
    "preadv2",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "rmdir",
    "sendfile",
    "sendfile64",
    "setxattr",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "sync_file_range2",
    "arm_sync_file_range",
    "syncfs",
    "tee",
    "truncate",
    "truncate64",
    "umask",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vmsplice",
    "write",
    "writev",
];

/// Memory management.
const MEMORY: &[&str] = &[
    "brk",
    "get_mempolicy",
    "madvise",
    "mbind",
    "membarrier",
    "mincore",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mremap",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "remap_file_pages",
    "set_mempolicy",
];

/// Processes, threads, identity, scheduling, limits.
const PROCESSES: &[&str] = &[
    "arch_prctl",
    "capget",
    "capset",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "fork",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "getrusage",
    "getsid",
    "gettid",
    "getuid",
    "getuid32",
    "ioprio_get",
    "ioprio_set",
    "kill",
    "pidfd_open",
    "pidfd_send_signal",
    "prctl",
    "prlimit64",
    "process_mrelease",
    "restart_syscall",
    "rseq",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "setsid",
    "setuid",
    "setuid32",
    "tgkill",
    "tkill",
    "ugetrlimit",
    "uname",
    "vfork",
    "wait4",
    "waitid",
    "waitpid",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "getrandom",
    "sysinfo",
    "times",
    // ARM's private calls.
    "breakpoint",
    "cacheflush",
    "set_tls",
];

/// Signals, time, waiting for events.
const SIGNALS_TIME_EVENTS: &[&str] = &[
    "alarm",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "getitimer",
    "gettimeofday",
    "nanosleep",
    "pause",
    "poll",
    "ppoll",
    "ppoll_time64",
    "pselect6",
    "pselect6_time64",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "select",
    "_newselect",
    "setitimer",
    "sigaction",
    "sigaltstack",
    "signal",
    "signalfd",
    "signalfd4",
    "sigpending",
    "sigprocmask",
    "sigreturn",
    "sigsuspend",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
];

/// System V and POSIX IPC (inside the pod's IPC namespace) and sockets.
const IPC_AND_SOCKETS: &[&str] = &[
    "ipc",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "accept",
    "accept4",
    "bind",
    "connect",
    "getpeername",
    "getsockname",
    "getsockopt",
    "listen",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "send",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setsockopt",
    "shutdown",
    "socket",
    "socketcall",
    "socketpair",
];

/// Calls allowed only with the capability that guards them in the kernel:
/// the filter must not be the only thing between a container and these,
/// but neither should it block what a capability was granted for.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    (
        "SYS_ADMIN",
        &[
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "pivot_root",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "umount",
            "umount2",
            "unshare",
            "clone3",
        ],
    ),
    ("SYS_BOOT", &["reboot"]),
    ("SYS_CHROOT", &["chroot"]),
    (
        "SYS_MODULE",
        &["delete_module", "finit_module", "init_module"],
    ),
    ("SYS_PACCT", &["acct"]),
    (
        "SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("SYS_RAWIO", &["ioperm", "iopl"]),
    (
        "SYS_TIME",
        &[
            "adjtimex",
            "clock_adjtime",
            "clock_adjtime64",
            "clock_settime",
            "clock_settime64",
            "settimeofday",
            "stime",
        ],
    ),
    ("SYS_TTY_CONFIG", &["vhangup"]),
    ("SYS_NICE", &["migrate_pages", "move_pages"]),
    ("SYSLOG", &["syslog"]),
    ("DAC_READ_SEARCH", &["open_by_handle_at"]),
    ("BPF", &["bpf"]),
    ("PERFMON", &["perf_event_open"]),
];

/// The namespace flags of clone(2): creating namespaces needs SYS_ADMIN.
const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// personality(2) values ordinary programs use: Linux, UNAME26, the
/// no-randomize flag (setarch -R), both, and the query value.
const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// The RuntimeDefault profile for a container holding `capabilities`.
pub fn runtime_default(capabilities: &BTreeSet<&str>) -> LinuxSeccomp {
    let mut allowed: Vec<&str> = [
        FILES,
        MEMORY,
        PROCESSES,
        SIGNALS_TIME_EVENTS,
        IPC_AND_SOCKETS,
    ]
    .concat();
    for (cap, calls) in BY_CAPABILITY {
        if capabilities.contains(cap) {
            allowed.extend_from_slice(calls);
        }
    }
    // CAP_SYS_ADMIN also stands in for the newer, narrower capabilities.
    if capabilities.contains("SYS_ADMIN") {
        allowed.extend(["bpf", "perf_event_open", "syslog"]);
    }
    allowed.sort_unstable();
    allowed.dedup();

    let mut rules = vec![syscall_rule(&allowed, LinuxSeccompAction::ScmpActAllow)];
    if capabilities.contains("SYS_ADMIN") {
        rules.push(syscall_rule(&["clone"], LinuxSeccompAction::ScmpActAllow));
    } else {
        rules.push(clone_without_namespaces());
        // glibc falls back to clone(2) when clone3 says "not implemented";
        // EPERM would make it fail instead. clone3's flags live in memory,
        // where a filter cannot inspect them.
        rules.push(
            LinuxSyscallBuilder::default()
                .names(vec!["clone3".to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(u32::try_from(libc::ENOSYS).expect("ENOSYS is positive"))
                .build()
                .expect("all fields set"),
        );
    }
    for value in PERSONALITIES {
        rules.push(
            LinuxSyscallBuilder::default()
                .names(vec!["personality".to_string()])
                .action(LinuxSeccompAction::ScmpActAllow)
                .args(vec![
                    LinuxSeccompArgBuilder::default()
                        .index(0usize)
                        .value(value)
                        .op(LinuxSeccompOperator::ScmpCmpEq)
                        .build()
                        .expect("all fields set"),
                ])
                .build()
                .expect("all fields set"),
        );
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(u32::try_from(libc::EPERM).expect("EPERM is positive"))
        .architectures(architectures())
        .syscalls(rules)
        .build()
        .expect("all fields set")
}

fn syscall_rule(names: &[&str], action: LinuxSeccompAction) -> LinuxSyscall {
    LinuxSyscallBuilder::default()
        .names(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .action(action)
        .build()
        .expect("all fields set")
}

fn clone_without_namespaces() -> LinuxSyscall {
    LinuxSyscallBuilder::default()
        .names(vec!["clone".to_string()])
        .action(LinuxSeccompAction::ScmpActAllow)
        .args(vec![
            LinuxSeccompArgBuilder::default()
                .index(0usize)
                .value(CLONE_NAMESPACE_FLAGS)
                .value_two(0u64)
                .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                .build()
                .expect("all fields set"),
        ])
        .build()
        .expect("all fields set")
}

/// The native architecture and the compat ones a binary may use on it.
fn architectures() -> Vec<Arch> {
    match std::env::consts::ARCH {
        "aarch64" => vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm],
        "arm" => vec![Arch::ScmpArchArm],
        "x86" => vec![Arch::ScmpArchX86],
        _ => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::security::DEFAULT_CAPABILITIES;

    fn allows(profile: &LinuxSeccomp, name: &str) -> bool {
        profile
            .syscalls()
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .any(|rule| {
                rule.action() == LinuxSeccompAction::ScmpActAllow
                    && rule.args().is_none()
                    && rule.names().iter().any(|n| n == name)
            })
    }

    fn default_caps() -> BTreeSet<&'static str> {
        DEFAULT_CAPABILITIES.into_iter().collect()
    }

    #[test]
    fn denies_by_default_with_eperm() {
        let profile = runtime_default(&default_caps());
        assert_eq!(profile.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(profile.default_errno_ret(), Some(1));
        assert!(profile.architectures().as_deref().is_some_and(
            |a| a.contains(&Arch::ScmpArchX86_64) || a.contains(&Arch::ScmpArchAarch64)
        ));
    }

    #[test]
    fn blocks_what_containers_must_never_do() {
        let profile = runtime_default(&default_caps());
        for name in [
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "bpf",
            "keyctl",
            "add_key",
            "request_key",
            "unshare",
            "mount",
            "umount2",
            "setns",
            "pivot_root",
            "ptrace",
            "reboot",
            "swapon",
            "open_by_handle_at",
            "perf_event_open",
            "userfaultfd",
            "io_uring_setup",
        ] {
            assert!(!allows(&profile, name), "{name} must be blocked");
        }
    }

    #[test]
    fn allows_what_a_shell_needs() {
        let profile = runtime_default(&default_caps());
        for name in [
            "read",
            "write",
            "openat",
            "execve",
            "wait4",
            "rt_sigaction",
            "mmap",
            "fstat",
            "newfstatat",
            "getdents64",
            "pipe2",
            "dup2",
            "socket",
            "chroot",
            "exit_group",
        ] {
            assert!(allows(&profile, name), "{name} must be allowed");
        }
    }

    #[test]
    fn clone_is_allowed_only_without_namespace_flags() {
        let profile = runtime_default(&default_caps());
        let rules = profile.syscalls().clone().unwrap_or_default();
        let clone = rules
            .iter()
            .find(|r| r.names() == &["clone".to_string()])
            .expect("a clone rule");
        let arg = &clone.args().as_deref().expect("filtered by flags")[0];
        assert_eq!(arg.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(arg.value(), 0x7e02_0000);
        assert_eq!(arg.value_two(), Some(0));
        let clone3 = rules
            .iter()
            .find(|r| r.names() == &["clone3".to_string()])
            .expect("a clone3 rule");
        assert_eq!(clone3.action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3.errno_ret(), Some(38));
    }

    #[test]
    fn capabilities_unlock_their_system_calls() {
        let mut caps = default_caps();
        caps.insert("SYS_ADMIN");
        caps.insert("SYS_PTRACE");
        let profile = runtime_default(&caps);
        for name in [
            "mount", "unshare", "setns", "clone", "clone3", "ptrace", "bpf",
        ] {
            assert!(allows(&profile, name), "{name} with its capability");
        }
        for name in ["kexec_load", "keyctl", "init_module", "reboot"] {
            assert!(!allows(&profile, name), "{name} still blocked");
        }
    }
}
