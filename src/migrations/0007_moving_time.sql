-- moving_time_s(lat, lon, device_time ORDER BY device_time): seconds spent moving. The time
-- between two consecutive fixes counts when they are at most 5 minutes apart (a longer gap is a
-- spell without coverage, not a walk) and the straight line between them was covered at 0.5 m/s
-- (1.8 km/h, below a slow walk) or faster. An aggregate like path_length_m, for the same reason:
-- TimescaleDB's continuous aggregates allow no window functions.
-- The state is {seconds so far, last lat, last lon, last time as epoch seconds}.
CREATE OR REPLACE FUNCTION pettracker_moving_step(state DOUBLE PRECISION[], lat DOUBLE PRECISION,
                                                  lon DOUBLE PRECISION, t TIMESTAMPTZ)
RETURNS DOUBLE PRECISION[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN state IS NULL THEN ARRAY[0, lat, lon, e]
    ELSE ARRAY[state[1] + CASE WHEN e - state[4] > 0 AND e - state[4] <= 300
                                    AND d >= 0.5 * (e - state[4])
                               THEN e - state[4] ELSE 0 END,
               lat, lon, e]
    END
    -- haversine_m spelled out, as in pettracker_path_step: refreshes run with a pg_catalog-only
    -- search_path.
    FROM (SELECT extract(epoch FROM t)::DOUBLE PRECISION AS e,
                 2 * 6371008.8 * asin(least(1, sqrt(
                       power(sin(radians(lat - state[2]) / 2), 2)
                     + cos(radians(state[2])) * cos(radians(lat))
                       * power(sin(radians(lon - state[3]) / 2), 2)))) AS d) x
$$;

CREATE OR REPLACE FUNCTION pettracker_moving_final(state DOUBLE PRECISION[])
RETURNS DOUBLE PRECISION
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT coalesce(state[1], 0) $$;

CREATE OR REPLACE AGGREGATE moving_time_s(DOUBLE PRECISION, DOUBLE PRECISION, TIMESTAMPTZ) (
    SFUNC = pettracker_moving_step,
    STYPE = DOUBLE PRECISION[],
    FINALFUNC = pettracker_moving_final
);

-- The same rule for one pair of consecutive fixes, for queries with lag(): the seconds between
-- them if they count as moving, else 0.
CREATE OR REPLACE FUNCTION moving_segment_s(prev_time TIMESTAMPTZ, prev_lat DOUBLE PRECISION,
                                            prev_lon DOUBLE PRECISION, t TIMESTAMPTZ,
                                            lat DOUBLE PRECISION, lon DOUBLE PRECISION)
RETURNS DOUBLE PRECISION
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN t - prev_time > INTERVAL '0' AND t - prev_time <= INTERVAL '5 minutes'
                     AND haversine_m(prev_lat, prev_lon, lat, lon)
                         >= 0.5 * extract(epoch FROM t - prev_time)
                THEN extract(epoch FROM t - prev_time)::DOUBLE PRECISION
                ELSE 0 END
$$;
