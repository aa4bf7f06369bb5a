//! Resident memory and mapping count of this process, from `/proc/self`.

/// `VmRSS` of this process in KiB.
pub fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// A `kB` field of `/proc/self/status`.
pub fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Lines of `/proc/self/maps`: the number of kernel mappings (VMAs), which `vm.max_map_count`
/// caps.
pub fn maps_count() -> usize {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |s| s.lines().count())
}

/// `vm.max_map_count`.
pub fn max_map_count() -> u64 {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Minor page faults of this process so far (all threads), from `/proc/self/stat`: first
/// touches of fresh memory, each a trip into the kernel.
pub fn minor_faults() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // After the command name in parentheses: state, ppid, pgrp, session, tty_nr,
            // tpgid, flags, minflt.
            let rest = &s[s.rfind(')')? + 1..];
            rest.split_whitespace().nth(7)?.parse().ok()
        })
        .unwrap_or(0)
}

/// The resident KiB (`Rss` in `/proc/self/smaps`) of the mappings of at least `min_bytes`: with
/// `min_bytes` the size of one chunk of linear-memory slots (`slot_size × slots_per_chunk`, 64 GiB
/// by default; nothing else in the process maps that much), the guests' linear memory.
pub fn rss_of_mappings_kib(min_bytes: u64) -> u64 {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut total = 0;
    let mut large = false;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) =
                (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        {
            // A mapping's header line: `start-end perms offset dev inode [path]`.
            large = end - start >= min_bytes;
        } else if first == "Rss:" && large {
            total += fields
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}
