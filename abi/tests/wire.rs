//! Golden wire tests: the exact bytes of every type that crosses the wasm boundary (postcard, and
//! the frame `next` hands a message in). A change here is an ABI change: bump `ABI_VERSION` and
//! say so in the commit.

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
        stream: Some(3),
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
        1, 3,                         // stream Some(3)
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
}

#[test]
fn message_frame_bytes_are_stable() {
    #[rustfmt::skip]
    let frame = [
        1,                            // Event::Message
        1,                            // Codec::Json
        0x6f, 0,                      // flags: reply, deadline, trace, sender, key, stream
        7, 0, 0, 0,                   // reply 7
        0x2c, 0x01, 0, 0, 0, 0, 0, 0, // id 300
        1, 0, 0, 0, 0, 0, 0, 0,       // deadline 1
        3, 0, 0, 0,                   // stream 3
        5, 0, 0, 0,                   // type name: 5 bytes
        3, 0, 0, 0,                   // sender: 3 bytes
        0, 0, 0, 0,                   // subject: none
        1, 0, 0, 0,                   // idempotency key: 1 byte
        9, 0, 0, 0,                   // extras: 9 bytes
        2, 0, 0, 0,                   // payload: 2 bytes
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, // trace id
        2, 2, 2, 2, 2, 2, 2, 2,       // span id
        b'G', b'r', b'e', b'e', b't',
        b'c', b'l', b'i',
        b'k',
        2, 1, 2,                      // chain [1, 2]
        0,                            // attachments []
        1, 1, b'x', 1, 9,             // ext [{x: [9]}]
        0xAA, 0xBB,                   // payload
    ];
    assert_eq!(frame.len(), view::MESSAGE_HEADER + 24 + 5 + 3 + 1 + 9 + 2);
    let message = Event::Message(envelope());
    assert_eq!(view::encode_event(&message), frame);
    let decoded = view::EventView::decode(&frame).expect("the golden frame decodes");
    assert_eq!(decoded.to_event(), message);

    // With nothing optional and no extras: the header, the type name and the payload.
    let bare = Envelope {
        id: 1,
        msg_type: "M".into(),
        payload: vec![5],
        ..Envelope::default()
    };
    #[rustfmt::skip]
    let frame = [
        1, 0, 0, 0,
        0, 0, 0, 0,
        1, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0,
        1, 0, 0, 0,
        0, 0, 0, 0,
        0, 0, 0, 0,
        0, 0, 0, 0,
        0, 0, 0, 0,
        1, 0, 0, 0,
        b'M',
        5,
    ];
    assert_eq!(view::encode_event(&Event::Message(bare.clone())), frame);
    assert_eq!(
        view::EventView::decode(&frame).map(|v| v.to_event()),
        Ok(Event::Message(bare))
    );
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
            to_ref: None,
            attachments: vec![],
        },
        &[1, b't', 1, b'M', 0, 1, 1, 1, 0xe8, 0x07, 0, 0, 0, 0],
    );
    golden(
        Outbound {
            target: String::new(),
            msg_type: "M".into(),
            codec: Codec::Postcard,
            payload: vec![],
            timeout_ms: None,
            idempotency_key: None,
            ext: vec![],
            to_ref: Some(300),
            attachments: vec![1, 128],
        },
        &[0, 1, b'M', 0, 0, 0, 0, 0, 1, 0xac, 0x02, 2, 1, 0x80, 0x01],
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

/// The guests' import declarations expand outside the SDK too (natively they are declared and
/// never called, so never linked).
mod declared_imports {
    bunraku_abi::declare_host_imports!();
}

#[test]
fn declared_imports_name_the_import_module() {
    // The `#[link]` attribute takes only a literal: it must spell IMPORT_MODULE.
    let source = include_str!("../src/lib.rs");
    assert!(
        source.contains(&format!(
            "#[link(wasm_import_module = \"{IMPORT_MODULE}\")]"
        )),
        "declare_host_imports! must import from `{IMPORT_MODULE}`"
    );
}

mod views {
    //! The borrowed views decode and encode the same bytes as the owned types (and, for a
    //! message event, the frame that `encode_event_into` writes).

    use bunraku_abi::view::{
        CompletionView, EnvelopeView, EventView, OutboundHead, OutboundView, ReplyView,
    };
    use bunraku_abi::*;

    fn golden_events() -> Vec<Event> {
        let mut events = vec![
            Event::Start {
                name: "a".into(),
                instance: 2,
                config: b"{}".to_vec(),
            },
            Event::Stop,
            Event::Message(super::envelope()),
            Event::Message(Envelope::default()),
            Event::Message(Envelope {
                chain: vec![u64::MAX, 0, 300],
                attachments: vec![u32::MAX, 5],
                subject: Some("a.b".into()),
                sender: None,
                ext: vec![
                    Ext {
                        key: "k1".into(),
                        value: vec![],
                    },
                    Ext {
                        key: "k2".into(),
                        value: vec![0; 200],
                    },
                ],
                payload: vec![7; 300],
                ..super::envelope()
            }),
            Event::Completion {
                op: 5,
                result: Completion::Done,
            },
            Event::Completion {
                op: u32::MAX,
                result: Completion::Reply(ReplyBody::Ok {
                    codec: Codec::Postcard,
                    payload: vec![4],
                }),
            },
            Event::Completion {
                op: 1,
                result: Completion::Reply(ReplyBody::Error {
                    code: ErrorCode::Malformed,
                    message: "m".into(),
                }),
            },
        ];
        for &code in ErrorCode::ALL {
            events.push(Event::Completion {
                op: 1,
                result: Completion::Failed(code),
            });
        }
        events
    }

    #[test]
    fn event_views_of_encoded_events_equal_the_owned_events() {
        for event in golden_events() {
            let bytes = view::encode_event(&event);
            let view = EventView::decode(&bytes).unwrap();
            assert_eq!(view.to_event(), event, "view of {bytes:?}");
        }
    }

    /// What `next` hands a guest: every event but a message is its postcard bytes.
    #[test]
    fn events_other_than_messages_encode_without_serde_to_their_postcard_bytes() {
        for event in golden_events() {
            let mut buf = vec![0xee];
            view::encode_event_into(&event, &mut buf);
            if !matches!(event, Event::Message(_)) {
                assert_eq!(buf[1..], encode(&event), "{event:?}");
            }
        }
    }

    #[test]
    fn a_shared_envelope_encodes_with_the_receivers_handles_as_a_copy_holding_them_would() {
        let shared = super::envelope();
        for (reply, attachments, stream) in [
            (None, &[][..], None),
            (Some(9), &[4u32, 300][..], Some(1)),
            (Some(u32::MAX), &[1][..], None),
        ] {
            let mut copy = shared.clone();
            (copy.reply, copy.attachments, copy.stream) = (reply, attachments.to_vec(), stream);
            let received = view::Received {
                reply,
                attachments,
                stream,
            };
            let mut buf = vec![0xee];
            view::encode_message_event_into(&shared, &received, &mut buf);
            assert_eq!(
                buf[1..],
                view::encode_event(&Event::Message(copy)),
                "{received:?}"
            );
        }
    }

    /// What `next` writes straight into a guest's buffer: the frame `encode_message_event_into`
    /// appends, for every message without extras; a message with extras has no such length.
    #[test]
    fn a_frame_written_in_place_equals_the_appended_frame_and_only_frames_without_extras_are() {
        let mut messages: Vec<Envelope> = golden_events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Message(env) => Some(env),
                _ => None,
            })
            .collect();
        let plain = Envelope {
            chain: vec![],
            ext: vec![],
            subject: Some("a.b.c".into()),
            ..super::envelope()
        };
        messages.push(plain);
        let mut written = 0;
        for env in &messages {
            for (reply, attachments, stream) in
                [(None, &[][..], None), (Some(9), &[4u32][..], Some(1))]
            {
                let received = view::Received {
                    reply,
                    attachments,
                    stream,
                };
                let mut appended = Vec::new();
                view::encode_message_event_into(env, &received, &mut appended);
                let has_extras =
                    !(env.chain.is_empty() && attachments.is_empty() && env.ext.is_empty());
                match view::plain_frame(env, &received) {
                    None => assert!(has_extras, "{env:?} {received:?}"),
                    Some(frame) => {
                        assert!(!has_extras);
                        assert_eq!(frame.len(), appended.len());
                        let mut dest = vec![0xee; frame.len()];
                        frame.write(&mut dest);
                        assert_eq!(dest, appended, "{env:?} {received:?}");
                        written += 1;
                    }
                }
            }
        }
        assert!(written >= 2, "frames without extras were written");
    }

    #[test]
    #[should_panic(expected = "a frame written into a buffer of another length")]
    fn a_frame_is_not_written_into_a_buffer_of_another_length() {
        let env = Envelope::default();
        let frame = view::plain_frame(&env, &view::Received::default()).unwrap();
        frame.write(&mut vec![0; frame.len() + 1]);
    }

    #[test]
    fn envelope_view_borrows_every_field_from_the_golden_bytes() {
        let bytes = encode(&super::envelope());
        let env = EnvelopeView::decode(&bytes).unwrap();
        assert_eq!(env.id, 300);
        assert_eq!(env.msg_type, "Greet");
        assert_eq!(env.codec, Codec::Json);
        assert_eq!((env.reply, env.deadline_ms), (Some(7), Some(1)));
        assert_eq!(env.chain.iter().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(env.chain.len(), 2);
        assert_eq!(env.trace.unwrap().span_id, [2; 8]);
        assert_eq!(
            (env.sender, env.subject, env.idempotency_key),
            (Some("cli"), None, Some("k"))
        );
        assert!(env.attachments.is_empty());
        let ext: Vec<_> = env.ext.iter().map(|e| (e.key, e.value)).collect();
        assert_eq!(ext, [("x", &[9u8][..])]);
        assert_eq!(env.payload, [0xAA, 0xBB]);
        // The payload, then `stream: Some(3)` (2 bytes).
        let payload_at = bytes.len() - 4;
        assert!(
            std::ptr::eq(env.payload, &bytes[payload_at..payload_at + 2]),
            "borrowed"
        );
        assert_eq!(env.stream, Some(3));
        assert_eq!(env.to_envelope(), super::envelope());
    }

    #[test]
    fn message_frame_view_borrows_the_payload_at_the_frame_end() {
        let bytes = view::encode_event(&Event::Message(super::envelope()));
        let Ok(EventView::Message(env)) = EventView::decode(&bytes) else {
            panic!("a message");
        };
        let payload_at = bytes.len() - 2;
        assert!(std::ptr::eq(env.payload, &bytes[payload_at..]), "borrowed");
        assert_eq!((env.msg_type, env.sender), ("Greet", Some("cli")));
        assert_eq!(env.chain.iter().collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn completion_views_name_replies_and_failures() {
        let bytes = [2, 1, 1, 0, 0, 1, 4];
        let Ok(EventView::Completion { op: 1, result }) = EventView::decode(&bytes) else {
            panic!("a completion");
        };
        let body = ReplyView::Ok {
            codec: Codec::Postcard,
            payload: &[4],
        };
        assert_eq!(result, CompletionView::Reply(body));
    }

    /// Type names and senders of every length from 0 to 40 (around the length up to which the
    /// view checks ASCII text inline): ASCII, with a two-byte character, and with a byte that
    /// is not UTF-8 at each position. The view accepts exactly what the owned decoder accepts.
    #[test]
    fn envelope_views_check_text_of_every_short_length_as_the_owned_decoder_does() {
        let bytes_of = |text: &[u8]| {
            // Encoded with `Z`s in place of the text (no other byte of this envelope is a `Z`),
            // then the text patched over both runs of them.
            let placeholder = "Z".repeat(text.len());
            let env = Envelope {
                msg_type: placeholder.clone(),
                sender: Some(placeholder),
                ..Envelope::default()
            };
            patch(encode(&env), text)
        };
        // The same, as a message frame.
        let frame_of = |text: &[u8]| {
            let placeholder = "Z".repeat(text.len());
            let env = Envelope {
                msg_type: placeholder.clone(),
                sender: Some(placeholder),
                ..Envelope::default()
            };
            patch(view::encode_event(&Event::Message(env)), text)
        };
        fn patch(mut bytes: Vec<u8>, text: &[u8]) -> Vec<u8> {
            if !text.is_empty() {
                for _ in 0..2 {
                    let at = bytes
                        .windows(text.len())
                        .position(|w| w.iter().all(|&b| b == b'Z'))
                        .expect("a run of placeholders");
                    bytes[at..at + text.len()].copy_from_slice(text);
                }
            }
            bytes
        }
        for len in 0..=40usize {
            let ascii: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let mut cases = vec![ascii.clone()];
            for at in 0..len.saturating_sub(1) {
                let mut two_byte = ascii.clone();
                two_byte[at..at + 2].copy_from_slice("é".as_bytes());
                cases.push(two_byte);
            }
            for at in 0..len {
                for bad in [0x80, 0xc3, 0xff] {
                    let mut broken = ascii.clone();
                    broken[at] = bad;
                    cases.push(broken);
                }
            }
            for text in cases {
                let bytes = bytes_of(&text);
                let owned = decode::<Envelope>(&bytes).ok();
                let frame = frame_of(&text);
                let framed = match EventView::decode(&frame) {
                    Ok(EventView::Message(env)) => Some(env.to_envelope()),
                    Ok(other) => panic!("not a message: {other:?}"),
                    Err(_) => None,
                };
                assert_eq!(framed, owned, "framed text {text:?} of {len} bytes");
                let view = EnvelopeView::decode(&bytes).ok();
                assert_eq!(
                    view.map(|v| v.to_envelope()),
                    owned,
                    "text {text:?} of {len} bytes"
                );
                if let Ok(valid) = std::str::from_utf8(&text) {
                    let env = view.expect("valid text decodes");
                    assert_eq!((env.msg_type, env.sender), (valid, Some(valid)));
                }
            }
        }
    }

    /// Calls `f` with every truncation of `bytes`, `bytes` with a byte more, and `bytes` with
    /// each byte changed to each of several values chosen around varint and tag boundaries.
    fn for_each_damaged(bytes: &[u8], f: &mut impl FnMut(&[u8])) {
        for len in 0..bytes.len() {
            f(&bytes[..len]);
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        f(&longer);
        for at in 0..bytes.len() {
            for value in [0x00, 0x01, 0x02, 0x0f, 0x10, 0x7f, 0x80, 0xc0, 0xfe, 0xff] {
                let mut changed = bytes.to_vec();
                changed[at] = value;
                f(&changed);
            }
        }
    }

    /// Every truncation and many single-byte changes of every golden event other than a
    /// message, and of every golden envelope: the view accepts exactly what the owned decoder
    /// accepts, with the same value.
    #[test]
    fn event_views_refuse_exactly_what_the_owned_decoder_refuses() {
        let mut checked = 0;
        let mut same = |bytes: &[u8]| {
            let owned = decode::<Event>(bytes);
            let viewed = EventView::decode(bytes).map(|v| v.to_event());
            assert_eq!(viewed, owned, "bytes {bytes:?}");
            checked += 1;
        };
        for event in golden_events() {
            if !matches!(event, Event::Message(_)) {
                for_each_damaged(&encode(&event), &mut same);
            }
        }
        // Varints at and past their limits.
        for bytes in [
            &[2, 0xff, 0xff, 0xff, 0xff, 0x0f, 0][..],
            &[2, 0xff, 0xff, 0xff, 0xff, 0x10, 0],
            &[2, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0],
            &[2, 0x85, 0x00, 0],
        ] {
            same(bytes);
        }
        let mut same_envelope = |bytes: &[u8]| {
            let owned = decode::<Envelope>(bytes);
            let viewed = EnvelopeView::decode(bytes).map(|v| v.to_envelope());
            assert_eq!(viewed, owned, "bytes {bytes:?}");
            checked += 1;
        };
        for event in golden_events() {
            if let Event::Message(env) = event {
                for_each_damaged(&encode(&env), &mut same_envelope);
            }
        }
        for bytes in [
            &[
                0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0,
            ][..],
            &[
                0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02, 0,
            ],
            &[0, 2, 0xc3, 0x28, 0],
        ] {
            same_envelope(bytes);
        }
        assert!(checked > 1000);
    }

    /// Every truncation and many single-byte changes of every golden message frame, and frames
    /// with a field's length or an absent field's value changed: each is refused, or decodes
    /// to a message whose frame decodes to it again, and is those very bytes but for an
    /// overlong varint in the extras (postcard accepts those, and the extras are postcard).
    /// Nothing panics.
    #[test]
    fn message_frames_decode_only_as_the_frame_of_what_they_decode_to() {
        let mut accepted = 0;
        let mut refused = 0;
        let mut check = |bytes: &[u8]| match EventView::decode(bytes) {
            Ok(view) => {
                let EventView::Message(env) = view else {
                    panic!("not a message: {bytes:?}");
                };
                let event = view.to_event();
                let again = view::encode_event(&event);
                assert_eq!(
                    EventView::decode(&again).map(|v| v.to_event()),
                    Ok(event),
                    "re-encoded {bytes:?}"
                );
                if again != bytes {
                    // Only the extras (and so their length) may differ.
                    let extras = |frame: &[u8]| {
                        let len = u32::from_le_bytes(frame[44..48].try_into().unwrap()) as usize;
                        let end = frame.len() - env.payload.len();
                        (frame[..44].to_vec(), frame[48..end - len].to_vec())
                    };
                    assert_eq!(extras(&again), extras(bytes), "{bytes:?}");
                }
                accepted += 1;
            }
            Err(code) => {
                assert_eq!(code, ErrorCode::Malformed, "{bytes:?}");
                refused += 1;
            }
        };
        for event in golden_events() {
            if !matches!(event, Event::Message(_)) {
                continue;
            }
            let frame = view::encode_event(&event);
            for_each_damaged(&frame, &mut check);
            // Each length (and each absent field's slot) one more and one less, and at its
            // largest: the lengths no longer add up, or a field takes bytes of the next.
            for at in (4..view::MESSAGE_HEADER).step_by(4) {
                for delta in [1u32, u32::MAX, 0x8000_0000] {
                    let mut changed = frame.clone();
                    let v = u32::from_le_bytes(changed[at..at + 4].try_into().unwrap());
                    changed[at..at + 4].copy_from_slice(&v.wrapping_add(delta).to_le_bytes());
                    check(&changed);
                }
            }
        }
        // Extras that are present but empty are not the frame of any envelope.
        let mut empty_extras = view::encode_event(&Event::Message(Envelope::default()));
        empty_extras[44] = 3;
        empty_extras.extend_from_slice(&[0, 0, 0]);
        check(&empty_extras);
        assert!(
            accepted > 0 && refused > 1000,
            "{accepted} accepted, {refused} refused"
        );
    }

    #[test]
    fn outbound_head_encodes_the_same_bytes_as_an_outbound() {
        let ext = [Ext {
            key: "x".into(),
            value: vec![9],
        }];
        for (len, timeout_ms, key, ext, to_ref, attachments) in [
            (1, Some(1000), None, &[][..], None, &[][..]),
            (0, None, Some("k"), &ext[..], Some(7), &[1, u32::MAX][..]),
            (127, None, None, &[], None, &[]),
            (128, Some(u64::MAX), None, &[], Some(u32::MAX), &[]),
            (16_384, None, None, &ext, None, &[3]),
        ] {
            let owned = Outbound {
                target: "t".into(),
                msg_type: "M".into(),
                codec: Codec::Json,
                payload: vec![1; len],
                timeout_ms,
                idempotency_key: key.map(Into::into),
                ext: ext.to_vec(),
                to_ref,
                attachments: attachments.to_vec(),
            };
            let head = OutboundHead {
                target: "t",
                msg_type: "M",
                codec: Codec::Json,
                timeout_ms,
                idempotency_key: key,
                ext,
                to_ref,
                attachments,
            };
            let mut buf = vec![0xee];
            head.encode_into(&owned.payload, &mut buf);
            assert_eq!(buf[1..], encode(&owned), "payload of {len} bytes");
        }
    }

    /// Names and payloads of every length up to 40 bytes, each byte different, so that a short
    /// copy that puts a byte in the wrong place or drops one shows; with the optional fields
    /// absent (the shortcut for the common tail) and with one present.
    #[test]
    fn outbound_head_copies_strings_and_payloads_of_every_short_length_exactly() {
        let text: String = ('a'..='z').chain('A'..='Z').collect();
        for (len, with_key) in (0..=40).flat_map(|len| [(len, false), (len, true)]) {
            let name = &text[..len];
            let payload: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
            let owned = Outbound {
                target: name.into(),
                msg_type: name.chars().rev().collect(),
                payload: payload.clone(),
                idempotency_key: with_key.then(|| name.into()),
                ..Outbound::default()
            };
            let head = OutboundHead {
                target: &owned.target,
                msg_type: &owned.msg_type,
                idempotency_key: owned.idempotency_key.as_deref(),
                ..OutboundHead::default()
            };
            let mut buf = vec![0xee];
            head.encode_with(&mut buf, |b| {
                b.extend_from_slice(&payload);
                Ok::<(), ()>(())
            })
            .unwrap();
            assert_eq!(
                buf[1..],
                encode(&owned),
                "strings and payload of {len} bytes, key: {with_key}"
            );
        }
    }

    /// Every truncation and many single-byte changes of outbound messages with every optional
    /// field absent and present: the host's view accepts exactly what the owned decoder
    /// accepts, with the same value, and borrows the payload.
    #[test]
    fn outbound_views_refuse_exactly_what_the_owned_decoder_refuses() {
        let full = Outbound {
            target: "actor/key".into(),
            msg_type: "M".into(),
            codec: Codec::Json,
            payload: (0..130).map(|i| (i as u8) ^ 0xa5).collect(),
            timeout_ms: Some(u64::MAX),
            idempotency_key: Some("k".into()),
            ext: vec![Ext {
                key: "x".into(),
                value: vec![9],
            }],
            to_ref: Some(u32::MAX),
            attachments: vec![1, 300, u32::MAX],
        };
        let bare = Outbound {
            target: "t".into(),
            msg_type: "bench.ping".into(),
            payload: vec![0xab, 0xcd],
            ..Outbound::default()
        };
        let mut checked = 0;
        let mut same = |bytes: &[u8]| {
            let owned = decode::<Outbound>(bytes);
            let viewed = OutboundView::decode(bytes).map(|v| v.to_outbound());
            assert_eq!(viewed, owned, "bytes {bytes:?}");
            checked += 1;
        };
        for out in [&full, &bare] {
            let bytes = encode(out);
            let view = OutboundView::decode(&bytes).unwrap();
            assert_eq!(view.to_outbound(), *out);
            let at = bytes
                .windows(out.payload.len())
                .position(|w| w == out.payload)
                .unwrap();
            assert!(std::ptr::eq(
                view.payload,
                &bytes[at..at + out.payload.len()]
            ));
            for_each_damaged(&bytes, &mut same);
        }
        assert!(checked > 1000);
    }

    #[test]
    fn a_failed_payload_leaves_the_buffer_as_it_was() {
        let head = OutboundHead {
            target: "t",
            msg_type: "M",
            codec: Codec::Postcard,
            timeout_ms: None,
            idempotency_key: None,
            ext: &[],
            to_ref: None,
            attachments: &[],
        };
        let mut buf = vec![3];
        let failed = head.encode_with(&mut buf, |b| {
            b.extend_from_slice(&[1, 2, 3]);
            Err("no")
        });
        assert_eq!((failed, buf.as_slice()), (Err("no"), &[3u8][..]));
        let failed = view::encode_reply_ok_with(&mut buf, Codec::Json, |b| {
            b.push(1);
            Err("no")
        });
        assert_eq!((failed, buf.as_slice()), (Err("no"), &[3u8][..]));
    }

    #[test]
    fn reply_ok_encodes_the_same_bytes_as_a_reply_body() {
        for len in [0, 1, 127, 128, 300] {
            let owned = ReplyBody::Ok {
                codec: Codec::Postcard,
                payload: vec![5; len],
            };
            let mut buf = Vec::new();
            let written: Result<(), ()> =
                view::encode_reply_ok_with(&mut buf, Codec::Postcard, |b| {
                    b.extend(std::iter::repeat_n(5, len));
                    Ok(())
                });
            written.unwrap();
            assert_eq!(buf, encode(&owned), "payload of {len} bytes");
        }
    }
}
