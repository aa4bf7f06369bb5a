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
//! image pages it dropped. The pages that changed only a little (the actor's state, the
//! allocator's bookkeeping, the SDK's event buffer: a few hundred changed bytes each) are
//! dropped too, their changed words kept as patches in host memory
//! ([`SlotAllocator::trim`](crate::memory::SlotAllocator::trim)). Before the task enters the
//! guest again, for whatever reason (a message, a reply, a timer, a stop), it copies those pages
//! back from the image and applies the patches; the other pages come back as zero when touched.
//! The guest sees the same memory; the first entry after a trim pays for the copy and the page
//! faults (tens of microseconds for a small guest, `BENCHMARKS.md`), which is why only idle
//! instances are trimmed. Trims take the guest lanes' time too, so at most
//! [`MAX_TRIMS_IN_FLIGHT`] are asked for and not done at any time: many actors that fall idle
//! together are trimmed as the lanes get through them, not in one burst ahead of the messages
//! of the others. An instance is trimmed once per idle period: it is looked at again after it
//! entered the guest.
//!
//! The task runs on real time even on a virtual clock: trimming is invisible to guests, and only
//! the process's resident memory depends on it.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::actor::{ActorCell, ActorPhase};
use crate::host::Shared;

/// Default [`HostConfig::idle_trim`](crate::HostConfig::idle_trim): 1 second.
pub const DEFAULT_IDLE_TRIM: Duration = Duration::from_secs(1);

/// Most trims asked for and not done yet, at any time. A trim runs on a guest lane like a
/// message, queued behind the work already there and ahead of what comes next: when many
/// actors fall idle together (a burst of activations, a host that just started 100,000
/// actors), asking all of them at once would queue every message behind all their trims.
/// Asked a thousand at a time, a message waits behind a thousand trims at most, and the
/// rest are asked as the lanes get through them.
pub const MAX_TRIMS_IN_FLIGHT: usize = 1_000;

/// How often the task looks whether the workers got through the trims in flight, while idle
/// instances wait to be asked.
const CATCH_UP: Duration = Duration::from_millis(10);

/// Asks instances idle for `after` to trim their memory, until the host is gone. Looks every
/// quarter of `after` (at least every 5 ms, at most every 5 seconds) for instances that became
/// idle, and asks them with at most [`MAX_TRIMS_IN_FLIGHT`] trims asked for and not done; the
/// others wait their turn, in the order they became idle.
pub(crate) async fn trim_idle(shared: Weak<Shared>, after: Duration) {
    let tick = (after / 4).clamp(Duration::from_millis(5), Duration::from_secs(5));
    // Looks in a row without an entry before an instance counts as idle for `after`.
    let needed = after.as_nanos().div_ceil(tick.as_nanos()).max(1) as u32;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Idle instances not asked yet, and the ones asked that have not taken the request.
    let mut waiting: VecDeque<Weak<ActorCell>> = VecDeque::new();
    let mut in_flight: Vec<Weak<ActorCell>> = Vec::new();
    loop {
        let look = if waiting.is_empty() {
            interval.tick().await;
            true
        } else {
            tokio::select! {
                biased;
                _ = interval.tick() => true,
                () = tokio::time::sleep(CATCH_UP) => false,
            }
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if look {
            find_idle(&shared, needed, &mut waiting);
        }
        in_flight.retain(|cell| {
            cell.upgrade()
                .is_some_and(|c| c.trim_pending() && c.phase() == ActorPhase::Running)
        });
        while in_flight.len() < MAX_TRIMS_IN_FLIGHT
            && let Some(cell) = waiting.pop_front()
        {
            let Some(cell) = cell.upgrade() else {
                continue;
            };
            // Still idle: no entry since the look that found it (a later one starts over).
            let idle = cell.idle.entries.load(Ordering::Relaxed)
                == cell.stats.entries.load(Ordering::Relaxed);
            if idle && cell.phase() == ActorPhase::Running && cell.booted.load(Ordering::Relaxed) {
                cell.request_trim();
                in_flight.push(Arc::downgrade(&cell));
            }
        }
    }
}

/// One look at every instance: counts the looks in a row that found no new entry, and queues
/// in `waiting` the ones that have just been idle for `needed` looks.
fn find_idle(shared: &Shared, needed: u32, waiting: &mut VecDeque<Weak<ActorCell>>) {
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
                // Found already in this idle period.
                continue;
            }
            idle.looks.store(looks + 1, Ordering::Relaxed);
            if looks + 1 == needed {
                waiting.push_back(Arc::downgrade(cell));
            }
        }
    }
}
