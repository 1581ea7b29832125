//! The collar's buffer of fixes: each kept until an ack covers it, sent once as it is recorded,
//! and sent again after a reconnect or when no ack came in time (docs/protocol.md, *Batching,
//! `seq` and acks*).

use std::collections::VecDeque;
use std::time::Duration;

use gateway::protocol::RawFix;
use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct Outbox {
    /// Oldest first; every fix carries its `seq`.
    fixes: VecDeque<RawFix>,
    /// Fixes the collar can hold; beyond it the oldest are lost, as on a full flash.
    limit: usize,
    /// The last `seq` given to a fix.
    seq: u64,
    /// Highest `seq` handed to the connection (fixes above it have not been sent yet).
    sent_up_to: u64,
    /// Highest `seq` the server acknowledged (0: none yet).
    acked: u64,
    /// When the oldest send still unanswered went out: the ack timeout runs from here.
    last_progress: Instant,
}

impl Outbox {
    /// An empty buffer whose first fix gets `seq` `after + 1`.
    pub fn new(after: u64, limit: usize) -> Outbox {
        Outbox {
            fixes: VecDeque::new(),
            limit: limit.max(1),
            seq: after,
            sent_up_to: 0,
            acked: 0,
            last_progress: Instant::now(),
        }
    }

    /// Keeps `fix` under the next `seq`.
    pub fn record(&mut self, mut fix: RawFix) {
        self.seq += 1;
        fix.seq = Some(self.seq);
        self.fixes.push_back(fix);
        while self.fixes.len() > self.limit {
            self.fixes.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.fixes.len()
    }

    /// The `seq` of the newest fix recorded.
    pub fn last_seq(&self) -> u64 {
        self.seq
    }

    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The fixes recorded since the last send.
    pub fn fresh(&mut self, now: Instant) -> Vec<RawFix> {
        let sent_up_to = self.sent_up_to;
        let fresh: Vec<RawFix> = self
            .fixes
            .iter()
            .filter(|f| seq(f) > sent_up_to)
            .copied()
            .collect();
        // With nothing older waiting for its ack, the timeout starts with this send.
        let outstanding = self.fixes.iter().any(|f| seq(f) <= sent_up_to);
        if !fresh.is_empty() && !outstanding {
            self.last_progress = now;
        }
        fresh
    }

    /// Every fix still held, to send again; the ack timeout starts over.
    pub fn all(&mut self, now: Instant) -> Vec<RawFix> {
        self.last_progress = now;
        self.fixes.iter().copied().collect()
    }

    /// Whether the fix with `seq` went out before (the send in progress is a re-send of it).
    pub fn was_sent(&self, fix: &RawFix) -> bool {
        seq(fix) <= self.sent_up_to
    }

    /// The connection took every fix up to `fixes`' last.
    pub fn sent(&mut self, fixes: &[RawFix]) {
        if let Some(last) = fixes.last() {
            self.sent_up_to = self.sent_up_to.max(seq(last));
        }
    }

    /// When to send everything again if no ack comes first; `None` with nothing held.
    pub fn resend_at(&self, timeout: Duration) -> Option<Instant> {
        (!self.fixes.is_empty()).then(|| self.last_progress + timeout)
    }

    /// The server acknowledged every fix up to `seq`: they are forgotten. An ack below one
    /// already received changes nothing (returns false).
    pub fn ack(&mut self, seq_acked: u64, now: Instant) -> bool {
        if seq_acked <= self.acked {
            return false;
        }
        self.acked = seq_acked;
        self.fixes.retain(|f| seq(f) > seq_acked);
        self.last_progress = now;
        true
    }
}

fn seq(fix: &RawFix) -> u64 {
    // Every fix gets its seq in `record`.
    fix.seq.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn fix() -> RawFix {
        crate::load::synthetic_fix(Utc::now(), 0)
    }

    fn seqs(fixes: &[RawFix]) -> Vec<u64> {
        fixes.iter().map(seq).collect()
    }

    #[test]
    fn fixes_get_consecutive_seqs_after_the_starting_point() {
        let mut outbox = Outbox::new(1000, 10);
        outbox.record(fix());
        outbox.record(fix());
        assert_eq!(seqs(&outbox.all(Instant::now())), [1001, 1002]);
        assert_eq!(outbox.last_seq(), 1002);
    }

    #[test]
    fn only_fixes_recorded_since_the_last_send_are_fresh() {
        let now = Instant::now();
        let mut outbox = Outbox::new(0, 10);
        outbox.record(fix());
        let first = outbox.fresh(now);
        outbox.sent(&first);
        outbox.record(fix());
        outbox.record(fix());
        assert_eq!(seqs(&outbox.fresh(now)), [2, 3]);
        assert!(outbox.was_sent(&first[0]));
    }

    #[test]
    fn an_ack_forgets_every_fix_up_to_its_seq_and_an_older_ack_changes_nothing() {
        let now = Instant::now();
        let mut outbox = Outbox::new(0, 10);
        for _ in 0..5 {
            outbox.record(fix());
        }
        assert!(outbox.ack(3, now));
        assert_eq!(seqs(&outbox.all(now)), [4, 5]);
        assert!(!outbox.ack(2, now));
        assert_eq!(outbox.len(), 2);
        assert_eq!(outbox.acked(), 3);
        assert!(outbox.ack(5, now));
        assert_eq!(outbox.resend_at(Duration::from_secs(1)), None);
    }

    #[test]
    fn a_full_buffer_loses_its_oldest_fixes() {
        let mut outbox = Outbox::new(0, 3);
        for _ in 0..5 {
            outbox.record(fix());
        }
        assert_eq!(seqs(&outbox.all(Instant::now())), [3, 4, 5]);
    }

    #[test]
    fn the_ack_timeout_runs_from_the_oldest_send_still_unanswered() {
        let timeout = Duration::from_secs(30);
        let start = Instant::now();
        let mut outbox = Outbox::new(0, 10);
        outbox.record(fix());
        let first = outbox.fresh(start);
        outbox.sent(&first);
        assert_eq!(outbox.resend_at(timeout), Some(start + timeout));
        // A later send while the first is unanswered does not push the timeout back.
        outbox.record(fix());
        let second = outbox.fresh(start + Duration::from_secs(10));
        outbox.sent(&second);
        assert_eq!(outbox.resend_at(timeout), Some(start + timeout));
        // Sending everything again starts it over.
        outbox.all(start + Duration::from_secs(31));
        assert_eq!(
            outbox.resend_at(timeout),
            Some(start + Duration::from_secs(31) + timeout)
        );
    }
}
