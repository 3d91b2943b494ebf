//! `POST /webhooks/{source}` parsing: any body, for any source, with or
//! without GitHub's event header, is answered (an error or events), never
//! a panic; an event that asks for a restart names a tagged, unpinned
//! image and a valid digest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushroll::push::{Action, Origin};
use pushroll::reference::validate_digest;
use pushroll::webhook::{Event, Request, parse};

fuzz_target!(|input: &[u8]| {
    // The first byte picks the source and the GitHub event; the rest is the body.
    let (pick, body) = input.split_first().unwrap_or((&0, input));
    let origin = Origin::ALL[1 + usize::from(pick % 6)];
    let event = ["package", "registry_package", "ping", "push"].get(usize::from(pick / 6 % 5)).copied();
    let request = Request { github_event: event, github_delivery: Some("d") };
    if let Ok(events) = parse(origin, request, body) {
        for e in events {
            if let Event::Ready(d) = e
                && let Action::Restart { image, digest } = &d.action
            {
                assert!(image.tag().is_some() && !image.is_pinned(), "{image:?}");
                assert!(validate_digest(digest).is_ok(), "{digest:?}");
            }
        }
    }
});
