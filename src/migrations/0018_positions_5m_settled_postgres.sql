-- The 5-minute intervals of bucketed history (`positions_5m`, migration 10) kept by the settle
-- pass (src/days.rs) instead of in every batch's statement. Keeping them at ingest cost a row
-- per tracker and interval in every batch: 24 % of the batch transaction's CPU when it holds
-- about one fix per tracker (BENCHMARKS.md, issue 17). The pass probes each interval of the
-- fixes since its last mark once instead.
--
-- Every row of an interval that ends at or before `rolled_through` holds the last fix of the
-- interval, except in the intervals of a day that a note (`tracker_days_pending`, migration 17)
-- names, from the note's first fix on. Readers take those intervals, and the ones after the
-- mark, from `positions` (`pettracker_5m_exact_before`), so a read is the same before and after
-- a pass. The pass moves this mark in the transaction that writes the rows, after the days'
-- mark has moved: fixes dated before it that commit later leave the same notes.

CREATE TABLE positions_5m_mark (
    one            BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    rolled_through TIMESTAMPTZ NOT NULL
);
-- Batches kept every interval until now; the days' mark is not later than now.
INSERT INTO positions_5m_mark (rolled_through) SELECT settled_through FROM tracker_days_mark;

-- The start of the first interval of `tracker` that `positions_5m` may not hold exactly: rows of
-- intervals before it are exact.
CREATE FUNCTION pettracker_5m_exact_before(tracker TEXT) RETURNS TIMESTAMPTZ
LANGUAGE sql STABLE AS $$
    SELECT date_bin('5 minutes',
                    least((SELECT rolled_through FROM positions_5m_mark),
                          (SELECT min(first_fix) FROM tracker_days_pending WHERE tracker_id = tracker)),
                    TIMESTAMPTZ '1970-01-01 00:00:00+00')
$$;
