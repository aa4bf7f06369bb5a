//! The streaming example's source: on `Emit` it opens a stream of `Reading`s to the processor
//! and writes the seeded readings (`protocol::generate_readings`) into it, as fast as the
//! processor's credit allows, then closes it.

use bunraku_sdk::prelude::*;
use protocol::{Emit, Reading, Readings, generate_readings};

#[derive(Default)]
pub struct Source;

#[actor]
impl Source {
    #[handler]
    async fn emit(&mut self, ctx: &Ctx, msg: Emit) -> Result<u64, String> {
        let code = |e: Error| e.to_string();
        let generated = generate_readings(msg.seed, msg.sensors, msg.count);
        let mut out = ctx
            .open_stream::<Reading, _>(msg.to.as_str(), &Readings {})
            .map_err(code)?;
        for reading in &generated.readings {
            out.send(reading).await.map_err(code)?;
        }
        out.close().await.map_err(code)?;
        Ok(generated.readings.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bunraku_sdk::testing::TestActor;

    #[test]
    fn streams_the_seeded_readings_in_order_and_closes() {
        let mut source = TestActor::<Source>::start_default();
        let emit = Emit {
            to: "processor".into(),
            seed: 7,
            sensors: 3,
            count: 400,
        };
        assert_eq!(source.call(&emit).unwrap(), Ok(402));
        let sent = source.stream_items::<Reading>("processor");
        assert_eq!(sent, generate_readings(7, 3, 400).readings);
        assert_eq!(source.stream_endings("processor"), [Some(false)]);
    }
}
