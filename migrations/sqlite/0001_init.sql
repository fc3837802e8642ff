-- ydht users service schema (SQLite). Timestamps are RFC 3339 text in UTC.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    email         TEXT    NOT NULL,
    username      TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    is_active     INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    created_at    TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL
);
CREATE UNIQUE INDEX users_email_key ON users (email);
CREATE UNIQUE INDEX users_username_key ON users (lower(username));

CREATE TABLE api_keys (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    key_hash     TEXT    NOT NULL,
    key_prefix   TEXT    NOT NULL CHECK (length(key_prefix) = 8),
    scopes       TEXT    NOT NULL,
    expires_at   TEXT,
    last_used_at TEXT,
    revoked_at   TEXT,
    created_at   TEXT    NOT NULL
);
CREATE UNIQUE INDEX api_keys_key_hash_key ON api_keys (key_hash);
CREATE INDEX api_keys_user_id_idx ON api_keys (user_id);

-- One row per refresh token; the rows of one login share a `family` (the session).
CREATE TABLE sessions (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id            INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family             TEXT    NOT NULL,
    kind               TEXT    NOT NULL CHECK (kind IN ('api', 'web')),
    refresh_token_hash TEXT    NOT NULL,
    rotated_at         TEXT,
    revoked_at         TEXT,
    expires_at         TEXT    NOT NULL,
    created_at         TEXT    NOT NULL
);
CREATE UNIQUE INDEX sessions_refresh_token_hash_key ON sessions (refresh_token_hash);
CREATE INDEX sessions_family_idx ON sessions (family);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);

CREATE TABLE usage_records (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id   INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    day       TEXT    NOT NULL,
    operation TEXT    NOT NULL,
    requests  INTEGER NOT NULL DEFAULT 0 CHECK (requests >= 0),
    bytes_in  INTEGER NOT NULL DEFAULT 0 CHECK (bytes_in >= 0),
    bytes_out INTEGER NOT NULL DEFAULT 0 CHECK (bytes_out >= 0),
    UNIQUE (user_id, day, operation)
);
