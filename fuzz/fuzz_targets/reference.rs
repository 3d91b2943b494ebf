//! Reference normalization: whatever parses round-trips through its string
//! form, and its tagged key is a fixed point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushroll::reference::Reference;

fuzz_target!(|input: &str| {
    if let Ok(r) = Reference::parse(input) {
        let shown = r.to_string();
        assert_eq!(Reference::parse(&shown).as_ref(), Ok(&r), "{input:?} → {shown}");
        let key = r.tagged();
        let k = Reference::parse(&key).expect("a tagged key parses");
        assert_eq!(k.tagged(), key);
    }
});
