//! Keeping the idle agent small. glibc's malloc gives threads that allocate
//! at the same time arenas of their own (up to eight per core) and keeps
//! what is freed in each for reuse; for an agent that works in short bursts
//! (a reconcile, a pull) and then idles for minutes, that is memory held
//! for nothing. So: few arenas, and freed memory handed back to the kernel
//! once a burst of work is over.
//!
//! Other C libraries (musl) manage memory differently; there these are
//! no-ops.

/// Arenas the agent's threads share: the main one plus one, so a pull that
/// unpacks on a blocking thread does not serialise every other allocation.
pub const ARENAS: i32 = 2;

/// Limits malloc to `arenas` arenas. Call before the async runtime starts
/// its threads: arenas already made stay.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn limit_arenas(arenas: i32) {
    // SAFETY: mallopt only sets a malloc tunable; no pointers are passed.
    let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
    if ok != 1 {
        tracing::debug!(arenas, "malloc did not accept an arena limit");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_arenas(_arenas: i32) {}

/// Returns the free memory of every arena to the kernel (after a burst of
/// work; it takes well under a millisecond for a heap this size).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn trim() {
    // SAFETY: malloc_trim takes no pointers and is thread-safe.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_after_freeing_keeps_the_heap_usable() {
        limit_arenas(ARENAS);
        let blocks: Vec<Vec<u8>> = (0..64).map(|i| vec![i; 64 << 10]).collect();
        drop(blocks);
        trim();
        let again = vec![7u8; 1 << 20];
        assert!(again.iter().all(|&b| b == 7));
    }
}
