-- The same columns as TimescaleDB's continuous aggregate, computed on read. The distance uses
-- lag() rather than the path_length_m aggregate: a window over the ordered rows is several times
-- cheaper than calling an SQL function per row, and on read that is what counts. Filters on
-- tracker_id and day reach the scan, because both are what the window is partitioned by.
CREATE VIEW daily_summaries AS
SELECT tracker_id,
       day,
       count(*)                                              AS points,
       min(device_time)                                      AS first_fix,
       max(device_time)                                      AS last_fix,
       (array_agg(lat ORDER BY device_time ASC))[1]          AS first_lat,
       (array_agg(lon ORDER BY device_time ASC))[1]          AS first_lon,
       (array_agg(lat ORDER BY device_time DESC))[1]         AS last_lat,
       (array_agg(lon ORDER BY device_time DESC))[1]         AS last_lon,
       coalesce(sum(haversine_m(prev_lat, prev_lon, lat, lon)) FILTER (WHERE prev_lat IS NOT NULL), 0)
                                                             AS distance_m
FROM (SELECT tracker_id, device_time, lat, lon,
             date_trunc('day', device_time, 'UTC') AS day,
             lag(lat) OVER w AS prev_lat,
             lag(lon) OVER w AS prev_lon
      FROM positions
      WINDOW w AS (PARTITION BY tracker_id, date_trunc('day', device_time, 'UTC') ORDER BY device_time)) x
GROUP BY tracker_id, day
