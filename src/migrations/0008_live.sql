-- Safe zones and alerts (issue 5).

-- A named zone drawn by a user: a circle or a GeoJSON polygon, assigned to some of the trackers
-- the user may see.
CREATE TABLE geofences (
    id         BIGSERIAL PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    -- {"type":"circle","center":[lon,lat],"radius_m":R} or a GeoJSON Polygon; checked by the server.
    shape      JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX geofences_user_idx ON geofences (user_id);

CREATE TABLE geofence_trackers (
    geofence_id BIGINT NOT NULL REFERENCES geofences (id) ON DELETE CASCADE,
    tracker_id  TEXT NOT NULL REFERENCES trackers (tracker_id) ON DELETE CASCADE,
    PRIMARY KEY (geofence_id, tracker_id)
);
CREATE INDEX geofence_trackers_tracker_idx ON geofence_trackers (tracker_id);

-- Alerts raised for a tracker; seen by its owner and members.
CREATE TABLE alerts (
    id          BIGSERIAL PRIMARY KEY,
    tracker_id  TEXT NOT NULL REFERENCES trackers (tracker_id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN
                    ('geofence_exit', 'geofence_enter', 'battery_low', 'offline', 'online')),
    geofence_id BIGINT REFERENCES geofences (id) ON DELETE SET NULL,
    -- When it happened: the device time of the fix that decided it, or the server's time.
    at          TIMESTAMPTZ NOT NULL,
    details     JSONB NOT NULL DEFAULT '{}',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    acked_at    TIMESTAMPTZ,
    acked_by    BIGINT REFERENCES users (id) ON DELETE SET NULL
);
CREATE INDEX alerts_tracker_idx ON alerts (tracker_id, id);

-- What the alert engine remembers per tracker, so a restart neither repeats nor forgets alerts.
CREATE TABLE alert_state (
    tracker_id      TEXT PRIMARY KEY REFERENCES trackers (tracker_id) ON DELETE CASCADE,
    -- Device time of the newest fix the engine used: older fixes never raise alerts.
    last_fix_time   TIMESTAMPTZ,
    battery_low     BOOLEAN NOT NULL DEFAULT false,
    offline_alerted BOOLEAN NOT NULL DEFAULT false,
    -- Per geofence id: {"inside": bool, "pending_since": ts|null, "pending_fixes": n}.
    zones           JSONB NOT NULL DEFAULT '{}'
);

-- Webhooks: each user's integrations get every alert of the trackers they may see, signed.
CREATE TABLE webhooks (
    id         BIGSERIAL PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    url        TEXT NOT NULL,
    -- The HMAC-SHA256 key; shown once at creation, kept because every delivery is signed with it.
    secret     TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_user_idx ON webhooks (user_id);

CREATE TABLE webhook_deliveries (
    id              BIGSERIAL PRIMARY KEY,
    webhook_id      BIGINT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    alert_id        BIGINT NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_webhook_idx ON webhook_deliveries (webhook_id, id);
