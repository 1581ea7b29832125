//! The collars' reports on commands, applied on the ingest write path: the server's side of `gateway`'s [`CommandReports`], inside the transaction of the report's batch.
//!
//! A report moves its command as [`transition`] says; one that repeats what the command already
//! says is fine (QoS 1 delivers at least once); one naming no command of its tracker, or one the
//! command's state does not allow, becomes a dead letter with the reason.

use deadpool_postgres::Transaction;
use gateway::storage::StorageError;
use gateway::storage::ingest::{CommandReport, CommandReports, ReportOutcome};

use super::lifecycle::{CommandStatus, Step, Trigger, transition};

/// What the ingest pipeline is given to apply reports with (`IngestConfig::commands`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Reports;

#[async_trait::async_trait]
impl CommandReports for Reports {
    async fn apply(
        &self,
        tx: &Transaction<'_>,
        report: &CommandReport,
    ) -> Result<ReportOutcome, StorageError> {
        let q = StorageError::query;
        let Some(row) = tx
            .query_opt(
                "SELECT status, attempt FROM commands WHERE id = $1 AND tracker_id = $2 FOR UPDATE",
                &[&report.command_id, &report.tracker_id],
            )
            .await
            .map_err(q("applying a command result"))?
        else {
            return Ok(ReportOutcome::Refused(format!(
                "no command with id {} was sent to this tracker",
                report.command_id
            )));
        };
        let status: CommandStatus = row.try_get(0).map_err(q("applying a command result"))?;
        let attempt: i32 = row.get(1);
        match transition(status, Trigger::Report(report.status)) {
            Ok(Step::Move(to)) => {
                tx.execute(
                    "UPDATE commands SET status = $2, reason = $3, updated_at = $4, next_send_at = NULL
                     WHERE id = $1",
                    &[&report.command_id, &to.as_str(), &report.reason, &report.received_at],
                )
                .await
                .map_err(q("applying a command result"))?;
                super::record(
                    tx,
                    &report.command_id,
                    to,
                    attempt,
                    report.reason.as_deref(),
                    Some(report.received_at),
                )
                .await?;
                Ok(ReportOutcome::Applied)
            }
            Ok(Step::Stay) => Ok(ReportOutcome::Applied),
            Err(illegal) => Ok(ReportOutcome::Refused(format!(
                "command {} is already {}; a {} report does not change it",
                report.command_id,
                illegal.from,
                report.status.as_str()
            ))),
        }
    }
}
