//! What a collar does with the server's commands (docs/protocol.md, *Command types*): answers
//! each on `command-results`, changes when it takes fixes, and finishes slow ones later.

use std::time::Duration;

use gateway::protocol::{
    Command, CommandId, CommandKind, CommandResult, CommandResultStatus, Encoding,
    encode_command_result_with,
};
use tokio::time::Instant;

use super::schedule::Schedule;

/// Below this battery level the buzzer and the light refuse to run.
const MIN_BATTERY_FOR_OUTPUTS: f64 = 3.0;

/// A command result to publish.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Report {
    pub result: CommandResult,
    /// Firmware-download progress in percent: not in the contract, so the server ignores it,
    /// but readable in the command-results stream.
    pub progress: Option<u8>,
}

impl Report {
    fn new(id: &CommandId, status: CommandResultStatus, reason: Option<String>) -> Report {
        Report {
            result: CommandResult {
                command_id: id.clone(),
                status,
                reason,
            },
            progress: None,
        }
    }

    pub fn payload(&self) -> Vec<u8> {
        let extra: Vec<_> = self
            .progress
            .map(|p| ("progress", serde_json::Value::from(p)))
            .into_iter()
            .collect();
        encode_command_result_with(&self.result, &extra, Encoding::Json)
    }
}

/// Something the collar does later.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Later {
    Report(Report),
    /// The update is installed: the collar reports its new firmware version.
    FirmwareInstalled(String),
    LiveEnds,
}

/// The collar's to-do list, by time.
#[derive(Debug, Default)]
pub(crate) struct Agenda(Vec<(Instant, Later)>);

impl Agenda {
    fn push(&mut self, at: Instant, later: Later) {
        self.0.push((at, later));
    }

    /// When the next item is due.
    pub fn next_at(&self) -> Option<Instant> {
        self.0.iter().map(|(at, _)| *at).min()
    }

    /// The items due at `now`, in time order.
    pub fn due(&mut self, now: Instant) -> Vec<Later> {
        let (mut ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.0)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.0 = later;
        ready.sort_by_key(|(at, _)| *at);
        ready.into_iter().map(|(_, item)| item).collect()
    }
}

/// Carries out `command` at `now` with the battery at `battery` percent: changes `schedule`,
/// puts what finishes later on `agenda`, and returns the results to publish at once, in order.
pub(crate) fn obey(
    command: &Command,
    now: Instant,
    battery: f64,
    schedule: &mut Schedule,
    agenda: &mut Agenda,
) -> Vec<Report> {
    let id = &command.id;
    let number = |name: &str| {
        command
            .params
            .get(name)
            .and_then(serde_json::Value::as_f64)
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    let report = |status, reason| Report::new(id, status, reason);
    let done_after = |secs: f64| {
        (
            now + Duration::from_secs_f64(secs.min(3_600.0)),
            Later::Report(report(CommandResultStatus::Done, None)),
        )
    };
    let Some(kind) = CommandKind::of(&command.kind) else {
        let reason = format!("unknown command type {:?}", command.kind.as_str());
        return vec![report(CommandResultStatus::Failed, Some(reason))];
    };
    match kind {
        CommandKind::LiveMode => {
            let interval = number("interval_secs").unwrap_or(5.0);
            // `duration_s` is not in the contract (which counts minutes): it keeps tests short.
            let duration = number("minutes")
                .map(|m| m * 60.0)
                .or_else(|| number("duration_s"))
                .unwrap_or(300.0);
            let accepted = report(CommandResultStatus::Accepted, None);
            schedule.start_live(
                Duration::from_secs_f64(interval.max(1.0)),
                now + Duration::from_secs_f64(duration),
                now,
            );
            agenda.push(
                now + Duration::from_secs_f64(duration.min(86_400.0)),
                Later::LiveEnds,
            );
            vec![accepted, report(CommandResultStatus::Done, None)]
        }
        CommandKind::SetInterval => match number("seconds").filter(|s| *s >= 1.0) {
            Some(seconds) => {
                schedule.set_normal(Duration::from_secs_f64(seconds), now);
                vec![report(CommandResultStatus::Done, None)]
            }
            None => {
                let reason = "set_interval needs seconds".to_owned();
                vec![report(CommandResultStatus::Failed, Some(reason))]
            }
        },
        CommandKind::LocateNow => {
            schedule.fix_now(now);
            let (at, done) = done_after(0.5);
            agenda.push(at, done);
            vec![report(CommandResultStatus::Accepted, None)]
        }
        CommandKind::Buzzer | CommandKind::Light => {
            if battery < MIN_BATTERY_FOR_OUTPUTS {
                let reason = format!("{kind} disabled: battery too low");
                return vec![report(CommandResultStatus::Failed, Some(reason))];
            }
            let (at, done) = done_after(number("seconds").unwrap_or(3.0));
            agenda.push(at, done);
            vec![report(CommandResultStatus::Accepted, None)]
        }
        CommandKind::FirmwareUpdate => {
            let version = command
                .params
                .get("version")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("1.5.0")
                .chars()
                .take(32)
                .collect::<String>();
            let with_progress = |status, reason, progress| Report {
                progress: Some(progress),
                ..report(status, reason)
            };
            for (step, percent) in [25u8, 50, 75].into_iter().enumerate() {
                agenda.push(
                    now + Duration::from_millis(500) * (step as u32 + 1),
                    Later::Report(with_progress(
                        CommandResultStatus::Accepted,
                        Some(format!("downloading {percent}%")),
                        percent,
                    )),
                );
            }
            let installed = now + Duration::from_millis(2_000);
            agenda.push(installed, Later::FirmwareInstalled(version));
            agenda.push(
                installed + Duration::from_millis(1),
                Later::Report(with_progress(CommandResultStatus::Done, None, 100)),
            );
            vec![with_progress(CommandResultStatus::Accepted, None, 0)]
        }
    }
}

#[cfg(test)]
mod tests {
    use gateway::protocol::{CommandType, decode_command_result};
    use serde_json::json;

    use super::*;

    fn command(kind: &str, params: serde_json::Value) -> Command {
        Command {
            id: CommandId::parse("cmd-1").unwrap(),
            kind: CommandType::parse(kind).unwrap(),
            params: params.as_object().cloned().unwrap(),
        }
    }

    fn statuses(reports: &[Report]) -> Vec<CommandResultStatus> {
        reports.iter().map(|r| r.result.status).collect()
    }

    #[test]
    fn live_mode_is_accepted_done_and_ends_on_the_agenda() {
        let now = Instant::now();
        let mut schedule = Schedule::new(Duration::from_secs(10), now);
        let mut agenda = Agenda::default();
        let cmd = command("live_mode", json!({"minutes": 2, "interval_secs": 1}));
        let reports = obey(&cmd, now, 50.0, &mut schedule, &mut agenda);
        assert_eq!(
            statuses(&reports),
            [CommandResultStatus::Accepted, CommandResultStatus::Done]
        );
        assert_eq!(schedule.interval(), Duration::from_secs(1));
        assert_eq!(agenda.next_at(), Some(now + Duration::from_secs(120)));
        assert_eq!(
            agenda.due(now + Duration::from_secs(120)),
            [Later::LiveEnds]
        );
    }

    #[test]
    fn an_unknown_type_or_a_missing_parameter_fails_with_a_reason() {
        let now = Instant::now();
        let mut schedule = Schedule::new(Duration::from_secs(10), now);
        let mut agenda = Agenda::default();
        for (cmd, reason) in [
            (
                command("teleport", json!({})),
                r#"unknown command type "teleport""#,
            ),
            (
                command("set_interval", json!({})),
                "set_interval needs seconds",
            ),
            (
                command("buzzer", json!({"seconds": 1})),
                "buzzer disabled: battery too low",
            ),
        ] {
            let reports = obey(&cmd, now, 1.0, &mut schedule, &mut agenda);
            assert_eq!(statuses(&reports), [CommandResultStatus::Failed]);
            assert_eq!(reports[0].result.reason.as_deref(), Some(reason));
        }
        assert_eq!(agenda.next_at(), None);
        assert_eq!(schedule.interval(), Duration::from_secs(10));
    }

    #[test]
    fn a_firmware_update_reports_progress_then_installs_then_is_done() {
        let now = Instant::now();
        let mut schedule = Schedule::new(Duration::from_secs(10), now);
        let mut agenda = Agenda::default();
        let cmd = command("firmware_update", json!({"version": "2.0.0"}));
        let first = obey(&cmd, now, 50.0, &mut schedule, &mut agenda);
        assert_eq!(first[0].progress, Some(0));
        let later = agenda.due(now + Duration::from_secs(3));
        let progress: Vec<_> = later
            .iter()
            .filter_map(|l| match l {
                Later::Report(r) => r.progress,
                _ => None,
            })
            .collect();
        assert_eq!(progress, [25, 50, 75, 100]);
        assert_eq!(later[3], Later::FirmwareInstalled("2.0.0".into()));
        let Later::Report(done) = &later[4] else {
            panic!("{later:?}")
        };
        assert_eq!(done.result.status, CommandResultStatus::Done);
    }

    #[test]
    fn a_report_is_the_contracts_command_result_plus_its_progress() {
        let report = Report {
            progress: Some(25),
            ..Report::new(
                &CommandId::parse("fw-1").unwrap(),
                CommandResultStatus::Accepted,
                None,
            )
        };
        let payload = report.payload();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&payload).unwrap(),
            json!({"id": "fw-1", "status": "accepted", "progress": 25})
        );
        assert_eq!(decode_command_result(&payload).unwrap(), report.result);
    }
}
