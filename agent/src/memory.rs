//! Keeping the idle agent small. glibc's malloc gives threads that allocate
//! at the same time arenas of their own (up to eight per core) and keeps
//! what is freed in each for reuse; for an agent that works in short bursts
//! (a reconcile, a pull) and then idles for minutes, that is memory held
//! for nothing. So: few arenas, and freed memory handed back to the kernel
//! once a burst of work is over.
//!
//! Most of an idle agent's resident memory is not heap but code: the pages
//! of the executable a burst ran (and the kernel maps them 64 KiB at a
//! time). After a burst they are unmapped too ([`release_code_pages`]):
//! they stay in the page cache, so the next burst maps them again with
//! minor faults and no disk reads, and meanwhile the kernel may reclaim
//! them like any unmapped cache instead of counting them as the agent's.
//!
//! Other C libraries (musl) manage memory differently; there the malloc
//! settings are no-ops.

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
pub fn trim() {
    trim_heap();
    release_code_pages();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim_heap() {
    // SAFETY: malloc_trim takes no pointers and is thread-safe.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

/// A read-only mapping of a file, as `/proc/self/smaps` lists it.
#[derive(Debug, PartialEq, Eq)]
struct FileMapping {
    start: usize,
    end: usize,
    /// Pages of it that are private copies (relocated data made read-only
    /// after): unmapping those would lose them.
    anonymous_kb: u64,
    resident_kb: u64,
}

/// The read-only, private, file-backed mappings in `smaps` (code and
/// constants of the executable and the libraries).
fn read_only_file_mappings(smaps: &str) -> Vec<FileMapping> {
    let mut mappings: Vec<FileMapping> = Vec::new();
    let mut current_is_candidate = false;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            let perms = fields.next().unwrap_or("");
            let inode = fields.nth(2).unwrap_or("0");
            current_is_candidate = matches!(perms, "r-xp" | "r--p") && inode != "0";
            if current_is_candidate {
                mappings.push(FileMapping {
                    start,
                    end,
                    // Unknown until its Anonymous line: assume the worst.
                    anonymous_kb: u64::MAX,
                    resident_kb: 0,
                });
            }
            continue;
        }
        if !current_is_candidate {
            continue;
        }
        let kb = || fields.clone().next().and_then(|v| v.parse::<u64>().ok());
        let Some(mapping) = mappings.last_mut() else {
            continue;
        };
        match first {
            "Rss:" => mapping.resident_kb = kb().unwrap_or(0),
            "Anonymous:" => mapping.anonymous_kb = kb().unwrap_or(u64::MAX),
            _ => {}
        }
    }
    mappings
}

/// Unmaps the resident pages of read-only file mappings that hold no
/// private page (see the module doc). Returns the KiB released. Best
/// effort: a mapping that cannot be released is left as it is.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn release_code_pages() -> u64 {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut released = 0;
    for mapping in read_only_file_mappings(&smaps) {
        if mapping.anonymous_kb != 0 || mapping.resident_kb == 0 {
            continue;
        }
        // SAFETY: the range is a whole private, read-only, file-backed
        // mapping of this process with no private pages: MADV_DONTNEED
        // only drops page table entries, and the next access maps the same
        // file contents again. Nothing can write to it meanwhile (it is
        // read-only), so no data is lost.
        let result = unsafe {
            libc::madvise(
                mapping.start as *mut libc::c_void,
                mapping.end - mapping.start,
                libc::MADV_DONTNEED,
            )
        };
        if result == 0 {
            released += mapping.resident_kb;
        }
    }
    released
}

#[cfg(not(target_os = "linux"))]
pub fn release_code_pages() -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resident_file_kb() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let line = status
            .lines()
            .find(|l| l.starts_with("RssFile:"))
            .expect("RssFile line");
        line.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .expect("a number")
    }

    #[test]
    fn code_pages_are_released_and_the_code_still_runs() {
        let before = resident_file_kb();
        let released = release_code_pages();
        let after = resident_file_kb();
        assert!(released > 0, "nothing released (RssFile {before} kB)");
        assert!(after < before, "RssFile {before} kB -> {after} kB");
        // Running code again maps its pages back from the page cache.
        let mappings =
            read_only_file_mappings(&std::fs::read_to_string("/proc/self/smaps").expect("smaps"));
        assert!(!mappings.is_empty());
    }

    #[test]
    fn smaps_parsing_keeps_only_read_only_file_mappings_with_their_counts() {
        let smaps = "\
55d0c0000000-55d0c0400000 r--p 00000000 fd:01 1234 /usr/bin/berth
Rss:                 800 kB
Anonymous:             0 kB
55d0c0400000-55d0c1000000 r-xp 00400000 fd:01 1234 /usr/bin/berth
Rss:                9000 kB
Anonymous:             0 kB
55d0c1000000-55d0c1040000 r--p 01000000 fd:01 1234 /usr/bin/berth
Rss:                 256 kB
Anonymous:           256 kB
55d0c1040000-55d0c1050000 rw-p 01040000 fd:01 1234 /usr/bin/berth
Rss:                  64 kB
Anonymous:            64 kB
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0 [vdso]
Rss:                   8 kB
Anonymous:             0 kB
";
        let found = read_only_file_mappings(smaps);
        let summary: Vec<(usize, u64, u64)> = found
            .iter()
            .map(|m| (m.start, m.resident_kb, m.anonymous_kb))
            .collect();
        assert_eq!(
            summary,
            [
                (0x55d0_c000_0000, 800, 0),
                (0x55d0_c040_0000, 9000, 0),
                (0x55d0_c100_0000, 256, 256),
            ],
            "the writable mapping and the vdso are not candidates"
        );
    }

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
