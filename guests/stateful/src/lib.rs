//! A counter that persists itself: `on_start` loads the saved value, `Add` saves after each
//! change, `Get` reads it, `GetStateStatus` tells what `on_start` found, `SavePadded` saves a
//! state of a chosen size (to hit the limit), `Crash` traps so the host restarts it, and
//! `StartBeating` sets a periodic timer whose `Beat`s are counted (not saved).

use bunraku_sdk::prelude::*;
use protocol::{Add, Crash, Get, GetStateStatus, SavePadded, StateStatus};

/// Set a periodic timer sending `Beat` every `period_ms`; replies with the error's code name.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = Result<(), String>)]
pub struct StartBeating {
    pub period_ms: u64,
}

/// What the timer sends.
#[derive(Debug, Serialize, Deserialize, Message)]
pub struct Beat {}

/// What the counter saves.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    pub value: u64,
    /// Filler bytes (`SavePadded`); ignored when loaded.
    pub pad: Vec<u8>,
}

#[derive(Default)]
pub struct Stateful {
    value: u64,
    loaded: Option<u64>,
    load_error: Option<String>,
    instance: u32,
    beats: u64,
}

#[actor]
impl Stateful {
    async fn on_start(&mut self, ctx: &Ctx) {
        self.instance = ctx.instance();
        match ctx.load::<Saved>() {
            Ok(saved) => {
                self.loaded = saved.as_ref().map(|s| s.value);
                self.value = self.loaded.unwrap_or(0);
            }
            Err(e) => {
                ctx.warn(format_args!("starting from 0: {e}"));
                self.load_error = Some(e.code().to_string());
            }
        }
    }

    #[handler]
    async fn add(&mut self, ctx: &Ctx, msg: Add) {
        self.value += msg.n;
        let saved = Saved {
            value: self.value,
            pad: Vec::new(),
        };
        if let Err(e) = ctx.save(&saved).await {
            ctx.error(format_args!("value {} not saved: {e}", self.value));
        }
    }

    #[handler]
    async fn get(&mut self, _ctx: &Ctx, _msg: Get) -> u64 {
        self.value
    }

    #[handler]
    async fn status(&mut self, _ctx: &Ctx, _msg: GetStateStatus) -> StateStatus {
        StateStatus {
            value: self.value,
            loaded: self.loaded,
            load_error: self.load_error.clone(),
            instance: self.instance,
        }
    }

    #[handler]
    async fn save_padded(&mut self, ctx: &Ctx, msg: SavePadded) -> Result<(), String> {
        let saved = Saved {
            value: self.value,
            pad: vec![0xab; msg.pad as usize],
        };
        ctx.save(&saved).await.map_err(|e| e.code().to_string())
    }

    #[handler]
    async fn start_beating(&mut self, ctx: &Ctx, msg: StartBeating) -> Result<(), String> {
        ctx.every(Duration::from_millis(msg.period_ms), &Beat {})
            .map(|_| ())
            .map_err(|e| e.code().as_str().to_owned())
    }

    #[handler]
    async fn beat(&mut self, _ctx: &Ctx, _msg: Beat) {
        self.beats += 1;
    }

    #[handler]
    async fn crash(&mut self, _ctx: &Ctx, _msg: Crash) {
        panic!("asked to crash at value {}", self.value);
    }
}

#[cfg(test)]
mod tests {
    use bunraku_sdk::testing::TestActor;

    use super::*;

    #[test]
    fn starts_from_zero_when_nothing_was_saved() {
        let mut t = TestActor::<Stateful>::start_default();
        let status = t.call(&GetStateStatus {}).unwrap();
        assert_eq!(
            (status.value, status.loaded, status.load_error),
            (0, None, None)
        );
    }

    #[test]
    fn every_add_is_saved_and_a_restart_loads_it() {
        let mut t = TestActor::<Stateful>::start_default();
        t.send(&Add { n: 2 }).unwrap();
        t.send(&Add { n: 3 }).unwrap();
        assert_eq!(t.saved_state::<Saved>().unwrap().value, 5);

        let saved = t.saved_state::<Saved>().unwrap();
        let mut restarted = TestActor::<Stateful>::builder()
            .saved_state(&saved)
            .start_default();
        assert_eq!(restarted.call(&Get {}).unwrap(), 5);
        assert_eq!(restarted.call(&GetStateStatus {}).unwrap().loaded, Some(5));
    }

    #[test]
    fn a_failed_load_is_reported_and_the_counter_starts_from_zero() {
        let mut t = TestActor::<Stateful>::builder()
            .saved_bytes(vec![0xff; 12])
            .start_default();
        let status = t.call(&GetStateStatus {}).unwrap();
        assert_eq!(status.load_error.as_deref(), Some("malformed"));
        assert_eq!(status.value, 0);
    }

    #[test]
    fn a_failed_save_is_replied_with_its_code() {
        let mut t = TestActor::<Stateful>::builder()
            .storage_unavailable(true)
            .start_default();
        let reply = t.call(&SavePadded { pad: 1 }).unwrap();
        assert_eq!(reply, Err("storage unavailable".to_owned()));
    }
}
