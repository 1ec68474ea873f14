-- capd schema v2: worker tokens (spec §7). Tokens are stored as SHA-256 digests.
CREATE TABLE worker_tokens (
    id          INTEGER PRIMARY KEY,
    token_hash  TEXT    NOT NULL UNIQUE,
    name        TEXT    NOT NULL,
    types       TEXT,
    created_at  REAL    NOT NULL,
    revoked_at  REAL
);
