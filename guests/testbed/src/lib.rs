//! The runtime's test bench: traps, runaway loops, floods, relays and deadlocks on demand.

use bunraku_sdk::prelude::*;

/// Reply "pong".
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = String)]
pub struct Ping {}

/// Panic (traps the instance).
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = String)]
pub struct Panic {}

/// Loop forever (stopped by the time budget).
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = String)]
pub struct Spin {}

/// Loop, awaiting `yield_now()` on every turn, until `StopYielding` arrives; replies with the
/// number of turns. Run with a concurrency of 2, so that `StopYielding` can arrive meanwhile.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = u64)]
pub struct Yielding {}

/// Ends the loop of `Yielding`.
#[derive(Debug, Serialize, Deserialize, Message)]
pub struct StopYielding {}

/// Busy for `ms` milliseconds, after `try_send`ing `Noop { i: 0 }` to `notify` when given.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = u64)]
pub struct Busy {
    pub ms: u64,
    #[serde(default)]
    pub notify: Option<String>,
}

/// Request `Ping` from `to` and reply with the answer, or the error's code name.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = Result<String, String>)]
pub struct Relay {
    pub to: String,
    pub timeout_ms: Option<u64>,
}

/// Ask `via` to relay a ping back to this actor (A -> B -> A: a deadlock the host refuses).
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = Result<Result<String, String>, String>)]
pub struct Bounce {
    pub via: String,
}

/// Send `count` `Noop`s to `to` with `send().await`; reply with the number sent.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = u64)]
pub struct Flood {
    pub to: String,
    pub count: u64,
}

/// `try_send` `count` `Noop`s to `to`; reply with (accepted, refused as full).
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = (u64, u64))]
pub struct TryFlood {
    pub to: String,
    pub count: u64,
}

/// A one-way message that is only counted.
#[derive(Debug, Serialize, Deserialize, Message)]
pub struct Noop {
    pub i: u64,
}

/// Counters of this instance.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = Stats)]
pub struct GetStats {}

/// What `GetStats` replies.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Stats {
    pub started: u64,
    pub noops: u64,
    pub last_noop: Option<u64>,
    pub in_order: bool,
    pub held_bytes: u64,
}

/// Allocate and keep `kib` KiB (grows linear memory).
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = u64)]
pub struct Grow {
    pub kib: u64,
}

/// Watch an actor; replies with the watch id, or the error.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = Result<u64, String>)]
pub struct Watch {
    pub actor: String,
}

/// The `Down` messages received so far, as `actor/instance: reason`.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = Vec<String>)]
pub struct GetDowns {}

/// Spawn an actor from a spawnable module with a JSON configuration; replies with the error.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = Result<(), String>)]
pub struct SpawnChild {
    pub module: String,
    pub name: String,
    pub config: serde_json::Value,
}

/// Send `protocol::Add { n }` to `to` (a counter); replies with the error's code name.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = Result<(), String>)]
pub struct AddTo {
    pub to: String,
    pub n: u64,
}

/// Take a reference to `target` and ask `to` to use it (`CallAttached`, with the reference
/// attached); replies with what `to` answered, or the error's code name.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = Result<Result<String, String>, String>)]
pub struct Introduce {
    pub target: String,
    pub to: String,
    /// Passed on as `CallAttached::by_name`.
    pub by_name: Option<String>,
}

/// Keep the first attached reference and `Ping` through it; with `by_name`, `Ping` that name
/// instead (a name is no reference). Replies with the answer or the error's code name.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = Result<String, String>)]
pub struct CallAttached {
    pub by_name: Option<String>,
}

/// `Ping` through the reference kept by the last `CallAttached`.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = Result<String, String>)]
pub struct CallKept {}

/// Set a timer that sends this actor `Fired { tag }` after `delay_ms`, then every `period_ms`
/// when given; replies with the timer id or the error's code name.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = Result<u64, String>)]
pub struct StartTimer {
    pub tag: String,
    pub delay_ms: u64,
    pub period_ms: Option<u64>,
}

/// Cancel timer `id`; replies with the error's code name.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = Result<(), String>)]
pub struct CancelTimer {
    pub id: u64,
}

/// What a timer sends.
#[derive(Debug, Serialize, Deserialize, Message)]
pub struct Fired {
    pub tag: String,
}

/// The tags of the timer firings handled so far, in order.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = Vec<String>)]
pub struct GetFired {}

/// Set a durable reminder named `tag` that sends this actor's address `Reminded { tag }` after
/// `delay_ms`, then every `period_ms` when given; replies with the error's code name.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = Result<(), String>)]
pub struct SetReminder {
    pub tag: String,
    pub delay_ms: u64,
    pub period_ms: Option<u64>,
}

/// Cancel reminder `tag`: whether there was one, or the error's code name.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = Result<bool, String>)]
pub struct CancelReminder {
    pub tag: String,
}

/// What a reminder sends; the handler appends `tag` (and the sender) to the persisted list.
#[derive(Debug, Serialize, Deserialize, Message)]
pub struct Reminded {
    pub tag: String,
}

/// The persisted list of reminders handled (`TAG from SENDER`), oldest first.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = Result<Vec<String>, String>)]
pub struct GetReminded {}

/// Set the status `bunraku ps` shows (empty clears it).
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = Result<(), String>)]
pub struct SetStatus {
    pub status: String,
}

/// What an HTTP gateway route delivers: path, query and body fields as the gateway merged them.
/// Replies with what the actor saw, including the principal and a passed-along header; counts
/// every call (`GetHits`).
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = Inspected)]
pub struct Inspect {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub q: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
}

/// What `Inspect` replies.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Inspected {
    pub id: Option<String>,
    pub q: Option<String>,
    pub text: Option<String>,
    pub subject: Option<String>,
    pub key_id: Option<String>,
    pub request_id: Option<String>,
    pub sender: Option<String>,
    pub instance: u32,
}

/// How many `Inspect` calls this instance handled.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = u64)]
pub struct GetHits {}

/// Wait `ms` milliseconds (without holding a thread), then answer `"rested"`.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = String)]
pub struct Nap {
    pub ms: u64,
}

/// Hold the actor's state (`&mut self`) across a sleep of `ms` milliseconds, noting
/// `hold:start` and `hold:end` in the log around it; answer the log's length.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = u64)]
pub struct HoldState {
    pub ms: u64,
}

/// Note `tally` in the log and answer the whole log: a plain `fn` handler, which the SDK runs at
/// once unless an `async` handler holds the state (then it waits for it, as a task).
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = Vec<String>)]
pub struct Tally {}

/// Note `text`, the sender and the envelope's `test.tag` extension in the log: a plain `fn`
/// handler that reads its envelope (in the event buffer, or a copy when it waits for the state).
#[derive(Debug, Serialize, Deserialize, Message)]
pub struct Note {
    pub text: String,
}

/// Answer with an application error whose text must never reach an HTTP client.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = Result<String, String>)]
pub struct Fail {}

/// Open a stream to `to` (opening message `Consume`) and write `0..count` into it; trap before
/// writing item `trap_at`; end with `abort` instead of `close`. Replies with the number of
/// completed sends, or the error's code name.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = Result<u64, String>)]
pub struct StreamTo {
    pub to: String,
    pub count: u64,
    pub consume: Consume,
    pub trap_at: Option<u64>,
    #[serde(default)]
    pub abort: bool,
}

/// Open a stream to each of `to` at once and write `0..count` into each, one item to each in
/// turn, then close them all; replies with the items written, or the error's code name.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = Result<u64, String>)]
pub struct StreamToMany {
    pub to: Vec<String>,
    pub count: u64,
}

/// Opens a stream of `u64`s: read it to the end, sleeping `sleep_ms` after every `every` items
/// (a slow consumer) and trapping on item `trap_at`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, Message)]
pub struct Consume {
    #[serde(default)]
    pub every: Option<u64>,
    #[serde(default)]
    pub sleep_ms: u64,
    #[serde(default)]
    pub trap_at: Option<u64>,
}

/// What this instance's streams did so far.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = StreamStats)]
pub struct GetStreamStats {}

/// Counters of this instance's streams.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamStats {
    /// Completed `send().await`s of the stream being written.
    pub sent: u64,
    /// Items read from the stream being read.
    pub consumed: u64,
    /// Every item read was the next number.
    pub in_order: bool,
    /// How the stream being read ended: `closed`, or the error's code name; empty while open.
    pub ending: String,
}

thread_local! {
    /// Shared by the handlers of one instance (a handler writing a stream holds `&mut self`).
    static STREAM_STATS: std::cell::RefCell<StreamStats> = std::cell::RefCell::new(StreamStats {
        in_order: true,
        ..StreamStats::default()
    });
}

fn stream_stats(f: impl FnOnce(&mut StreamStats)) {
    STREAM_STATS.with(|s| f(&mut s.borrow_mut()));
}

/// Stop this instance normally (`Ctx::stop`).
#[derive(Debug, Serialize, Deserialize, Message)]
pub struct Quit {}

/// A memory bomb: allocate and touch 64 KiB chunks until allocation fails (which aborts, so the
/// instance traps at its memory limit). Never replies.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = u64)]
pub struct Bomb {}

#[derive(Default)]
pub struct Testbed {
    stats: Stats,
    held: Vec<Vec<u8>>,
    downs: Vec<String>,
    /// The reference kept by `CallAttached`.
    kept: Option<ActorRef>,
    /// Timers set by `StartTimer`, by id.
    timers: Vec<TimerId>,
    fired: Vec<String>,
    /// `Inspect` calls handled.
    hits: u64,
    /// What `HoldState`, `Note` and `Tally` did, in order.
    log: Vec<String>,
    /// Set by `StopYielding`; read by `Yielding` between its turns (a flag outside the state,
    /// since `Yielding` borrows the state only briefly).
    stop_yielding: std::cell::Cell<bool>,
}

/// Settings from the manifest.
#[derive(Debug, Default, Deserialize)]
pub struct Config {
    /// KiB to reserve and hold at start (grows the heap once; only the first page is touched).
    #[serde(default)]
    pub grow_kib: u64,
    /// Panic in `on_start` (a start-up crash loop, for supervision tests).
    #[serde(default)]
    pub panic_on_start: bool,
}

#[actor]
impl Testbed {
    async fn on_start(&mut self, ctx: &Ctx, config: Config) {
        ctx.info(format_args!("testbed {} started", ctx.name()));
        if config.panic_on_start {
            panic!("testbed {} was configured to panic on start", ctx.name());
        }
        self.stats.started += 1;
        self.stats.in_order = true;
        if config.grow_kib > 0 {
            // Reserve (memory.grow) but touch only the first byte: the heap has grown, and the
            // host pays for what the actor really uses.
            let mut chunk = Vec::with_capacity((config.grow_kib * 1024) as usize);
            chunk.push(1u8);
            self.stats.held_bytes += chunk.capacity() as u64;
            self.held.push(chunk);
        }
    }

    #[handler]
    async fn ping(&mut self, _ctx: &Ctx, _msg: Ping) -> String {
        "pong".into()
    }

    #[handler]
    async fn panic(&mut self, _ctx: &Ctx, _msg: Panic) -> String {
        panic!("testbed was asked to panic")
    }

    #[handler]
    async fn spin(&mut self, _ctx: &Ctx, _msg: Spin) -> String {
        let mut i: u64 = 0;
        loop {
            i = std::hint::black_box(i.wrapping_add(1));
        }
    }

    #[handler]
    async fn yielding(&self, _ctx: &Ctx, _msg: Yielding) -> u64 {
        let mut turns = 0;
        while !self.stop_yielding.get() {
            turns += 1;
            yield_now().await;
        }
        turns
    }

    #[handler]
    async fn stop_yielding(&self, _ctx: &Ctx, _msg: StopYielding) {
        self.stop_yielding.set(true);
    }

    #[handler]
    async fn busy(&mut self, ctx: &Ctx, msg: Busy) -> u64 {
        if let Some(to) = &msg.notify {
            let _ = ctx.try_send(to, &Noop { i: 0 });
        }
        let start = std::time::Instant::now();
        while start.elapsed().as_millis() < msg.ms as u128 {
            std::hint::spin_loop();
        }
        msg.ms
    }

    #[handler]
    async fn relay(&mut self, ctx: &Ctx, msg: Relay) -> Result<String, String> {
        let reply = match msg.timeout_ms {
            Some(ms) => {
                ctx.request_with_timeout(&msg.to, &Ping {}, Duration::from_millis(ms))
                    .await
            }
            None => ctx.request(&msg.to, &Ping {}).await,
        };
        reply.map_err(|e| e.code().as_str().to_owned())
    }

    #[handler]
    async fn bounce(&mut self, ctx: &Ctx, msg: Bounce) -> Result<Result<String, String>, String> {
        let me = ctx.name().to_owned();
        ctx.request(
            &msg.via,
            &Relay {
                to: me,
                timeout_ms: None,
            },
        )
        .await
        .map_err(|e| e.code().as_str().to_owned())
    }

    #[handler]
    async fn flood(&mut self, ctx: &Ctx, msg: Flood) -> u64 {
        let mut sent = 0;
        for i in 0..msg.count {
            if ctx.send(&msg.to, &Noop { i }).await.is_ok() {
                sent += 1;
            }
        }
        sent
    }

    #[handler]
    async fn try_flood(&mut self, ctx: &Ctx, msg: TryFlood) -> (u64, u64) {
        let (mut ok, mut full) = (0, 0);
        for i in 0..msg.count {
            match ctx.try_send(&msg.to, &Noop { i }) {
                Ok(()) => ok += 1,
                Err(e) if e.code() == ErrorCode::MailboxFull => full += 1,
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        (ok, full)
    }

    #[handler]
    async fn noop(&mut self, _ctx: &Ctx, msg: Noop) {
        if let Some(last) = self.stats.last_noop
            && msg.i != last + 1
        {
            self.stats.in_order = false;
        }
        self.stats.noops += 1;
        self.stats.last_noop = Some(msg.i);
    }

    #[handler]
    async fn get_stats(&mut self, _ctx: &Ctx, _msg: GetStats) -> Stats {
        self.stats.clone()
    }

    async fn on_stop(&mut self, ctx: &Ctx) {
        ctx.info(format_args!(
            "testbed {} stopping after {} noops",
            ctx.name(),
            self.stats.noops
        ));
    }

    #[handler]
    async fn watch(&mut self, ctx: &Ctx, msg: Watch) -> Result<u64, String> {
        ctx.watch(&msg.actor)
            .map(|id| id.get())
            .map_err(|e| e.to_string())
    }

    #[handler]
    async fn down(&mut self, _ctx: &Ctx, msg: bunraku_sdk::Down) {
        let reason = match msg.reason {
            bunraku_sdk::DownReason::Normal => "normal".to_owned(),
            bunraku_sdk::DownReason::Stopped => "stopped".to_owned(),
            bunraku_sdk::DownReason::Failed(why) => format!("failed: {why}"),
            bunraku_sdk::DownReason::NoSuchActor => "no such actor".to_owned(),
            _ => "other".to_owned(),
        };
        self.downs
            .push(format!("{}/{}: {reason}", msg.actor, msg.instance));
    }

    #[handler]
    async fn get_downs(&mut self, _ctx: &Ctx, _msg: GetDowns) -> Vec<String> {
        self.downs.clone()
    }

    #[handler]
    async fn introduce(
        &mut self,
        ctx: &Ctx,
        msg: Introduce,
    ) -> Result<Result<String, String>, String> {
        let code = |e: Error| e.code().as_str().to_owned();
        let target = ctx.actor_ref(&msg.target).map_err(code)?;
        let call = CallAttached {
            by_name: msg.by_name,
        };
        ctx.request_attached(&msg.to, &call, &[target])
            .await
            .map_err(code)
    }

    #[handler]
    async fn call_attached(&mut self, ctx: &Ctx, msg: CallAttached) -> Result<String, String> {
        let code = |e: Error| e.code().as_str().to_owned();
        let target = *ctx.attachments().first().ok_or("no reference attached")?;
        self.kept = Some(target);
        match msg.by_name {
            Some(name) => ctx.request(&name, &Ping {}).await.map_err(code),
            None => ctx.request_ref(target, &Ping {}).await.map_err(code),
        }
    }

    #[handler]
    async fn call_kept(&mut self, ctx: &Ctx, _msg: CallKept) -> Result<String, String> {
        let target = self.kept.ok_or("no reference kept")?;
        ctx.request_ref(target, &Ping {})
            .await
            .map_err(|e| e.code().as_str().to_owned())
    }

    #[handler]
    async fn stream_to(&mut self, ctx: &Ctx, msg: StreamTo) -> Result<u64, String> {
        let code = |e: Error| e.code().as_str().to_owned();
        let mut out = ctx
            .open_stream::<u64, _>(msg.to.as_str(), &msg.consume)
            .map_err(code)?;
        for i in 0..msg.count {
            if msg.trap_at == Some(i) {
                panic!("asked to trap while writing item {i}");
            }
            out.send(&i).await.map_err(code)?;
            stream_stats(|s| s.sent += 1);
        }
        if msg.abort {
            out.abort();
        } else {
            out.close().await.map_err(code)?;
        }
        Ok(msg.count)
    }

    #[handler]
    async fn stream_to_many(&mut self, ctx: &Ctx, msg: StreamToMany) -> Result<u64, String> {
        let code = |e: Error| e.code().as_str().to_owned();
        let mut outs = Vec::new();
        for to in &msg.to {
            let consume = Consume::default();
            outs.push(
                ctx.open_stream::<u64, _>(to.as_str(), &consume)
                    .map_err(code)?,
            );
        }
        for i in 0..msg.count {
            for out in &mut outs {
                out.send(&i).await.map_err(code)?;
            }
        }
        for out in outs {
            out.close().await.map_err(code)?;
        }
        Ok(msg.count * msg.to.len() as u64)
    }

    #[handler]
    async fn consume(&mut self, ctx: &Ctx, msg: Consume) {
        let Some(mut items) = ctx.take_stream::<u64>() else {
            return ctx.warn("`Consume` without a stream");
        };
        let mut expected = 0;
        loop {
            match items.next().await {
                Some(Ok(i)) => {
                    if msg.trap_at == Some(i) {
                        panic!("asked to trap on item {i}");
                    }
                    stream_stats(|s| {
                        s.in_order &= i == expected;
                        s.consumed += 1;
                    });
                    expected = i + 1;
                    if let Some(every) = msg.every
                        && expected % every.max(1) == 0
                    {
                        let _ = ctx.sleep(Duration::from_millis(msg.sleep_ms)).await;
                    }
                }
                Some(Err(e)) => {
                    let ending = e.code().as_str().to_owned();
                    return stream_stats(|s| s.ending = ending);
                }
                None => return stream_stats(|s| s.ending = "closed".into()),
            }
        }
    }

    #[handler]
    async fn get_stream_stats(&mut self, _ctx: &Ctx, _msg: GetStreamStats) -> StreamStats {
        STREAM_STATS.with(|s| s.borrow().clone())
    }

    #[handler]
    async fn start_timer(&mut self, ctx: &Ctx, msg: StartTimer) -> Result<u64, String> {
        let fired = Fired { tag: msg.tag };
        let timer = match msg.period_ms {
            Some(ms) => ctx.every(Duration::from_millis(ms), &fired),
            None => ctx.after(Duration::from_millis(msg.delay_ms), &fired),
        }
        .map_err(|e| e.code().as_str().to_owned())?;
        self.timers.push(timer);
        Ok(timer.get())
    }

    #[handler]
    async fn cancel_timer(&mut self, ctx: &Ctx, msg: CancelTimer) -> Result<(), String> {
        let timer = self
            .timers
            .iter()
            .copied()
            .find(|t| t.get() == msg.id)
            .ok_or("not a timer of this actor")?;
        ctx.cancel_timer(timer)
            .map_err(|e| e.code().as_str().to_owned())
    }

    #[handler]
    async fn fired(&mut self, _ctx: &Ctx, msg: Fired) {
        self.fired.push(msg.tag);
    }

    #[handler]
    async fn get_fired(&mut self, _ctx: &Ctx, _msg: GetFired) -> Vec<String> {
        self.fired.clone()
    }

    #[handler]
    async fn inspect(&mut self, ctx: &Ctx, msg: Inspect) -> Inspected {
        self.hits += 1;
        let principal = ctx.principal();
        Inspected {
            id: msg.id,
            q: msg.q,
            text: msg.text,
            subject: principal.map(|p| p.subject.to_owned()),
            key_id: principal.and_then(|p| p.key_id.map(str::to_owned)),
            request_id: ctx.http_header("x-request-id").map(str::to_owned),
            sender: ctx.sender().map(str::to_owned),
            instance: ctx.instance(),
        }
    }

    #[handler]
    async fn get_hits(&mut self, _ctx: &Ctx, _msg: GetHits) -> u64 {
        self.hits
    }

    #[handler]
    async fn nap(&self, ctx: &Ctx, msg: Nap) -> String {
        match ctx.sleep(Duration::from_millis(msg.ms)).await {
            Ok(()) => "rested".into(),
            Err(e) => e.to_string(),
        }
    }

    #[handler]
    async fn hold_state(&mut self, ctx: &Ctx, msg: HoldState) -> u64 {
        self.log.push("hold:start".into());
        if let Err(e) = ctx.sleep(Duration::from_millis(msg.ms)).await {
            ctx.error(format_args!("hold_state could not sleep: {e}"));
        }
        self.log.push("hold:end".into());
        self.log.len() as u64
    }

    #[handler]
    fn note(&mut self, ctx: &Ctx, msg: Note) {
        let tag = ctx.ext("test.tag").map(String::from_utf8_lossy);
        self.log.push(format!(
            "{} from {} tag {}",
            msg.text,
            ctx.sender().unwrap_or("-"),
            tag.as_deref().unwrap_or("-")
        ));
    }

    #[handler]
    fn tally(&mut self, _ctx: &Ctx, _msg: Tally) -> Vec<String> {
        self.log.push("tally".into());
        self.log.clone()
    }

    #[handler]
    async fn fail(&mut self, _ctx: &Ctx, _msg: Fail) -> Result<String, String> {
        Err("the database password is hunter2".into())
    }

    #[handler]
    async fn set_reminder(&mut self, ctx: &Ctx, msg: SetReminder) -> Result<(), String> {
        let reminded = Reminded {
            tag: msg.tag.clone(),
        };
        match msg.period_ms {
            Some(ms) => {
                ctx.remind_every(&msg.tag, Duration::from_millis(ms), &reminded)
                    .await
            }
            None => {
                ctx.remind(&msg.tag, Duration::from_millis(msg.delay_ms), &reminded)
                    .await
            }
        }
        .map_err(|e| e.code().as_str().to_owned())
    }

    #[handler]
    async fn cancel_reminder(&mut self, ctx: &Ctx, msg: CancelReminder) -> Result<bool, String> {
        ctx.cancel_reminder(&msg.tag)
            .await
            .map_err(|e| e.code().as_str().to_owned())
    }

    #[handler]
    async fn reminded(&mut self, ctx: &Ctx, msg: Reminded) {
        let mut list: Vec<String> = ctx.load().ok().flatten().unwrap_or_default();
        list.push(format!("{} from {}", msg.tag, ctx.sender().unwrap_or("?")));
        if let Err(e) = ctx.save(&list).await {
            ctx.error(format_args!("reminder not recorded: {e}"));
        }
    }

    #[handler]
    async fn get_reminded(&mut self, ctx: &Ctx, _msg: GetReminded) -> Result<Vec<String>, String> {
        ctx.load()
            .map(Option::unwrap_or_default)
            .map_err(|e| e.code().as_str().to_owned())
    }

    #[handler]
    async fn set_status(&mut self, ctx: &Ctx, msg: SetStatus) -> Result<(), String> {
        ctx.set_status(&msg.status)
            .map_err(|e| e.code().as_str().to_owned())
    }

    #[handler]
    async fn add_to(&mut self, ctx: &Ctx, msg: AddTo) -> Result<(), String> {
        ctx.send(&msg.to, &protocol::Add { n: msg.n })
            .await
            .map_err(|e| e.code().as_str().to_owned())
    }

    #[handler]
    async fn spawn_child(&mut self, ctx: &Ctx, msg: SpawnChild) -> Result<(), String> {
        ctx.spawn(&msg.module, &msg.name, &msg.config)
            .map_err(|e| e.to_string())
    }

    #[handler]
    async fn quit(&mut self, ctx: &Ctx, _msg: Quit) {
        if let Err(e) = ctx.stop() {
            ctx.error(format_args!("could not stop: {e}"));
        }
    }

    #[handler]
    async fn bomb(&mut self, _ctx: &Ctx, _msg: Bomb) -> u64 {
        loop {
            let chunk = vec![1u8; 64 * 1024];
            self.stats.held_bytes += chunk.len() as u64;
            self.held.push(chunk);
        }
    }

    #[handler]
    async fn grow(&mut self, _ctx: &Ctx, msg: Grow) -> u64 {
        let chunk = vec![1u8; (msg.kib * 1024) as usize];
        self.stats.held_bytes += chunk.len() as u64;
        self.held.push(chunk);
        self.stats.held_bytes
    }
}
