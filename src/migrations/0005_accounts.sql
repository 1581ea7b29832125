-- Accounts for the HTTP API: users, the trackers they own, refresh tokens and API keys.
-- `users` and `trackers.owner_id` were created by migration 1 before the gateway/server split;
-- databases from then recorded the older text of this migration (see src/schema.rs).

CREATE TABLE users (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email         TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    is_admin      BOOLEAN NOT NULL DEFAULT false,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Emails are compared case-insensitively: Ada@x and ada@x are one account.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

-- A tracker belongs to the account that claimed it.
ALTER TABLE trackers ADD COLUMN owner_id BIGINT REFERENCES users (id) ON DELETE SET NULL;
CREATE INDEX trackers_owner_idx ON trackers (owner_id);

-- Refresh tokens and API keys are both 256-bit random secrets, so they
-- are stored as SHA-256 hex digests (a guess through 2^256 values is hopeless; argon2 would only
-- cost CPU on every request). The plain values are shown to the client once.

CREATE TABLE refresh_tokens (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash  TEXT NOT NULL UNIQUE,
    -- Every token issued by rotating from one login shares its family. Presenting a token that was
    -- already rotated means it was copied: the whole family is revoked.
    family      TEXT NOT NULL,
    -- The token that replaced this one when it was used; NULL while unused or after logout.
    replaced_by BIGINT REFERENCES refresh_tokens (id) ON DELETE SET NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id);

CREATE TABLE api_keys (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    scope        TEXT NOT NULL CHECK (scope IN ('full', 'read')),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX api_keys_user_idx ON api_keys (user_id);
