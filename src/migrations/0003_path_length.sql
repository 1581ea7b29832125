-- Great-circle distance in metres (haversine, mean Earth radius). A plain SQL expression, so
-- the planner inlines it where it is used in a query.
CREATE OR REPLACE FUNCTION haversine_m(lat1 DOUBLE PRECISION, lon1 DOUBLE PRECISION,
                                       lat2 DOUBLE PRECISION, lon2 DOUBLE PRECISION)
RETURNS DOUBLE PRECISION
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 2 * 6371008.8 * asin(least(1, sqrt(
              power(sin(radians(lat2 - lat1) / 2), 2)
            + cos(radians(lat1)) * cos(radians(lat2)) * power(sin(radians(lon2 - lon1) / 2), 2))))
$$;

-- path_length_m(lat, lon ORDER BY device_time): metres along a track, great-circle (haversine,
-- mean Earth radius) between consecutive points. An aggregate rather than a window function, so
-- TimescaleDB's continuous aggregates can hold it (they allow no window functions).
-- The state is {metres so far, last lat, last lon}; NULL before the first point.
CREATE OR REPLACE FUNCTION pettracker_path_step(state DOUBLE PRECISION[], lat DOUBLE PRECISION, lon DOUBLE PRECISION)
RETURNS DOUBLE PRECISION[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN state IS NULL THEN ARRAY[0, lat, lon]
    -- The formula of haversine_m, spelled out: TimescaleDB refreshes continuous aggregates with
    -- a search_path of pg_catalog only, where an unqualified haversine_m would not be found.
    ELSE ARRAY[state[1] + 2 * 6371008.8 * asin(least(1, sqrt(
              power(sin(radians(lat - state[2]) / 2), 2)
            + cos(radians(state[2])) * cos(radians(lat)) * power(sin(radians(lon - state[3]) / 2), 2)))),
          lat, lon]
    END
$$;

CREATE OR REPLACE FUNCTION pettracker_path_final(state DOUBLE PRECISION[])
RETURNS DOUBLE PRECISION
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT coalesce(state[1], 0) $$;

CREATE OR REPLACE AGGREGATE path_length_m(DOUBLE PRECISION, DOUBLE PRECISION) (
    SFUNC = pettracker_path_step,
    STYPE = DOUBLE PRECISION[],
    FINALFUNC = pettracker_path_final
);
