-- capd schema v6 (issue 13): secrets at rest. (0005 is the bans migration.)
-- API keys are kept as their SHA-256 digest (key_hash) and a hint, their first 4
-- characters; the clear keys go.
ALTER TABLE api_keys RENAME COLUMN key TO key_hash;
ALTER TABLE api_keys ADD COLUMN hint TEXT NOT NULL DEFAULT '';
UPDATE api_keys SET hint = substr(key_hash, 1, 4),
    key_hash = encode(sha256(convert_to(key_hash, 'UTF8')), 'hex');
ALTER TABLE api_keys ALTER COLUMN hint DROP DEFAULT;

-- a console session names the digest of the key it was opened with
ALTER TABLE console_sessions RENAME COLUMN api_key TO key_hash;
UPDATE console_sessions SET key_hash = encode(sha256(convert_to(key_hash, 'UTF8')), 'hex')
    WHERE key_hash IS NOT NULL;

-- `capd serve --demo` remembers its account, not its key
INSERT INTO meta (name, value)
    SELECT 'demo_account', k.account_id::text FROM meta m
    JOIN api_keys k ON k.key_hash = encode(sha256(convert_to(m.value, 'UTF8')), 'hex')
    WHERE m.name = 'demo_key'
    ON CONFLICT (name) DO UPDATE SET value = excluded.value;
DELETE FROM meta WHERE name = 'demo_key';

-- a task's proxy login and password leave its payload when it ends; the flag spares the
-- finish a look into payloads that have none
ALTER TABLE tasks ADD COLUMN proxy_secrets INTEGER NOT NULL DEFAULT 0;
UPDATE tasks SET proxy_secrets = 1 WHERE ended_at IS NULL
    AND (strpos(payload, '"proxyLogin"') > 0 OR strpos(payload, '"proxyPassword"') > 0);
-- jsonb refuses \u0000 in strings: such a payload keeps its text (retention drops it)
UPDATE tasks SET payload = (payload::jsonb - 'proxyLogin' - 'proxyPassword')::text
    WHERE ended_at IS NOT NULL AND strpos(payload, '\u0000') = 0
    AND (strpos(payload, '"proxyLogin"') > 0 OR strpos(payload, '"proxyPassword"') > 0);
-- and so do the credentials in callback URLs: of ended tasks, and of settled callbacks
UPDATE tasks SET callback_url = regexp_replace(callback_url, '^([^:/?#]+://)[^/?#]*@', '\1')
    WHERE ended_at IS NOT NULL AND strpos(callback_url, '@') > 0;
UPDATE callbacks_outbox SET url = regexp_replace(url, '^([^:/?#]+://)[^/?#]*@', '\1')
    WHERE state <> 'pending' AND strpos(url, '@') > 0;
