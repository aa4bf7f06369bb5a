//! Windowed aggregation: per key, over tumbling or sliding windows, on processing time or on
//! event time with a watermark and an allowed lateness.
//!
//! A [`WindowedAggregate`] is plain state inside an actor: feed it items (with their key and
//! time) from messages or a stream, and it hands back results as windows close. It does no I/O
//! and reads no clock, so it behaves the same in a guest, in a native test and in a simulation.
//!
//! - **Windows** ([`Windows`]): tumbling windows of `size` (`[0, size)`, `[size, 2·size)`, …) or
//!   sliding windows of `size` every `slide` (an item belongs to `size / slide` of them).
//! - **Event time** ([`WindowedAggregate::event_time`]): items carry their own timestamps and may
//!   arrive out of order. The *watermark* is the largest event time seen minus the
//!   `out_of_orderness` bound (or what [`advance_to`](WindowedAggregate::advance_to) sets, for an
//!   idle source); a window fires once the watermark reaches its end. A fired window is kept for
//!   `allowed_lateness` more: an item for it arriving meanwhile updates it and fires it again (a
//!   result with [`WindowResult::update`] set). An item for a window already past its lateness is
//!   *late*: it is counted and handed back ([`Pushed::late`]) for a side output, never dropped
//!   silently.
//! - **Processing time** ([`WindowedAggregate::processing_time`]): the time of an item is when it
//!   is pushed (the caller passes its clock's now), windows fire when
//!   [`advance_to`](WindowedAggregate::advance_to) passes their end, and nothing is late.
//!
//! Results of one call come in order of window end, then start, then key.
//!
//! ```
//! use bunraku_sdk::window::{Mean, Windows, WindowedAggregate};
//! use std::time::Duration;
//!
//! let ms = Duration::from_millis;
//! // 10 s tumbling windows; items up to 2 s out of order; late updates for 5 s more.
//! let mut w = WindowedAggregate::<&str, Mean>::event_time(
//!     Windows::tumbling(ms(10_000)),
//!     ms(2_000),
//!     ms(5_000),
//! );
//! assert!(w.push("s1", 1_000, &20.0).results.is_empty());
//! assert!(w.push("s1", 9_000, &30.0).results.is_empty());
//! // Event time 12.5 s: the watermark (10.5 s) passes the end of [0, 10 s): it fires.
//! let fired = w.push("s1", 12_500, &99.0).results;
//! assert_eq!((fired[0].window.start_ms, fired[0].value), (0, 25.0));
//! // Out of order but within the lateness: [0, 10 s) fires again, updated.
//! let again = w.push("s1", 8_000, &40.0).results;
//! assert!(again[0].update && again[0].value == 30.0);
//! // Event time 20 s moves the watermark to 18 s, past 10 s + 5 s of lateness: [0, 10 s) is
//! // gone, and an item for it is late.
//! w.push("s1", 20_000, &1.0);
//! let late = w.push("s1", 3_000, &50.0).late.unwrap();
//! assert_eq!((late.time_ms, w.late_items()), (3_000, 1));
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

/// An aggregation over the items of one window and key.
pub trait Aggregate: Default + Clone {
    /// What is added.
    type In;
    /// What a window's result is.
    type Out: Clone;
    /// Adds one item.
    fn add(&mut self, item: &Self::In);
    /// The result so far.
    fn result(&self) -> Self::Out;
}

/// The arithmetic mean of `f64`s.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Mean {
    sum: f64,
    count: u64,
}

impl Aggregate for Mean {
    type In = f64;
    type Out = f64;
    fn add(&mut self, item: &f64) {
        self.sum += item;
        self.count += 1;
    }
    fn result(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// How many items.
#[derive(Debug)]
pub struct Count<T>(u64, std::marker::PhantomData<fn(&T)>);

impl<T> Default for Count<T> {
    fn default() -> Self {
        Self(0, std::marker::PhantomData)
    }
}

impl<T> Clone for Count<T> {
    fn clone(&self) -> Self {
        Self(self.0, std::marker::PhantomData)
    }
}

impl<T> Aggregate for Count<T> {
    type In = T;
    type Out = u64;
    fn add(&mut self, _item: &T) {
        self.0 += 1;
    }
    fn result(&self) -> u64 {
        self.0
    }
}

/// Window shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    size_ms: u64,
    slide_ms: u64,
}

impl Windows {
    /// Back-to-back windows of `size` (at least 1 ms).
    pub fn tumbling(size: Duration) -> Self {
        let size_ms = (size.as_millis() as u64).max(1);
        Self {
            size_ms,
            slide_ms: size_ms,
        }
    }

    /// Windows of `size` starting every `slide` (at least 1 ms, at most `size`).
    pub fn sliding(size: Duration, slide: Duration) -> Self {
        let size_ms = (size.as_millis() as u64).max(1);
        let slide_ms = (slide.as_millis() as u64).clamp(1, size_ms);
        Self { size_ms, slide_ms }
    }

    /// The windows an item at `t` belongs to, earliest first.
    pub fn assign(&self, t: u64) -> impl Iterator<Item = Window> + use<> {
        let Self { size_ms, slide_ms } = *self;
        // The latest window starting at or before `t`, then back while `t` is still inside.
        let last = t - t % slide_ms;
        let first = (t + 1).saturating_sub(size_ms).div_ceil(slide_ms) * slide_ms;
        (first..=last)
            .step_by(usize::try_from(slide_ms).unwrap_or(usize::MAX))
            .map(move |start| Window {
                start_ms: start,
                end_ms: start + size_ms,
            })
    }
}

/// A window `[start_ms, end_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    /// First millisecond inside.
    pub start_ms: u64,
    /// First millisecond after.
    pub end_ms: u64,
}

/// One window's result for one key.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowResult<K, O> {
    /// The key.
    pub key: K,
    /// The window.
    pub window: Window,
    /// The aggregate over the window's items so far.
    pub value: O,
    /// Items in the window.
    pub count: u64,
    /// A late item updated a window that had fired already: this result replaces that one.
    pub update: bool,
}

/// An item that came after its windows' allowed lateness: for a side output.
#[derive(Debug, Clone, PartialEq)]
pub struct Late<K, V> {
    /// Its key.
    pub key: K,
    /// Its event time.
    pub time_ms: u64,
    /// The item.
    pub item: V,
}

/// What [`WindowedAggregate::push`] hands back.
#[derive(Debug, Clone, PartialEq)]
pub struct Pushed<K, O, V> {
    /// Windows that fired (or fired again) because of this item.
    pub results: Vec<WindowResult<K, O>>,
    /// The item itself, when it was too late for every window it belongs to.
    pub late: Option<Late<K, V>>,
}

struct Slot<A> {
    agg: A,
    count: u64,
    fired: bool,
}

/// Per-key windowed aggregation. See the [module documentation](self).
pub struct WindowedAggregate<K, A: Aggregate> {
    windows: Windows,
    event_time: bool,
    out_of_orderness_ms: u64,
    lateness_ms: u64,
    /// Open and fired-but-kept windows, by (end, start, key).
    slots: BTreeMap<(u64, u64, K), Slot<A>>,
    /// Everything before this has fired (event time: the watermark; processing time: now).
    watermark: u64,
    max_seen: u64,
    late: u64,
}

impl<K: Ord + Clone, A: Aggregate> WindowedAggregate<K, A>
where
    A::In: Clone,
{
    /// Windows over the items' own timestamps. The watermark trails the largest event time seen
    /// by `out_of_orderness`; fired windows accept late items for `allowed_lateness` more.
    pub fn event_time(
        windows: Windows,
        out_of_orderness: Duration,
        allowed_lateness: Duration,
    ) -> Self {
        Self {
            windows,
            event_time: true,
            out_of_orderness_ms: out_of_orderness.as_millis() as u64,
            lateness_ms: allowed_lateness.as_millis() as u64,
            slots: BTreeMap::new(),
            watermark: 0,
            max_seen: 0,
            late: 0,
        }
    }

    /// Windows over arrival time: pass the clock's now with every item and to `advance_to`.
    pub fn processing_time(windows: Windows) -> Self {
        Self {
            event_time: false,
            ..Self::event_time(windows, Duration::ZERO, Duration::ZERO)
        }
    }

    /// Adds `item` for `key` at `time_ms` (its event time, or now for processing time). Updates
    /// of fired windows come first in the results, then the windows the item's time closes.
    pub fn push(&mut self, key: K, time_ms: u64, item: &A::In) -> Pushed<K, A::Out, A::In> {
        let mut results = Vec::new();
        let mut placed = false;
        for window in self.windows.assign(time_ms) {
            // Gone for good: past its lateness (or, on processing time, closed).
            if self.watermark >= window.end_ms + self.lateness_ms {
                continue;
            }
            placed = true;
            let slot = self
                .slots
                .entry((window.end_ms, window.start_ms, key.clone()))
                .or_insert_with(|| Slot {
                    agg: A::default(),
                    count: 0,
                    fired: false,
                });
            slot.agg.add(item);
            slot.count += 1;
            if slot.fired {
                results.push(WindowResult {
                    key: key.clone(),
                    window,
                    value: slot.agg.result(),
                    count: slot.count,
                    update: true,
                });
            }
        }
        let late = (!placed).then(|| {
            self.late += 1;
            Late {
                key,
                time_ms,
                item: item.clone(),
            }
        });
        if self.event_time && time_ms > self.max_seen {
            self.max_seen = time_ms;
            let mark = time_ms.saturating_sub(self.out_of_orderness_ms);
            results.extend(self.advance_to(mark));
        }
        Pushed { results, late }
    }

    /// Moves the watermark (event time: for an idle source; processing time: the clock's now)
    /// to `time_ms` if that is later, and returns the windows that fire.
    pub fn advance_to(&mut self, time_ms: u64) -> Vec<WindowResult<K, A::Out>> {
        if time_ms <= self.watermark {
            return Vec::new();
        }
        self.watermark = time_ms;
        let mut fired = Vec::new();
        for ((end, start, key), slot) in self.slots.iter_mut() {
            if *end > time_ms {
                break;
            }
            if !slot.fired {
                slot.fired = true;
                fired.push(WindowResult {
                    key: key.clone(),
                    window: Window {
                        start_ms: *start,
                        end_ms: *end,
                    },
                    value: slot.agg.result(),
                    count: slot.count,
                    update: false,
                });
            }
        }
        // Windows past their lateness are gone.
        while let Some(entry) = self.slots.first_entry() {
            if entry.key().0 + self.lateness_ms > time_ms {
                break;
            }
            entry.remove();
        }
        fired
    }

    /// The end of the input: fires every window still open.
    pub fn finish(&mut self) -> Vec<WindowResult<K, A::Out>> {
        self.advance_to(u64::MAX)
    }

    /// The watermark: every window ending at or before it has fired.
    pub fn watermark(&self) -> u64 {
        self.watermark
    }

    /// Items that came too late for every window they belong to, so far.
    pub fn late_items(&self) -> u64 {
        self.late
    }

    /// Windows held (open, or fired and waiting out their lateness), over all keys.
    pub fn held(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn starts(w: &Windows, t: u64) -> Vec<u64> {
        w.assign(t).map(|w| w.start_ms).collect()
    }

    #[test]
    fn items_are_assigned_to_every_window_that_contains_them() {
        let tumbling = Windows::tumbling(ms(10));
        assert_eq!(starts(&tumbling, 0), [0]);
        assert_eq!(starts(&tumbling, 9), [0]);
        assert_eq!(starts(&tumbling, 10), [10]);
        let sliding = Windows::sliding(ms(10), ms(5));
        assert_eq!(starts(&sliding, 3), [0]);
        assert_eq!(starts(&sliding, 9), [0, 5]);
        assert_eq!(starts(&sliding, 12), [5, 10]);
        let thirds = Windows::sliding(ms(9), ms(3));
        assert_eq!(starts(&thirds, 10), [3, 6, 9]);
    }

    #[test]
    fn tumbling_event_time_windows_fire_per_key_in_order_when_the_watermark_passes() {
        let mut w =
            WindowedAggregate::<&str, Mean>::event_time(Windows::tumbling(ms(10)), ms(0), ms(0));
        w.push("a", 1, &1.0);
        w.push("b", 2, &10.0);
        w.push("a", 5, &3.0);
        let fired = w.push("a", 10, &7.0).results;
        let got: Vec<_> = fired.iter().map(|r| (r.key, r.value, r.count)).collect();
        assert_eq!(got, [("a", 2.0, 2), ("b", 10.0, 1)]);
        let rest = w.finish();
        assert_eq!(
            (rest[0].key, rest[0].window.start_ms, rest[0].value),
            ("a", 10, 7.0)
        );
        assert_eq!(w.held(), 0);
    }

    #[test]
    fn sliding_windows_count_an_item_in_each_window_it_falls_in() {
        // Nothing fires before `finish`: the watermark trails by 100 ms.
        let mut w = WindowedAggregate::<u8, Count<()>>::event_time(
            Windows::sliding(ms(10), ms(5)),
            ms(100),
            ms(0),
        );
        for t in [1, 6, 7, 12] {
            w.push(0, t, &());
        }
        let got: Vec<_> = w
            .finish()
            .iter()
            .map(|r| (r.window.start_ms, r.value))
            .collect();
        // [0,10): 1 6 7; [5,15): 6 7 12; [10,20): 12. ([0,5) etc. do not exist: starts are
        // multiples of the slide.)
        assert_eq!(got, [(0, 3), (5, 3), (10, 1)]);
    }

    #[test]
    fn out_of_order_items_within_the_bound_land_before_their_window_fires() {
        let mut w =
            WindowedAggregate::<u8, Count<()>>::event_time(Windows::tumbling(ms(10)), ms(5), ms(0));
        w.push(0, 12, &());
        // The watermark is 7: [0,10) is still open for an item at 4.
        assert!(w.push(0, 4, &()).late.is_none());
        let fired = w.push(0, 16, &()).results;
        assert_eq!(
            (fired[0].window.start_ms, fired[0].value, fired[0].update),
            (0, 1, false)
        );
    }

    #[test]
    fn late_items_update_fired_windows_within_the_lateness_and_go_to_the_side_output_after() {
        let mut w = WindowedAggregate::<u8, Count<u64>>::event_time(
            Windows::tumbling(ms(10)),
            ms(0),
            ms(10),
        );
        w.push(0, 1, &1);
        assert_eq!(w.push(0, 11, &2).results.len(), 1);
        let update = w.push(0, 5, &3);
        assert_eq!(
            (
                update.results[0].value,
                update.results[0].update,
                update.late
            ),
            (2, true, None)
        );
        // Watermark 20 = end 10 + lateness 10: [0,10) is gone.
        w.push(0, 20, &4);
        let late = w.push(0, 6, &5);
        assert!(late.results.is_empty());
        assert_eq!(
            late.late,
            Some(Late {
                key: 0,
                time_ms: 6,
                item: 5
            })
        );
        assert_eq!(w.late_items(), 1);
    }

    #[test]
    fn processing_time_windows_fire_as_the_clock_advances_and_nothing_is_late() {
        let mut w = WindowedAggregate::<u8, Mean>::processing_time(Windows::tumbling(ms(100)));
        w.push(1, 10, &2.0);
        w.push(1, 50, &4.0);
        assert!(w.advance_to(99).is_empty());
        let fired = w.advance_to(100);
        assert_eq!((fired[0].value, fired[0].count), (3.0, 2));
        // Now is 120: the item belongs to [100,200).
        assert!(w.push(1, 120, &1.0).late.is_none());
        assert_eq!(w.advance_to(250)[0].window.start_ms, 100);
        assert_eq!(w.late_items(), 0);
    }

    #[test]
    fn the_watermark_only_moves_forward() {
        let mut w =
            WindowedAggregate::<u8, Mean>::event_time(Windows::tumbling(ms(10)), ms(0), ms(0));
        w.push(0, 30, &1.0);
        assert_eq!(w.watermark(), 30);
        assert!(w.advance_to(20).is_empty());
        assert_eq!(w.watermark(), 30);
    }
}
