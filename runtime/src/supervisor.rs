//! Supervision decisions, modelled on OTP's `supervisor`.
//!
//! A [`Supervisor`] owns an ordered list of children (actors or other supervisors) and decides,
//! when one of them exits, what happens next: nothing, a restart of some children, or giving up
//! and escalating to its own parent. It holds no tasks and no instances; it is pure bookkeeping
//! driven by the runtime's monotonic clock ([`Clock::now`](crate::clock::Clock::now)), so every
//! rule is unit-tested here without wasm and without real time, and the same logic can later run
//! under a simulation clock.
//!
//! The rules, as in OTP:
//!
//! - A child's [`RestartType`] decides whether its exit is restarted: `permanent` always,
//!   `transient` only after an abnormal exit ([`Exit::Failure`]), `temporary` never (it is
//!   removed from the supervisor).
//! - The [`Strategy`] decides which children restart with it: `one-for-one` only the child,
//!   `one-for-all` every child, `rest-for-one` the child and every child started after it. The
//!   others are stopped first, in reverse start order, and started again in start order.
//!   A temporary child stopped this way is removed, never restarted.
//! - [`Intensity`]: more than `max_restarts` restarts within `period` means the supervisor gives
//!   up: it stops all its children in reverse start order and exits with a failure, which its
//!   parent handles like any child failure ([`Plan::escalate`]). A top-level supervisor that
//!   gives up stops the host.
//! - Restarts wait an exponential backoff with jitter per child (`backoff_delay`), reset once
//!   a child has run for the restart policy's `reset_after`.

use std::collections::VecDeque;
use std::time::Duration;

use crate::actor::backoff_delay;
use crate::manifest::RestartPolicy;

/// Which children restart when one of them has to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Strategy {
    /// Only the child that exited (OTP `one_for_one`, the default).
    #[default]
    OneForOne,
    /// Every child: the others are stopped and all are started again (OTP `one_for_all`).
    OneForAll,
    /// The child and every child started after it (OTP `rest_for_one`).
    RestForOne,
}

/// Whether a child is restarted after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RestartType {
    /// Always restarted (the default).
    #[default]
    Permanent,
    /// Restarted only after an abnormal exit.
    Transient,
    /// Never restarted; removed once it exits.
    Temporary,
}

/// How a child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// It finished on its own (its `on_stop` ran, or it asked to stop).
    Normal,
    /// It was stopped by its supervisor or the host.
    Shutdown,
    /// It trapped, failed to start, or (for a supervisor) gave up; the reason is for people.
    Failure(String),
}

impl Exit {
    /// Whether this exit counts as abnormal (restarts `transient` children).
    pub fn is_abnormal(&self) -> bool {
        matches!(self, Self::Failure(_))
    }
}

/// At most `max_restarts` restarts within `period` (OTP `intensity`/`period`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed within the window.
    pub max_restarts: u32,
    /// The sliding window.
    pub period: Duration,
}

impl Default for Intensity {
    /// Three restarts within five seconds. (OTP's default is one in five seconds; actors here are
    /// restarted with backoff, so a short burst of failures is tolerated before escalating.)
    fn default() -> Self {
        Self {
            max_restarts: 3,
            period: Duration::from_secs(5),
        }
    }
}

/// A child of a supervisor: its name and restart type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSpec {
    /// The actor's (or nested supervisor's) name.
    pub name: String,
    /// Whether it is restarted after it exits.
    pub restart: RestartType,
}

/// What the runtime has to do after a child exited.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Children to stop, in this order (reverse start order).
    pub stop: Vec<String>,
    /// Children to start again, in this order (start order), once `delay` has passed.
    pub start: Vec<String>,
    /// The backoff before the restart: the failed child's, applied to the whole group so that
    /// start order holds.
    pub delay: Duration,
    /// The supervisor gave up: stop everything in `stop`, then report a failure to the parent.
    pub escalate: Option<String>,
}

impl Plan {
    /// Whether nothing needs doing.
    pub fn is_empty(&self) -> bool {
        self.stop.is_empty() && self.start.is_empty() && self.escalate.is_none()
    }
}

#[derive(Debug)]
struct Child {
    spec: ChildSpec,
    /// Consecutive restarts, for the backoff; reset after a healthy period.
    attempt: u32,
    /// When it was last started.
    started: Duration,
}

/// One supervisor's children and restart history.
#[derive(Debug)]
pub struct Supervisor {
    strategy: Strategy,
    intensity: Intensity,
    policy: RestartPolicy,
    children: Vec<Child>,
    /// When recent restarts happened, oldest first, within the intensity period.
    restarts: VecDeque<Duration>,
    gave_up: bool,
}

impl Supervisor {
    /// A supervisor whose children are started in the order given, at time `now`.
    pub fn new(
        strategy: Strategy,
        intensity: Intensity,
        policy: RestartPolicy,
        children: Vec<ChildSpec>,
        now: Duration,
    ) -> Self {
        Self {
            strategy,
            intensity,
            policy,
            children: children
                .into_iter()
                .map(|spec| Child {
                    spec,
                    attempt: 0,
                    started: now,
                })
                .collect(),
            restarts: VecDeque::new(),
            gave_up: false,
        }
    }

    /// The children's names in start order.
    pub fn children(&self) -> impl Iterator<Item = &str> {
        self.children.iter().map(|c| c.spec.name.as_str())
    }

    /// Every child in reverse start order: the order to stop them in at shutdown.
    pub fn shutdown_order(&self) -> Vec<String> {
        self.children
            .iter()
            .rev()
            .map(|c| c.spec.name.clone())
            .collect()
    }

    /// Whether the supervisor exceeded its intensity and gave up.
    pub fn gave_up(&self) -> bool {
        self.gave_up
    }

    /// Adds a child started at run time (for instance by `spawn`), after the others.
    pub fn add_child(&mut self, spec: ChildSpec, now: Duration) {
        self.children.push(Child {
            spec,
            attempt: 0,
            started: now,
        });
    }

    /// Records that child `name` exited at `now` and returns what to do. `random` feeds the
    /// backoff jitter. An unknown name (a child already removed) needs nothing.
    pub fn child_exited(&mut self, name: &str, exit: &Exit, now: Duration, random: u64) -> Plan {
        let Some(at) = self.children.iter().position(|c| c.spec.name == name) else {
            return Plan::default();
        };
        if self.gave_up {
            return Plan::default();
        }
        let restart = match self.children[at].spec.restart {
            RestartType::Permanent => true,
            RestartType::Transient => exit.is_abnormal(),
            RestartType::Temporary => false,
        };
        if !restart {
            // A child that is not restarted leaves the supervisor; the others are untouched.
            self.children.remove(at);
            return Plan::default();
        }

        // Intensity: this restart plus the ones still inside the window.
        while self
            .restarts
            .front()
            .is_some_and(|t| now.saturating_sub(*t) > self.intensity.period)
        {
            self.restarts.pop_front();
        }
        self.restarts.push_back(now);
        if self.restarts.len() > self.intensity.max_restarts as usize {
            self.gave_up = true;
            let stop = self
                .children
                .iter()
                .enumerate()
                .rev()
                .filter(|(i, _)| *i != at)
                .map(|(_, c)| c.spec.name.clone())
                .collect();
            return Plan {
                stop,
                start: Vec::new(),
                delay: Duration::ZERO,
                escalate: Some(format!(
                    "more than {} restarts within {:?} (last: {name}: {})",
                    self.intensity.max_restarts,
                    self.intensity.period,
                    describe(exit)
                )),
            };
        }

        // Which children go down with it, by strategy.
        let affected: Vec<usize> = match self.strategy {
            Strategy::OneForOne => vec![at],
            Strategy::OneForAll => (0..self.children.len()).collect(),
            Strategy::RestForOne => (at..self.children.len()).collect(),
        };
        let stop: Vec<String> = affected
            .iter()
            .rev()
            .filter(|&&i| i != at)
            .map(|&i| self.children[i].spec.name.clone())
            .collect();
        // The failed child's backoff, reset once it has run for a healthy period.
        let child = &mut self.children[at];
        if now.saturating_sub(child.started) >= self.policy.reset_after {
            child.attempt = 0;
        }
        let delay = backoff_delay(&self.policy, child.attempt, random);
        child.attempt = child.attempt.saturating_add(1);
        // Temporary children stopped by the strategy are removed, not restarted.
        let mut start = Vec::new();
        for &i in &affected {
            let child = &mut self.children[i];
            if i != at && child.spec.restart == RestartType::Temporary {
                continue;
            }
            child.started = now + delay;
            start.push(child.spec.name.clone());
        }
        let removed: Vec<String> = affected
            .iter()
            .filter(|&&i| i != at && self.children[i].spec.restart == RestartType::Temporary)
            .map(|&i| self.children[i].spec.name.clone())
            .collect();
        self.children.retain(|c| !removed.contains(&c.spec.name));
        Plan {
            stop,
            start,
            delay,
            escalate: None,
        }
    }
}

fn describe(exit: &Exit) -> &str {
    match exit {
        Exit::Normal => "normal",
        Exit::Shutdown => "shutdown",
        Exit::Failure(reason) => reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAIL: fn() -> Exit = || Exit::Failure("trap".into());

    fn policy() -> RestartPolicy {
        RestartPolicy {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            reset_after: Duration::from_secs(30),
            jitter: 0.0,
        }
    }

    fn sup(strategy: Strategy, kinds: &[(&str, RestartType)]) -> Supervisor {
        let children = kinds
            .iter()
            .map(|(n, r)| ChildSpec {
                name: (*n).into(),
                restart: *r,
            })
            .collect();
        Supervisor::new(
            strategy,
            Intensity::default(),
            policy(),
            children,
            Duration::ZERO,
        )
    }

    fn names(plan: &[String]) -> Vec<&str> {
        plan.iter().map(String::as_str).collect()
    }

    const P: RestartType = RestartType::Permanent;
    const T: RestartType = RestartType::Transient;
    const TMP: RestartType = RestartType::Temporary;
    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn one_for_one_restarts_only_the_failed_child() {
        let mut s = sup(Strategy::OneForOne, &[("a", P), ("b", P), ("c", P)]);
        let plan = s.child_exited("b", &FAIL(), SEC, 0);
        assert!(plan.stop.is_empty());
        assert_eq!(names(&plan.start), ["b"]);
        assert_eq!(plan.escalate, None);
    }

    #[test]
    fn one_for_all_stops_the_others_in_reverse_and_restarts_all_in_order() {
        let mut s = sup(Strategy::OneForAll, &[("a", P), ("b", P), ("c", P)]);
        let plan = s.child_exited("b", &FAIL(), SEC, 0);
        assert_eq!(plan.stop, ["c", "a"]);
        assert_eq!(names(&plan.start), ["a", "b", "c"]);
    }

    #[test]
    fn rest_for_one_restarts_the_child_and_those_started_after_it() {
        let mut s = sup(
            Strategy::RestForOne,
            &[("a", P), ("b", P), ("c", P), ("d", P)],
        );
        let plan = s.child_exited("b", &FAIL(), SEC, 0);
        assert_eq!(plan.stop, ["d", "c"]);
        assert_eq!(names(&plan.start), ["b", "c", "d"]);
    }

    #[test]
    fn permanent_children_restart_after_every_exit_kind() {
        for exit in [Exit::Normal, Exit::Shutdown, FAIL()] {
            let mut s = sup(Strategy::OneForOne, &[("a", P)]);
            let plan = s.child_exited("a", &exit, SEC, 0);
            assert_eq!(names(&plan.start), ["a"], "{exit:?}");
        }
    }

    #[test]
    fn transient_children_restart_only_after_a_failure() {
        let mut s = sup(Strategy::OneForOne, &[("a", T), ("b", P)]);
        assert_eq!(names(&s.child_exited("a", &FAIL(), SEC, 0).start), ["a"]);
        assert!(s.child_exited("a", &Exit::Normal, SEC, 0).is_empty());
        assert_eq!(
            s.children().collect::<Vec<_>>(),
            ["b"],
            "a normal exit removes it"
        );
        let mut s = sup(Strategy::OneForOne, &[("a", T)]);
        assert!(s.child_exited("a", &Exit::Shutdown, SEC, 0).is_empty());
    }

    #[test]
    fn temporary_children_are_never_restarted() {
        for exit in [Exit::Normal, Exit::Shutdown, FAIL()] {
            let mut s = sup(Strategy::OneForAll, &[("a", TMP), ("b", P)]);
            assert!(s.child_exited("a", &exit, SEC, 0).is_empty(), "{exit:?}");
            assert_eq!(s.children().collect::<Vec<_>>(), ["b"]);
        }
    }

    #[test]
    fn a_temporary_sibling_stopped_by_one_for_all_is_removed() {
        let mut s = sup(Strategy::OneForAll, &[("a", TMP), ("b", P), ("c", T)]);
        let plan = s.child_exited("b", &FAIL(), SEC, 0);
        assert_eq!(plan.stop, ["c", "a"]);
        assert_eq!(names(&plan.start), ["b", "c"]);
        assert_eq!(s.children().collect::<Vec<_>>(), ["b", "c"]);
    }

    #[test]
    fn exceeding_the_intensity_stops_everyone_in_reverse_and_escalates() {
        let mut s = sup(Strategy::OneForOne, &[("a", P), ("b", P), ("c", P)]);
        for i in 0..3 {
            let plan = s.child_exited("b", &FAIL(), SEC * i, 0);
            assert_eq!(plan.escalate, None, "restart {i} is within the intensity");
        }
        let plan = s.child_exited("b", &FAIL(), SEC * 3, 0);
        assert_eq!(plan.stop, ["c", "a"]);
        assert!(plan.start.is_empty());
        let reason = plan.escalate.expect("gives up");
        assert!(reason.contains("more than 3 restarts"), "{reason}");
        assert!(s.gave_up());
        assert!(s.child_exited("a", &FAIL(), SEC * 4, 0).is_empty());
    }

    #[test]
    fn restarts_older_than_the_period_do_not_count() {
        let mut s = sup(Strategy::OneForOne, &[("a", P)]);
        for i in 0..10 {
            // One restart every 2 s: never more than 3 within 5 s.
            let plan = s.child_exited("a", &FAIL(), SEC * 2 * i, 0);
            assert_eq!(plan.escalate, None, "restart {i}");
        }
    }

    #[test]
    fn backoff_doubles_per_consecutive_restart_and_resets_after_a_healthy_period() {
        let mut s = Supervisor::new(
            Strategy::OneForOne,
            Intensity {
                max_restarts: 100,
                period: SEC,
            },
            policy(),
            vec![ChildSpec {
                name: "a".into(),
                restart: P,
            }],
            Duration::ZERO,
        );
        let delays: Vec<_> = (0..4)
            .map(|i| s.child_exited("a", &FAIL(), SEC * 10 * i, 0).delay)
            .collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800].map(Duration::from_millis),
            "no reset: each restart ran 10 s < reset_after"
        );
        // Ran for 60 s since the last restart: healthy, back to the initial delay.
        let plan = s.child_exited("a", &FAIL(), SEC * 100, 0);
        assert_eq!(plan.delay, Duration::from_millis(100));
    }

    #[test]
    fn a_group_restart_waits_the_failed_childs_backoff_and_keeps_start_order() {
        let mut s = sup(Strategy::RestForOne, &[("a", P), ("b", P)]);
        let plan = s.child_exited("a", &FAIL(), SEC, 0);
        assert_eq!(plan.start, ["a", "b"]);
        assert_eq!(plan.delay, Duration::from_millis(100));
    }

    #[test]
    fn shutdown_order_is_reverse_start_order_including_added_children() {
        let mut s = sup(Strategy::OneForOne, &[("a", P), ("b", P)]);
        s.add_child(
            ChildSpec {
                name: "c".into(),
                restart: TMP,
            },
            SEC,
        );
        assert_eq!(s.shutdown_order(), ["c", "b", "a"]);
    }

    #[test]
    fn an_unknown_child_needs_nothing() {
        let mut s = sup(Strategy::OneForAll, &[("a", P)]);
        assert!(s.child_exited("zz", &FAIL(), SEC, 0).is_empty());
    }
}
