//! The lifecycle of a command request: its states, what can happen to it, and the one function ([`transition`]) that says which transitions are legal and which states are terminal.
//!
//! ```text
//! queued ──send──▶ sent ──send──▶ sent ...          (re-sent until answered)
//!   │               │ └─give up─▶ failed            (no answer after the last send)
//!   │               └─accepted──▶ delivered
//!   ├─done / failed (from queued, sent or delivered)─▶ succeeded / failed
//!   ├─expire (queued, sent, delivered)──────────────▶ expired
//!   └─cancel (queued, sent, delivered)──────────────▶ cancelled
//! failed, expired, cancelled ──retry──▶ queued (a new attempt of the same request)
//! ```
//!
//! The dispatcher, the API and the ingest write path (the collars' reports) all move commands
//! through [`transition`]; a move it refuses is an error for the caller (a 409, a dead letter),
//! never a silent update. The SQL of a transition selects the rows it may move with
//! [`Trigger::sources`], so the statements and this table cannot disagree.

use std::error::Error;

use gateway::protocol::CommandResultStatus;
use serde::{Deserialize, Serialize};
use tokio_postgres::types::{FromSql, Type};

/// Where a command is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandStatus {
    /// Stored, not yet published (its collar may be offline).
    Queued,
    /// Published to the collar; no answer yet.
    Sent,
    /// The collar said it received it and is carrying it out (`accepted`).
    Delivered,
    /// The collar said it was done.
    Succeeded,
    /// The collar said it failed, or never answered.
    Failed,
    /// Not done before its time to live passed.
    Expired,
    /// Cancelled by its owner.
    Cancelled,
}

impl CommandStatus {
    pub const ALL: [CommandStatus; 7] = [
        CommandStatus::Queued,
        CommandStatus::Sent,
        CommandStatus::Delivered,
        CommandStatus::Succeeded,
        CommandStatus::Failed,
        CommandStatus::Expired,
        CommandStatus::Cancelled,
    ];

    /// The name stored in the database and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Queued => "queued",
            CommandStatus::Sent => "sent",
            CommandStatus::Delivered => "delivered",
            CommandStatus::Succeeded => "succeeded",
            CommandStatus::Failed => "failed",
            CommandStatus::Expired => "expired",
            CommandStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<CommandStatus> {
        CommandStatus::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Finished: nothing happens to it any more, unless its owner re-triggers it (`retry`).
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            CommandStatus::Queued | CommandStatus::Sent | CommandStatus::Delivered
        )
    }

    /// The SQL condition a finished command meets, for statements (retention) that cannot call
    /// [`CommandStatus::is_terminal`]; a test keeps the two in step.
    pub const TERMINAL_SQL: &'static str =
        "status IN ('succeeded', 'failed', 'expired', 'cancelled')";

    /// Whether its parameters may still change: only before it is first sent.
    pub fn params_may_change(self) -> bool {
        self == CommandStatus::Queued
    }
}

impl std::fmt::Display for CommandStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Stored as text (`commands.status`, `command_events.status`).
impl<'a> FromSql<'a> for CommandStatus {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        let text = <&str as FromSql>::from_sql(ty, raw)?;
        CommandStatus::parse(text).ok_or_else(|| format!("unknown command status {text:?}").into())
    }

    fn accepts(ty: &Type) -> bool {
        <&str as FromSql>::accepts(ty)
    }
}

/// Something that happens to a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The dispatcher published it to the collar, the first time or again.
    Send,
    /// The collar reported on it (`trackers/{id}/command-results`).
    Report(CommandResultStatus),
    /// The dispatcher gave up: no answer after its last send.
    GiveUp,
    /// Its time to live passed.
    Expire,
    /// Its owner cancelled it.
    Cancel,
    /// Its owner re-triggered it as a new attempt.
    Retry,
}

impl Trigger {
    pub const ALL: [Trigger; 8] = [
        Trigger::Send,
        Trigger::Report(CommandResultStatus::Accepted),
        Trigger::Report(CommandResultStatus::Done),
        Trigger::Report(CommandResultStatus::Failed),
        Trigger::GiveUp,
        Trigger::Expire,
        Trigger::Cancel,
        Trigger::Retry,
    ];

    /// The states this trigger moves a command out of, as stored: what a statement applying it
    /// to many commands at once selects (`status = ANY($n)`).
    pub fn sources(self) -> Vec<&'static str> {
        CommandStatus::ALL
            .into_iter()
            .filter(|from| matches!(transition(*from, self), Ok(Step::Move(_))))
            .map(CommandStatus::as_str)
            .collect()
    }

    fn describe(self) -> &'static str {
        match self {
            Trigger::Send => "sent",
            Trigger::Report(CommandResultStatus::Accepted) => "accepted by its collar",
            Trigger::Report(CommandResultStatus::Done) => "done by its collar",
            Trigger::Report(CommandResultStatus::Failed) => "failed by its collar",
            Trigger::GiveUp => "given up",
            Trigger::Expire => "expired",
            Trigger::Cancel => "cancelled",
            Trigger::Retry => "re-triggered",
        }
    }
}

/// What a legal trigger does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The command moves to this state (which may be the one it is in: a re-send is a `sent`
    /// event too).
    Move(CommandStatus),
    /// Nothing changes, and that is fine: a collar's report repeating what the command already
    /// says (QoS 1 delivers at least once), or an `accepted` overtaken by its `done`.
    Stay,
}

/// A trigger that does not apply to a command in its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from} command cannot be {}", .trigger.describe())]
pub struct IllegalTransition {
    pub from: CommandStatus,
    pub trigger: Trigger,
}

/// The lifecycle's one rule: what `trigger` does to a command in state `from`.
pub fn transition(from: CommandStatus, trigger: Trigger) -> Result<Step, IllegalTransition> {
    use CommandResultStatus::{Accepted, Done, Failed as Refused};
    use CommandStatus::*;
    let open = !from.is_terminal();
    let step = match (trigger, from) {
        (Trigger::Send, Queued | Sent) => Step::Move(Sent),
        (Trigger::Report(Accepted), Queued | Sent) => Step::Move(Delivered),
        (Trigger::Report(Accepted), Delivered | Succeeded) => Step::Stay,
        (Trigger::Report(Done), _) if open => Step::Move(Succeeded),
        (Trigger::Report(Done), Succeeded) => Step::Stay,
        (Trigger::Report(Refused), _) if open => Step::Move(Failed),
        (Trigger::Report(Refused), Failed) => Step::Stay,
        (Trigger::GiveUp, Sent) => Step::Move(Failed),
        (Trigger::Expire, _) if open => Step::Move(Expired),
        (Trigger::Cancel, _) if open => Step::Move(Cancelled),
        (Trigger::Retry, Failed | Expired | Cancelled) => Step::Move(Queued),
        _ => return Err(IllegalTransition { from, trigger }),
    };
    Ok(step)
}

#[cfg(test)]
mod tests {
    use super::*;
    use CommandResultStatus::{Accepted, Done, Failed as Refused};
    use CommandStatus::*;

    /// Every legal (state, trigger) pair and where it leads; everything else is illegal.
    const LEGAL: &[(CommandStatus, Trigger, Step)] = &[
        (Queued, Trigger::Send, Step::Move(Sent)),
        (Sent, Trigger::Send, Step::Move(Sent)),
        (Queued, Trigger::Report(Accepted), Step::Move(Delivered)),
        (Sent, Trigger::Report(Accepted), Step::Move(Delivered)),
        (Delivered, Trigger::Report(Accepted), Step::Stay),
        (Succeeded, Trigger::Report(Accepted), Step::Stay),
        (Queued, Trigger::Report(Done), Step::Move(Succeeded)),
        (Sent, Trigger::Report(Done), Step::Move(Succeeded)),
        (Delivered, Trigger::Report(Done), Step::Move(Succeeded)),
        (Succeeded, Trigger::Report(Done), Step::Stay),
        (Queued, Trigger::Report(Refused), Step::Move(Failed)),
        (Sent, Trigger::Report(Refused), Step::Move(Failed)),
        (Delivered, Trigger::Report(Refused), Step::Move(Failed)),
        (Failed, Trigger::Report(Refused), Step::Stay),
        (Sent, Trigger::GiveUp, Step::Move(Failed)),
        (Queued, Trigger::Expire, Step::Move(Expired)),
        (Sent, Trigger::Expire, Step::Move(Expired)),
        (Delivered, Trigger::Expire, Step::Move(Expired)),
        (Queued, Trigger::Cancel, Step::Move(Cancelled)),
        (Sent, Trigger::Cancel, Step::Move(Cancelled)),
        (Delivered, Trigger::Cancel, Step::Move(Cancelled)),
        (Failed, Trigger::Retry, Step::Move(Queued)),
        (Expired, Trigger::Retry, Step::Move(Queued)),
        (Cancelled, Trigger::Retry, Step::Move(Queued)),
    ];

    #[test]
    fn every_legal_transition_leads_where_the_lifecycle_says_and_every_other_is_an_error() {
        let mut legal = 0;
        for from in CommandStatus::ALL {
            for trigger in Trigger::ALL {
                let expected = LEGAL
                    .iter()
                    .find(|(f, t, _)| *f == from && *t == trigger)
                    .map(|(_, _, step)| *step);
                match (transition(from, trigger), expected) {
                    (Ok(step), Some(want)) => {
                        assert_eq!(step, want, "{from} + {trigger:?}");
                        legal += 1;
                    }
                    (Err(err), None) => {
                        assert_eq!(err, IllegalTransition { from, trigger });
                        assert!(err.to_string().contains(from.as_str()), "{err}");
                    }
                    (got, want) => panic!("{from} + {trigger:?}: got {got:?}, want {want:?}"),
                }
            }
        }
        assert_eq!(legal, LEGAL.len(), "a legal pair is listed twice");
    }

    #[test]
    fn terminal_states_leave_only_by_a_retry_and_a_success_never() {
        for from in CommandStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            for trigger in Trigger::ALL {
                if let Ok(Step::Move(to)) = transition(from, trigger) {
                    assert_eq!((trigger, to), (Trigger::Retry, Queued), "{from}");
                    assert_ne!(from, Succeeded);
                }
            }
        }
        let open: Vec<_> = CommandStatus::ALL
            .into_iter()
            .filter(|s| !s.is_terminal())
            .collect();
        assert_eq!(open, [Queued, Sent, Delivered]);
    }

    #[test]
    fn the_sql_condition_for_finished_commands_names_exactly_the_terminal_states() {
        let named: Vec<_> = CommandStatus::TERMINAL_SQL
            .split('\'')
            .skip(1)
            .step_by(2)
            .map(|name| CommandStatus::parse(name).expect(name))
            .collect();
        let terminal: Vec<_> = CommandStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(named, terminal);
    }

    #[test]
    fn the_sources_of_a_trigger_are_the_states_it_moves_out_of() {
        assert_eq!(Trigger::Cancel.sources(), ["queued", "sent", "delivered"]);
        assert_eq!(Trigger::Expire.sources(), ["queued", "sent", "delivered"]);
        assert_eq!(Trigger::Send.sources(), ["queued", "sent"]);
        assert_eq!(Trigger::GiveUp.sources(), ["sent"]);
        assert_eq!(Trigger::Retry.sources(), ["failed", "expired", "cancelled"]);
        // A repeated report moves nothing, so it selects nothing to move.
        assert_eq!(Trigger::Report(Accepted).sources(), ["queued", "sent"]);
    }

    #[test]
    fn statuses_round_trip_through_their_names_and_json() {
        for status in CommandStatus::ALL {
            assert_eq!(CommandStatus::parse(status.as_str()), Some(status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::json!(status.as_str())
            );
        }
        assert_eq!(CommandStatus::parse("done"), None);
        assert!(CommandStatus::parse("queued").unwrap().params_may_change());
        assert!(!Sent.params_may_change());
    }
}
