-- The kept daily summaries settled by a background pass (src/days.rs) instead of in every batch's
-- transaction. Keeping them at ingest was half of PostgreSQL's CPU per fix: every batch locked,
-- read and rewrote a row per tracker, whatever number of that tracker's fixes it held (one, in a
-- real fleet). The pass folds each tracker's new fixes into its day every
-- `storage.days_settle_interval_secs`; readers add the fixes the pass has not folded yet. The
-- numbers stay exact, bit for bit what the `daily_summaries` view computes (docs/storage.md).
--
-- What each batch still does: its fixes dated before the settle mark (late, or replayed from a
-- spool) leave a note per tracker and day. Every other fix is later than the mark, and so than
-- everything its day's row holds: readers and the next pass find it by that alone.

-- Every kept row holds the fixes of its day up to its `last_fix`, all of them except the ones a
-- note names. Fixes dated before `settled_through` that a batch commits from now on leave a
-- note. The rows are exact now (migration 16's trigger kept them in each batch's transaction).
CREATE TABLE tracker_days_mark (
    one             BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    settled_through TIMESTAMPTZ NOT NULL
);
INSERT INTO tracker_days_mark (settled_through) VALUES (now());

-- A day that fixes dated before the mark were added to, and the earliest of them. Not unique:
-- a batch only appends, and never waits for another; the pass deletes the notes it read.
CREATE TABLE tracker_days_pending (
    tracker_id TEXT NOT NULL,
    day        TIMESTAMPTZ NOT NULL,
    first_fix  TIMESTAMPTZ NOT NULL
);
CREATE INDEX tracker_days_pending_key ON tracker_days_pending (tracker_id, day);

-- Migration 16's trigger carried the row version it read in it; nothing does now.
ALTER TABLE tracker_days DROP COLUMN expected_xmin;

-- A batch's notes. A writer at REPEATABLE READ or above may have read the mark before the pass
-- moved it and still commit after the pass read the fixes: it notes all of its days.
CREATE OR REPLACE FUNCTION pettracker_days_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tracker_days_pending (tracker_id, day, first_fix)
    SELECT tracker_id, date_bin('1 day', device_time, TIMESTAMPTZ '1970-01-01 00:00:00+00'), min(device_time)
    FROM new_fixes
    WHERE device_time < (SELECT settled_through FROM tracker_days_mark)
       OR current_setting('transaction_isolation') <> 'read committed'
    GROUP BY 1, 2;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION pettracker_days_after_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE tracker_days, tracker_days_pending;
    RETURN NULL;
END
$$;

-- One day of one tracker from its fixes before `before`: the arithmetic of the two-argument
-- function (migration 13), on the part of the day the pass has reached. It replaces that one,
-- which nothing calls any more (migration 16's trigger was its last caller).
DROP FUNCTION pettracker_day_from_fixes(TEXT, TIMESTAMPTZ);
CREATE FUNCTION pettracker_day_from_fixes(tracker TEXT, day_start TIMESTAMPTZ, before TIMESTAMPTZ)
RETURNS TABLE (points BIGINT, distance_m DOUBLE PRECISION, moving_s DOUBLE PRECISION,
               first_fix TIMESTAMPTZ, last_fix TIMESTAMPTZ,
               last_lat DOUBLE PRECISION, last_lon DOUBLE PRECISION)
LANGUAGE sql STABLE AS $$
    SELECT count(*),
           coalesce(sum(haversine_m(prev_lat, prev_lon, lat, lon)) FILTER (WHERE prev_lat IS NOT NULL), 0),
           coalesce(sum(moving_segment_s(prev_time, prev_lat, prev_lon, device_time, lat, lon)), 0),
           min(device_time), max(device_time),
           (array_agg(lat ORDER BY device_time DESC))[1],
           (array_agg(lon ORDER BY device_time DESC))[1]
    FROM (SELECT device_time, lat, lon,
                 lag(lat) OVER w AS prev_lat, lag(lon) OVER w AS prev_lon,
                 lag(device_time) OVER w AS prev_time
          FROM positions
          WHERE tracker_id = tracker AND device_time >= day_start
            AND device_time < least(day_start + interval '24 hours', before)
          WINDOW w AS (ORDER BY device_time)) fixes
$$;

-- One day of one tracker over its fixes before `before`, as the view computes it, from what is
-- kept: the day's row extended by the fixes after its last, in device-time order, as running
-- sums whose first term is the stored sum plus the segment from the row's last fix (the same
-- additions in the same order as summing the whole day). The day is computed from its fixes
-- instead when the row cannot be extended: stale (retention deleted some of its fixes), a note
-- of a fix at or before its last, or a last fix at or past `before`. No row when the day has no
-- fixes. The settle pass writes what this returns; readers call it with `before` at infinity.
CREATE FUNCTION pettracker_day_settled(tracker TEXT, day_start TIMESTAMPTZ, before TIMESTAMPTZ)
RETURNS TABLE (points BIGINT, distance_m DOUBLE PRECISION, moving_s DOUBLE PRECISION,
               first_fix TIMESTAMPTZ, last_fix TIMESTAMPTZ,
               last_lat DOUBLE PRECISION, last_lon DOUBLE PRECISION)
LANGUAGE plpgsql STABLE
SET enable_hashjoin = off SET enable_mergejoin = off AS $$
DECLARE
    kept tracker_days%ROWTYPE;
    late TIMESTAMPTZ;
    day_end TIMESTAMPTZ := least(day_start + interval '24 hours', before);
    k BIGINT;
    metres DOUBLE PRECISION;
    seconds DOUBLE PRECISION;
    first_new TIMESTAMPTZ;
    last_new TIMESTAMPTZ;
    lat_new DOUBLE PRECISION;
    lon_new DOUBLE PRECISION;
BEGIN
    SELECT * INTO kept FROM tracker_days d WHERE d.tracker_id = tracker AND d.day = day_start;
    SELECT min(n.first_fix) INTO late FROM tracker_days_pending n
    WHERE n.tracker_id = tracker AND n.day = day_start;
    IF kept.stale OR kept.last_fix >= day_end OR late <= kept.last_fix THEN
        RETURN QUERY SELECT * FROM pettracker_day_from_fixes(tracker, day_start, day_end) r
                     WHERE r.points > 0;
        RETURN;
    END IF;

    -- Without a row nothing of the day is kept: every fix is new (timestamps are whole
    -- microseconds, so "after a microsecond before the day" is "from the day's start").
    WITH fixes AS (
        SELECT p.device_time, p.lat, p.lon, row_number() OVER w AS n,
               lag(p.device_time) OVER w AS prev_time,
               lag(p.lat) OVER w AS prev_lat, lag(p.lon) OVER w AS prev_lon
        FROM positions p
        WHERE p.tracker_id = tracker
          AND p.device_time > coalesce(kept.last_fix, day_start - interval '1 microsecond')
          AND p.device_time < day_end
        WINDOW w AS (ORDER BY p.device_time)
    ), steps AS (
        SELECT f.n, f.device_time, f.lat, f.lon,
               CASE WHEN f.n > 1 THEN haversine_m(f.prev_lat, f.prev_lon, f.lat, f.lon)
                    WHEN kept.last_lat IS NULL THEN coalesce(kept.distance_m, 0)
                    ELSE kept.distance_m + haversine_m(kept.last_lat, kept.last_lon, f.lat, f.lon) END AS metres,
               CASE WHEN f.n > 1
                    THEN moving_segment_s(f.prev_time, f.prev_lat, f.prev_lon, f.device_time, f.lat, f.lon)
                    ELSE coalesce(kept.moving_s, 0) + moving_segment_s(kept.last_fix, kept.last_lat, kept.last_lon,
                                                                       f.device_time, f.lat, f.lon) END AS seconds
        FROM fixes f
    )
    SELECT count(*), sum(s.metres ORDER BY s.n), sum(s.seconds ORDER BY s.n),
           min(s.device_time), max(s.device_time),
           (array_agg(s.lat ORDER BY s.n DESC))[1], (array_agg(s.lon ORDER BY s.n DESC))[1]
    INTO k, metres, seconds, first_new, last_new, lat_new, lon_new
    FROM steps s;

    IF k = 0 THEN
        IF kept.points > 0 THEN
            RETURN QUERY SELECT kept.points, kept.distance_m, kept.moving_s, kept.first_fix,
                                kept.last_fix, kept.last_lat, kept.last_lon;
        END IF;
        RETURN;
    END IF;
    RETURN QUERY SELECT coalesce(kept.points, 0) + k, metres, seconds,
                        coalesce(kept.first_fix, first_new), last_new, lat_new, lon_new;
END
$$;
