//! A minimal CBOR writer for the messages this protocol sends: it cannot fail, and it picks the
//! shortest encoding for every item, which is what collars paying per byte want to see copied.

/// Appends CBOR items to a byte buffer.
#[derive(Debug, Default)]
pub(crate) struct CborWriter {
    out: Vec<u8>,
}

impl CborWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn finish(self) -> Vec<u8> {
        self.out
    }

    fn head(&mut self, major: u8, value: u64) {
        let major = major << 5;
        // Each width is used only when the value does not fit the next smaller one.
        if value < 24 {
            self.out.push(major | value as u8);
        } else if let Ok(v) = u8::try_from(value) {
            self.out.extend([major | 24, v]);
        } else if let Ok(v) = u16::try_from(value) {
            self.out.push(major | 25);
            self.out.extend(v.to_be_bytes());
        } else if let Ok(v) = u32::try_from(value) {
            self.out.push(major | 26);
            self.out.extend(v.to_be_bytes());
        } else {
            self.out.push(major | 27);
            self.out.extend(value.to_be_bytes());
        }
    }

    pub fn unsigned(&mut self, value: u64) {
        self.head(0, value);
    }

    pub fn integer(&mut self, value: i64) {
        match u64::try_from(value) {
            Ok(v) => self.head(0, v),
            // CBOR stores -1 - n for negative n, which always fits u64.
            Err(_) => self.head(1, (-1 - i128::from(value)) as u64),
        }
    }

    /// Writes a float as f32 when that loses nothing, else as f64; integral values in range are
    /// written as integers, which the decoder reads as numbers all the same and which are shorter.
    pub fn number(&mut self, value: f64) {
        if value.fract() == 0.0 && value.abs() < 1e15 && !(value == 0.0 && value.is_sign_negative())
        {
            self.integer(value as i64);
        } else if f64::from(value as f32) == value {
            self.out.push(0xfa);
            self.out.extend((value as f32).to_be_bytes());
        } else {
            self.out.push(0xfb);
            self.out.extend(value.to_be_bytes());
        }
    }

    pub fn text(&mut self, value: &str) {
        self.head(3, value.len() as u64);
        self.out.extend(value.as_bytes());
    }

    pub fn boolean(&mut self, value: bool) {
        self.out.push(if value { 0xf5 } else { 0xf4 });
    }

    pub fn null(&mut self) {
        self.out.push(0xf6);
    }

    pub fn array(&mut self, len: usize) {
        self.head(4, len as u64);
    }

    pub fn map(&mut self, len: usize) {
        self.head(5, len as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(f: impl FnOnce(&mut CborWriter)) -> Vec<u8> {
        let mut w = CborWriter::new();
        f(&mut w);
        w.finish()
    }

    #[test]
    fn integers_use_the_shortest_head() {
        assert_eq!(encoded(|w| w.integer(23)), [0x17]);
        assert_eq!(encoded(|w| w.integer(24)), [0x18, 0x18]);
        assert_eq!(encoded(|w| w.integer(1000)), [0x19, 0x03, 0xe8]);
        assert_eq!(encoded(|w| w.integer(-1)), [0x20]);
        assert_eq!(encoded(|w| w.integer(-71)), [0x38, 0x46]);
        assert_eq!(
            encoded(|w| w.integer(i64::MIN)),
            [0x3b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
    }

    #[test]
    fn floats_shrink_to_f32_only_when_nothing_is_lost() {
        assert_eq!(encoded(|w| w.number(1.5)), [0xfa, 0x3f, 0xc0, 0x00, 0x00]);
        assert_eq!(encoded(|w| w.number(52.52))[0], 0xfb);
        assert_eq!(encoded(|w| w.number(270.0)), [0x19, 0x01, 0x0e]);
    }

    #[test]
    fn everything_written_reads_back_with_ciborium() {
        let bytes = encoded(|w| {
            w.map(3);
            w.text("a");
            w.number(-0.0);
            w.text("b");
            w.boolean(true);
            w.text("c");
            w.array(1);
            w.unsigned(u64::MAX);
        });
        let value: ciborium::Value = ciborium::from_reader(bytes.as_slice()).unwrap();
        let ciborium::Value::Map(entries) = value else {
            panic!("not a map")
        };
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].1, ciborium::Value::Float(-0.0));
    }
}
