//! Golden wire tests: the exact postcard bytes of every type that crosses the wasm boundary.
//! A change here is an ABI change: bump `ABI_VERSION` and say so in the commit.

use bunraku_abi::*;

fn golden<T>(value: T, bytes: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + core::fmt::Debug,
{
    let encoded = encode(&value);
    assert_eq!(encoded, bytes, "wire bytes of {value:?} changed");
    assert_eq!(
        decode::<T>(bytes).unwrap(),
        value,
        "decoding the golden bytes"
    );
}

fn envelope() -> Envelope {
    Envelope {
        id: 300,
        msg_type: "Greet".into(),
        codec: Codec::Json,
        reply: Some(7),
        deadline_ms: Some(1),
        chain: vec![1, 2],
        trace: Some(TraceContext {
            trace_id: [1; 16],
            span_id: [2; 8],
        }),
        sender: Some("cli".into()),
        subject: None,
        idempotency_key: Some("k".into()),
        attachments: vec![],
        ext: vec![Ext {
            key: "x".into(),
            value: vec![9],
        }],
        payload: vec![0xAA, 0xBB],
    }
}

#[test]
fn envelope_wire_bytes_are_stable() {
    #[rustfmt::skip]
    let bytes = [
        0xac, 0x02,                   // id 300 (varint)
        5, b'G', b'r', b'e', b'e', b't',
        1,                            // Codec::Json
        1, 7,                         // reply Some(7)
        1, 1,                         // deadline Some(1)
        2, 1, 2,                      // chain [1, 2]
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, // trace Some, trace_id
        2, 2, 2, 2, 2, 2, 2, 2,       // span_id
        1, 3, b'c', b'l', b'i',       // sender
        0,                            // subject None
        1, 1, b'k',                   // idempotency key
        0,                            // attachments []
        1, 1, b'x', 1, 9,             // ext [{x: [9]}]
        2, 0xAA, 0xBB,                // payload
    ];
    golden(envelope(), &bytes);
}

#[test]
fn event_wire_bytes_are_stable() {
    golden(
        Event::Start {
            name: "a".into(),
            instance: 2,
            config: b"{}".to_vec(),
        },
        &[0, 1, b'a', 2, 2, b'{', b'}'],
    );
    golden(Event::Stop, &[3]);
    golden(
        Event::Completion {
            op: 5,
            result: Completion::Done,
        },
        &[2, 5, 0],
    );
    golden(
        Event::Completion {
            op: 1,
            result: Completion::Failed(ErrorCode::Timeout),
        },
        &[2, 1, 2, 0],
    );
    golden(
        Event::Completion {
            op: 1,
            result: Completion::Reply(ReplyBody::Ok {
                codec: Codec::Postcard,
                payload: vec![4],
            }),
        },
        &[2, 1, 1, 0, 0, 1, 4],
    );
    let mut message = vec![1];
    message.extend(encode(&envelope()));
    golden(Event::Message(envelope()), &message);
}

#[test]
fn reply_outbound_subscribe_descriptor_wire_bytes_are_stable() {
    golden(
        ReplyBody::Error {
            code: ErrorCode::Malformed,
            message: "m".into(),
        },
        &[1, 6, 1, b'm'],
    );
    golden(
        Outbound {
            target: "t".into(),
            msg_type: "M".into(),
            codec: Codec::Postcard,
            payload: vec![1],
            timeout_ms: Some(1000),
            idempotency_key: None,
            ext: vec![],
        },
        &[1, b't', 1, b'M', 0, 1, 1, 1, 0xe8, 0x07, 0, 0],
    );
    golden(
        Subscribe {
            pattern: "a.>".into(),
            policy: Policy::DropNewest,
        },
        &[3, b'a', b'.', b'>', 1],
    );
    golden(
        Descriptor {
            abi_version: 1,
            actor: "E".into(),
            messages: vec![MessageInfo {
                name: "P".into(),
                kind: HandlerKind::Request,
            }],
        },
        &[1, 1, b'E', 1, 1, b'P', 1],
    );
}

#[test]
fn error_codes_round_trip_through_host_results() {
    for &code in ErrorCode::ALL {
        assert_eq!(decode_result(encode_error(code)), Err(code));
        assert_eq!(ErrorCode::from_raw(code as u16), Some(code));
    }
    // A negative number that is no code is reported as an internal error, not a panic.
    assert_eq!(decode_result(-9999), Err(ErrorCode::Internal));
}

#[test]
fn trailing_bytes_are_malformed() {
    let mut bytes = encode(&Event::Stop);
    bytes.push(0);
    assert_eq!(decode::<Event>(&bytes), Err(ErrorCode::Malformed));
    assert_eq!(decode::<Event>(&[0xff]), Err(ErrorCode::Malformed));
}

#[test]
fn host_function_table_has_unique_names_and_integer_signatures() {
    let mut names: Vec<_> = HOST_FUNCTIONS.iter().map(|f| f.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), HOST_FUNCTIONS.len());
    let next = HOST_FUNCTIONS.iter().find(|f| f.name == "next").unwrap();
    assert_eq!(next.params, &[WasmType::I32, WasmType::I32, WasmType::I32]);
    assert_eq!(next.result, WasmType::I64);
    assert_eq!(next.capability, Capability::None);
    let publish = HOST_FUNCTIONS.iter().find(|f| f.name == "publish").unwrap();
    assert_eq!(publish.capability, Capability::Publish);
}
