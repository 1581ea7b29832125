-- Plain PostgreSQL: the primary key serves per-tracker time ranges; BRIN keeps retention deletes cheap.
CREATE INDEX positions_device_time_brin ON positions USING brin (device_time);
