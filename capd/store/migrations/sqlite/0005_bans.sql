-- capd schema v5 (issue 12): at most one active ban per IP (scope 'ip') and per
-- account+IP (scope 'account_ip'), held by the database, so that two nodes noting
-- violations at once cannot start two bans (lifting one would leave its twin).
--
-- A ban holds its slot, (scope, ip, account), while lifted_at and lifted_by are both
-- empty. Lifting sets both. A ban past its end is retired when the next ban of its slot
-- starts: lifted_by 'expired', lifted_at left empty (it ended; nobody lifted it).
--
-- Twins made before this fold into the one with the latest end (the others are marked
-- 'merged'; one still running counts as lifted now, one already over stays ended).
UPDATE bans
   SET lifted_by = 'merged',
       lifted_at = CASE WHEN ends_at > (julianday('now') - 2440587.5) * 86400.0
                        THEN (julianday('now') - 2440587.5) * 86400.0 END
 WHERE lifted_at IS NULL AND lifted_by IS NULL
   AND EXISTS (SELECT 1 FROM bans b
                WHERE b.scope = bans.scope AND b.ip = bans.ip
                  AND COALESCE(b.account_id, 0) = COALESCE(bans.account_id, 0)
                  AND b.lifted_at IS NULL AND b.lifted_by IS NULL
                  AND (b.ends_at > bans.ends_at
                       OR (b.ends_at = bans.ends_at AND b.id > bans.id)));
CREATE UNIQUE INDEX bans_one_active ON bans(scope, ip, COALESCE(account_id, 0))
    WHERE lifted_at IS NULL AND lifted_by IS NULL
