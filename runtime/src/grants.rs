//! Capabilities: what an actor, or a client of the host, may do. Deny by default.
//!
//! Every actor carries [`Grants`] from its manifest table `[actor.grants]` (or from
//! [`ActorSpec::grants`](crate::manifest::ActorSpec::grants) when deployed through the API). A
//! host function passes two checks:
//!
//! 1. the capability its ABI table entry names ([`bunraku_abi::Capability`]), before anything is
//!    decoded ([`Grants::allows`], called from `imports::check`): an actor with no grant of that
//!    kind at all is refused at once;
//! 2. for functions that name a target, the target itself, once decoded ([`permits`]): the actor
//!    names it may send to or call, the subjects it may publish to, the patterns it may subscribe
//!    to.
//!
//! A refusal is [`ErrorCode::Denied`](bunraku_abi::ErrorCode::Denied) for the guest (a typed
//! error, not a trap) and a warning in the actor's log naming the function and the target.
//!
//! What needs no grant: pulling events, logging, cancelling its own operations, and replying
//! through a reply handle the host issued with a request (the handle *is* the grant; a handle the
//! guest made up is refused). Subscriptions written in the manifest are the operator's and need
//! no `subscribe` grant either.
//!
//! Clients of the host (the CLI, later the gateway) are *principals* with grants of their own,
//! kept in [`Principals`]; the host checks them in its client API.

use std::collections::HashMap;
use std::sync::RwLock;

use bunraku_abi::Capability;

use crate::actor::ActorState;
use crate::control::CLI_PRINCIPAL;
use crate::subject::{Pattern, validate_subject};

/// The `send` entry that allows every actor.
pub const ANY_ACTOR: &str = "*";

/// What an actor or a principal may do. `Grants::default()` (and [`Grants::none`]) allows
/// nothing; [`Grants::all`] allows everything.
///
/// ```
/// use bunraku_runtime::Grants;
/// use bunraku_runtime::subject::Pattern;
///
/// let g = Grants::none()
///     .send_to("echo")
///     .publish_to(Pattern::parse("orders.>")?)
///     .subscribe_to(Pattern::parse("a.b")?);
/// assert!(g.may_send("echo") && !g.may_send("billing"));
/// assert!(g.may_publish("orders.eu.created") && !g.may_publish("orders"));
/// // Subscribing needs a granted pattern that contains the requested one.
/// assert!(g.may_subscribe(&Pattern::parse("a.b")?));
/// assert!(!g.may_subscribe(&Pattern::parse("a.*")?));
/// assert!(!g.may_subscribe(&Pattern::parse(">")?));
/// # Ok::<(), bunraku_runtime::subject::SubjectError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Actors it may send to or call (`send` and `request`), by name; [`ANY_ACTOR`] (`"*"`)
    /// allows every actor.
    pub send: Vec<String>,
    /// Subjects it may publish to: a publish is allowed when one of these patterns matches the
    /// concrete subject.
    pub publish: Vec<Pattern>,
    /// Patterns it may subscribe to at run time: a subscription is allowed when its pattern is
    /// contained in one of these (every subject it matches is matched by the grant), so `a.b`
    /// does not allow `a.*` or `>`.
    pub subscribe: Vec<Pattern>,
    /// Whether it may save and load its persisted state.
    pub storage: bool,
    /// Whether it may start actors at run time (the `spawn` host function).
    pub spawn: bool,
    /// Whether it may set timers (`ctx.after`, `ctx.every`) and durable reminders.
    pub timers: bool,
    /// Event logs of other actors it may read (temporal queries, projections): actor names,
    /// virtual actor types (`account` covers `account/alice` and the type's combined stream), or
    /// [`ANY_ACTOR`]. An actor always reads its own log with the storage grant.
    pub read_events: Vec<String>,
}

impl Grants {
    /// Nothing allowed: the default for every actor and every unknown principal.
    pub fn none() -> Self {
        Self::default()
    }

    /// Everything allowed: every actor, every subject, storage, spawning and timers.
    pub fn all() -> Self {
        let any = Pattern::parse(">").expect("`>` is a valid pattern");
        Self {
            send: vec![ANY_ACTOR.to_owned()],
            publish: vec![any.clone()],
            subscribe: vec![any],
            storage: true,
            spawn: true,
            timers: true,
            read_events: vec![ANY_ACTOR.to_owned()],
        }
    }

    /// The same grants, also allowing sends and calls to `actor` (or every actor, for `"*"`).
    pub fn send_to(mut self, actor: impl Into<String>) -> Self {
        self.send.push(actor.into());
        self
    }

    /// The same grants, also allowing publishing to the subjects `pattern` matches.
    pub fn publish_to(mut self, pattern: Pattern) -> Self {
        self.publish.push(pattern);
        self
    }

    /// The same grants, also allowing run-time subscriptions to patterns contained in `pattern`.
    pub fn subscribe_to(mut self, pattern: Pattern) -> Self {
        self.subscribe.push(pattern);
        self
    }

    /// The same grants, with storage allowed or not.
    pub fn with_storage(mut self, allowed: bool) -> Self {
        self.storage = allowed;
        self
    }

    /// The same grants, with spawning allowed or not.
    pub fn with_spawn(mut self, allowed: bool) -> Self {
        self.spawn = allowed;
        self
    }

    /// The same grants, with timers allowed or not.
    pub fn with_timers(mut self, allowed: bool) -> Self {
        self.timers = allowed;
        self
    }

    /// Whether it may send to or call the actor `name`.
    pub fn may_send(&self, name: &str) -> bool {
        // A grant for a virtual actor type covers its keys (`account` covers `account/alice`).
        // Split only past the common grants (`*`, the exact name), which most sends match.
        let kind = || name.split_once('/').map(|(kind, _)| kind);
        self.send
            .iter()
            .any(|g| g == ANY_ACTOR || g == name || kind() == Some(g.as_str()))
    }

    /// The same grants, also allowing reading the event logs of `actor_or_type`.
    pub fn read_events_of(mut self, actor_or_type: impl Into<String>) -> Self {
        self.read_events.push(actor_or_type.into());
        self
    }

    /// Whether it may read the event log of the actor `name`, or with `whole_type`, the combined
    /// stream of every actor of type `name`.
    pub fn may_read_events(&self, name: &str, whole_type: bool) -> bool {
        let kind = if whole_type {
            Some(name)
        } else {
            name.split_once('/').map(|(kind, _)| kind)
        };
        self.read_events
            .iter()
            .any(|g| g == ANY_ACTOR || (!whole_type && g == name) || kind == Some(g.as_str()))
    }

    /// Whether it may publish to the concrete `subject` (a malformed subject is never allowed).
    pub fn may_publish(&self, subject: &str) -> bool {
        validate_subject(subject).is_ok() && self.publish.iter().any(|p| p.matches(subject))
    }

    /// Whether it may subscribe to `pattern`: some granted pattern contains it.
    pub fn may_subscribe(&self, pattern: &Pattern) -> bool {
        self.subscribe.iter().any(|g| pattern.is_contained_in(g))
    }

    /// The per-capability part of the check, before a host function decodes its arguments:
    /// [`Capability::None`] is always allowed, [`Capability::Storage`] needs `storage`,
    /// [`Capability::Spawn`] needs `spawn`, [`Capability::Timers`] needs `timers`, and `Send`,
    /// `Publish` and `Subscribe` need at least one grant of their kind (the target itself is
    /// checked once decoded). A capability this version does not know is refused.
    #[inline]
    pub fn allows(&self, cap: Capability) -> bool {
        match cap {
            Capability::None => true,
            Capability::Send => !self.send.is_empty(),
            Capability::Publish => !self.publish.is_empty(),
            Capability::Subscribe => !self.subscribe.is_empty(),
            Capability::Storage => self.storage,
            Capability::Spawn => self.spawn,
            Capability::Timers => self.timers,
            _ => false,
        }
    }
}

/// A host function's use of a target, checked by [`permits`] once the target is decoded.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Act<'a> {
    /// `send` to an actor.
    Send(&'a str),
    /// `request` to an actor.
    Request(&'a str),
    /// `watch` of an actor (needs the same grant as sending to it).
    Watch(&'a str),
    /// `publish` to a concrete subject.
    Publish(&'a str),
    /// `subscribe` to a pattern.
    Subscribe(&'a Pattern),
}

impl Act<'_> {
    /// The host function, for the log.
    fn function(&self) -> &'static str {
        match self {
            Self::Send(_) => "send",
            Self::Request(_) => "request",
            Self::Watch(_) => "watch",
            Self::Publish(_) => "publish",
            Self::Subscribe(_) => "subscribe",
        }
    }

    /// The target as written, for the log.
    fn target(&self) -> &str {
        match self {
            Self::Send(t) | Self::Request(t) | Self::Watch(t) | Self::Publish(t) => t,
            Self::Subscribe(p) => p.as_str(),
        }
    }

    /// Whether `grants` allow it.
    fn allowed_by(&self, grants: &Grants) -> bool {
        match self {
            Self::Send(name) | Self::Request(name) | Self::Watch(name) => grants.may_send(name),
            Self::Publish(subject) => grants.may_publish(subject),
            Self::Subscribe(pattern) => grants.may_subscribe(pattern),
        }
    }
}

/// The per-target check of a host function: whether the calling actor's grants allow `act`.
/// A refusal is logged as a warning in the actor's log with the function and the target; the
/// caller returns [`ErrorCode::Denied`](bunraku_abi::ErrorCode::Denied) to the guest.
pub(crate) fn permits(st: &ActorState, act: Act<'_>) -> bool {
    if act.allowed_by(&st.group.settings.grants) {
        return true;
    }
    log_denial(
        st,
        &format!(
            "denied: `{}` to `{}`: the actor holds no grant for it",
            act.function(),
            act.target()
        ),
    );
    false
}

/// Writes a refusal to the actor's log as a warning (what `bunraku logs` shows).
pub(crate) fn log_denial(st: &ActorState, message: &str) {
    st.host.logs.emit(
        &st.cell.name,
        st.cell.instance,
        bunraku_abi::level::WARN,
        message,
    );
}

/// The grants of the principals that talk to a host through its client API, by name.
///
/// A new table grants [`CLI_PRINCIPAL`] everything (the local operator, who owns the 0600
/// control socket) and every other principal nothing; [`Principals::set`] replaces a principal's
/// grants.
pub(crate) struct Principals {
    grants: RwLock<HashMap<String, Grants>>,
}

impl Default for Principals {
    fn default() -> Self {
        let grants = HashMap::from([(CLI_PRINCIPAL.to_owned(), Grants::all())]);
        Self {
            grants: RwLock::new(grants),
        }
    }
}

impl Principals {
    /// Replaces the grants of `principal`.
    pub(crate) fn set(&self, principal: &str, grants: Grants) {
        self.grants
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(principal.to_owned(), grants);
    }

    /// The grants of `principal` (nothing for a principal never set).
    pub(crate) fn get(&self, principal: &str) -> Grants {
        self.grants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(principal)
            .cloned()
            .unwrap_or_default()
    }

    /// Whether `principal` may send to or call actor `to`; a refusal is logged.
    pub(crate) fn may_send(&self, principal: &str, to: &str) -> bool {
        self.check(principal, "send", to, |g| g.may_send(to))
    }

    /// Whether `principal` may publish to `subject`; a refusal is logged.
    pub(crate) fn may_publish(&self, principal: &str, subject: &str) -> bool {
        self.check(principal, "publish", subject, |g| g.may_publish(subject))
    }

    fn check(
        &self,
        principal: &str,
        function: &str,
        target: &str,
        allowed: impl FnOnce(&Grants) -> bool,
    ) -> bool {
        let guard = self.grants.read().unwrap_or_else(|e| e.into_inner());
        if guard.get(principal).is_some_and(allowed) {
            return true;
        }
        drop(guard);
        tracing::warn!(
            principal,
            function,
            target,
            "denied: the principal holds no grant for it"
        );
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn nothing_is_granted_by_default() {
        let g = Grants::default();
        assert_eq!(g, Grants::none());
        assert!(!g.may_send("echo"));
        assert!(!g.may_publish("a"));
        assert!(!g.may_subscribe(&p("a")));
        assert!(g.allows(Capability::None));
        for cap in [
            Capability::Send,
            Capability::Publish,
            Capability::Subscribe,
            Capability::Storage,
            Capability::Spawn,
        ] {
            assert!(!g.allows(cap), "{cap:?}");
        }
    }

    #[test]
    fn every_table_capability_is_allowed_by_all_and_gated_ones_refused_by_none() {
        for f in bunraku_abi::HOST_FUNCTIONS {
            assert!(Grants::all().allows(f.capability), "{}", f.name);
            assert_eq!(
                Grants::none().allows(f.capability),
                f.capability == Capability::None,
                "{}",
                f.name
            );
        }
        let all = Grants::all();
        assert!(all.may_send("anyone") && all.may_publish("x.y.z"));
        assert!(all.may_subscribe(&p(">")) && all.spawn && all.timers && all.storage);
    }

    #[test]
    fn send_grants_name_actors_or_every_actor_with_a_star() {
        let g = Grants::none().send_to("echo");
        assert!(g.may_send("echo"));
        assert!(!g.may_send("echo2") && !g.may_send("ech") && !g.may_send("*"));
        assert!(g.allows(Capability::Send));
        assert!(Grants::none().send_to(ANY_ACTOR).may_send("billing"));
    }

    #[test]
    fn publish_is_allowed_where_a_granted_pattern_matches_the_subject() {
        let g = Grants::none()
            .publish_to(p("orders.>"))
            .publish_to(p("metrics.*.cpu"));
        assert!(g.may_publish("orders.eu"));
        assert!(g.may_publish("orders.eu.created"));
        assert!(g.may_publish("metrics.web1.cpu"));
        assert!(!g.may_publish("orders"));
        assert!(!g.may_publish("metrics.web1.mem"));
        assert!(!g.may_publish("billing.x"));
        // Wildcards and malformed subjects are never published to.
        assert!(!g.may_publish("orders.*"));
        assert!(!g.may_publish("orders..x"));
        assert!(!Grants::all().may_publish("a..b"));
    }

    #[test]
    fn subscribe_grant_of_a_literal_allows_only_that_subject() {
        let g = Grants::none().subscribe_to(p("a.b"));
        assert!(g.may_subscribe(&p("a.b")));
        for wider in ["a.*", ">", "a.>", "*.b", "*.*"] {
            assert!(!g.may_subscribe(&p(wider)), "{wider}");
        }
        assert!(!g.may_subscribe(&p("a.b.c")));
        assert!(!g.may_subscribe(&p("a")));
    }

    #[test]
    fn subscribe_grant_of_a_wildcard_allows_the_narrower_patterns_it_contains() {
        let g = Grants::none().subscribe_to(p("orders.*"));
        assert!(g.may_subscribe(&p("orders.*")));
        assert!(g.may_subscribe(&p("orders.eu")));
        assert!(!g.may_subscribe(&p("orders.>")));
        assert!(!g.may_subscribe(&p("orders.eu.x")));
        assert!(!g.may_subscribe(&p("*.*")));

        let g = Grants::none().subscribe_to(p("orders.>"));
        for inside in [
            "orders.eu",
            "orders.*",
            "orders.*.x",
            "orders.>",
            "orders.*.>",
        ] {
            assert!(g.may_subscribe(&p(inside)), "{inside}");
        }
        for outside in ["orders", ">", "*.>", "*.eu", "billing.>"] {
            assert!(!g.may_subscribe(&p(outside)), "{outside}");
        }
    }

    /// Containment agrees with matching: `p` is contained in `q` exactly when every subject `p`
    /// matches, `q` matches too. Checked exhaustively over patterns of up to three tokens from
    /// `a`, `b`, `*`, `>` against subjects of up to four tokens from `a`, `b`, `c` (`c` stands for
    /// every token no pattern names; four tokens exceed every pattern without `>`).
    #[test]
    fn containment_agrees_with_matching_on_every_small_pattern() {
        fn strings(alphabet: &[&str], max: usize) -> Vec<String> {
            let mut out: Vec<Vec<&str>> = vec![vec![]];
            let mut all = Vec::new();
            for _ in 0..max {
                out = out
                    .iter()
                    .flat_map(|prefix| {
                        alphabet.iter().map(move |t| {
                            let mut v = prefix.clone();
                            v.push(t);
                            v
                        })
                    })
                    .collect();
                all.extend(out.iter().map(|v| v.join(".")));
            }
            all
        }
        let patterns: Vec<Pattern> = strings(&["a", "b", "*", ">"], 3)
            .iter()
            .filter_map(|s| Pattern::parse(s).ok())
            .collect();
        let subjects = strings(&["a", "b", "c"], 4);
        assert!(patterns.len() > 50 && subjects.len() > 100);
        for requested in &patterns {
            for granted in &patterns {
                let by_matching = subjects
                    .iter()
                    .all(|s| !requested.matches(s) || granted.matches(s));
                let g = Grants::none().subscribe_to(granted.clone());
                assert_eq!(
                    g.may_subscribe(requested),
                    by_matching,
                    "requested {requested}, granted {granted}"
                );
            }
        }
    }

    #[test]
    fn principals_grant_the_cli_everything_and_others_nothing_until_set() {
        let principals = Principals::default();
        assert_eq!(principals.get(CLI_PRINCIPAL), Grants::all());
        assert!(principals.may_send(CLI_PRINCIPAL, "echo"));
        assert!(principals.may_publish(CLI_PRINCIPAL, "a.b"));
        assert!(!principals.may_send("gateway", "echo"));
        assert!(!principals.may_publish("gateway", "a.b"));

        principals.set(CLI_PRINCIPAL, Grants::none().send_to("echo"));
        assert!(principals.may_send(CLI_PRINCIPAL, "echo"));
        assert!(!principals.may_send(CLI_PRINCIPAL, "billing"));
        assert!(!principals.may_publish(CLI_PRINCIPAL, "a.b"));
        principals.set("gateway", Grants::all());
        assert!(principals.may_send("gateway", "billing"));
    }
}
