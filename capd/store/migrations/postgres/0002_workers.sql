-- capd schema v2: worker tokens (spec §7), stored as SHA-256 digests, and when workers last
-- asked for each type (shared by every API node).
CREATE TABLE worker_tokens (
    id          BIGSERIAL        PRIMARY KEY,
    token_hash  TEXT             NOT NULL UNIQUE,
    name        TEXT             NOT NULL,
    types       TEXT,
    created_at  DOUBLE PRECISION NOT NULL,
    revoked_at  DOUBLE PRECISION
);

CREATE UNLOGGED TABLE worker_seen (
    type    TEXT             PRIMARY KEY,
    seen_at DOUBLE PRECISION NOT NULL
);
