-- The retention job deletes the oldest 5-minute intervals a chunk at a time; without an index on
-- `bucket` each chunk would scan the table from its start. Rows arrive in time order, so a BRIN
-- index (a few pages for billions of rows) finds the old ones, as it does for `positions`.
CREATE INDEX positions_5m_bucket_brin ON positions_5m USING brin (bucket);
