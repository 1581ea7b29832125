CREATE MATERIALIZED VIEW daily_summaries WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT tracker_id,
       time_bucket(INTERVAL '1 day', device_time) AS day,
       count(*)                   AS points,
       min(device_time)           AS first_fix,
       max(device_time)           AS last_fix,
       first(lat, device_time)    AS first_lat,
       first(lon, device_time)    AS first_lon,
       last(lat, device_time)     AS last_lat,
       last(lon, device_time)     AS last_lon,
       path_length_m(lat, lon ORDER BY device_time) AS distance_m,
       moving_time_s(lat, lon, device_time ORDER BY device_time) AS moving_s
FROM positions
GROUP BY tracker_id, day
WITH NO DATA
