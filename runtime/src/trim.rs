//! Idle trimming: an instance that has not entered the guest for a while gives back the pages of
//! its linear memory that can be rebuilt.
//!
//! A Rust guest's memory holds, besides its heap and stack, its data segments: the read-only
//! data of std, the SDK and its dependencies (40–50 KiB for a small guest), copied into every
//! instance at instantiation, because mapping them copy-on-write would cost kernel mappings per
//! instance (see [`crate::memory`]). Most of those pages never change. Neither do the pages that
//! were touched once and are zero again, such as the slot's prefaulted pages the guest never
//! used. And between two entries the guest's shadow stack holds nothing: a guest built with the
//! SDK says where it is (the optional `bunraku_stack` export, `bunraku_abi::exports::STACK`).
//!
//! A host task (`trim_idle`) looks at every instance every quarter of
//! [`HostConfig::idle_trim`](crate::HostConfig::idle_trim). One that entered the guest no time
//! since the last `idle_trim` is asked to trim: its own task, between two entries (so never
//! while the guest runs), drops with `MADV_DONTNEED` every resident page of its own that is all
//! zero, wholly inside the shadow stack, or equal to the same page of its module's image (the
//! first instance's memory right after instantiation and `_initialize`), and keeps the list of
//! image pages it dropped
//! ([`SlotAllocator::trim`](crate::memory::SlotAllocator::trim)). Before the task enters the
//! guest again, for whatever reason (a message, a reply, a timer, a stop), it copies those pages
//! back from the image; the other pages come back as zero when touched. The guest sees the same
//! memory; the first entry after a trim pays for the copy and the page faults (tens of
//! microseconds for a small guest, `BENCHMARKS.md`), which is why only idle instances are
//! trimmed. An instance is trimmed once per idle period: it is looked at again after it entered
//! the guest.
//!
//! The task runs on real time even on a virtual clock: trimming is invisible to guests, and only
//! the process's resident memory depends on it.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::actor::ActorPhase;
use crate::host::Shared;

/// Default [`HostConfig::idle_trim`](crate::HostConfig::idle_trim): 1 second.
pub const DEFAULT_IDLE_TRIM: Duration = Duration::from_secs(1);

/// Asks instances idle for `after` to trim their memory, until the host is gone. Looks every
/// quarter of `after` (at least every 5 ms, at most every 5 seconds).
pub(crate) async fn trim_idle(shared: Weak<Shared>, after: Duration) {
    let tick = (after / 4).clamp(Duration::from_millis(5), Duration::from_secs(5));
    // Looks in a row without an entry before an instance counts as idle for `after`.
    let needed = after.as_nanos().div_ceil(tick.as_nanos()).max(1) as u32;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        for entry in shared.registry.iter() {
            for cell in &entry.value().cells {
                let idle = &cell.idle;
                let entries = cell.stats.entries.load(Ordering::Relaxed);
                if idle.entries.swap(entries, Ordering::Relaxed) != entries {
                    idle.looks.store(0, Ordering::Relaxed);
                    continue;
                }
                let looks = idle.looks.load(Ordering::Relaxed);
                if looks > needed {
                    // Asked already in this idle period.
                    continue;
                }
                idle.looks.store(looks + 1, Ordering::Relaxed);
                if looks + 1 == needed
                    && cell.phase() == ActorPhase::Running
                    && cell.booted.load(Ordering::Relaxed)
                {
                    cell.request_trim();
                }
            }
        }
    }
}
