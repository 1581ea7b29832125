-- The daily-summary trigger (migrations 13 and 14) in two statements instead of three: the late
-- and the appended days of a statement's fixes are settled by one UPDATE, which reads each day's
-- row once (at its first new fix) instead of at every fix and again for the late check, and the
-- UTC day is binned (`date_bin`, plain arithmetic) instead of truncated in a time zone (a zone
-- lookup per fix; the same instant either way). Same rows, same sums, same order of additions.
-- Measured with the ingest and fleet benchmarks (BENCHMARKS.md, "Ingest: where the cores go").
CREATE OR REPLACE FUNCTION pettracker_days_after_insert() RETURNS trigger
LANGUAGE plpgsql
SET enable_hashjoin = off SET enable_mergejoin = off AS $$
BEGIN
    -- Lock the rows first (created empty when new), in key order: concurrent writers of one
    -- tracker's day take turns, and the statement below, which takes a new snapshot, sees every
    -- fix the writer before us committed.
    INSERT INTO tracker_days AS d (tracker_id, day)
    SELECT DISTINCT tracker_id, date_bin('1 day', device_time, TIMESTAMPTZ '1970-01-01 00:00:00+00') FROM new_fixes ORDER BY 1, 2
    ON CONFLICT (tracker_id, day) DO UPDATE SET points = d.points;

    -- One pass for both cases. Per tracker and day: appended fixes (all later than the day's
    -- last) extend the sums in device-time order, as running sums whose first term is the stored
    -- sum plus the segment from the day's last fix: the same additions in the same order as
    -- summing the whole day, so the row stays bit for bit what the view computes. A late fix or
    -- a stale row computes the whole day again from its fixes. The day's row is read once, at
    -- its first new fix, and updated once, at its last.
    WITH fixes AS (
        SELECT tracker_id, day, device_time, lat, lon,
               row_number() OVER w AS n, count(*) OVER g AS k, min(device_time) OVER g AS first_new,
               lag(device_time) OVER w AS prev_time,
               lag(lat) OVER w AS prev_lat, lag(lon) OVER w AS prev_lon
        FROM (SELECT tracker_id, date_bin('1 day', device_time, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS day, device_time, lat, lon
              FROM new_fixes) x
        WINDOW g AS (PARTITION BY tracker_id, day), w AS (g ORDER BY device_time)
    ), steps AS (
        SELECT f.tracker_id, f.day, f.n, f.k, f.first_new, f.device_time, f.lat, f.lon,
               d.stale OR (d.points > 0 AND f.first_new < d.last_fix) AS late,
               NOT d.stale AND (d.points = 0 OR f.first_new > d.last_fix) AS appended,
               CASE WHEN f.n > 1 THEN haversine_m(f.prev_lat, f.prev_lon, f.lat, f.lon)
                    WHEN d.last_lat IS NULL THEN d.distance_m
                    ELSE d.distance_m + haversine_m(d.last_lat, d.last_lon, f.lat, f.lon) END AS metres,
               CASE WHEN f.n > 1
                    THEN moving_segment_s(f.prev_time, f.prev_lat, f.prev_lon, f.device_time, f.lat, f.lon)
                    ELSE d.moving_s + moving_segment_s(d.last_fix, d.last_lat, d.last_lon,
                                                       f.device_time, f.lat, f.lon) END AS seconds
        -- OFFSET 0 keeps `f.n = 1` a one-time filter: one key probe per day, not per fix.
        FROM fixes f
        LEFT JOIN LATERAL (SELECT * FROM tracker_days d
                           WHERE d.tracker_id = f.tracker_id AND d.day = f.day AND f.n = 1 OFFSET 0) d ON true
    ), sums AS (
        SELECT tracker_id, day, n, k, first_new, device_time, lat, lon,
               first_value(late) OVER s AS late, first_value(appended) OVER s AS appended,
               sum(metres) OVER s AS distance_m, sum(seconds) OVER s AS moving_s
        FROM steps
        WINDOW s AS (PARTITION BY tracker_id, day ORDER BY n ROWS UNBOUNDED PRECEDING)
    )
    UPDATE tracker_days d
    SET points     = CASE WHEN s.late THEN r.points ELSE d.points + s.k END,
        distance_m = CASE WHEN s.late THEN r.distance_m ELSE s.distance_m END,
        moving_s   = CASE WHEN s.late THEN r.moving_s ELSE s.moving_s END,
        first_fix  = CASE WHEN s.late THEN r.first_fix ELSE coalesce(d.first_fix, s.first_new) END,
        last_fix   = CASE WHEN s.late THEN r.last_fix ELSE s.device_time END,
        last_lat   = CASE WHEN s.late THEN r.last_lat ELSE s.lat END,
        last_lon   = CASE WHEN s.late THEN r.last_lon ELSE s.lon END,
        stale      = false
    -- OFFSET 0 keeps `s.late` a one-time filter: appended days never read their fixes.
    FROM sums s
    LEFT JOIN LATERAL (SELECT * FROM pettracker_day_from_fixes(s.tracker_id, s.day) WHERE s.late OFFSET 0) r ON true
    WHERE s.n = s.k AND (s.late OR s.appended) AND d.tracker_id = s.tracker_id AND d.day = s.day;
    RETURN NULL;
END
$$;
