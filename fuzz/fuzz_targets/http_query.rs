//! Every query parser of the HTTP API on arbitrary query strings: no panic, and every answer
//! keeps the rules `pettracker::http::fuzzing` checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pettracker::http::fuzzing::query_string(data);
});
