-- TimescaleDB: positions become a hypertable partitioned by device time, compressed per tracker.
CREATE EXTENSION IF NOT EXISTS timescaledb;
SELECT create_hypertable('positions', 'device_time',
                         chunk_time_interval => INTERVAL '1 day',
                         migrate_data => true);
ALTER TABLE positions SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'tracker_id',
    timescaledb.compress_orderby = 'device_time DESC'
);
-- Late fixes older than this land in compressed chunks, which TimescaleDB 2.11+ accepts.
SELECT add_compression_policy('positions', INTERVAL '7 days');
