//! Test-only crash points: every place where berth makes state durable or
//! publishes it calls [`crash_point`] — a file synced, renamed into place,
//! its directory synced; a `syncfs`; a metadata transaction committed; a
//! pod network stage passed. The crash-consistency suite
//! (`tests/tests/crash_consistency.rs`) kills the process at each of them
//! in turn and checks the state the next start finds.
//!
//! - `BERTH_TEST_CRASH_AT=N`: at the N-th point this process reaches
//!   (counted across all its threads) it prints
//!   `berth: crash point N (<name>: <subject>)` on stderr and SIGKILLs
//!   itself: no unwinding, no destructor, no `Drop` of a lease or a temp
//!   file runs, as in a power cut.
//! - `BERTH_TEST_CRASH_POINTS=1`: prints that line for every point reached
//!   (so a test learns how many points a scenario passes), and goes on.
//! - `BERTH_TEST_CRASH_MATCH=TEXT`: only points whose `name: subject`
//!   contains TEXT count (`config.json` with `BERTH_TEST_CRASH_AT=1`: the
//!   first container bundle written), so a test can crash at one exact
//!   step whatever else the process does meanwhile.
//!
//! Debug builds only: release builds ignore both variables (with a
//! warning), so the hook is never active by accident.

use std::fmt::Display;
use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

pub const CRASH_AT_ENV: &str = "BERTH_TEST_CRASH_AT";
pub const CRASH_POINTS_ENV: &str = "BERTH_TEST_CRASH_POINTS";
pub const CRASH_MATCH_ENV: &str = "BERTH_TEST_CRASH_MATCH";

/// What the environment asked for.
#[derive(Debug, Default)]
struct Hook {
    crash_at: Option<u64>,
    print: bool,
    only: Option<String>,
    reached: AtomicU64,
}

impl Hook {
    /// Counts one point reached: its number, and whether to crash there.
    fn reach(&self) -> (u64, bool) {
        let n = self.reached.fetch_add(1, Ordering::SeqCst) + 1;
        (n, self.crash_at == Some(n))
    }
}

static HOOK: OnceLock<Option<Hook>> = OnceLock::new();

fn hook() -> Option<&'static Hook> {
    HOOK.get_or_init(|| {
        from_env(
            std::env::var(CRASH_AT_ENV).ok().as_deref(),
            std::env::var(CRASH_POINTS_ENV).ok().as_deref(),
            cfg!(debug_assertions),
        )
        .map(|hook| Hook {
            only: std::env::var(CRASH_MATCH_ENV).ok(),
            ..hook
        })
    })
    .as_ref()
}

fn from_env(crash_at: Option<&str>, print: Option<&str>, debug_build: bool) -> Option<Hook> {
    if crash_at.is_none() && print.is_none() {
        return None;
    }
    if !debug_build {
        tracing::warn!(
            "{CRASH_AT_ENV} / {CRASH_POINTS_ENV} are set but ignored: crash points work in debug builds only"
        );
        return None;
    }
    let crash_at = match crash_at.map(str::parse::<u64>) {
        Some(Ok(n)) if n > 0 => Some(n),
        Some(_) => {
            tracing::warn!(value = ?crash_at, "{CRASH_AT_ENV}: not a positive number, ignored");
            None
        }
        None => None,
    };
    let print = print.is_some_and(|value| value == "1");
    if crash_at.is_none() && !print {
        return None;
    }
    tracing::warn!(
        crash_at,
        print,
        "TEST HOOK ACTIVE: this process counts its crash points and may kill itself at one"
    );
    Some(Hook {
        crash_at,
        print,
        only: None,
        reached: AtomicU64::new(0),
    })
}

/// Whether crash points are being counted in this process (the network
/// drivers then report their setup stages as points too).
pub fn armed() -> bool {
    hook().is_some()
}

/// A point where state just became durable or visible: `name` says which
/// step (a fixed phrase, no `:`), `subject` what it concerned (a path).
/// Does nothing unless the test hook is armed.
pub fn crash_point(name: &str, subject: &dyn Display) {
    let Some(hook) = hook() else {
        return;
    };
    let point = format!("{name}: {subject}");
    if hook.only.as_ref().is_some_and(|text| !point.contains(text)) {
        return;
    }
    let (n, crash) = hook.reach();
    if hook.print || crash {
        // Not eprintln!: a closed stderr must not turn into a panic here.
        let _ = writeln!(std::io::stderr().lock(), "berth: crash point {n} ({point})");
    }
    if crash {
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
        // SIGKILL takes the whole process; nothing of this thread runs on.
        loop {
            std::thread::park();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hook_is_off_unless_asked_for_and_in_debug_builds_only() {
        assert!(from_env(None, None, true).is_none());
        assert!(from_env(Some("3"), Some("1"), false).is_none());
        assert!(
            from_env(Some("0"), None, true).is_none(),
            "points count from 1"
        );
        assert!(from_env(Some("x"), None, true).is_none());
        assert!(from_env(None, Some("0"), true).is_none());
        let printing = from_env(None, Some("1"), true).expect("armed");
        assert!(printing.print && printing.crash_at.is_none());
    }

    #[test]
    fn the_nth_point_reached_is_the_crash_and_only_it() {
        let hook = from_env(Some("3"), None, true).expect("armed");
        let reached: Vec<(u64, bool)> = (0..5).map(|_| hook.reach()).collect();
        assert_eq!(
            reached,
            [(1, false), (2, false), (3, true), (4, false), (5, false)]
        );
    }
}
