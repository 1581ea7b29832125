-- The view of 0003 with moving_s appended, computed with lag() like distance_m.
CREATE OR REPLACE VIEW daily_summaries AS
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
                                                             AS distance_m,
       coalesce(sum(moving_segment_s(prev_time, prev_lat, prev_lon, device_time, lat, lon)), 0)
                                                             AS moving_s
FROM (SELECT tracker_id, device_time, lat, lon,
             date_trunc('day', device_time, 'UTC') AS day,
             lag(lat) OVER w AS prev_lat,
             lag(lon) OVER w AS prev_lon,
             lag(device_time) OVER w AS prev_time
      FROM positions
      WINDOW w AS (PARTITION BY tracker_id, date_trunc('day', device_time, 'UTC') ORDER BY device_time)) x
GROUP BY tracker_id, day
