//! Time and randomness, behind one abstraction.
//!
//! Everything in the runtime that waits (request timeouts, restart backoff, later timers, idle
//! deactivation and retries) and everything a guest reads as time or randomness (WASI clocks and
//! `random_get`) goes through a [`Clock`] and an [`Entropy`]. Production uses [`SystemClock`] and
//! [`OsEntropy`]; tests (and later a simulation mode with virtual time) use [`ManualClock`] and
//! [`SeededEntropy`].

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A boxed, sendable future returned by [`Clock::sleep`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A source of time.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic time since the clock was created.
    fn now(&self) -> Duration;
    /// Wall-clock time since the Unix epoch.
    fn unix_now(&self) -> Duration;
    /// A future that completes once `duration` has passed on this clock.
    fn sleep(&self, duration: Duration) -> Sleep;
    /// A future that completes once this clock reads `deadline` (a time of [`Clock::now`]), at
    /// once when it already does. Clocks should implement it without reading the time twice:
    /// the default, `sleep(deadline - now())`, sleeps too long when the clock moves between the
    /// two.
    fn sleep_until(&self, deadline: Duration) -> Sleep {
        self.sleep(deadline.saturating_sub(self.now()))
    }
    /// A future that completes once this clock's wall time ([`Clock::unix_now`]) reads `at`, at
    /// once when it already does; as for [`Clock::sleep_until`], clocks should implement it
    /// without reading the time twice.
    fn sleep_until_unix(&self, at: Duration) -> Sleep {
        self.sleep(at.saturating_sub(self.unix_now()))
    }
}

/// The real clock: tokio's timer for sleeping, the OS for reading.
#[derive(Debug, Clone)]
pub struct SystemClock {
    start: Instant,
}

impl SystemClock {
    /// A clock whose monotonic time starts now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }
    fn unix_now(&self) -> Duration {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    }
    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
    fn sleep_until(&self, deadline: Duration) -> Sleep {
        Box::pin(tokio::time::sleep_until((self.start + deadline).into()))
    }
}

/// A clock that only moves when told to, for tests and simulation.
///
/// ```
/// use std::time::Duration;
/// use bunraku_runtime::clock::{Clock, ManualClock};
/// let clock = ManualClock::new();
/// let mut sleep = clock.sleep(Duration::from_secs(5));
/// clock.advance(Duration::from_secs(4));
/// assert!(futures::FutureExt::now_or_never(&mut sleep).is_none());
/// clock.advance(Duration::from_secs(1));
/// assert!(futures::FutureExt::now_or_never(&mut sleep).is_some());
/// ```
#[derive(Clone, Default)]
pub struct ManualClock {
    inner: Arc<Mutex<ManualInner>>,
}

#[derive(Default)]
struct ManualInner {
    now: Duration,
    unix_base: Duration,
    next_id: u64,
    sleepers: BTreeMap<(Duration, u64), Option<Waker>>,
}

impl ManualClock {
    /// A clock at monotonic time zero and wall time 2026-01-01T00:00:00Z.
    pub fn new() -> Self {
        let clock = Self::default();
        clock.inner.lock().unwrap().unix_base = Duration::from_secs(1_767_225_600);
        clock
    }

    /// Moves time forward and wakes every sleep that is due.
    pub fn advance(&self, by: Duration) {
        let wakers: Vec<Waker> = {
            let mut inner = self.inner.lock().unwrap();
            inner.now += by;
            let now = inner.now;
            let due: Vec<_> = inner
                .sleepers
                .range(..=(now, u64::MAX))
                .map(|(k, _)| *k)
                .collect();
            due.into_iter()
                .filter_map(|k| inner.sleepers.remove(&k).flatten())
                .collect()
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// How many sleeps are waiting.
    pub fn pending_sleeps(&self) -> usize {
        self.inner.lock().unwrap().sleepers.len()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        self.inner.lock().unwrap().now
    }
    fn unix_now(&self) -> Duration {
        let inner = self.inner.lock().unwrap();
        inner.unix_base + inner.now
    }
    fn sleep(&self, duration: Duration) -> Sleep {
        let mut inner = self.inner.lock().unwrap();
        let deadline = inner.now + duration;
        self.sleeper(&mut inner, deadline)
    }
    fn sleep_until(&self, deadline: Duration) -> Sleep {
        let mut inner = self.inner.lock().unwrap();
        self.sleeper(&mut inner, deadline)
    }
    fn sleep_until_unix(&self, at: Duration) -> Sleep {
        let mut inner = self.inner.lock().unwrap();
        let deadline = at.saturating_sub(inner.unix_base);
        self.sleeper(&mut inner, deadline)
    }
}

impl ManualClock {
    /// A sleep until `deadline`, registered under the lock the caller holds (so that no
    /// `advance` falls between reading the time and registering).
    fn sleeper(&self, inner: &mut ManualInner, deadline: Duration) -> Sleep {
        inner.next_id += 1;
        let key = (deadline, inner.next_id);
        inner.sleepers.insert(key, None);
        Box::pin(ManualSleep {
            clock: self.inner.clone(),
            key,
        })
    }
}

struct ManualSleep {
    clock: Arc<Mutex<ManualInner>>,
    key: (Duration, u64),
}

impl Future for ManualSleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.clock.lock().unwrap();
        if inner.now >= self.key.0 {
            inner.sleepers.remove(&self.key);
            return Poll::Ready(());
        }
        inner.sleepers.insert(self.key, Some(cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for ManualSleep {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.clock.lock() {
            inner.sleepers.remove(&self.key);
        }
    }
}

/// A source of random bytes.
pub trait Entropy: Send + Sync + 'static {
    /// Fills `buf` with random bytes.
    fn fill(&self, buf: &mut [u8]);

    /// A random `u64`.
    fn next_u64(&self) -> u64 {
        let mut b = [0; 8];
        self.fill(&mut b);
        u64::from_le_bytes(b)
    }
}

/// The operating system's random source.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&self, buf: &mut [u8]) {
        let mut filled = 0;
        while filled < buf.len() {
            match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty())
            {
                Ok(n) => filled += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => panic!("the OS random source failed: {e}"),
            }
        }
    }
}

/// A deterministic generator (splitmix64) for tests and simulation: same seed, same bytes.
#[derive(Debug)]
pub struct SeededEntropy {
    state: Mutex<u64>,
}

impl SeededEntropy {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: Mutex::new(seed),
        }
    }
}

impl Entropy for SeededEntropy {
    fn fill(&self, buf: &mut [u8]) {
        let mut state = self.state.lock().unwrap();
        for chunk in buf.chunks_mut(8) {
            *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = *state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_entropy_repeats_for_the_same_seed() {
        let (a, b) = (SeededEntropy::new(7), SeededEntropy::new(7));
        let (mut x, mut y) = ([0u8; 13], [0u8; 13]);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_eq!(x, y);
        assert_ne!(
            SeededEntropy::new(8).next_u64(),
            SeededEntropy::new(7).next_u64()
        );
    }

    #[test]
    fn manual_clock_wakes_sleeps_in_deadline_order_only_when_due() {
        let clock = ManualClock::new();
        let mut late = clock.sleep(Duration::from_millis(20));
        let mut early = clock.sleep(Duration::from_millis(10));
        assert_eq!(clock.pending_sleeps(), 2);
        clock.advance(Duration::from_millis(10));
        assert!(futures::FutureExt::now_or_never(&mut early).is_some());
        assert!(futures::FutureExt::now_or_never(&mut late).is_none());
        clock.advance(Duration::from_millis(10));
        assert!(futures::FutureExt::now_or_never(&mut late).is_some());
        assert_eq!(clock.now(), Duration::from_millis(20));
    }

    /// On a clock moved to 4 ms, a sleep that `until` makes for 10 ms is pending until the clock
    /// reads 10 (a sleep of 10 ms would end at 14), and one for 3 ms is due at once.
    fn ends_at_ten_though_made_at_four(clock: &ManualClock, until: impl Fn(Duration) -> Sleep) {
        clock.advance(Duration::from_millis(4));
        let mut due_at_ten = until(Duration::from_millis(10));
        let mut past = until(Duration::from_millis(3));
        assert!(
            futures::FutureExt::now_or_never(&mut past).is_some(),
            "already due"
        );
        clock.advance(Duration::from_millis(5));
        assert!(futures::FutureExt::now_or_never(&mut due_at_ten).is_none());
        clock.advance(Duration::from_millis(1));
        assert!(futures::FutureExt::now_or_never(&mut due_at_ten).is_some());
    }

    #[test]
    fn a_sleep_until_a_deadline_ends_at_that_deadline_however_the_clock_moved_before() {
        let clock = ManualClock::new();
        ends_at_ten_though_made_at_four(&clock, |at| clock.sleep_until(at));
    }

    #[test]
    fn a_sleep_until_a_wall_time_ends_at_that_time_however_the_clock_moved_before() {
        let clock = ManualClock::new();
        let start = clock.unix_now();
        ends_at_ten_though_made_at_four(&clock, |at| clock.sleep_until_unix(start + at));
    }

    #[tokio::test]
    async fn the_system_clock_sleeps_until_a_deadline_on_its_own_time() {
        let clock = SystemClock::new();
        let deadline = clock.now() + Duration::from_millis(20);
        clock.sleep_until(deadline).await;
        assert!(clock.now() >= deadline);
        // A deadline in the past is due at once.
        clock.sleep_until(Duration::ZERO).await;
    }
}
