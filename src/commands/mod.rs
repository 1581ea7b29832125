//! Commands to collars: the types and their parameters, and the stored requests the API creates, lists, changes, cancels and re-triggers.
//!
//! A request is stored before anything is sent, so it survives restarts and offline collars;
//! [`dispatch`] sends, re-sends and expires, and [`reports`] applies the collars' answers on the
//! ingest path. Each of them moves a command only as [`lifecycle`] allows, and every transition
//! is a `command_events` row (which the database announces with NOTIFY).

pub mod dispatch;
pub mod lifecycle;
pub mod reports;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use gateway::protocol::TrackerId;
use gateway::storage::{StorageError, pool_error_reason};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_postgres::Row;

pub use lifecycle::{CommandStatus, IllegalTransition, Step, Trigger, transition};

/// What a collar can be asked to do: the contract's command types, shared with the collars'
/// side (firmware-sim) through `gateway::protocol`.
pub use gateway::protocol::CommandKind;

/// The parameter rules of each command type, as the API enforces them before anything is sent.
pub trait CommandParams {
    /// Checks `params` for this type and fills in defaults. The error names the parameter.
    fn validate(self, params: &Map<String, Value>) -> Result<Map<String, Value>, ParamError>;
}

impl CommandParams for CommandKind {
    fn validate(self, params: &Map<String, Value>) -> Result<Map<String, Value>, ParamError> {
        let mut out = Map::new();
        let known: &[&str] = match self {
            CommandKind::LiveMode => {
                out.insert(
                    "minutes".into(),
                    int(params, "minutes", 1, 240, None)?.into(),
                );
                out.insert(
                    "interval_secs".into(),
                    int(params, "interval_secs", 1, 60, Some(5))?.into(),
                );
                &["minutes", "interval_secs"]
            }
            CommandKind::SetInterval => {
                out.insert(
                    "seconds".into(),
                    int(params, "seconds", 5, 86_400, None)?.into(),
                );
                &["seconds"]
            }
            CommandKind::Buzzer => {
                out.insert(
                    "seconds".into(),
                    int(params, "seconds", 1, 60, Some(3))?.into(),
                );
                &["seconds"]
            }
            CommandKind::Light => {
                out.insert(
                    "seconds".into(),
                    int(params, "seconds", 1, 3_600, Some(60))?.into(),
                );
                &["seconds"]
            }
            CommandKind::LocateNow => &[],
            CommandKind::FirmwareUpdate => {
                let url = text(params, "url")?;
                if !url.starts_with("https://")
                    || url.len() > 512
                    || url.contains(char::is_whitespace)
                {
                    return Err(ParamError::new(
                        "url",
                        "an https:// URL of at most 512 characters, without spaces",
                    ));
                }
                let version = text(params, "version")?;
                if version.is_empty()
                    || version.len() > 32
                    || !version
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                {
                    return Err(ParamError::new(
                        "version",
                        "1-32 characters of A-Z a-z 0-9 . _ -",
                    ));
                }
                out.insert("url".into(), url.into());
                out.insert("version".into(), version.into());
                &["url", "version"]
            }
        };
        if let Some(unknown) = params.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(ParamError {
                param: unknown.clone(),
                message: if known.is_empty() {
                    format!("{} takes no parameters", self.as_str())
                } else {
                    format!(
                        "unknown parameter; {} takes {}",
                        self.as_str(),
                        known.join(", ")
                    )
                },
            });
        }
        Ok(out)
    }
}

/// A parameter that breaks its type's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    pub param: String,
    pub message: String,
}

impl ParamError {
    fn new(param: &str, message: &str) -> ParamError {
        ParamError {
            param: param.to_owned(),
            message: message.to_owned(),
        }
    }
}

fn int(
    params: &Map<String, Value>,
    key: &str,
    min: i64,
    max: i64,
    default: Option<i64>,
) -> Result<i64, ParamError> {
    let rule = || ParamError {
        param: key.to_owned(),
        message: format!("a whole number from {min} to {max}"),
    };
    match params.get(key) {
        None => default.ok_or_else(|| ParamError {
            param: key.to_owned(),
            message: format!("required: a whole number from {min} to {max}"),
        }),
        Some(v) => v
            .as_i64()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(rule),
    }
}

fn text<'a>(params: &'a Map<String, Value>, key: &str) -> Result<&'a str, ParamError> {
    params
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| ParamError::new(key, "required: a string"))
}

/// The NOTIFY channel of every command transition (a `command_events` row, migration 9).
pub const NOTIFY_CHANNEL: &str = "pettracker_command_event";

/// A transition as the database announces it (NOTIFY on every `command_events` row, migration
/// 9), passed on to the live feeds. `at` is kept as the database wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Announced {
    pub at: String,
    pub attempt: i32,
    pub id: String,
    pub reason: Option<String>,
    pub status: CommandStatus,
    pub tracker_id: String,
}

/// A command as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CommandView {
    pub id: String,
    pub tracker_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub params: Value,
    pub status: CommandStatus,
    pub reason: Option<String>,
    /// 1, then one more for each re-trigger.
    pub attempt: i32,
    /// Publishes of the current attempt.
    pub sends: i32,
    pub created_by: Option<i64>,
    pub api_key_id: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub ttl_secs: i32,
    pub expires_at: DateTime<Utc>,
    /// Every transition, oldest first; only on a single command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<CommandEvent>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommandEvent {
    pub at: DateTime<Utc>,
    pub status: CommandStatus,
    pub attempt: i32,
    pub reason: Option<String>,
}

const COLUMNS: &str =
    "c.id, c.tracker_id, c.type, c.params, c.status, c.reason, c.attempt, c.sends,
    c.created_by, c.api_key_id, c.created_at, c.updated_at, c.ttl_secs, c.expires_at";

fn view(r: &Row) -> Result<CommandView, StorageError> {
    Ok(CommandView {
        id: r.get(0),
        tracker_id: r.get(1),
        kind: r.get(2),
        params: r.get(3),
        status: r
            .try_get(4)
            .map_err(StorageError::query("reading a command"))?,
        reason: r.get(5),
        attempt: r.get(6),
        sends: r.get(7),
        created_by: r.get(8),
        api_key_id: r.get(9),
        created_at: r.get(10),
        updated_at: r.get(11),
        ttl_secs: r.get(12),
        expires_at: r.get(13),
        history: None,
    })
}

async fn client(pool: &Pool) -> Result<deadpool_postgres::Object, StorageError> {
    pool.get()
        .await
        .map_err(|e| StorageError::Pool(pool_error_reason(&e)))
}

/// A new command id: short, unguessable, printable (the protocol allows 1-64 characters).
fn new_id() -> String {
    let bytes: [u8; 12] = rand::random();
    format!("cmd-{}", hex::encode(bytes))
}

/// Who asked for a command.
#[derive(Debug, Clone, Copy)]
pub struct Requester {
    pub user_id: i64,
    pub api_key_id: Option<i64>,
}

/// Stores a new command as `queued`.
pub async fn create(
    pool: &Pool,
    tracker: &TrackerId,
    kind: CommandKind,
    params: Map<String, Value>,
    ttl_secs: i32,
    by: Requester,
) -> Result<CommandView, StorageError> {
    let mut client = client(pool).await?;
    let tx = client
        .transaction()
        .await
        .map_err(StorageError::query("creating a command"))?;
    let id = new_id();
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO commands AS c (id, tracker_id, type, params, status, created_by,
                                            api_key_id, ttl_secs, expires_at)
                 VALUES ($1, $2, $3, $4, $8, $5, $6, $7::int4, now() + $7::int4 * INTERVAL '1 second')
                 RETURNING {COLUMNS}"
            ),
            &[
                &id,
                &tracker.as_str(),
                &kind.as_str(),
                &Value::Object(params),
                &by.user_id,
                &by.api_key_id,
                &ttl_secs,
                &CommandStatus::Queued.as_str(),
            ],
        )
        .await
        .map_err(StorageError::query("creating a command"))?;
    record(&tx, &id, CommandStatus::Queued, 1, None, None).await?;
    tx.commit()
        .await
        .map_err(StorageError::query("creating a command"))?;
    view(&row)
}

/// Records a transition: a `command_events` row, which the database announces. `at` is now
/// unless given (a collar's report counts from when it arrived).
async fn record(
    tx: &deadpool_postgres::Transaction<'_>,
    id: &str,
    status: CommandStatus,
    attempt: i32,
    reason: Option<&str>,
    at: Option<DateTime<Utc>>,
) -> Result<(), StorageError> {
    tx.execute(
        "INSERT INTO command_events (command_id, status, attempt, reason, at)
         VALUES ($1, $2, $3, $4, coalesce($5, now()))",
        &[&id, &status.as_str(), &attempt, &reason, &at],
    )
    .await
    .map_err(StorageError::query("recording a command event"))?;
    Ok(())
}

/// One command with its history, if it exists.
pub async fn get(pool: &Pool, id: &str) -> Result<Option<CommandView>, StorageError> {
    let client = client(pool).await?;
    let Some(row) = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM commands c WHERE c.id = $1"),
            &[&id],
        )
        .await
        .map_err(StorageError::query("reading a command"))?
    else {
        return Ok(None);
    };
    let mut command = view(&row)?;
    let events = client
        .query(
            "SELECT at, status, attempt, reason FROM command_events
             WHERE command_id = $1 ORDER BY id",
            &[&id],
        )
        .await
        .map_err(StorageError::query("reading a command's history"))?;
    let history = events
        .iter()
        .map(|r| {
            Ok(CommandEvent {
                at: r.get(0),
                status: r
                    .try_get(1)
                    .map_err(StorageError::query("reading a command's history"))?,
                attempt: r.get(2),
                reason: r.get(3),
            })
        })
        .collect::<Result<_, StorageError>>()?;
    command.history = Some(history);
    Ok(Some(command))
}

/// Which commands to list.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub tracker: Option<TrackerId>,
    pub status: Option<CommandStatus>,
    pub since: Option<DateTime<Utc>>,
    pub limit: i64,
}

/// Whose commands the caller sees: an application (API key) the requests it created; a user
/// those of every tracker they own or were invited to.
#[derive(Debug, Clone, Copy)]
pub enum Viewer {
    User(i64),
    ApiKey { user_id: i64, key_id: i64 },
}

/// Commands the viewer may see, newest first.
pub async fn list(
    pool: &Pool,
    viewer: Viewer,
    q: &ListQuery,
) -> Result<Vec<CommandView>, StorageError> {
    let (user, key) = match viewer {
        Viewer::User(u) => (u, None),
        Viewer::ApiKey { user_id, key_id } => (user_id, Some(key_id)),
    };
    let rows = client(pool)
        .await?
        .query(
            &format!(
                "SELECT {COLUMNS} FROM commands c JOIN trackers t USING (tracker_id)
                 WHERE (t.owner_id = $1 OR EXISTS (SELECT 1 FROM tracker_members m
                        WHERE m.tracker_id = t.tracker_id AND m.user_id = $1))
                   AND c.created_at >= t.claimed_at
                   AND ($2::bigint IS NULL OR c.api_key_id = $2)
                   AND ($3::text IS NULL OR c.tracker_id = $3)
                   AND ($4::text IS NULL OR c.status = $4)
                   AND ($5::timestamptz IS NULL OR c.updated_at >= $5)
                 ORDER BY c.created_at DESC, c.id LIMIT $6"
            ),
            &[
                &user,
                &key,
                &q.tracker.as_ref().map(TrackerId::as_str),
                &q.status.map(CommandStatus::as_str),
                &q.since,
                &q.limit,
            ],
        )
        .await
        .map_err(StorageError::query("listing commands"))?;
    rows.iter().map(view).collect()
}

/// Why a change to a command was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// Its state does not allow the change; says which state.
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    /// Only a queued command's parameters can change.
    #[error("the command is {0}")]
    ParamsFixed(CommandStatus),
    /// It was deleted (with its tracker) meanwhile.
    #[error("the command is gone")]
    Gone,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl ChangeError {
    /// The state that refused the change, if that was the reason.
    pub fn state(&self) -> Option<CommandStatus> {
        match self {
            ChangeError::Illegal(illegal) => Some(illegal.from),
            ChangeError::ParamsFixed(status) => Some(*status),
            ChangeError::Gone | ChangeError::Storage(_) => None,
        }
    }
}

/// Cancels a command that has not finished.
pub async fn cancel(pool: &Pool, id: &str) -> Result<CommandView, ChangeError> {
    change(
        pool,
        id,
        Trigger::Cancel,
        "UPDATE commands SET status = $2, reason = 'cancelled by its owner', updated_at = now(),
                next_send_at = NULL
         WHERE id = $1
         RETURNING attempt",
        Some("cancelled by its owner"),
    )
    .await
}

/// Re-triggers a failed, expired or cancelled command as a new attempt with a fresh TTL.
pub async fn retry(pool: &Pool, id: &str) -> Result<CommandView, ChangeError> {
    change(
        pool,
        id,
        Trigger::Retry,
        "UPDATE commands SET status = $2, reason = NULL, attempt = attempt + 1, sends = 0,
                next_send_at = NULL, updated_at = now(),
                expires_at = now() + make_interval(secs => ttl_secs)
         WHERE id = $1
         RETURNING attempt",
        Some("re-triggered"),
    )
    .await
}

/// Replaces the parameters of a command still waiting to be sent.
pub async fn set_params(
    pool: &Pool,
    id: &str,
    params: Map<String, Value>,
) -> Result<CommandView, ChangeError> {
    let mut client = client(pool).await?;
    let tx = client
        .transaction()
        .await
        .map_err(StorageError::query("changing a command"))?;
    let status = lock(&tx, id).await?.0;
    if !status.params_may_change() {
        return Err(ChangeError::ParamsFixed(status));
    }
    tx.execute(
        "UPDATE commands SET params = $2, updated_at = now() WHERE id = $1",
        &[&id, &Value::Object(params)],
    )
    .await
    .map_err(StorageError::query("changing a command"))?;
    tx.commit()
        .await
        .map_err(StorageError::query("changing a command"))?;
    drop(client);
    get(pool, id).await?.ok_or(ChangeError::Gone)
}

/// The command's state and attempt, locked until the end of `tx`.
async fn lock(
    tx: &deadpool_postgres::Transaction<'_>,
    id: &str,
) -> Result<(CommandStatus, i32), ChangeError> {
    let row = tx
        .query_opt(
            "SELECT status, attempt FROM commands WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await
        .map_err(StorageError::query("changing a command"))?
        .ok_or(ChangeError::Gone)?;
    let status = row
        .try_get(0)
        .map_err(StorageError::query("changing a command"))?;
    Ok((status, row.get(1)))
}

/// Applies an owner's `trigger`: `update` (with `$1` the id, `$2` the new state, returning the
/// attempt) runs only if [`transition`] allows it, and the transition is recorded.
async fn change(
    pool: &Pool,
    id: &str,
    trigger: Trigger,
    update: &str,
    reason: Option<&str>,
) -> Result<CommandView, ChangeError> {
    let mut client = client(pool).await?;
    let tx = client
        .transaction()
        .await
        .map_err(StorageError::query("changing a command"))?;
    let (status, _) = lock(&tx, id).await?;
    if let Step::Move(to) = transition(status, trigger)? {
        let attempt: i32 = tx
            .query_one(update, &[&id, &to.as_str()])
            .await
            .map_err(StorageError::query("changing a command"))?
            .get(0);
        record(&tx, id, to, attempt, reason, None).await?;
    }
    tx.commit()
        .await
        .map_err(StorageError::query("changing a command"))?;
    drop(client);
    get(pool, id).await?.ok_or(ChangeError::Gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn parameters_get_their_defaults_and_bad_ones_are_named() {
        let live = CommandKind::LiveMode
            .validate(&params(json!({"minutes": 30})))
            .unwrap();
        assert_eq!(
            Value::Object(live),
            json!({"minutes": 30, "interval_secs": 5})
        );
        let buzz = CommandKind::Buzzer.validate(&Map::new()).unwrap();
        assert_eq!(Value::Object(buzz), json!({"seconds": 3}));
        for (kind, p, param) in [
            (CommandKind::LiveMode, json!({}), "minutes"),
            (CommandKind::LiveMode, json!({"minutes": 0}), "minutes"),
            (CommandKind::LiveMode, json!({"minutes": "ten"}), "minutes"),
            (CommandKind::SetInterval, json!({"seconds": 2}), "seconds"),
            (
                CommandKind::Buzzer,
                json!({"seconds": 3, "volume": 9}),
                "volume",
            ),
            (CommandKind::LocateNow, json!({"now": true}), "now"),
            (
                CommandKind::FirmwareUpdate,
                json!({"url": "http://x", "version": "1"}),
                "url",
            ),
            (
                CommandKind::FirmwareUpdate,
                json!({"url": "https://x/fw.bin", "version": "1 2"}),
                "version",
            ),
        ] {
            let err = kind.validate(&params(p.clone())).unwrap_err();
            assert_eq!(err.param, param, "{p}: {err:?}");
        }
    }
}
