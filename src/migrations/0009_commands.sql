-- Commands to collars, each tracked through its lifecycle, and re-running dead letters.
--
-- queued -> sent -> delivered -> succeeded | failed; expired when its TTL passes first;
-- cancelled by its owner. `retry` re-triggers a failed or expired one as a new attempt of the
-- same request. Every transition is a row of command_events, so the history is complete.
CREATE TABLE commands (
    -- Sent to the collar as the command's `id` (1-64 printable characters).
    id              TEXT PRIMARY KEY,
    tracker_id      TEXT NOT NULL REFERENCES trackers (tracker_id) ON DELETE CASCADE,
    type            TEXT NOT NULL,
    params          JSONB NOT NULL,
    status          TEXT NOT NULL CHECK (status IN
                        ('queued', 'sent', 'delivered', 'succeeded', 'failed', 'expired', 'cancelled')),
    reason          TEXT,
    created_by      BIGINT REFERENCES users (id) ON DELETE SET NULL,
    -- The application (API key) that asked; it sees the requests it created.
    api_key_id      BIGINT REFERENCES api_keys (id) ON DELETE SET NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    ttl_secs        INTEGER NOT NULL CHECK (ttl_secs > 0),
    expires_at      TIMESTAMPTZ NOT NULL,
    -- Which trigger this is: 1, then +1 for each `retry`.
    attempt         INTEGER NOT NULL DEFAULT 1,
    -- Publishes of the current attempt, and when to publish again if the collar stays silent.
    sends           INTEGER NOT NULL DEFAULT 0,
    next_send_at    TIMESTAMPTZ
);
CREATE INDEX commands_tracker_idx ON commands (tracker_id, created_at);
CREATE INDEX commands_open_idx ON commands (status, next_send_at)
    WHERE status IN ('queued', 'sent', 'delivered');

CREATE TABLE command_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    command_id  TEXT NOT NULL REFERENCES commands (id) ON DELETE CASCADE,
    at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    status      TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    reason      TEXT
);
CREATE INDEX command_events_command_idx ON command_events (command_id, id);

-- Every transition is announced, so any pettracker process (its live feed) can pass it on.
CREATE OR REPLACE FUNCTION pettracker_command_event_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pettracker_command_event',
        json_build_object('tracker_id', (SELECT tracker_id FROM commands WHERE id = NEW.command_id),
                          'id', NEW.command_id, 'status', NEW.status,
                          'attempt', NEW.attempt, 'reason', NEW.reason, 'at', NEW.at)::text);
    RETURN NEW;
END
$$;
CREATE TRIGGER command_events_notify AFTER INSERT ON command_events
    FOR EACH ROW EXECUTE FUNCTION pettracker_command_event_notify();

-- Dead letters can be run through decoding again (after a decoder fix or a config change).
ALTER TABLE dead_letters
    ADD COLUMN retries       INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN last_retry_at TIMESTAMPTZ,
    -- Set when a retry stored it; the row stays as a record of what happened.
    ADD COLUMN resolved_at   TIMESTAMPTZ;
