//! Payload encoding by [`Codec`]: postcard between actors, JSON from the CLI.

use bunraku_abi::Codec;
use serde::Serialize;
use serde::de::DeserializeOwned;

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
    match codec {
        Codec::Postcard => postcard::to_allocvec(value).map_err(|e| e.to_string()),
        Codec::Json => serde_json::to_vec(value).map_err(|e| e.to_string()),
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
    fn empty_json_reads_as_null() {
        assert_eq!(decode::<()>(Codec::Json, b""), Ok(()));
        assert_eq!(decode::<Option<u8>>(Codec::Json, b"  "), Ok(None));
        assert_eq!(decode::<Vec<u8>>(Codec::Json, b"[1,2]"), Ok(vec![1, 2]));
    }
}
