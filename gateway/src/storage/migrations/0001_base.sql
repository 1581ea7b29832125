-- The device side's tables: trackers with their credentials, their status, fixes and rejected
-- messages. Before the gateway/server split this migration also created the accounts' `users`
-- table and `trackers.owner_id`; the server's migration 5 does now (see migrate.rs).

CREATE TABLE trackers (
    tracker_id      TEXT PRIMARY KEY,
    pet_name        TEXT,
    -- The device secret as a SHA-256 digest, the claim code as an argon2 PHC string; the plain
    -- values are shown once, at provisioning.
    secret_hash     TEXT NOT NULL,
    claim_code_hash TEXT NOT NULL,
    revoked         BOOLEAN NOT NULL DEFAULT false,
    revoked_at      TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per tracker. last_fix_* is the fix with the newest *device* time, not the last to arrive.
CREATE TABLE tracker_status (
    tracker_id        TEXT PRIMARY KEY REFERENCES trackers (tracker_id) ON DELETE CASCADE,
    last_fix_time     TIMESTAMPTZ,
    last_lat          DOUBLE PRECISION,
    last_lon          DOUBLE PRECISION,
    last_accuracy     REAL,
    last_speed        REAL,
    last_heading      REAL,
    last_seq          BIGINT,
    last_seen         TIMESTAMPTZ,
    online            BOOLEAN NOT NULL DEFAULT false,
    online_changed_at TIMESTAMPTZ,
    battery           SMALLINT,
    charging          BOOLEAN,
    firmware          TEXT,
    signal_dbm        SMALLINT,
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- No foreign key to trackers: the gateway only ingests for authenticated trackers, and a key
-- check per row would cost the hot path. (tracker_id, device_time) makes re-sent fixes idempotent.
CREATE TABLE positions (
    tracker_id  TEXT NOT NULL,
    device_time TIMESTAMPTZ NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    lat         DOUBLE PRECISION NOT NULL,
    lon         DOUBLE PRECISION NOT NULL,
    altitude    REAL,
    accuracy    REAL,
    speed       REAL,
    heading     REAL,
    satellites  SMALLINT,
    battery     SMALLINT,
    seq         BIGINT,
    PRIMARY KEY (tracker_id, device_time)
);

CREATE TABLE dead_letters (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- NULL when the topic named no valid tracker.
    tracker_id  TEXT,
    topic       TEXT NOT NULL,
    payload     BYTEA NOT NULL,
    reason      TEXT NOT NULL
);
CREATE INDEX dead_letters_tracker_idx ON dead_letters (tracker_id, received_at);
CREATE INDEX dead_letters_received_idx ON dead_letters (received_at);
