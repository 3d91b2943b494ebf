//! The index readers: any bytes, as JSON or as gzip, are an index or an
//! error, never a panic; what loads writes back to the same index.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushroll::index::Index;

fuzz_target!(|input: &[u8]| {
    if let Ok((index, _)) = Index::from_json(input) {
        let (again, _) = Index::from_json(&index.to_json()).expect("written index reads back");
        assert_eq!(again, index);
    }
    let _ = Index::from_gzip(input);
});
