-- The same columns as TimescaleDB's continuous aggregate, computed on read.
CREATE VIEW daily_summaries AS
SELECT tracker_id,
       date_trunc('day', device_time, 'UTC')                 AS day,
       count(*)                                              AS points,
       min(device_time)                                      AS first_fix,
       max(device_time)                                      AS last_fix,
       (array_agg(lat ORDER BY device_time ASC))[1]          AS first_lat,
       (array_agg(lon ORDER BY device_time ASC))[1]          AS first_lon,
       (array_agg(lat ORDER BY device_time DESC))[1]         AS last_lat,
       (array_agg(lon ORDER BY device_time DESC))[1]         AS last_lon,
       path_length_m(lat, lon ORDER BY device_time)          AS distance_m
FROM positions
GROUP BY tracker_id, day
