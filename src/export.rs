//! History exports (CSV, GeoJSON, GPX), streamed from the database to the client a chunk at a time, so a year of fixes never sits in memory.
//!
//! A task reads rows in device-time order and sends formatted chunks through a small bounded
//! channel; the response body drains it. A slow client therefore slows the database read instead
//! of growing a buffer, and a client that goes away ends the read.

use chrono::{DateTime, SecondsFormat, Utc};
use deadpool_postgres::Pool;
use futures::{StreamExt, pin_mut};
use gateway::protocol::TrackerId;
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use warp::hyper::body::Bytes;

use crate::trackers::{FixView, HISTORY_COLUMNS, HISTORY_RANGE, fix_from_row};

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    GeoJson,
    Gpx,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "csv" => Some(Format::Csv),
            "geojson" => Some(Format::GeoJson),
            "gpx" => Some(Format::Gpx),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::GeoJson => "application/geo+json",
            Format::Gpx => "application/gpx+xml",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::GeoJson => "geojson",
            Format::Gpx => "gpx",
        }
    }
}

/// Rows per chunk sent to the client: big enough to keep syscalls few, small enough to start fast.
const ROWS_PER_CHUNK: usize = 256;

type Chunk = Result<Bytes, std::io::Error>;

/// Starts streaming the tracker's fixes in `from..to` (after its claim) in `format`; the caller
/// must have checked access. Errors after the first byte can only cut the body short (the
/// status is already sent); they are logged.
pub fn stream(
    pool: Pool,
    tracker: TrackerId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    format: Format,
) -> mpsc::Receiver<Chunk> {
    let (tx, rx) = mpsc::channel::<Chunk>(4);
    tokio::spawn(async move {
        if let Err(err) = produce(&pool, &tracker, from, to, format, &tx).await {
            tracing::warn!(%tracker, %err, "export ended early");
            let _ = tx
                .send(Err(std::io::Error::other("export ended early")))
                .await;
        }
    });
    rx
}

#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("database: {0}")]
    Database(String),
    #[error("the client went away")]
    Gone,
}

struct Writer<'a> {
    tx: &'a mpsc::Sender<Chunk>,
    buf: String,
    rows: usize,
}

impl Writer<'_> {
    fn push(&mut self, s: &str) {
        self.buf.push_str(s);
    }

    async fn row_done(&mut self) -> Result<(), ExportError> {
        self.rows += 1;
        if self.rows.is_multiple_of(ROWS_PER_CHUNK) {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ExportError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx.send(Ok(chunk)).await.map_err(|_| ExportError::Gone)
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Runs `each` for every fix of the range, in device-time order, straight off the wire.
async fn for_each_point(
    pool: &Pool,
    tracker: &TrackerId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    w: &mut Writer<'_>,
    each: impl Fn(&mut Writer<'_>, &FixView),
) -> Result<(), ExportError> {
    let db = |e: &dyn std::fmt::Display| ExportError::Database(e.to_string());
    let client = pool.get().await.map_err(|e| db(&e))?;
    let id = tracker.as_str();
    let params: [&(dyn ToSql + Sync); 3] = [&id, &from, &to];
    let rows = client
        .query_raw(
            &format!("SELECT {HISTORY_COLUMNS} FROM positions p WHERE {HISTORY_RANGE} ORDER BY p.device_time"),
            params.iter().copied(),
        )
        .await
        .map_err(|e| db(&e))?;
    pin_mut!(rows);
    while let Some(row) = rows.next().await {
        let point = fix_from_row(&row.map_err(|e| db(&e))?);
        each(w, &point);
        w.row_done().await?;
    }
    Ok(())
}

async fn produce(
    pool: &Pool,
    tracker: &TrackerId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    format: Format,
    tx: &mpsc::Sender<Chunk>,
) -> Result<(), ExportError> {
    let mut w = Writer {
        tx,
        buf: String::new(),
        rows: 0,
    };
    match format {
        Format::Csv => {
            w.push("ts,lat,lon,alt,acc,spd,hdg,sat,bat,seq\n");
            for_each_point(pool, tracker, from, to, &mut w, |w, p| {
                w.push(&format!(
                    "{},{},{},{},{},{},{},{},{},{}\n",
                    time(p.ts),
                    p.lat,
                    p.lon,
                    opt(p.alt),
                    opt(p.acc),
                    opt(p.spd),
                    opt(p.hdg),
                    opt(p.sat),
                    opt(p.bat),
                    opt(p.seq)
                ));
            })
            .await?;
        }
        Format::GeoJson => {
            // Two passes over the range, each streamed: the track as one LineString, then each
            // fix as a Point with its properties. Nothing is held in memory between them.
            w.push(&format!(
                r#"{{"type":"FeatureCollection","features":[{{"type":"Feature","properties":{{"tracker_id":{},"kind":"track"}},"geometry":{{"type":"LineString","coordinates":["#,
                serde_json::Value::from(tracker.as_str())
            ));
            let first = std::sync::atomic::AtomicBool::new(true);
            for_each_point(pool, tracker, from, to, &mut w, |w, p| {
                if !first.swap(false, std::sync::atomic::Ordering::Relaxed) {
                    w.push(",");
                }
                w.push(&format!("[{},{}]", p.lon, p.lat));
            })
            .await?;
            w.push("]}}");
            for_each_point(pool, tracker, from, to, &mut w, |w, p| {
                let props = serde_json::json!({
                    "ts": time(p.ts), "alt": p.alt, "acc": p.acc, "spd": p.spd, "hdg": p.hdg,
                    "sat": p.sat, "bat": p.bat, "seq": p.seq,
                });
                w.push(&format!(
                    r#",{{"type":"Feature","properties":{props},"geometry":{{"type":"Point","coordinates":[{},{}]}}}}"#,
                    p.lon, p.lat
                ));
            })
            .await?;
            w.push("]}\n");
        }
        Format::Gpx => {
            // Tracker ids are [A-Za-z0-9_-], so they need no XML escaping.
            w.push(&format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<gpx version=\"1.1\" creator=\"pettracker\" xmlns=\"http://www.topografix.com/GPX/1/1\">\n<trk><name>{}</name><trkseg>\n",
                tracker.as_str()
            ));
            for_each_point(pool, tracker, from, to, &mut w, |w, p| {
                let ele = p.alt.map(|a| format!("<ele>{a}</ele>")).unwrap_or_default();
                let sat = p.sat.map(|s| format!("<sat>{s}</sat>")).unwrap_or_default();
                w.push(&format!(
                    "<trkpt lat=\"{}\" lon=\"{}\">{ele}<time>{}</time>{sat}</trkpt>\n",
                    p.lat,
                    p.lon,
                    time(p.ts)
                ));
            })
            .await?;
            w.push("</trkseg></trk>\n</gpx>\n");
        }
    }
    w.flush().await
}
