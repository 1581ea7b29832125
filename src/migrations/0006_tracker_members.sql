-- Sharing a tracker with family: members see positions, status and alerts, and change nothing.
CREATE TABLE tracker_members (
    tracker_id TEXT NOT NULL REFERENCES trackers (tracker_id) ON DELETE CASCADE,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       TEXT NOT NULL DEFAULT 'viewer' CHECK (role IN ('viewer')),
    added_by   BIGINT REFERENCES users (id) ON DELETE SET NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tracker_id, user_id)
);
CREATE INDEX tracker_members_user_idx ON tracker_members (user_id);

-- When the current owner claimed the tracker: history before it belongs to a previous owner
-- and is not shown to the current one.
ALTER TABLE trackers ADD COLUMN claimed_at TIMESTAMPTZ;
UPDATE trackers SET claimed_at = created_at WHERE owner_id IS NOT NULL;
