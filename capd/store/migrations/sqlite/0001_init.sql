-- capd schema v1 (SQLite). Money in integer units of 1e-8 USD; times in unix seconds.
CREATE TABLE accounts (
    id             INTEGER PRIMARY KEY,
    name           TEXT    NOT NULL,
    balance_units  INTEGER NOT NULL DEFAULT 0,
    reserved_units INTEGER NOT NULL DEFAULT 0,
    created_at     REAL    NOT NULL,
    CHECK (reserved_units >= 0),
    CHECK (balance_units >= reserved_units)
);

CREATE TABLE api_keys (
    key        TEXT    PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(id),
    created_at REAL    NOT NULL,
    revoked_at REAL
);
CREATE INDEX api_keys_account ON api_keys(account_id);

CREATE TABLE whitelist (
    account_id INTEGER NOT NULL REFERENCES accounts(id),
    network    TEXT    NOT NULL,
    PRIMARY KEY (account_id, network)
);

CREATE TABLE ledger (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id   INTEGER NOT NULL REFERENCES accounts(id),
    at           REAL    NOT NULL,
    kind         TEXT    NOT NULL CHECK (kind IN ('topup', 'charge', 'refund', 'adjustment')),
    amount_units INTEGER NOT NULL,
    task_id      INTEGER,
    actor        TEXT    NOT NULL,
    note         TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX ledger_account ON ledger(account_id, id);
-- one charge and at most one refund per task, by construction
CREATE UNIQUE INDEX ledger_once_per_task ON ledger(task_id, kind) WHERE task_id IS NOT NULL;

CREATE TABLE tasks (
    id             INTEGER PRIMARY KEY,
    account_id     INTEGER NOT NULL REFERENCES accounts(id),
    type           TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    options        TEXT    NOT NULL,
    state          TEXT    NOT NULL CHECK (state IN ('queued', 'leased', 'solved', 'failed')),
    price_units    INTEGER NOT NULL,
    reserved_units INTEGER NOT NULL,
    created_at     REAL    NOT NULL,
    deadline_at    REAL    NOT NULL,
    lease_until    REAL,
    lease_owner    TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0,
    ended_at       REAL,
    solution       TEXT,
    error_code     TEXT,
    cost_units     INTEGER NOT NULL DEFAULT 0,
    client_ip      TEXT    NOT NULL,
    callback_url   TEXT,
    reported_at    REAL
);
CREATE INDEX tasks_open ON tasks(type, state, created_at) WHERE state IN ('queued', 'leased');
CREATE INDEX tasks_deadline ON tasks(deadline_at) WHERE state IN ('queued', 'leased');
CREATE INDEX tasks_account ON tasks(account_id, created_at);

CREATE TABLE bans (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    scope      TEXT    NOT NULL CHECK (scope IN ('ip', 'account_ip')),
    ip         TEXT    NOT NULL,
    account_id INTEGER,
    reason     TEXT    NOT NULL,
    started_at REAL    NOT NULL,
    ends_at    REAL    NOT NULL,
    lifted_at  REAL,
    lifted_by  TEXT
);
CREATE INDEX bans_lookup ON bans(ip, scope, ends_at);

CREATE TABLE blocklist (
    domain   TEXT PRIMARY KEY,
    added_at REAL NOT NULL
);

CREATE TABLE proxy_bans (
    address TEXT    NOT NULL,
    port    INTEGER NOT NULL,
    until   REAL    NOT NULL,
    PRIMARY KEY (address, port)
);

CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
