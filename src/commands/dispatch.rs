//! Sends commands to collars: queued ones when their collar is connected, unanswered ones again
//! with jittered backoff, and expires or fails those that run out of time or sends.
//!
//! The database is the queue, so nothing is lost to a restart and several processes could share
//! it (`FOR UPDATE SKIP LOCKED`). A tick drives the timers; a wake-up (a new command, a collar
//! connecting) makes the common case prompt instead of waiting for the tick.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::Pool;
use gateway::backoff::Backoff;
use gateway::broker::{Accepting, Authentication, DeviceHooks, DevicePublish, Downlink, Refused};
use gateway::protocol::{self, Command, CommandId, CommandType, TrackerId};
use gateway::shutdown::Shutdown;
use gateway::storage::{StorageError, pool_error_reason};
use serde_json::Value;
use tokio::sync::mpsc;

use super::lifecycle::{CommandStatus, Step, Trigger, transition};

/// Timing of sends.
#[derive(Debug, Clone, Copy)]
pub struct DispatchConfig {
    pub resend_after: Duration,
    pub max_sends: u32,
}

impl DispatchConfig {
    pub fn from_config(c: &crate::config::CommandsConfig) -> DispatchConfig {
        DispatchConfig {
            resend_after: Duration::from_millis(c.resend_after_ms.max(1)),
            max_sends: c.max_sends.max(1),
        }
    }

    /// How often timers are checked: often enough for the resend interval, at most once a second.
    fn tick(self) -> Duration {
        (self.resend_after / 4).clamp(Duration::from_millis(20), Duration::from_secs(1))
    }

    /// The wait after send number `sends` (1-based): doubling up to 1,024 times `resend_after`,
    /// up to 20% shorter at random so a fleet that reconnects together does not get its re-sends
    /// together.
    fn backoff(self, sends: i32) -> Duration {
        Backoff::new(self.resend_after, self.resend_after.saturating_mul(1024))
            .with_jitter(0.2)
            .delay(u32::try_from(sends.saturating_sub(1)).unwrap_or(0))
    }
}

/// Asks the dispatcher to look at one tracker now. Never blocks: if the dispatcher is busy,
/// its next tick sees the work anyway.
#[derive(Clone)]
pub struct Wake(mpsc::Sender<Woken>);

/// Why a tracker needs a look.
#[derive(Debug, Clone)]
pub struct Woken {
    tracker: String,
    /// It just connected: send what waits for it, even before its status row says online.
    connected: bool,
}

impl Wake {
    /// A command was created for `tracker`.
    pub fn created(&self, tracker: &str) {
        let _ = self.0.try_send(Woken {
            tracker: tracker.to_owned(),
            connected: false,
        });
    }

    /// `tracker`'s collar connected.
    pub fn connected(&self, tracker: &str) {
        let _ = self.0.try_send(Woken {
            tracker: tracker.to_owned(),
            connected: true,
        });
    }
}

pub fn channel() -> (Wake, mpsc::Receiver<Woken>) {
    let (tx, rx) = mpsc::channel(1024);
    (Wake(tx), rx)
}

/// The device hooks of the ingest pipeline, plus a wake-up when a collar connects, so commands
/// queued while it was away leave at once.
pub struct WakeOnConnect<H> {
    pub inner: Arc<H>,
    pub wake: Wake,
}

#[async_trait::async_trait]
impl<H: DeviceHooks> DeviceHooks for WakeOnConnect<H> {
    async fn authenticate(&self, tracker: &TrackerId, secret: &[u8]) -> Authentication {
        self.inner.authenticate(tracker, secret).await
    }

    async fn accept_publish(&self, publish: DevicePublish) -> Result<(), Refused> {
        self.inner.accept_publish(publish).await
    }

    async fn submit_publish(&self, publish: DevicePublish) -> Result<Accepting, Refused> {
        self.inner.submit_publish(publish).await
    }

    async fn connected(&self, tracker: &TrackerId) {
        self.inner.connected(tracker).await;
        self.wake.connected(tracker.as_str());
    }

    async fn disconnected(&self, tracker: &TrackerId) {
        self.inner.disconnected(tracker).await;
    }
}

/// Runs until `shutdown`, publishing through `broker`: the embedded one, or the external one
/// (an `api` instance's commands reach collars connected to any broker node).
pub async fn run(
    pool: Pool,
    broker: Arc<dyn Downlink>,
    config: DispatchConfig,
    mut wake: mpsc::Receiver<Woken>,
    mut shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(config.tick());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let result = tokio::select! {
            () = shutdown.recv() => return,
            _ = tick.tick() => housekeeping(&pool, broker.as_ref(), config).await,
            Some(woken) = wake.recv() => send_due(&pool, broker.as_ref(), config, Some(&woken)).await,
        };
        if let Err(err) = result {
            tracing::warn!(%err, "command dispatch failed; trying again at the next tick");
        }
    }
}

async fn housekeeping(
    pool: &Pool,
    broker: &dyn Downlink,
    config: DispatchConfig,
) -> Result<(), StorageError> {
    let client = pool
        .get()
        .await
        .map_err(|e| StorageError::Pool(pool_error_reason(&e)))?;
    // Expired first: a command past its TTL is not sent again. Both statements move many
    // commands at once, each from a state the lifecycle allows (`sources`) to where it leads.
    client
        .execute(
            "WITH done AS (
                 UPDATE commands SET status = $2, updated_at = now(), next_send_at = NULL,
                        reason = 'not done before it expired'
                 WHERE status = ANY($1) AND expires_at <= now()
                 RETURNING id, attempt, reason)
             INSERT INTO command_events (command_id, status, attempt, reason)
             SELECT id, $2, attempt, reason FROM done",
            &[&Trigger::Expire.sources(), &CommandStatus::Expired.as_str()],
        )
        .await
        .map_err(StorageError::query("expiring commands"))?;
    let max_sends = i32::try_from(config.max_sends).unwrap_or(i32::MAX);
    client
        .execute(
            "WITH done AS (
                 UPDATE commands SET status = $3, updated_at = now(), next_send_at = NULL,
                        reason = format('no answer from the collar after %s sends', sends)
                 WHERE status = ANY($2) AND sends >= $1 AND next_send_at <= now()
                 RETURNING id, attempt, reason)
             INSERT INTO command_events (command_id, status, attempt, reason)
             SELECT id, $3, attempt, reason FROM done",
            &[
                &max_sends,
                &Trigger::GiveUp.sources(),
                &CommandStatus::Failed.as_str(),
            ],
        )
        .await
        .map_err(StorageError::query("failing unanswered commands"))?;
    drop(client);
    send_due(pool, broker, config, None).await
}

/// Publishes what is due to connected collars: queued commands, and sent ones still unanswered
/// when their wait is over. A collar that just connected gets both at once: it may have missed
/// them while away. Commands of collars that are offline wait (and may expire).
async fn send_due(
    pool: &Pool,
    broker: &dyn Downlink,
    config: DispatchConfig,
    woken: Option<&Woken>,
) -> Result<(), StorageError> {
    let tracker = woken.map(|w| w.tracker.as_str());
    let connected = woken.is_some_and(|w| w.connected);
    let mut client = pool
        .get()
        .await
        .map_err(|e| StorageError::Pool(pool_error_reason(&e)))?;
    let max_sends = i32::try_from(config.max_sends).unwrap_or(i32::MAX);
    let tx = client
        .transaction()
        .await
        .map_err(StorageError::query("sending commands"))?;
    let due = tx
        .query(
            "SELECT c.id, c.tracker_id, c.type, c.params, c.status, c.sends, c.attempt
             FROM commands c LEFT JOIN tracker_status s USING (tracker_id)
             WHERE ($1::text IS NULL OR c.tracker_id = $1)
               AND (coalesce(s.online, false) OR $3)
               AND c.status = ANY($4)
               -- Not yet sent in this attempt, or unanswered and due again.
               AND (c.sends = 0 OR (c.sends < $2 AND (c.next_send_at <= now() OR $3)))
             ORDER BY c.created_at
             LIMIT 500
             FOR UPDATE OF c SKIP LOCKED",
            &[&tracker, &max_sends, &connected, &Trigger::Send.sources()],
        )
        .await
        .map_err(StorageError::query("finding commands to send"))?;
    for row in &due {
        let id: String = row.get(0);
        let tracker: String = row.get(1);
        let kind: String = row.get(2);
        let params: Value = row.get(3);
        let status: CommandStatus = row
            .try_get(4)
            .map_err(StorageError::query("finding commands to send"))?;
        let sends: i32 = row.get::<_, i32>(5).saturating_add(1);
        let attempt: i32 = row.get(6);
        let Ok(Step::Move(to)) = transition(status, Trigger::Send) else {
            continue;
        };
        let Some(payload) = payload(&id, &kind, params) else {
            tracing::error!(command = %id, "stored command cannot be encoded; failing it");
            continue;
        };
        let Ok(tracker_id) = TrackerId::parse(&tracker) else {
            continue;
        };
        let topic = protocol::topics::commands(&tracker_id);
        if let Err(err) = broker.publish(&topic, payload, 1).await {
            tracing::debug!(%err, command = %id, "command not published; next tick tries again");
            continue;
        }
        let wait = config.backoff(sends);
        tx.execute(
            "UPDATE commands SET status = $4, sends = $2, updated_at = now(),
                    next_send_at = now() + make_interval(secs => $3)
             WHERE id = $1",
            &[&id, &sends, &wait.as_secs_f64(), &to.as_str()],
        )
        .await
        .map_err(StorageError::query("marking a command sent"))?;
        let reason = (status == CommandStatus::Sent)
            .then(|| format!("sent again (send {sends}): no answer yet"));
        super::record(&tx, &id, to, attempt, reason.as_deref(), None).await?;
    }
    tx.commit()
        .await
        .map_err(StorageError::query("sending commands"))?;
    Ok(())
}

/// The downlink JSON of a stored command.
fn payload(id: &str, kind: &str, params: Value) -> Option<Bytes> {
    let command = Command {
        id: CommandId::parse(id).ok()?,
        kind: CommandType::parse(kind).ok()?,
        params: match params {
            Value::Object(map) => map,
            _ => return None,
        },
    };
    Some(Bytes::from(protocol::encode_command(&command)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resends_back_off_doubling_with_jitter_and_never_overflow() {
        let c = DispatchConfig {
            resend_after: Duration::from_secs(10),
            max_sends: 5,
        };
        for (sends, base) in [(1, 10.0), (2, 20.0), (3, 40.0)] {
            let wait = c.backoff(sends).as_secs_f64();
            assert!((base * 0.8..=base).contains(&wait), "{sends}: {wait}");
        }
        // The doubling stops at 1,024 times the first wait.
        let longest = c.backoff(i32::MAX).as_secs_f64();
        assert!((10_240.0 * 0.8..=10_240.0).contains(&longest), "{longest}");
        assert_eq!(c.tick(), Duration::from_secs(1));
    }

    #[test]
    fn a_stored_command_encodes_as_the_protocol_says() {
        let p = payload("cmd-1", "buzzer", serde_json::json!({"seconds": 3})).unwrap();
        let v: Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": "cmd-1", "type": "buzzer", "params": {"seconds": 3}})
        );
        assert!(payload("cmd-1", "buzzer", Value::Null).is_none());
    }
}
