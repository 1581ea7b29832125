//! Writing uplink messages the way a collar sends them: one [`Writer`] interface over JSON and
//! CBOR, so each message type has a single encoder and the two encodings cannot drift apart.
//!
//! The encoders serve the firmware simulator and tests. They cannot fail, write fields in the
//! contract's order, and write times as integer epoch milliseconds (in both encodings: shorter
//! than RFC 3339 text, and exact to the millisecond the server keeps).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::cbor::CborWriter;
use super::node::Encoding;

/// Items of a JSON document or CBOR item, written in order. Maps and arrays announce their
/// length up front (CBOR's definite lengths), so a JSON writer knows where to close them.
pub(crate) trait Writer {
    /// Starts a map of `len` entries: each is a [`Writer::key`] followed by one value.
    fn map(&mut self, len: usize);
    /// Starts an array of `len` items.
    fn array(&mut self, len: usize);
    fn text(&mut self, value: &str);
    /// A number as the decoder's number fields read it: integral values may be written as
    /// integers. Not finite: JSON has no way to say it and writes `null`.
    fn number(&mut self, value: f64);
    fn integer(&mut self, value: i64);
    fn unsigned(&mut self, value: u64);
    fn boolean(&mut self, value: bool);
    fn null(&mut self);

    fn key(&mut self, name: &str) {
        self.text(name);
    }

    /// A time as integer epoch milliseconds.
    fn time(&mut self, value: DateTime<Utc>) {
        self.integer(value.timestamp_millis());
    }

    /// Any JSON value, for fields the contract does not define (they are ignored by the server).
    fn value(&mut self, value: &serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::Null => self.null(),
            Value::Bool(b) => self.boolean(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => self.unsigned(u),
                (None, Some(i), _) => self.integer(i),
                (None, None, Some(f)) => self.number(f),
                (None, None, None) => self.null(),
            },
            Value::String(s) => self.text(s),
            Value::Array(items) => {
                self.array(items.len());
                for item in items {
                    self.value(item);
                }
            }
            Value::Object(entries) => {
                self.map(entries.len());
                for (k, v) in entries {
                    self.key(k);
                    self.value(v);
                }
            }
        }
    }
}

/// Runs `write` against a writer for `encoding` and returns the bytes.
pub(crate) fn encode(encoding: Encoding, write: impl FnOnce(&mut dyn Writer)) -> Vec<u8> {
    match encoding {
        Encoding::Json => {
            let mut w = JsonWriter::default();
            write(&mut w);
            w.finish()
        }
        Encoding::Cbor => {
            let mut w = CborWriter::new();
            write(&mut w);
            w.finish()
        }
    }
}

impl Writer for CborWriter {
    fn map(&mut self, len: usize) {
        CborWriter::map(self, len);
    }
    fn array(&mut self, len: usize) {
        CborWriter::array(self, len);
    }
    fn text(&mut self, value: &str) {
        CborWriter::text(self, value);
    }
    fn number(&mut self, value: f64) {
        CborWriter::number(self, value);
    }
    fn integer(&mut self, value: i64) {
        CborWriter::integer(self, value);
    }
    fn unsigned(&mut self, value: u64) {
        CborWriter::unsigned(self, value);
    }
    fn boolean(&mut self, value: bool) {
        CborWriter::boolean(self, value);
    }
    fn null(&mut self) {
        CborWriter::null(self);
    }
}

/// Compact JSON, written straight into a string: no intermediate `serde_json::Value`, because the
/// load generator encodes every fix it sends with this.
#[derive(Debug, Default)]
pub(crate) struct JsonWriter {
    out: String,
    /// The maps and arrays not closed yet, innermost last.
    open: Vec<Container>,
}

#[derive(Debug)]
struct Container {
    map: bool,
    /// Items it holds when complete: keys and values count one each in a map.
    items: usize,
    written: usize,
}

impl JsonWriter {
    pub fn finish(self) -> Vec<u8> {
        debug_assert!(self.open.is_empty(), "unfinished JSON: {:?}", self.open);
        self.out.into_bytes()
    }

    /// Separator before the next item of the innermost container.
    fn before(&mut self) {
        if let Some(c) = self.open.last() {
            if c.map && c.written % 2 == 1 {
                self.out.push(':');
            } else if c.written > 0 {
                self.out.push(',');
            }
        }
    }

    /// Counts a finished item, closing every container it completes.
    fn after(&mut self) {
        while let Some(c) = self.open.last_mut() {
            c.written += 1;
            if c.written < c.items {
                return;
            }
            let close = if c.map { '}' } else { ']' };
            self.open.pop();
            self.out.push(close);
        }
    }

    fn start(&mut self, map: bool, items: usize) {
        self.before();
        self.out.push(if map { '{' } else { '[' });
        if items == 0 {
            self.out.push(if map { '}' } else { ']' });
            self.after();
        } else {
            self.open.push(Container {
                map,
                items,
                written: 0,
            });
        }
    }

    fn scalar(&mut self, write: impl FnOnce(&mut String)) {
        self.before();
        write(&mut self.out);
        self.after();
    }
}

impl Writer for JsonWriter {
    fn map(&mut self, len: usize) {
        self.start(true, len.saturating_mul(2));
    }

    fn array(&mut self, len: usize) {
        self.start(false, len);
    }

    fn text(&mut self, value: &str) {
        self.scalar(|out| escape_into(out, value));
    }

    fn number(&mut self, value: f64) {
        // serde_json's own float formatting (shortest round-trip form, `34.0` for whole values),
        // so the output matches what `serde_json::to_string` gives for the same number.
        self.scalar(|out| match serde_json::Number::from_f64(value) {
            Some(n) => {
                // Writing into a String cannot fail.
                let _ = write!(out, "{n}");
            }
            None => out.push_str("null"),
        });
    }

    fn integer(&mut self, value: i64) {
        self.scalar(|out| {
            let _ = write!(out, "{value}");
        });
    }

    fn unsigned(&mut self, value: u64) {
        self.scalar(|out| {
            let _ = write!(out, "{value}");
        });
    }

    fn boolean(&mut self, value: bool) {
        self.scalar(|out| out.push_str(if value { "true" } else { "false" }));
    }

    fn null(&mut self) {
        self.scalar(|out| out.push_str("null"));
    }
}

/// A JSON string literal: quotes, backslashes and control characters escaped (RFC 8259 §7).
fn escape_into(out: &mut String, value: &str) {
    out.push('"');
    // Field names and most values need no escaping: copied whole, they cost one memcpy.
    if !value.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(value);
        out.push('"');
        return;
    }
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn json_of(write: impl FnOnce(&mut dyn Writer)) -> String {
        String::from_utf8(encode(Encoding::Json, write)).unwrap()
    }

    #[test]
    fn nested_maps_and_arrays_get_their_separators_and_closing_brackets() {
        let text = json_of(|w| {
            w.map(3);
            w.key("a");
            w.array(2);
            w.integer(1);
            w.map(0);
            w.key("b");
            w.array(0);
            w.key("c");
            w.map(1);
            w.key("d");
            w.boolean(false);
        });
        assert_eq!(text, r#"{"a":[1,{}],"b":[],"c":{"d":false}}"#);
    }

    #[test]
    fn any_json_value_is_written_as_serde_json_writes_it() {
        let value = json!({
            "text": "quote \" backslash \\ newline \n tab \t bell \u{7} é 🐕",
            "numbers": [0, -1, 18446744073709551615u64, 1.5, 34.0, 1e-7, 52.52],
            "nothing": null,
            "yes": true,
        });
        assert_eq!(json_of(|w| w.value(&value)), value.to_string());
    }

    #[test]
    fn non_finite_numbers_are_null_in_json() {
        assert_eq!(
            json_of(|w| {
                w.array(2);
                w.number(f64::NAN);
                w.number(f64::INFINITY);
            }),
            "[null,null]"
        );
    }

    #[test]
    fn any_json_value_written_as_cbor_reads_back_as_the_same_value() {
        let value =
            json!({"a": [1, -2, 2.5, "x", null, false], "b": {"c": 18446744073709551615u64}});
        let bytes = encode(Encoding::Cbor, |w| w.value(&value));
        let back: serde_json::Value = ciborium::from_reader(bytes.as_slice()).unwrap();
        assert_eq!(back, value);
    }
}
