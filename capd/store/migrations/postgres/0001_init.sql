-- capd schema v1 (PostgreSQL). Money in exact integer units of 1e-8 USD (BIGINT: sums of
-- ledgers stay exact; capd caps balances at 1e17 units); times in unix seconds.
CREATE TABLE accounts (
    id             BIGSERIAL PRIMARY KEY,
    name           TEXT             NOT NULL,
    balance_units  BIGINT           NOT NULL DEFAULT 0,
    reserved_units BIGINT           NOT NULL DEFAULT 0,
    created_at     DOUBLE PRECISION NOT NULL,
    CHECK (reserved_units >= 0),
    CHECK (balance_units >= reserved_units)
);

CREATE TABLE api_keys (
    key        TEXT             PRIMARY KEY,
    account_id BIGINT           NOT NULL REFERENCES accounts(id),
    created_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION
);
CREATE INDEX api_keys_account ON api_keys(account_id);

CREATE TABLE whitelist (
    account_id BIGINT NOT NULL REFERENCES accounts(id),
    network    TEXT   NOT NULL,
    PRIMARY KEY (account_id, network)
);

CREATE TABLE ledger (
    id           BIGSERIAL        PRIMARY KEY,
    account_id   BIGINT           NOT NULL REFERENCES accounts(id),
    at           DOUBLE PRECISION NOT NULL,
    kind         TEXT             NOT NULL CHECK (kind IN ('topup', 'charge', 'refund', 'adjustment')),
    amount_units BIGINT           NOT NULL,
    task_id      BIGINT,
    actor        TEXT             NOT NULL,
    note         TEXT             NOT NULL DEFAULT ''
);
CREATE INDEX ledger_account ON ledger(account_id, id);
CREATE UNIQUE INDEX ledger_once_per_task ON ledger(task_id, kind) WHERE task_id IS NOT NULL;

CREATE TABLE tasks (
    id             BIGINT           PRIMARY KEY,
    account_id     BIGINT           NOT NULL REFERENCES accounts(id),
    type           TEXT             NOT NULL,
    payload        TEXT             NOT NULL,
    options        TEXT             NOT NULL,
    state          TEXT             NOT NULL CHECK (state IN ('queued', 'leased', 'solved', 'failed')),
    price_units    BIGINT           NOT NULL,
    reserved_units BIGINT           NOT NULL,
    created_at     DOUBLE PRECISION NOT NULL,
    deadline_at    DOUBLE PRECISION NOT NULL,
    lease_until    DOUBLE PRECISION,
    lease_owner    TEXT,
    attempts       INTEGER          NOT NULL DEFAULT 0,
    ended_at       DOUBLE PRECISION,
    solution       TEXT,
    error_code     TEXT,
    cost_units     BIGINT           NOT NULL DEFAULT 0,
    client_ip      TEXT             NOT NULL,
    callback_url   TEXT,
    reported_at    DOUBLE PRECISION
);
CREATE INDEX tasks_open ON tasks(type, state, created_at) WHERE state IN ('queued', 'leased');
CREATE INDEX tasks_deadline ON tasks(deadline_at) WHERE state IN ('queued', 'leased');
CREATE INDEX tasks_account ON tasks(account_id, created_at);

CREATE TABLE bans (
    id         BIGSERIAL        PRIMARY KEY,
    scope      TEXT             NOT NULL CHECK (scope IN ('ip', 'account_ip')),
    ip         TEXT             NOT NULL,
    account_id BIGINT,
    reason     TEXT             NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    ends_at    DOUBLE PRECISION NOT NULL,
    lifted_at  DOUBLE PRECISION,
    lifted_by  TEXT
);
CREATE INDEX bans_lookup ON bans(ip, scope, ends_at);

CREATE TABLE blocklist (
    domain   TEXT             PRIMARY KEY,
    added_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE proxy_bans (
    address TEXT             NOT NULL,
    port    INTEGER          NOT NULL,
    until   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (address, port)
);

CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- windowed counters shared by every API node (poll counts and rates, violation tallies);
-- unlogged: losing them in a crash only resets short-lived tallies
CREATE UNLOGGED TABLE counters (
    name       TEXT             PRIMARY KEY,
    count      BIGINT           NOT NULL,
    window_end DOUBLE PRECISION NOT NULL
);
