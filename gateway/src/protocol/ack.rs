//! Acks: the server telling a collar which buffered fixes it may forget.

use serde::Serialize;

use super::error::DecodeError;
use super::node::{self, Location, Node};
use super::values::Seq;

/// `{"seq": N}` on `trackers/{id}/ack`: the server is done with every fix whose `seq` is ≤ N.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ack {
    pub seq: Seq,
}

/// The downlink payload acknowledging everything up to `seq`: compact JSON, `{"seq":1234}`.
pub fn encode_ack(seq: Seq) -> Vec<u8> {
    format!("{{\"seq\":{}}}", seq.get()).into_bytes()
}

/// Decodes an ack as a collar receives it (for the simulator and tests).
pub fn decode_ack(payload: &[u8]) -> Result<Ack, DecodeError> {
    let (_, root) = node::parse(payload)?;
    let Node::Map(entries) = root else {
        return Err(DecodeError::WrongShape {
            expected: "an ack object",
            found: root.describe(),
        });
    };
    let at = Location::TOP;
    let [seq] = node::pick(&entries, ["seq"], at)?;
    let seq = node::unsigned(node::required(seq, "seq", at)?, "seq", at)?;
    let seq = Seq::parse(seq).map_err(|problem| DecodeError::InvalidValue {
        path: "seq".into(),
        problem,
    })?;
    Ok(Ack { seq })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_encodes_as_compact_json() {
        let seq = Seq::parse(1234).unwrap();
        assert_eq!(encode_ack(seq), br#"{"seq":1234}"#);
        assert_eq!(decode_ack(&encode_ack(seq)), Ok(Ack { seq }));
    }

    #[test]
    fn the_largest_seq_survives_the_round_trip() {
        let seq = Seq::parse(i64::MAX as u64).unwrap();
        assert_eq!(decode_ack(&encode_ack(seq)), Ok(Ack { seq }));
    }

    #[test]
    fn an_ack_without_seq_is_a_decode_error() {
        assert_eq!(
            decode_ack(b"{}").unwrap_err().to_string(),
            "seq: required field is missing"
        );
    }
}
