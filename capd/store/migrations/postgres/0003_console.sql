-- capd schema v3: the web console. Admin tokens and session tokens are stored as SHA-256
-- digests; an account session names the API key it was opened with (revoking that key
-- ends it), an operator session the digest of its admin token.
CREATE TABLE admin_tokens (
    id          BIGSERIAL        PRIMARY KEY,
    token_hash  TEXT             NOT NULL UNIQUE,
    name        TEXT             NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    revoked_at  DOUBLE PRECISION
);

CREATE TABLE console_sessions (
    token_hash        TEXT             PRIMARY KEY,
    kind              TEXT             NOT NULL CHECK (kind IN ('account', 'admin')),
    account_id        BIGINT           REFERENCES accounts(id),
    api_key           TEXT,
    admin_token_hash  TEXT,
    csrf              TEXT             NOT NULL,
    created_at        DOUBLE PRECISION NOT NULL,
    expires_at        DOUBLE PRECISION NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions(expires_at);
CREATE INDEX tasks_ended ON tasks(ended_at) WHERE state = 'solved';
