//! Payload encoding by [`Codec`]: postcard between actors, JSON from the CLI.

use std::cell::Cell;

use bunraku_abi::Codec;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A scratch buffer grown beyond this for one large message is released afterwards.
const KEPT_SCRATCH: usize = 64 * 1024;

thread_local! {
    /// The buffer [`with_scratch`] lends out.
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` with this thread's reusable encoding buffer, empty. Every outgoing message is encoded
/// into it, so a guest does not allocate per send; a nested call gets a fresh buffer.
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut buf = SCRATCH.take();
    buf.clear();
    let r = f(&mut buf);
    if buf.capacity() <= KEPT_SCRATCH {
        SCRATCH.set(buf);
    }
    r
}

/// A postcard flavor that appends to a `Vec`.
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// A short name for messages.
pub(crate) fn name(codec: Codec) -> &'static str {
    match codec {
        Codec::Postcard => "postcard",
        Codec::Json => "json",
        _ => "unknown codec",
    }
}

/// Encodes `value` in `codec`.
pub(crate) fn encode<T: Serialize + ?Sized>(codec: Codec, value: &T) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    encode_into(codec, value, &mut buf)?;
    Ok(buf)
}

/// Appends `value` encoded in `codec` to `buf` (which may hold more than `value` on failure).
pub(crate) fn encode_into<T: Serialize + ?Sized>(
    codec: Codec,
    value: &T,
    buf: &mut Vec<u8>,
) -> Result<(), String> {
    match codec {
        Codec::Postcard => {
            postcard::serialize_with_flavor(value, Append(buf)).map_err(|e| e.to_string())
        }
        Codec::Json => serde_json::to_writer(buf, value).map_err(|e| e.to_string()),
        _ => Err(format!("{} is not supported by this SDK", name(codec))),
    }
}

/// Decodes a `T` from `bytes` in `codec`. postcard refuses trailing bytes; an empty JSON payload
/// reads as `null` (so a unit message needs no body from the CLI).
pub(crate) fn decode<T: DeserializeOwned>(codec: Codec, bytes: &[u8]) -> Result<T, String> {
    match codec {
        Codec::Postcard => match postcard::take_from_bytes(bytes) {
            Ok((value, [])) => Ok(value),
            Ok((_, rest)) => Err(format!("{} trailing bytes", rest.len())),
            Err(e) => Err(e.to_string()),
        },
        Codec::Json if bytes.trim_ascii().is_empty() => {
            serde_json::from_slice(b"null").map_err(|e| e.to_string())
        }
        Codec::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        _ => Err(format!("{} is not supported by this SDK", name(codec))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postcard_refuses_trailing_bytes() {
        let mut bytes = encode(Codec::Postcard, &7u32).unwrap();
        assert_eq!(decode::<u32>(Codec::Postcard, &bytes), Ok(7));
        bytes.push(0);
        assert!(
            decode::<u32>(Codec::Postcard, &bytes)
                .unwrap_err()
                .contains("trailing")
        );
    }

    #[test]
    fn encoding_into_a_buffer_appends_what_encode_returns() {
        for codec in [Codec::Postcard, Codec::Json] {
            let value = (7u32, "seven", vec![1u8, 2]);
            let mut buf = vec![0xee];
            encode_into(codec, &value, &mut buf).unwrap();
            assert_eq!(buf[1..], encode(codec, &value).unwrap());
        }
    }

    #[test]
    fn scratch_is_empty_on_every_use_and_fresh_when_nested() {
        with_scratch(|outer| {
            outer.push(1);
            with_scratch(|inner| assert!(inner.is_empty()));
        });
        with_scratch(|again| assert!(again.is_empty()));
    }

    #[test]
    fn empty_json_reads_as_null() {
        assert_eq!(decode::<()>(Codec::Json, b""), Ok(()));
        assert_eq!(decode::<Option<u8>>(Codec::Json, b"  "), Ok(None));
        assert_eq!(decode::<Vec<u8>>(Codec::Json, b"[1,2]"), Ok(vec![1, 2]));
    }
}
