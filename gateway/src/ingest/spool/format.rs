//! The spool's on-disk format: one JSON document per batch, versioned, and separate from the database rows so that changing a row never changes what a spooled file means.
//!
//! Version 1 (this one): `{"version": 1, "rows": {...}, "acks": [[tracker, seq], ...]}`; a
//! command result carries the collar's own word for how far it got (`accepted`, `done`,
//! `failed`), and the server's lifecycle decides what that means for the command.
//!
//! Version 0 (d9cdef1 and before) has no `version`: its command results carried the state they
//! moved the command to (`delivered`, `succeeded`, `failed`), and batches spooled before
//! commands existed have none. A spool left by such a release is replayed by this one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::SpooledBatch;
use crate::protocol::CommandResultStatus;
use crate::storage::ingest::{
    BatchRows, CommandReport, DeadLetterRow, FixRow, PresenceRow, StatusRow,
};

/// The version this code writes.
pub const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Record {
    /// Absent (0) in files of d9cdef1 and before.
    #[serde(default)]
    version: u32,
    rows: Rows,
    acks: Vec<(String, i64)>,
}

#[derive(Serialize, Deserialize)]
struct Rows {
    fixes: Vec<Fix>,
    statuses: Vec<Status>,
    presence: Vec<Presence>,
    dead_letters: Vec<DeadLetter>,
    /// Absent from batches spooled before commands existed.
    #[serde(default)]
    command_results: Vec<CommandResult>,
}

/// A fix as spooled; also the JSON a fix the database refused is kept as in `dead_letters`.
#[derive(Serialize, Deserialize)]
pub struct Fix {
    tracker_id: String,
    device_time: DateTime<Utc>,
    received_at: DateTime<Utc>,
    lat: f64,
    lon: f64,
    altitude: Option<f32>,
    accuracy: Option<f32>,
    speed: Option<f32>,
    heading: Option<f32>,
    satellites: Option<i16>,
    battery: Option<i16>,
    seq: Option<i64>,
}

#[derive(Serialize, Deserialize)]
struct Status {
    tracker_id: String,
    received_at: DateTime<Utc>,
    battery: Option<i16>,
    charging: Option<bool>,
    firmware: Option<String>,
    signal_dbm: Option<i16>,
}

#[derive(Serialize, Deserialize)]
struct Presence {
    tracker_id: String,
    online: bool,
    at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
struct DeadLetter {
    tracker_id: Option<String>,
    topic: String,
    /// Lower-case hex, as every version has written it.
    #[serde(with = "hex")]
    payload: Vec<u8>,
    reason: String,
    received_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
struct CommandResult {
    tracker_id: String,
    command_id: String,
    /// Version 1: the collar's word; version 0: the lifecycle state (see the module docs).
    status: String,
    reason: Option<String>,
    received_at: DateTime<Utc>,
    topic: String,
    /// Lower-case hex, as every version has written it.
    #[serde(with = "hex")]
    payload: Vec<u8>,
}

/// The file's bytes for a batch, in the current version.
pub fn encode(batch: &SpooledBatch) -> Result<Vec<u8>, serde_json::Error> {
    let rows = &batch.rows;
    serde_json::to_vec(&Record {
        version: VERSION,
        rows: Rows {
            fixes: rows.fixes.iter().map(Fix::from).collect(),
            statuses: rows.statuses.iter().map(Status::from).collect(),
            presence: rows.presence.iter().map(Presence::from).collect(),
            dead_letters: rows.dead_letters.iter().map(DeadLetter::from).collect(),
            command_results: rows
                .command_reports
                .iter()
                .map(CommandResult::from)
                .collect(),
        },
        acks: batch.acks.clone(),
    })
}

/// A batch from a file of any version this code knows; the error says what is wrong.
pub fn decode(bytes: &[u8]) -> Result<SpooledBatch, String> {
    let record: Record = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if record.version > VERSION {
        return Err(format!(
            "written by a newer pettracker (spool format {}, this one reads up to {VERSION})",
            record.version
        ));
    }
    let version = record.version;
    let rows = record.rows;
    Ok(SpooledBatch {
        rows: BatchRows {
            fixes: rows.fixes.into_iter().map(FixRow::from).collect(),
            statuses: rows.statuses.into_iter().map(StatusRow::from).collect(),
            presence: rows.presence.into_iter().map(PresenceRow::from).collect(),
            dead_letters: rows
                .dead_letters
                .into_iter()
                .map(DeadLetterRow::from)
                .collect(),
            command_reports: rows
                .command_results
                .into_iter()
                .map(|r| r.into_report(version))
                .collect::<Result<_, _>>()?,
        },
        acks: record.acks,
    })
}

impl From<&FixRow> for Fix {
    fn from(r: &FixRow) -> Fix {
        Fix {
            tracker_id: r.tracker_id.clone(),
            device_time: r.device_time,
            received_at: r.received_at,
            lat: r.lat,
            lon: r.lon,
            altitude: r.altitude,
            accuracy: r.accuracy,
            speed: r.speed,
            heading: r.heading,
            satellites: r.satellites,
            battery: r.battery,
            seq: r.seq,
        }
    }
}

impl From<Fix> for FixRow {
    fn from(f: Fix) -> FixRow {
        FixRow {
            tracker_id: f.tracker_id,
            device_time: f.device_time,
            received_at: f.received_at,
            lat: f.lat,
            lon: f.lon,
            altitude: f.altitude,
            accuracy: f.accuracy,
            speed: f.speed,
            heading: f.heading,
            satellites: f.satellites,
            battery: f.battery,
            seq: f.seq,
        }
    }
}

impl From<&StatusRow> for Status {
    fn from(r: &StatusRow) -> Status {
        Status {
            tracker_id: r.tracker_id.clone(),
            received_at: r.received_at,
            battery: r.battery,
            charging: r.charging,
            firmware: r.firmware.clone(),
            signal_dbm: r.signal_dbm,
        }
    }
}

impl From<Status> for StatusRow {
    fn from(s: Status) -> StatusRow {
        StatusRow {
            tracker_id: s.tracker_id,
            received_at: s.received_at,
            battery: s.battery,
            charging: s.charging,
            firmware: s.firmware,
            signal_dbm: s.signal_dbm,
        }
    }
}

impl From<&PresenceRow> for Presence {
    fn from(r: &PresenceRow) -> Presence {
        Presence {
            tracker_id: r.tracker_id.clone(),
            online: r.online,
            at: r.at,
        }
    }
}

impl From<Presence> for PresenceRow {
    fn from(p: Presence) -> PresenceRow {
        PresenceRow {
            tracker_id: p.tracker_id,
            online: p.online,
            at: p.at,
        }
    }
}

impl From<&DeadLetterRow> for DeadLetter {
    fn from(r: &DeadLetterRow) -> DeadLetter {
        DeadLetter {
            tracker_id: r.tracker_id.clone(),
            topic: r.topic.clone(),
            payload: r.payload.clone(),
            reason: r.reason.clone(),
            received_at: r.received_at,
        }
    }
}

impl From<DeadLetter> for DeadLetterRow {
    fn from(d: DeadLetter) -> DeadLetterRow {
        DeadLetterRow {
            tracker_id: d.tracker_id,
            topic: d.topic,
            payload: d.payload,
            reason: d.reason,
            received_at: d.received_at,
        }
    }
}

impl From<&CommandReport> for CommandResult {
    fn from(r: &CommandReport) -> CommandResult {
        CommandResult {
            tracker_id: r.tracker_id.clone(),
            command_id: r.command_id.clone(),
            status: r.status.as_str().to_owned(),
            reason: r.reason.clone(),
            received_at: r.received_at,
            topic: r.topic.clone(),
            payload: r.payload.clone(),
        }
    }
}

impl CommandResult {
    fn into_report(self, version: u32) -> Result<CommandReport, String> {
        let status = match (version, self.status.as_str()) {
            (0, "delivered") | (1, "accepted") => CommandResultStatus::Accepted,
            (0, "succeeded") | (1, "done") => CommandResultStatus::Done,
            (_, "failed") => CommandResultStatus::Failed,
            (_, other) => {
                return Err(format!(
                    "command result {} has status {other:?}, unknown in spool format {version}",
                    self.command_id
                ));
            }
        };
        Ok(CommandReport {
            tracker_id: self.tracker_id,
            command_id: self.command_id,
            status,
            reason: self.reason,
            received_at: self.received_at,
            topic: self.topic,
            payload: self.payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    /// The second file d9cdef1's spool wrote for `tests/fixtures/d9cdef1` (every kind of row).
    const PREVIOUS_RELEASE: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/d9cdef1/spool/batch-00000000000000000001.json"
    ));

    #[test]
    fn a_batch_spooled_by_the_previous_release_reads_with_every_row_and_the_collars_words() {
        let batch = decode(PREVIOUS_RELEASE).unwrap();
        let rows = &batch.rows;
        assert_eq!(batch.acks, [("rex".to_owned(), 103)]);
        assert_eq!(rows.fixes.len(), 1);
        let fix = &rows.fixes[0];
        assert_eq!(
            (fix.tracker_id.as_str(), fix.lat, fix.lon),
            ("rex", 52.53, 13.41)
        );
        assert_eq!(
            (fix.altitude, fix.speed, fix.seq),
            (Some(35.2), None, Some(103))
        );
        assert_eq!(rows.statuses[0].firmware.as_deref(), Some("1.4.3"));
        assert_eq!(rows.statuses[0].signal_dbm, Some(-80));
        assert!(rows.presence[0].online);
        assert_eq!(rows.dead_letters[0].payload, b"{\"lat\":\xff}");
        // Version 0 said "succeeded", the state the command moved to; the collar said "done".
        let reports: Vec<_> = rows
            .command_reports
            .iter()
            .map(|r| (r.command_id.as_str(), r.status))
            .collect();
        assert_eq!(
            reports,
            [
                ("cmd-4056007b9476e6160aae803f", CommandResultStatus::Done),
                ("cmd-unknown", CommandResultStatus::Done)
            ]
        );
        assert!(
            std::str::from_utf8(&rows.command_reports[0].payload)
                .unwrap()
                .contains("\"done\"")
        );
    }

    #[test]
    fn a_batch_written_now_names_its_version_and_reads_back_the_same() {
        let t = Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap();
        let batch = SpooledBatch {
            rows: BatchRows {
                fixes: vec![FixRow {
                    tracker_id: "rex".into(),
                    device_time: t,
                    received_at: t,
                    lat: 52.5,
                    lon: 13.4,
                    altitude: None,
                    accuracy: Some(3.5),
                    speed: Some(1.25),
                    heading: None,
                    satellites: Some(8),
                    battery: None,
                    seq: Some(7),
                }],
                command_reports: vec![CommandReport {
                    tracker_id: "rex".into(),
                    command_id: "cmd-1".into(),
                    status: CommandResultStatus::Accepted,
                    reason: Some("on it".into()),
                    received_at: t,
                    topic: "trackers/rex/command-results".into(),
                    payload: vec![0, 1, 254],
                }],
                ..BatchRows::default()
            },
            acks: vec![("rex".into(), 7)],
        };
        let bytes = encode(&batch).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["rows"]["command_results"][0]["status"], "accepted");
        let back = decode(&bytes).unwrap();
        assert_eq!((back.rows, back.acks), (batch.rows, batch.acks));
    }

    #[test]
    fn a_file_of_a_newer_format_or_an_unknown_status_is_refused_with_the_reason() {
        let newer = br#"{"version": 2, "rows": {"fixes": [], "statuses": [], "presence": [], "dead_letters": []}, "acks": []}"#;
        assert!(decode(newer).unwrap_err().contains("newer pettracker"));
        let mixed = br#"{"version": 1, "rows": {"fixes": [], "statuses": [], "presence": [], "dead_letters": [],
            "command_results": [{"tracker_id": "rex", "command_id": "c", "status": "succeeded", "reason": null,
            "received_at": "2026-05-01T12:00:00Z", "topic": "t", "payload": ""}]}, "acks": []}"#;
        assert!(
            decode(mixed)
                .unwrap_err()
                .contains("unknown in spool format 1")
        );
    }
}
