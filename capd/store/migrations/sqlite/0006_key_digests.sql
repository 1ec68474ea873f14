-- capd schema v6 (issue 13): secrets at rest. (0005 is the bans migration.)
-- API keys are kept as their SHA-256 digest (key_hash) and a hint, their first 4
-- characters; the clear keys go. capd_sha256() and capd_url_without_userinfo() are Python
-- functions capd registers on the connection before migrating (capd.store.secrets).
CREATE TABLE api_keys_digests (
    key_hash   TEXT    PRIMARY KEY,
    hint       TEXT    NOT NULL,
    account_id INTEGER NOT NULL REFERENCES accounts(id),
    created_at REAL    NOT NULL,
    revoked_at REAL
);
INSERT INTO api_keys_digests (key_hash, hint, account_id, created_at, revoked_at)
    SELECT capd_sha256(key), substr(key, 1, 4), account_id, created_at, revoked_at
    FROM api_keys;
DROP TABLE api_keys;
ALTER TABLE api_keys_digests RENAME TO api_keys;
CREATE INDEX api_keys_account ON api_keys(account_id);

-- a console session names the digest of the key it was opened with
ALTER TABLE console_sessions RENAME COLUMN api_key TO key_hash;
UPDATE console_sessions SET key_hash = capd_sha256(key_hash) WHERE key_hash IS NOT NULL;

-- `capd serve --demo` remembers its account, not its key
INSERT OR REPLACE INTO meta (name, value)
    SELECT 'demo_account', CAST(k.account_id AS TEXT) FROM meta m
    JOIN api_keys k ON k.key_hash = capd_sha256(m.value) WHERE m.name = 'demo_key';
DELETE FROM meta WHERE name = 'demo_key';

-- a task's proxy login and password leave its payload when it ends; the flag spares the
-- finish a look into payloads that have none
ALTER TABLE tasks ADD COLUMN proxy_secrets INTEGER NOT NULL DEFAULT 0;
UPDATE tasks SET proxy_secrets = 1 WHERE ended_at IS NULL
    AND (instr(payload, '"proxyLogin"') > 0 OR instr(payload, '"proxyPassword"') > 0);
UPDATE tasks SET payload = json_remove(payload, '$.proxyLogin', '$.proxyPassword')
    WHERE ended_at IS NOT NULL
    AND (instr(payload, '"proxyLogin"') > 0 OR instr(payload, '"proxyPassword"') > 0);
-- and so do the credentials in callback URLs: of ended tasks, and of settled callbacks
UPDATE tasks SET callback_url = capd_url_without_userinfo(callback_url)
    WHERE ended_at IS NOT NULL AND instr(callback_url, '@') > 0;
UPDATE callbacks_outbox SET url = capd_url_without_userinfo(url)
    WHERE state <> 'pending' AND instr(url, '@') > 0
