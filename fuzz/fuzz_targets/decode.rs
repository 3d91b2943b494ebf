//! `POST /push` decoding: any body, with or without the unwrapped
//! delivery's headers, is answered (an error or a delivery), never a panic;
//! a delivery that asks for a restart names a tagged, unpinned image and a
//! valid digest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushroll::push::{Action, PushHeaders, decode};
use pushroll::reference::validate_digest;

fuzz_target!(|input: &[u8]| {
    // The first byte picks the headers; the rest is the body.
    let (flags, body) = input.split_first().unwrap_or((&0, input));
    let headers = PushHeaders {
        message_id: (flags & 1 != 0).then_some("1"),
        subscription: (flags & 2 != 0).then_some("projects/p/subscriptions/s"),
        publish_time: (flags & 4 != 0).then_some("2026-11-26T22:47:29.798Z"),
    };
    if let Ok(delivery) = decode(headers, body)
        && let Action::Restart { image, digest } = &delivery.action
    {
        assert!(image.tag().is_some() && !image.is_pinned(), "{image:?}");
        assert!(validate_digest(digest).is_ok(), "{digest:?}");
    }
});
