-- Daily summaries kept in step with the fixes on plain PostgreSQL (TimescaleDB has its continuous
-- aggregate, and hypertables take no triggers with transition tables). One row per tracker and
-- UTC day holding exactly what the `daily_summaries` view computes from that day's fixes, plus the
-- day's last position, so that fixes appended after it extend the row without reading the day
-- again. Triggers on `positions` keep it, in the transaction that writes the fixes: whatever
-- writes them (the batch write path, the spool's replay, seed, tests) cannot forget to.
CREATE TABLE tracker_days (
    tracker_id  TEXT NOT NULL,
    day         TIMESTAMPTZ NOT NULL,
    points      BIGINT NOT NULL DEFAULT 0,
    distance_m  DOUBLE PRECISION NOT NULL DEFAULT 0,
    moving_s    DOUBLE PRECISION NOT NULL DEFAULT 0,
    first_fix   TIMESTAMPTZ,
    last_fix    TIMESTAMPTZ,
    last_lat    DOUBLE PRECISION,
    last_lon    DOUBLE PRECISION,
    -- Some of the day's fixes were deleted (retention) or changed since the row was computed:
    -- readers compute the day from the fixes, the next fix stored for the day recomputes the row,
    -- and retention deletes it once the day has no fixes left.
    stale       BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (tracker_id, day)
);
-- Retention's search for emptied days (src/retention.rs).
CREATE INDEX tracker_days_stale ON tracker_days (day) WHERE stale;

-- One day of one tracker from its fixes, the same arithmetic as the view (and the API's reading
-- of partial days): great circle and moving time between consecutive fixes, summed in
-- device-time order.
CREATE FUNCTION pettracker_day_from_fixes(tracker TEXT, day_start TIMESTAMPTZ)
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
            AND device_time < day_start + interval '1 day'
          WINDOW w AS (ORDER BY device_time)) fixes
$$;

-- After each statement that inserts fixes: per tracker and day it touched, either extend the row
-- (every new fix is later than the day's last: the common case, one pass over the new fixes) or
-- compute the day again from its fixes (a late fix in the middle of a day changes the distance
-- between its neighbours; bounded by one day of one tracker).
CREATE FUNCTION pettracker_days_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Lock the rows first (created empty when new), in key order: concurrent writers of one
    -- tracker's day take turns, and the statements below, which take a new snapshot, see every
    -- fix the writer before us committed.
    INSERT INTO tracker_days AS d (tracker_id, day)
    SELECT DISTINCT tracker_id, date_trunc('day', device_time, 'UTC') FROM new_fixes ORDER BY 1, 2
    ON CONFLICT (tracker_id, day) DO UPDATE SET points = d.points;

    -- Late fixes, or a stale row: the whole day again. First, so that the rows it settles are
    -- no longer "appended to" below.
    WITH late AS MATERIALIZED (
        SELECT g.tracker_id, g.day
        FROM (SELECT tracker_id, date_trunc('day', device_time, 'UTC') AS day,
                     min(device_time) AS first_new
              FROM new_fixes GROUP BY 1, 2) g
        JOIN tracker_days d ON d.tracker_id = g.tracker_id AND d.day = g.day
        WHERE d.stale OR (d.points > 0 AND g.first_new < d.last_fix)
    )
    UPDATE tracker_days d
    SET points = r.points, distance_m = r.distance_m, moving_s = r.moving_s,
        first_fix = r.first_fix, last_fix = r.last_fix, last_lat = r.last_lat,
        last_lon = r.last_lon, stale = false
    FROM late CROSS JOIN LATERAL pettracker_day_from_fixes(late.tracker_id, late.day) r
    WHERE d.tracker_id = late.tracker_id AND d.day = late.day;

    -- Appended fixes: the sums go on from the stored ones in device-time order, as running sums
    -- over the day's new segments whose first term is the stored sum plus the segment from the
    -- day's last fix: the same additions in the same order as summing the whole day, so the row
    -- stays bit for bit what the view computes. One sort of the statement's fixes, no per-day
    -- sorts.
    WITH fixes AS (
        SELECT tracker_id, day, device_time, lat, lon,
               row_number() OVER w AS n, count(*) OVER g AS k, min(device_time) OVER g AS first_new,
               lag(device_time) OVER w AS prev_time,
               lag(lat) OVER w AS prev_lat, lag(lon) OVER w AS prev_lon
        FROM (SELECT tracker_id, date_trunc('day', device_time, 'UTC') AS day, device_time, lat, lon
              FROM new_fixes) x
        WINDOW g AS (PARTITION BY tracker_id, day), w AS (g ORDER BY device_time)
    ), steps AS (
        -- haversine_m of a missing neighbour is not NULL (least() skips NULLs): a day's first
        -- fix adds no distance.
        SELECT f.tracker_id, f.day, f.n, f.k, f.first_new, f.device_time, f.lat, f.lon,
               CASE WHEN f.n > 1 THEN haversine_m(f.prev_lat, f.prev_lon, f.lat, f.lon)
                    WHEN d.last_lat IS NULL THEN d.distance_m
                    ELSE d.distance_m + haversine_m(d.last_lat, d.last_lon, f.lat, f.lon) END AS metres,
               CASE WHEN f.n > 1
                    THEN moving_segment_s(f.prev_time, f.prev_lat, f.prev_lon, f.device_time, f.lat, f.lon)
                    ELSE d.moving_s + moving_segment_s(d.last_fix, d.last_lat, d.last_lon,
                                                       f.device_time, f.lat, f.lon) END AS seconds
        FROM fixes f JOIN tracker_days d ON d.tracker_id = f.tracker_id AND d.day = f.day
        WHERE NOT d.stale AND (d.points = 0 OR f.first_new > d.last_fix)
    ), sums AS (
        SELECT tracker_id, day, n, k, first_new, device_time, lat, lon,
               sum(metres) OVER s AS distance_m, sum(seconds) OVER s AS moving_s
        FROM steps
        WINDOW s AS (PARTITION BY tracker_id, day ORDER BY n ROWS UNBOUNDED PRECEDING)
    )
    UPDATE tracker_days d
    SET points = d.points + s.k, distance_m = s.distance_m, moving_s = s.moving_s,
        first_fix = coalesce(d.first_fix, s.first_new), last_fix = s.device_time,
        last_lat = s.lat, last_lon = s.lon
    FROM sums s
    WHERE s.n = s.k AND d.tracker_id = s.tracker_id AND d.day = s.day;
    RETURN NULL;
END
$$;

-- After fixes are deleted (retention) or changed: their days are marked stale, cheaply, once per
-- day; the row is settled by the next fix of the day or deleted by retention when the day is
-- empty (src/retention.rs).
CREATE FUNCTION pettracker_days_after_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tracker_days AS d (tracker_id, day, stale)
    SELECT DISTINCT tracker_id, date_trunc('day', device_time, 'UTC'), true FROM old_fixes ORDER BY 1, 2
    ON CONFLICT (tracker_id, day) DO UPDATE SET stale = true WHERE NOT d.stale;
    RETURN NULL;
END
$$;

CREATE FUNCTION pettracker_days_after_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tracker_days AS d (tracker_id, day, stale)
    SELECT DISTINCT tracker_id, date_trunc('day', device_time, 'UTC'), true
    FROM (SELECT tracker_id, device_time FROM old_fixes
          UNION ALL SELECT tracker_id, device_time FROM new_fixes) f ORDER BY 1, 2
    ON CONFLICT (tracker_id, day) DO UPDATE SET stale = true WHERE NOT d.stale;
    RETURN NULL;
END
$$;

CREATE FUNCTION pettracker_days_after_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE tracker_days;
    RETURN NULL;
END
$$;

-- The days of the fixes stored so far (the view's arithmetic, the same sums in the same order),
-- in the same transaction as the triggers: no fix falls between.
INSERT INTO tracker_days (tracker_id, day, points, distance_m, moving_s, first_fix, last_fix,
                          last_lat, last_lon)
SELECT tracker_id, day, points, distance_m, moving_s, first_fix, last_fix, last_lat, last_lon
FROM daily_summaries;

CREATE TRIGGER tracker_days_insert AFTER INSERT ON positions
    REFERENCING NEW TABLE AS new_fixes
    FOR EACH STATEMENT EXECUTE FUNCTION pettracker_days_after_insert();
CREATE TRIGGER tracker_days_delete AFTER DELETE ON positions
    REFERENCING OLD TABLE AS old_fixes
    FOR EACH STATEMENT EXECUTE FUNCTION pettracker_days_after_change();
CREATE TRIGGER tracker_days_update AFTER UPDATE ON positions
    REFERENCING OLD TABLE AS old_fixes NEW TABLE AS new_fixes
    FOR EACH STATEMENT EXECUTE FUNCTION pettracker_days_after_update();
CREATE TRIGGER tracker_days_truncate AFTER TRUNCATE ON positions
    FOR EACH STATEMENT EXECUTE FUNCTION pettracker_days_after_truncate();
