-- The retention job deletes finished commands, old alerts and finished webhook deliveries a chunk
-- at a time, oldest first; these indexes find them without scanning each table.
CREATE INDEX commands_finished_idx ON commands (updated_at)
    WHERE status IN ('succeeded', 'failed', 'expired', 'cancelled');
CREATE INDEX alerts_created_idx ON alerts (created_at);
CREATE INDEX webhook_deliveries_finished_idx ON webhook_deliveries (created_at)
    WHERE status <> 'pending';
