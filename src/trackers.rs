//! Owner-side trackers: who may see or change which tracker, claiming, sharing, and position history.
//!
//! Every query here takes the caller's user id and answers only about trackers that user owns or
//! was invited to; an unknown tracker and another user's tracker look the same (`None`), so the
//! API never reveals that a tracker exists.
//!
//! A tracker's history belongs to its current owner from the moment of the claim
//! (`trackers.claimed_at`): a collar that is released and claimed by someone else does not show
//! the new owner where the previous owner's pet went.

use chrono::{DateTime, TimeDelta, Utc};
use deadpool_postgres::Pool;
use gateway::protocol::TrackerId;
use gateway::storage::{StorageError, pool_error_reason};
use serde::Serialize;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

/// What a user may do with a tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Claimed it: sees everything, changes settings, shares, commands, releases.
    Owner,
    /// Invited by the owner: sees positions, status and alerts; changes nothing.
    Viewer,
}

/// A tracker as its owner and members see it.
#[derive(Debug, Clone, Serialize)]
pub struct TrackerView {
    pub id: String,
    pub pet_name: Option<String>,
    pub role: Role,
    /// Revoked by an operator: the collar can no longer connect.
    pub revoked: bool,
    pub claimed_at: Option<DateTime<Utc>>,
    pub status: StatusView,
}

/// The tracker's current state.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    pub online: bool,
    pub online_since: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    pub battery: Option<i16>,
    pub charging: Option<bool>,
    pub firmware: Option<String>,
    /// The fix with the newest device time (not the last to arrive).
    pub last_fix: Option<FixView>,
}

/// One stored fix, in the device protocol's field names.
#[derive(Debug, Clone, Serialize)]
pub struct FixView {
    pub ts: DateTime<Utc>,
    pub lat: f64,
    pub lon: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alt: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acc: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spd: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hdg: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sat: Option<i16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bat: Option<i16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received_at: Option<DateTime<Utc>>,
}

/// A member of a tracker, as its owner sees them.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub user_id: i64,
    pub email: String,
    pub role: Role,
    pub added_at: DateTime<Utc>,
}

/// Why a claim did not go through. One variant on purpose: wrong code, unknown tracker and a
/// tracker owned by someone else must be indistinguishable to the caller.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("no unclaimed tracker with that id and claim code")]
    NotClaimable,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a member could not be added.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error("no account with that email")]
    NoSuchUser,
    #[error("the owner is not added as a member")]
    IsOwner,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

const VIEW_COLUMNS: &str = "
    t.tracker_id, t.pet_name, (t.owner_id = $1) AS owned, t.revoked, t.claimed_at,
    coalesce(s.online, false) AS online, s.online_changed_at, s.last_seen, s.battery, s.charging,
    s.firmware,
    -- A fix from before the claim belongs to the previous owner.
    CASE WHEN s.last_fix_time >= t.claimed_at THEN s.last_fix_time END AS last_fix_time,
    s.last_lat, s.last_lon, s.last_accuracy, s.last_speed, s.last_heading, s.last_seq";

/// Trackers the user owns or was invited to, and the user's role for each.
const VISIBLE: &str = "(t.owner_id = $1 OR EXISTS (SELECT 1 FROM tracker_members m
                        WHERE m.tracker_id = t.tracker_id AND m.user_id = $1))";

async fn client(pool: &Pool) -> Result<deadpool_postgres::Object, StorageError> {
    pool.get()
        .await
        .map_err(|e| StorageError::Pool(pool_error_reason(&e)))
}

fn view(row: &Row) -> TrackerView {
    let last_fix_time: Option<DateTime<Utc>> = row.get("last_fix_time");
    let last_fix = last_fix_time.and_then(|ts| {
        Some(FixView {
            ts,
            lat: row.get::<_, Option<f64>>("last_lat")?,
            lon: row.get::<_, Option<f64>>("last_lon")?,
            alt: None,
            acc: row.get("last_accuracy"),
            spd: row.get("last_speed"),
            hdg: row.get("last_heading"),
            sat: None,
            bat: None,
            seq: row.get("last_seq"),
            received_at: None,
        })
    });
    TrackerView {
        id: row.get("tracker_id"),
        pet_name: row.get("pet_name"),
        role: if row.get::<_, Option<bool>>("owned").unwrap_or(false) {
            Role::Owner
        } else {
            Role::Viewer
        },
        revoked: row.get("revoked"),
        claimed_at: row.get("claimed_at"),
        status: StatusView {
            online: row.get("online"),
            online_since: row.get("online_changed_at"),
            last_seen: row.get("last_seen"),
            battery: row.get("battery"),
            charging: row.get("charging"),
            firmware: row.get("firmware"),
            last_fix,
        },
    }
}

/// The user's trackers with their status, ordered by id.
pub async fn list(pool: &Pool, user: i64) -> Result<Vec<TrackerView>, StorageError> {
    // The user's trackers by their two indexes (owner, membership), not by testing VISIBLE on
    // every tracker of the fleet: the OR in it rules out an index.
    let sql = format!(
        "SELECT {VIEW_COLUMNS} FROM trackers t LEFT JOIN tracker_status s USING (tracker_id)
         WHERE t.tracker_id IN (SELECT tracker_id FROM trackers WHERE owner_id = $1
                                UNION ALL
                                SELECT tracker_id FROM tracker_members WHERE user_id = $1)
         ORDER BY t.tracker_id"
    );
    let client = client(pool).await?;
    // Cached per connection: parsing and planning cost more than this query's execution.
    let stmt = client
        .prepare_cached(&sql)
        .await
        .map_err(StorageError::query("listing trackers"))?;
    let rows = client
        .query(&stmt, &[&user])
        .await
        .map_err(StorageError::query("listing trackers"))?;
    Ok(rows.iter().map(view).collect())
}

/// One tracker, if the user may see it.
pub async fn get(
    pool: &Pool,
    user: i64,
    tracker: &TrackerId,
) -> Result<Option<TrackerView>, StorageError> {
    let sql = format!(
        "SELECT {VIEW_COLUMNS} FROM trackers t LEFT JOIN tracker_status s USING (tracker_id)
         WHERE t.tracker_id = $2 AND {VISIBLE}"
    );
    let row = client(pool)
        .await?
        .query_opt(&sql, &[&user, &tracker.as_str()])
        .await
        .map_err(StorageError::query("reading a tracker"))?;
    Ok(row.as_ref().map(view))
}

/// The user's role for a tracker; `None` when the user may not see it (or it does not exist).
pub async fn role(
    pool: &Pool,
    user: i64,
    tracker: &TrackerId,
) -> Result<Option<Role>, StorageError> {
    Ok(get(pool, user, tracker).await?.map(|t| t.role))
}

/// A well-formed argon2 hash of a random string: verifying a guess against it costs what a real
/// verification costs, so an unknown tracker id answers as slowly as a wrong claim code.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        gateway::storage::trackers::hash_claim_code("not-a-claim-code-at-all").unwrap_or_default()
    })
}

/// Makes `user` the owner of an unclaimed tracker whose claim code matches. Claiming a tracker
/// one already owns succeeds again (a retried request must not fail).
pub async fn claim(
    pool: &Pool,
    user: i64,
    tracker: &TrackerId,
    code: &str,
) -> Result<TrackerView, ClaimError> {
    let mut client = client(pool).await?;
    let tx = client
        .transaction()
        .await
        .map_err(StorageError::query("claiming a tracker"))?;
    let row = tx
        .query_opt(
            "SELECT claim_code_hash, owner_id FROM trackers
             WHERE tracker_id = $1 AND NOT revoked FOR UPDATE",
            &[&tracker.as_str()],
        )
        .await
        .map_err(StorageError::query("claiming a tracker"))?;
    let (hash, owner): (String, Option<i64>) = match &row {
        Some(r) => (r.get(0), r.get(1)),
        None => (dummy_hash().to_owned(), None),
    };
    let candidate = code.trim().to_ascii_uppercase();
    let matches = tokio::task::spawn_blocking(move || {
        gateway::storage::trackers::claim_code_matches(&hash, &candidate)
    })
    .await
    .unwrap_or(false);
    let claimable = row.is_some() && matches && owner.is_none_or(|o| o == user);
    if !claimable {
        return Err(ClaimError::NotClaimable);
    }
    if owner.is_none() {
        tx.execute(
            "UPDATE trackers SET owner_id = $2, claimed_at = now() WHERE tracker_id = $1",
            &[&tracker.as_str(), &user],
        )
        .await
        .map_err(StorageError::query("claiming a tracker"))?;
    }
    tx.commit()
        .await
        .map_err(StorageError::query("claiming a tracker"))?;
    drop(client);
    get(pool, user, tracker)
        .await?
        .ok_or(ClaimError::NotClaimable)
}

/// Renames the pet. Only the owner; returns false when the user does not own the tracker.
pub async fn set_pet_name(
    pool: &Pool,
    user: i64,
    tracker: &TrackerId,
    pet_name: Option<&str>,
) -> Result<bool, StorageError> {
    let n = client(pool)
        .await?
        .execute(
            "UPDATE trackers SET pet_name = $3 WHERE tracker_id = $1 AND owner_id = $2",
            &[&tracker.as_str(), &user, &pet_name],
        )
        .await
        .map_err(StorageError::query("renaming a pet"))?;
    Ok(n == 1)
}

/// Gives the tracker up: no owner, no members, claimable again with its code. Only the owner.
pub async fn release(pool: &Pool, user: i64, tracker: &TrackerId) -> Result<bool, StorageError> {
    let mut client = client(pool).await?;
    let tx = client
        .transaction()
        .await
        .map_err(StorageError::query("releasing a tracker"))?;
    let n = tx
        .execute(
            "UPDATE trackers SET owner_id = NULL, claimed_at = NULL, pet_name = NULL
             WHERE tracker_id = $1 AND owner_id = $2",
            &[&tracker.as_str(), &user],
        )
        .await
        .map_err(StorageError::query("releasing a tracker"))?;
    if n == 1 {
        tx.execute(
            "DELETE FROM tracker_members WHERE tracker_id = $1",
            &[&tracker.as_str()],
        )
        .await
        .map_err(StorageError::query("releasing a tracker"))?;
    }
    tx.commit()
        .await
        .map_err(StorageError::query("releasing a tracker"))?;
    Ok(n == 1)
}

/// Invites the account with `email` as a viewer. The caller must have checked ownership.
pub async fn add_member(
    pool: &Pool,
    owner: i64,
    tracker: &TrackerId,
    email: &str,
) -> Result<MemberView, MemberError> {
    let client = client(pool).await?;
    let row = client
        .query_opt(
            "SELECT id, email FROM users WHERE lower(email) = lower($1)",
            &[&email.trim()],
        )
        .await
        .map_err(StorageError::query("adding a member"))?
        .ok_or(MemberError::NoSuchUser)?;
    let (user_id, email): (i64, String) = (row.get(0), row.get(1));
    if user_id == owner {
        return Err(MemberError::IsOwner);
    }
    let added_at: DateTime<Utc> = client
        .query_one(
            "INSERT INTO tracker_members (tracker_id, user_id, role, added_by)
             VALUES ($1, $2, 'viewer', $3)
             ON CONFLICT (tracker_id, user_id) DO UPDATE SET role = excluded.role
             RETURNING created_at",
            &[&tracker.as_str(), &user_id, &owner],
        )
        .await
        .map_err(StorageError::query("adding a member"))?
        .get(0);
    Ok(MemberView {
        user_id,
        email,
        role: Role::Viewer,
        added_at,
    })
}

/// The tracker's members. The caller must have checked that the user may see the tracker.
pub async fn members(pool: &Pool, tracker: &TrackerId) -> Result<Vec<MemberView>, StorageError> {
    let rows = client(pool)
        .await?
        .query(
            "SELECT m.user_id, u.email, m.created_at FROM tracker_members m
             JOIN users u ON u.id = m.user_id WHERE m.tracker_id = $1 ORDER BY m.created_at",
            &[&tracker.as_str()],
        )
        .await
        .map_err(StorageError::query("listing members"))?;
    Ok(rows
        .iter()
        .map(|r| MemberView {
            user_id: r.get(0),
            email: r.get(1),
            role: Role::Viewer,
            added_at: r.get(2),
        })
        .collect())
}

/// Removes a member; false when they were not one.
pub async fn remove_member(
    pool: &Pool,
    tracker: &TrackerId,
    member: i64,
) -> Result<bool, StorageError> {
    let n = client(pool)
        .await?
        .execute(
            "DELETE FROM tracker_members WHERE tracker_id = $1 AND user_id = $2",
            &[&tracker.as_str(), &member],
        )
        .await
        .map_err(StorageError::query("removing a member"))?;
    Ok(n == 1)
}

/// One page of a tracker's history, in device-time order.
#[derive(Debug, Clone, Serialize)]
pub struct PositionsPage {
    pub tracker_id: String,
    pub positions: Vec<FixView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Default and largest page size of `GET .../positions`.
pub const DEFAULT_PAGE: i64 = 500;
pub const MAX_PAGE: i64 = 5000;

/// A position in the history: the device time of the last fix returned. Opaque to clients;
/// stable while new fixes arrive, because pages are keyed by time, not by offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(pub DateTime<Utc>);

impl Cursor {
    pub fn encode(self) -> String {
        format!("t{:x}", self.0.timestamp_micros())
    }

    pub fn parse(s: &str) -> Option<Cursor> {
        let micros = i64::from_str_radix(s.strip_prefix('t')?, 16).ok()?;
        DateTime::from_timestamp_micros(micros).map(Cursor)
    }
}

/// The columns of a stored fix, in the order [`fix_from_row`] reads them.
pub(crate) const HISTORY_COLUMNS: &str = "p.device_time, p.lat, p.lon, p.altitude, p.accuracy,
    p.speed, p.heading, p.satellites, p.battery, p.seq, p.received_at";

/// Fixes of tracker `$1` with `$2 <= device_time < $3`, and none from before the current claim.
/// The claim time is a scalar subquery, not a join: a constant bound lets the primary key serve
/// the device-time range instead of filtering the tracker's whole history.
pub(crate) const HISTORY_RANGE: &str = "p.tracker_id = $1
    AND p.device_time >= greatest($2, (SELECT claimed_at FROM trackers WHERE tracker_id = $1))
    AND p.device_time < $3";

/// A row selected with [`HISTORY_COLUMNS`].
pub(crate) fn fix_from_row(r: &Row) -> FixView {
    FixView {
        ts: r.get(0),
        lat: r.get(1),
        lon: r.get(2),
        alt: r.get(3),
        acc: r.get(4),
        spd: r.get(5),
        hdg: r.get(6),
        sat: r.get(7),
        bat: r.get(8),
        seq: r.get(9),
        received_at: r.get(10),
    }
}

/// Parses a bucket width such as `30s`, `5m`, `1h` or `1d` (10 seconds to 7 days).
pub fn parse_bucket(raw: &str) -> Option<TimeDelta> {
    let split = raw.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = raw.split_at(split);
    let n: i64 = n.parse().ok()?;
    let width = match unit {
        "s" => TimeDelta::try_seconds(n)?,
        "m" => TimeDelta::try_minutes(n)?,
        "h" => TimeDelta::try_hours(n)?,
        "d" => TimeDelta::try_days(n)?,
        _ => return None,
    };
    (TimeDelta::seconds(10)..=TimeDelta::days(7))
        .contains(&width)
        .then_some(width)
}

/// What a history request asks for.
#[derive(Debug, Clone, Copy)]
pub struct HistoryQuery {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub cursor: Option<Cursor>,
    pub limit: i64,
    /// One fix per interval (the last in each), for maps of long ranges.
    pub bucket: Option<TimeDelta>,
}

/// Bucket widths from which bucketed history uses the loose index scan (see [`positions`]).
const LOOSE_SCAN_FROM: TimeDelta = TimeDelta::minutes(5);

/// The interval of `positions_5m`: bucket widths that are whole multiples of it are read from
/// there, one row per interval, instead of from the fixes.
const ROLLUP_SECS: i64 = 300;

/// Fixes of one tracker with `from <= ts < to`, after the cursor, at most `limit`; with a bucket,
/// the last fix of each interval (aligned to the Unix epoch, so pages and clients agree). The
/// caller must have checked that the user may see the tracker; fixes from before the current
/// claim are left out.
///
/// `date_bin` is plain PostgreSQL (14+), so the same query serves TimescaleDB and plain
/// PostgreSQL; on a hypertable it reads only the chunks of the range.
pub async fn positions(
    pool: &Pool,
    tracker: &TrackerId,
    q: HistoryQuery,
) -> Result<PositionsPage, StorageError> {
    let after = q.cursor.map(|c| c.0);
    let columns = HISTORY_COLUMNS;
    let range = format!("{HISTORY_RANGE} AND ($4::timestamptz IS NULL OR p.device_time > $4)");
    let client = client(pool).await?;
    let tracker_id = tracker.as_str();
    let sql = match q.bucket {
        None => format!(
            "SELECT {columns} FROM positions p
             WHERE {range} ORDER BY p.device_time LIMIT $5"
        ),
        Some(width) => {
            // Widths that are whole multiples of 5 minutes read pre-bucketed rows (below). For
            // the others, two plans, chosen by width. DISTINCT ON reads and sorts every fix of the range;
            // the loose index scan (a recursive CTE: from the first fix of a bucket one
            // primary-key probe to the first fix of the next non-empty bucket, one more for the
            // last fix of each) costs two probes per bucket whatever the bucket holds. Measured
            // (benchmarks/history.sh, a fix every 30 s): on a small table that fits in memory a
            // probe costs about as much as reading 14 fixes (5-minute buckets: scan 11.4 ms,
            // DISTINCT ON 8.0), but on 50 M rows, where DISTINCT ON reads each fix from a
            // different heap page, the scan wins from 5 minutes (108 against 168 ms over 30 days)
            // and by far at an hour (24 against 174 ms). Below 5 minutes buckets hold too few
            // fixes for probes to pay.
            if width.num_seconds() % ROLLUP_SECS == 0 {
                // Whole 5-minute intervals inside the range come from `positions_5m` (their
                // last fixes, kept by the ingest write path); the two partial ones at the ends
                // of the range, if any, from `positions`. `lo_up` is the first interval
                // boundary at or after the range's start, `hi_down` the last one at or before
                // its end. The bounds are scalar subqueries, not a join with `lim`: as a join
                // the planner walked a tracker's whole index backwards for the LIMIT 1 probes
                // (126 ms for 30 days of fixes every 30 s; EXPLAIN in BENCHMARKS.md). A page
                // needs at most `limit` buckets, so at most `limit × width / 5 min` intervals.
                format!(
                    "WITH lim AS (
                         SELECT lo, hi,
                                date_bin('5 minutes', lo - interval '1 microsecond',
                                         TIMESTAMPTZ '1970-01-01 00:00:00+00')
                                    + interval '5 minutes' AS lo_up,
                                date_bin('5 minutes', hi, TIMESTAMPTZ '1970-01-01 00:00:00+00')
                                    AS hi_down
                         FROM (SELECT greatest($2::timestamptz,
                                               (SELECT claimed_at FROM trackers WHERE tracker_id = $1),
                                               $4::timestamptz + interval '1 microsecond') AS lo,
                                      $3::timestamptz AS hi) r
                     ), parts AS (
                         (SELECT {columns} FROM positions_5m p
                          WHERE p.tracker_id = $1 AND p.bucket >= (SELECT lo_up FROM lim)
                            AND p.bucket < (SELECT hi_down FROM lim)
                          ORDER BY p.bucket
                          LIMIT $5::bigint * ($6::float8 / {ROLLUP_SECS})::bigint)
                       UNION ALL
                         (SELECT {columns} FROM positions p
                          WHERE p.tracker_id = $1 AND p.device_time >= (SELECT lo FROM lim)
                            AND p.device_time < (SELECT least(hi, lo_up) FROM lim)
                          ORDER BY p.device_time DESC LIMIT 1)
                       UNION ALL
                         (SELECT {columns} FROM positions p
                          WHERE p.tracker_id = $1
                            AND p.device_time >= (SELECT greatest(lo, hi_down) FROM lim)
                            AND p.device_time < (SELECT hi FROM lim)
                          ORDER BY p.device_time DESC LIMIT 1)
                     )
                     SELECT * FROM (
                         SELECT DISTINCT ON (b) *,
                                date_bin(make_interval(secs => $6), device_time,
                                         TIMESTAMPTZ '1970-01-01 00:00:00+00') AS b
                         FROM parts
                         ORDER BY b, device_time DESC) x
                     ORDER BY b LIMIT $5::bigint"
                )
            } else if width >= LOOSE_SCAN_FROM {
                format!(
                    "WITH RECURSIVE b(start, n) AS (
                         SELECT date_bin(make_interval(secs => $6), f.device_time,
                                         TIMESTAMPTZ '1970-01-01 00:00:00+00'), 1::bigint
                         FROM (SELECT p.device_time FROM positions p
                               WHERE {range} ORDER BY p.device_time LIMIT 1) f
                       UNION ALL
                         SELECT date_bin(make_interval(secs => $6), nxt.device_time,
                                         TIMESTAMPTZ '1970-01-01 00:00:00+00'), b.n + 1
                         FROM b CROSS JOIN LATERAL (
                             SELECT p.device_time FROM positions p
                             WHERE p.tracker_id = $1
                               AND p.device_time >= b.start + make_interval(secs => $6)
                               AND p.device_time < $3
                             ORDER BY p.device_time LIMIT 1) nxt
                         WHERE b.n < $5::bigint
                     )
                     SELECT x.* FROM b CROSS JOIN LATERAL (
                         SELECT {columns} FROM positions p
                         WHERE {range} AND p.device_time >= b.start
                           AND p.device_time < b.start + make_interval(secs => $6)
                         ORDER BY p.device_time DESC LIMIT 1) x
                     ORDER BY b.start LIMIT $5::bigint"
                )
            } else {
                format!(
                    "SELECT * FROM (
                         SELECT DISTINCT ON (b) {columns},
                                date_bin(make_interval(secs => $6), p.device_time,
                                         TIMESTAMPTZ '1970-01-01 00:00:00+00') AS b
                         FROM positions p
                         WHERE {range}
                         ORDER BY b, p.device_time DESC) x
                     ORDER BY b LIMIT $5::bigint"
                )
            }
        }
    };
    // One more than asked tells whether there is a next page without a count.
    let limit = q.limit + 1;
    let secs = q.bucket.map(|width| width.num_seconds() as f64);
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&tracker_id, &q.from, &q.to, &after, &limit];
    if let Some(secs) = &secs {
        params.push(secs);
    }
    // Cached per connection: a history page is a few statements' worth of planning otherwise.
    let failed = StorageError::query("reading positions");
    let stmt = client.prepare_cached(&sql).await.map_err(&failed)?;
    let rows = client.query(&stmt, &params).await.map_err(failed)?;
    let mut positions: Vec<FixView> = rows.iter().map(fix_from_row).collect();
    let more = positions.len() as i64 > q.limit;
    positions.truncate(q.limit.max(0) as usize);
    let next_cursor = more
        .then(|| {
            positions.last().map(|p| match q.bucket {
                None => Cursor(p.ts),
                // The next page starts with the next bucket: skip the rest of this one.
                Some(width) => {
                    let secs = width.num_seconds().max(1);
                    let start = p.ts.timestamp().div_euclid(secs) * secs;
                    let end = DateTime::from_timestamp(start + secs, 0).unwrap_or(p.ts);
                    Cursor(end - TimeDelta::microseconds(1))
                }
            })
        })
        .flatten()
        .map(Cursor::encode);
    Ok(PositionsPage {
        tracker_id: tracker.to_string(),
        positions,
        next_cursor,
    })
}

/// Most fixes one `simplify=` request reads: a month at one fix every 13 seconds. Longer
/// ranges are refused rather than held in memory; `bucket` first thins them on the database.
pub const MAX_SIMPLIFY_INPUT: i64 = 200_000;

/// A track simplified for a map.
#[derive(Debug, Clone, Serialize)]
pub struct SimplifiedTrack {
    pub tracker_id: String,
    pub positions: Vec<FixView>,
    pub simplified: SimplifyStats,
}

#[derive(Debug, Clone, Serialize)]
pub struct SimplifyStats {
    /// No dropped fix is farther than this from the returned line.
    pub tolerance_m: f64,
    pub input_points: usize,
    pub output_points: usize,
}

/// The range's fixes (after bucketing, if asked), simplified with Douglas-Peucker to
/// `tolerance_m` metres. `None` when the range holds more than [`MAX_SIMPLIFY_INPUT`] fixes.
pub async fn simplified(
    pool: &Pool,
    tracker: &TrackerId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket: Option<TimeDelta>,
    tolerance_m: f64,
) -> Result<Option<SimplifiedTrack>, StorageError> {
    let q = HistoryQuery {
        from,
        to,
        cursor: None,
        limit: MAX_SIMPLIFY_INPUT,
        bucket,
    };
    let page = positions(pool, tracker, q).await?;
    if page.next_cursor.is_some() {
        return Ok(None);
    }
    let fixes = page.positions;
    let input_points = fixes.len();
    // CPU work of up to a few hundred milliseconds: off the async workers.
    let kept = tokio::task::spawn_blocking(move || {
        let points: Vec<(f64, f64)> = fixes.iter().map(|f| (f.lat, f.lon)).collect();
        let keep = crate::simplify::keep(&points, tolerance_m);
        let mut fixes = fixes.into_iter().map(Some).collect::<Vec<_>>();
        keep.into_iter()
            .filter_map(|i| fixes.get_mut(i).and_then(Option::take))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| StorageError::Pool(format!("simplification failed: {e}")))?;
    Ok(Some(SimplifiedTrack {
        tracker_id: tracker.to_string(),
        simplified: SimplifyStats {
            tolerance_m,
            input_points,
            output_points: kept.len(),
        },
        positions: kept,
    }))
}

/// One UTC day of a tracker's history.
#[derive(Debug, Clone, Serialize)]
pub struct DaySummary {
    pub day: DateTime<Utc>,
    pub points: i64,
    /// Length of the day's track in device-time order, great circle between consecutive fixes.
    pub distance_m: f64,
    /// Seconds between consecutive fixes at most 5 minutes apart that were covered at 0.5 m/s or
    /// faster (the `moving_time_s` aggregate of migration 7).
    pub moving_s: f64,
    pub first_fix: DateTime<Utc>,
    pub last_fix: DateTime<Utc>,
}

/// Per-day summaries for days starting in `from..to`, counting only fixes since the claim.
///
/// On TimescaleDB, days after the claim day come from the `daily_summaries` continuous aggregate
/// (materialized, plus real-time for the newest data); the claim day is computed from the fixes
/// after the claim. On plain PostgreSQL every day is computed from the fixes, with a device-time
/// range the primary key serves: the `daily_summaries` view would do the same work but could only
/// be filtered by day after reading the tracker's whole history.
pub async fn summary(
    pool: &Pool,
    tracker: &TrackerId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<DaySummary>, StorageError> {
    let client = client(pool).await?;
    let claim = client
        .query_opt(
            "SELECT claimed_at, date_trunc('day', claimed_at, 'UTC') FROM trackers
             WHERE tracker_id = $1 AND claimed_at IS NOT NULL",
            &[&tracker.as_str()],
        )
        .await
        .map_err(StorageError::query("reading daily summaries"))?;
    let Some(claim) = claim else {
        return Ok(Vec::new());
    };
    let (claimed_at, claim_day): (DateTime<Utc>, DateTime<Utc>) = (claim.get(0), claim.get(1));
    let from = from.max(claimed_at);
    if from >= to {
        return Ok(Vec::new());
    }
    drop(client);
    let mut days = Vec::new();
    match gateway::storage::backend(pool).await? {
        gateway::storage::Backend::Postgres => {
            days.extend(summary_from_fixes(pool, tracker, from, to).await?);
        }
        gateway::storage::Backend::TimescaleDb => {
            let claim_day_end = claim_day + TimeDelta::days(1);
            if from < claim_day_end {
                days.extend(summary_from_fixes(pool, tracker, from, to.min(claim_day_end)).await?);
            }
            let rows = self::client(pool)
                .await?
                .query(
                    "SELECT day, points, distance_m, first_fix, last_fix, moving_s FROM daily_summaries
                     WHERE tracker_id = $1 AND day >= $2 AND day < $3 ORDER BY day",
                    &[&tracker.as_str(), &from.max(claim_day_end), &to],
                )
                .await
                .map_err(StorageError::query("reading daily summaries"))?;
            days.extend(rows.iter().map(day_summary));
        }
    }
    Ok(days)
}

fn day_summary(r: &Row) -> DaySummary {
    DaySummary {
        day: r.get(0),
        points: r.get(1),
        distance_m: r.get(2),
        first_fix: r.get(3),
        last_fix: r.get(4),
        moving_s: r.get(5),
    }
}

/// Days of `from..to` computed from the fixes themselves (great circle between consecutive fixes).
async fn summary_from_fixes(
    pool: &Pool,
    tracker: &TrackerId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<DaySummary>, StorageError> {
    let rows = client(pool)
        .await?
        .query(
            "SELECT day, count(*),
                    coalesce(sum(haversine_m(prev_lat, prev_lon, lat, lon))
                        FILTER (WHERE prev_lat IS NOT NULL), 0),
                    min(device_time), max(device_time),
                    coalesce(sum(moving_segment_s(prev_time, prev_lat, prev_lon,
                                                  device_time, lat, lon)), 0)
             FROM (SELECT device_time, lat, lon, date_trunc('day', device_time, 'UTC') AS day,
                          lag(lat) OVER w AS prev_lat, lag(lon) OVER w AS prev_lon,
                          lag(device_time) OVER w AS prev_time
                   FROM positions
                   WHERE tracker_id = $1 AND device_time >= $2 AND device_time < $3
                   WINDOW w AS (PARTITION BY date_trunc('day', device_time, 'UTC')
                                ORDER BY device_time)) fixes
             GROUP BY day ORDER BY day",
            &[&tracker.as_str(), &from, &to],
        )
        .await
        .map_err(StorageError::query("reading daily summaries"))?;
    Ok(rows.iter().map(day_summary).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_survives_the_round_trip_to_the_microsecond() {
        let t = DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap();
        let c = Cursor(t);
        assert_eq!(Cursor::parse(&c.encode()), Some(c));
    }

    #[test]
    fn bucket_widths_parse_within_ten_seconds_and_seven_days() {
        assert_eq!(parse_bucket("5m"), Some(TimeDelta::minutes(5)));
        assert_eq!(parse_bucket("30s"), Some(TimeDelta::seconds(30)));
        assert_eq!(parse_bucket("1h"), Some(TimeDelta::hours(1)));
        assert_eq!(parse_bucket("7d"), Some(TimeDelta::days(7)));
        for bad in [
            "",
            "5",
            "m",
            "5x",
            "9s",
            "8d",
            "-5m",
            "5 m",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_bucket(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_forged_or_damaged_cursor_is_refused() {
        for bad in ["", "t", "tzz", "123", "t-", "tffffffffffffffffff"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }
}
