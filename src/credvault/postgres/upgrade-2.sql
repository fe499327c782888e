-- credvault team backend on PostgreSQL: schema version 1 -> 2 (docs/team.md, "Schema versions").
--
-- Applied by credvault.postgres.server.apply_schema after schema.sql (a new database) or on
-- its own (a database made at version 1), as the owner role, in the same transaction and
-- under the same advisory lock; apply_schema then records version 2. Everything here is
-- written against version 1. New functions grant EXECUTE to the member group
-- (credvault.member_group()) in a DO block of their own section.

-- Nothing may read the version while this runs: the transaction holds the advisory lock,
-- and the version row is updated only once every statement below has run.
SELECT 1;

-- == pgops: engagement lifecycle (close, retention holds, shred, purge) with receipts ==
--
-- The member's machine signs every purge receipt (credvault.team_lifecycle); the server
-- never holds a key that could. A purge here destroys in the live rows and writes the
-- receipt's facts (purge_facts, made by the server in the same transaction as the
-- delete and its audit row, so the facts name their audit position); the purging member
-- signs them and stores the receipt (store_receipt). The owner's VACUUM FULL
-- (`credvault purge --rewrite`) then records rewritten_at, and an admin's next purge
-- re-signs the receipt with destruction_complete_at = rewritten_at. backups_expire_at is
-- the horizon: purged_at + backup_retention_days.

ALTER TABLE credvault.engagements
    ADD COLUMN grace_days integer CHECK (grace_days BETWEEN 0 AND 36500),
    ADD COLUMN hold_until timestamptz,
    ADD COLUMN hold_reason text,
    ADD COLUMN hold_by text,
    ADD COLUMN purged_by text,
    ADD COLUMN purge_facts jsonb,
    ADD COLUMN rewritten_at timestamptz,
    ADD COLUMN purge_xid xid8;

INSERT INTO credvault.meta (key, value) VALUES ('purge_grace_days', convert_to('7', 'UTF8'))
    ON CONFLICT (key) DO NOTHING;

-- The vault's timestamp form (model.iso): UTC, microseconds, Z.
CREATE FUNCTION credvault.iso(t timestamptz) RETURNS text
LANGUAGE sql STABLE SET search_path = credvault, pg_temp
AS $$ SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') $$;

CREATE FUNCTION credvault.setting_days(k text, dflt integer) RETURNS integer
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$ SELECT coalesce((SELECT convert_from(value, 'UTF8')::integer FROM meta WHERE key = k), dflt) $$;

-- When a closed engagement is purged: grace days after it closed, or when its hold ends,
-- whichever is later (retention.purge_due).
CREATE FUNCTION credvault.due_of(closed timestamptz, grace integer, hold timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE SET search_path = credvault, pg_temp
AS $$ SELECT greatest(closed + make_interval(days => grace), hold) $$;

-- Who may change an engagement's lifecycle (close, hold, release, shred): its lead or an
-- admin. NULL when allowed, else the audit detail of the denial (as on SQLCipher).
CREATE FUNCTION credvault.lifecycle_denial(eng_id bigint) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
    SELECT CASE WHEN is_admin() OR r = 'lead' THEN NULL
                WHEN r IS NULL THEN 'no grant' ELSE 'role ' || r END
    FROM (SELECT CASE WHEN eng_id IS NULL THEN NULL ELSE role_in(eng_id) END AS r) x
$$;

-- An engagement's lifecycle facts, for an admin or anyone who holds (or, once it is
-- purged, held) a role in it. Nothing here is secret; the table's row-level security
-- would hide it from an admin without a role.
CREATE FUNCTION credvault.lifecycle(eng text)
RETURNS TABLE (uid bytea, name text, client text, state text, key_version integer,
               key_fp text, require_reason boolean, grace_days integer, effective_grace integer,
               created_at text, created_by text, lead text, closed_at text, purge_due text,
               hold_until text, hold_reason text, hold_by text, purged_at text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE;
BEGIN
    SELECT * INTO e FROM engagements x WHERE x.name = eng;
    IF e.id IS NULL OR NOT (is_admin() OR role_in(e.id) IS NOT NULL OR (e.state = 'purged'
        AND EXISTS (SELECT 1 FROM grants g WHERE g.engagement_id = e.id AND g.member = who))) THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT e.uid, e.name, e.client, e.state, e.key_version, e.key_fp,
        e.require_reason, e.grace_days,
        coalesce(e.grace_days, setting_days('purge_grace_days', 7)),
        iso(e.created_at), e.created_by, e.lead, iso(e.closed_at), iso(e.purge_due),
        iso(e.hold_until), e.hold_reason, e.hold_by, iso(e.purged_at);
END $$;

-- Denials and refusals are returned, not raised: an exception would roll their audit row
-- back. 'ok', 'denied: <why>' or 'error: <why>'.
CREATE FUNCTION credvault.close_engagement(eng text, grace integer) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; why text; due timestamptz;
BEGIN
    SELECT * INTO e FROM engagements x WHERE x.name = eng FOR UPDATE;
    why := lifecycle_denial(e.id);
    IF why IS NOT NULL THEN
        PERFORM audit_append(who, 'close', eng, NULL, 'denied', why);
        RETURN 'denied: ' || why;
    END IF;
    IF e.id IS NULL THEN
        RAISE EXCEPTION 'credvault: engagement % not found', eng USING ERRCODE = 'no_data_found';
    END IF;
    IF e.state <> 'active' THEN
        PERFORM audit_append(who, 'close', eng, NULL, 'error', 'engagement is ' || e.state);
        RETURN 'error: ' || e.state;
    END IF;
    due := due_of(now(), coalesce(grace, e.grace_days, setting_days('purge_grace_days', 7)), NULL);
    UPDATE engagements SET state = 'closed', closed_at = now(), purge_due = due,
        grace_days = coalesce(grace, engagements.grace_days)
        WHERE id = e.id;
    PERFORM audit_append(who, 'close', eng, NULL, 'ok',
                         'purge due ' || left(iso(due), 16));
    RETURN 'ok';
END $$;

-- Version 1's close_engagement now schedules the purge too (the vault's grace period).
CREATE OR REPLACE FUNCTION credvault.close_engagement(eng text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE outcome text := close_engagement(eng, NULL::integer);
BEGIN
    IF outcome <> 'ok' THEN
        RAISE EXCEPTION 'credvault: % may not close % (%)', me(), eng, outcome
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END $$;

CREATE FUNCTION credvault.set_hold(eng text, until timestamptz, why text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; denial text;
BEGIN
    SELECT * INTO e FROM engagements x WHERE x.name = eng FOR UPDATE;
    denial := lifecycle_denial(e.id);
    IF denial IS NOT NULL THEN
        PERFORM audit_append(who, 'set a retention hold', eng, NULL, 'denied', denial);
        RETURN 'denied: ' || denial;
    END IF;
    IF e.id IS NULL THEN
        RAISE EXCEPTION 'credvault: engagement % not found', eng USING ERRCODE = 'no_data_found';
    END IF;
    IF coalesce(btrim(why), '') = '' THEN
        RAISE EXCEPTION 'credvault: a retention hold needs a reason' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF until <= now() THEN
        RAISE EXCEPTION 'credvault: the hold end date is in the past' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF e.state <> 'closed' THEN
        PERFORM audit_append(who, 'retain', eng, NULL, 'error', 'engagement is ' || e.state);
        RETURN 'error: ' || e.state;
    END IF;
    UPDATE engagements SET hold_until = until, hold_reason = why, hold_by = who,
        purge_due = due_of(e.closed_at, coalesce(e.grace_days, setting_days('purge_grace_days', 7)), until)
        WHERE id = e.id;
    PERFORM audit_append(who, 'retain', eng, NULL, 'ok',
                         'held until ' || left(iso(until), 16) || ': ' || why);
    RETURN 'ok';
END $$;

CREATE FUNCTION credvault.release_hold(eng text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; denial text;
BEGIN
    SELECT * INTO e FROM engagements x WHERE x.name = eng FOR UPDATE;
    denial := lifecycle_denial(e.id);
    IF denial IS NOT NULL THEN
        PERFORM audit_append(who, 'release the hold', eng, NULL, 'denied', denial);
        RETURN 'denied: ' || denial;
    END IF;
    IF e.id IS NULL THEN
        RAISE EXCEPTION 'credvault: engagement % not found', eng USING ERRCODE = 'no_data_found';
    END IF;
    IF e.hold_until IS NULL OR e.state <> 'closed' THEN
        PERFORM audit_append(who, 'release', eng, NULL, 'error', 'no retention hold');
        RETURN 'error: no retention hold';
    END IF;
    UPDATE engagements SET hold_until = NULL, hold_reason = NULL, hold_by = NULL,
        purge_due = due_of(e.closed_at, coalesce(e.grace_days, setting_days('purge_grace_days', 7)), NULL)
        WHERE id = e.id;
    PERFORM audit_append(who, 'release', eng, NULL, 'ok', 'hold lifted');
    RETURN 'ok';
END $$;

-- Destruction never trusts one wrong clock (retention.clock_problem): not on a server
-- clock earlier than the newest audit entry (beyond 2 minutes), nor more than 31 days
-- after it, unless an admin confirms today's date (UTC), which is audited.
CREATE FUNCTION credvault.clock_problem() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
    SELECT CASE
        WHEN newest IS NULL THEN NULL
        WHEN now() < newest - interval '2 minutes' THEN format(
            'the clock (%s UTC) is earlier than the newest recorded time (%s UTC)',
            to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'),
            to_char(newest AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'))
        WHEN now() > newest + interval '31 days' THEN format(
            'the clock (%s UTC) is %s days ahead of the newest recorded time (%s UTC; the bound is 31 days)',
            to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'),
            extract(day FROM now() - newest)::integer,
            to_char(newest AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'))
        END
    FROM (SELECT max(ts) AS newest FROM audit) a
$$;

-- What is due now (admins: the purge is theirs; anyone else gets nothing). confirm: the
-- date an admin checked, for a suspect clock. plan: only list (audited as purge-plan).
CREATE FUNCTION credvault.due_purges(confirm date, plan boolean, quiet boolean)
RETURNS TABLE (name text, client text, due text, reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); problem text := clock_problem(); n integer;
BEGIN
    IF NOT is_admin() THEN
        IF NOT quiet THEN
            PERFORM audit_append(who, 'purge', NULL, NULL, 'denied', 'admins only');
        END IF;
        RETURN;
    END IF;
    IF problem IS NOT NULL AND quiet THEN
        RETURN;  -- an automatic purge waits for an explicit, confirmed one
    END IF;
    IF problem IS NOT NULL THEN
        IF confirm IS NULL THEN
            RAISE EXCEPTION 'credvault: purge held: %; if the date is right, run `credvault purge --confirm-clock %`',
                problem, to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD')
                USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'clock';
        END IF;
        IF confirm <> (now() AT TIME ZONE 'UTC')::date THEN
            RAISE EXCEPTION 'credvault: --confirm-clock % does not match the clock''s date (% UTC): confirm only the date you checked',
                confirm, to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD')
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM audit_append(who, 'clock-confirm', NULL, NULL, 'ok', left('acting on ' || iso(now()) || '; ' || problem, 200));
    END IF;
    SELECT count(*) INTO n FROM engagements e WHERE e.state = 'closed' AND e.purge_due <= now();
    IF plan THEN
        PERFORM audit_append(who, 'purge-plan', NULL, NULL, 'ok', format('%s engagements due', n));
    END IF;
    RETURN QUERY SELECT e.name, e.client, iso(e.purge_due),
        CASE WHEN e.hold_until IS NOT NULL AND e.purge_due = e.hold_until THEN 'hold' ELSE 'grace' END
        FROM engagements e WHERE e.state = 'closed' AND e.purge_due <= now() ORDER BY e.purge_due, e.name;
END $$;

-- Destroy an engagement in the live rows: every credential and system (their envelopes),
-- every sealed copy of its key. why: 'grace' or 'hold' (an admin, due now) or 'request'
-- (a shred: its lead or an admin, any state but purged). Returns the receipt's facts,
-- unsigned (the caller signs them on their machine: store_receipt), or NULL when denied
-- (audited). automatic: run on opening the vault rather than by `credvault purge`.
CREATE FUNCTION credvault.destroy_engagement(eng text, why text, automatic boolean)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text := me(); e engagements%ROWTYPE; denial text;
    creds integer; syss integer; copies integer; seq bigint; facts jsonb; reason text;
    purger text; at timestamptz := now();
BEGIN
    SELECT * INTO e FROM engagements x WHERE x.name = eng FOR UPDATE;
    IF why = 'request' THEN
        denial := lifecycle_denial(e.id);
    ELSIF why IN ('grace', 'hold') THEN
        denial := CASE WHEN is_admin() THEN NULL ELSE 'admins only' END;
    ELSE
        RAISE EXCEPTION 'credvault: unknown purge reason %', why USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF denial IS NOT NULL THEN
        PERFORM audit_append(who, CASE WHEN why = 'request' THEN 'shred' ELSE 'purge' END,
                             eng, NULL, 'denied', denial);
        RETURN NULL;
    END IF;
    IF e.id IS NULL THEN
        RAISE EXCEPTION 'credvault: engagement % not found', eng USING ERRCODE = 'no_data_found';
    END IF;
    IF e.state = 'purged' THEN
        RAISE EXCEPTION 'credvault: engagement % is already purged', eng USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF why <> 'request' AND (e.state <> 'closed' OR e.purge_due IS NULL OR e.purge_due > at) THEN
        RAISE EXCEPTION 'credvault: engagement % is not due for its purge', eng USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF why <> 'request' AND clock_problem() IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM audit a WHERE a.action = 'clock-confirm' AND a.member = who
        AND a.ts > at - interval '10 minutes') THEN
        RAISE EXCEPTION 'credvault: purge held: %', clock_problem() USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'clock';
    END IF;
    reason := CASE WHEN why = 'request' THEN 'client request'
                   WHEN e.hold_until IS NOT NULL AND e.purge_due = e.hold_until
                   THEN 'retention hold expired' ELSE 'grace period expired' END;
    SELECT count(*) INTO creds FROM credentials WHERE engagement_id = e.id;
    SELECT count(*) INTO syss FROM systems WHERE engagement_id = e.id;
    SELECT count(*) INTO copies FROM grants WHERE engagement_id = e.id AND sealed IS NOT NULL;
    seq := audit_append(who, 'purge', eng, NULL, 'ok', format(
        '%s; %s credentials, %s systems, %s key copies destroyed', reason, creds, syss, copies));
    purger := CASE WHEN automatic THEN who || ' (automatic, on open)' ELSE who END;
    facts := jsonb_build_object(
        'format', 'credvault-purge-receipt/2',
        'vault_id', encode(vault_id(), 'hex'),
        'engagement', e.name,
        'client', e.client,
        'created_at', iso(e.created_at),
        'closed_at', iso(e.closed_at),
        'purged_at', iso(at),
        'reason', reason,
        'purged_by', purger,
        'destroyed', jsonb_build_object(
            'credentials', creds, 'systems', syss, 'credential_versions', 0,
            'trashed_credentials', 0, 'trashed_systems', 0, 'key_copies', copies,
            'key_version', e.key_version, 'key_fingerprints', jsonb_build_array(e.key_fp)),
        'hold', CASE WHEN e.hold_until IS NULL THEN NULL ELSE jsonb_build_object(
            'until', iso(e.hold_until), 'reason', e.hold_reason, 'by', e.hold_by) END,
        'audit_position', seq,
        'destruction_complete_at', NULL,
        'client_exports', (SELECT coalesce(jsonb_agg(jsonb_build_object(
            'at', iso(a.ts), 'sha256', right(a.detail, 64)) ORDER BY a.seq), '[]'::jsonb)
            FROM audit a WHERE a.engagement = e.name AND a.action = 'export'
            AND a.outcome = 'ok' AND a.detail ~ 'sha256 [0-9a-f]{64}$'),
        'backups_expire_at', iso(at + make_interval(days => setting_days('backup_retention_days', 35))));
    DELETE FROM credentials WHERE engagement_id = e.id;
    DELETE FROM systems WHERE engagement_id = e.id;
    DELETE FROM rotation_requests WHERE engagement_id = e.id;
    UPDATE grants SET sealed = NULL, sealed_by = NULL, copy_sig = NULL,
                      revoked_at = coalesce(revoked_at, at)
        WHERE engagement_id = e.id;
    UPDATE engagements SET state = 'purged', purged_at = at, receipt = NULL, purged_by = who,
        purge_facts = facts, rewritten_at = NULL, needs_rotation = false,
        purge_xid = pg_current_xact_id()
        WHERE id = e.id;
    RETURN facts;
END $$;

-- Store a receipt signed on a member's machine: the purging member's or an admin's, only
-- for a purged engagement whose receipt is missing (a crash between the purge and this)
-- or awaits its completion (rewritten since, not yet signed complete). The server cannot
-- check the Ed25519 signature; every reader does (credvault receipt, verify-receipt).
CREATE FUNCTION credvault.store_receipt(eng text, signed text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; r jsonb;
BEGIN
    SELECT * INTO e FROM engagements x WHERE x.name = eng FOR UPDATE;
    IF e.id IS NULL OR e.state <> 'purged' OR e.purge_facts IS NULL
       OR NOT (is_admin() OR e.purged_by = who) THEN
        RAISE EXCEPTION 'credvault: % may not sign the receipt of %', who, eng USING ERRCODE = 'insufficient_privilege';
    END IF;
    r := signed::jsonb;
    IF e.receipt IS NOT NULL AND NOT (e.rewritten_at IS NOT NULL
        AND e.receipt::jsonb -> 'destruction_complete_at' = 'null'::jsonb) THEN
        RAISE EXCEPTION 'credvault: the receipt of % is signed already', eng USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- the signed document states the server's facts, and completion only once rewritten
    IF (r - 'signature' - 'public_key' - 'key_id' - 'destruction_complete_at')
       <> (e.purge_facts - 'destruction_complete_at')
       OR (r -> 'destruction_complete_at' <> 'null'::jsonb AND (e.rewritten_at IS NULL
           OR r ->> 'destruction_complete_at' <> iso(e.rewritten_at))) THEN
        RAISE EXCEPTION 'credvault: the receipt of % does not state the purge''s facts', eng
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE engagements SET receipt = signed WHERE id = e.id;
    PERFORM audit_append(who, 'receipt-sign', eng, NULL, 'ok',
        CASE WHEN r -> 'destruction_complete_at' = 'null'::jsonb THEN 'destruction pending rewrite'
             ELSE 'destruction complete' END);
END $$;

-- Purged engagements whose receipt an admin (or its purging member) must sign now: never
-- signed, or rewritten since and not yet signed complete. With their facts.
CREATE FUNCTION credvault.receipts_to_sign()
RETURNS TABLE (name text, facts jsonb, rewritten_at text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me();
BEGIN
    RETURN QUERY SELECT e.name, e.purge_facts, iso(e.rewritten_at) FROM engagements e
        WHERE e.state = 'purged' AND e.purge_facts IS NOT NULL
          AND (is_admin() OR e.purged_by = who)
          AND (e.receipt IS NULL OR (e.rewritten_at IS NOT NULL
               AND e.receipt::jsonb -> 'destruction_complete_at' = 'null'::jsonb))
        ORDER BY e.name;
END $$;

-- Purged engagements whose table files the owner has not rewritten yet (names only).
CREATE FUNCTION credvault.awaiting_rewrite() RETURNS SETOF text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
    SELECT e.name FROM engagements e
    WHERE e.state = 'purged' AND e.purge_facts IS NOT NULL AND e.rewritten_at IS NULL
      AND me() IS NOT NULL ORDER BY e.name
$$;

-- A purged engagement's stored receipt, with its signer's published key, for anyone who
-- held a role in it and for admins (audited as `receipt`).
CREATE FUNCTION credvault.read_receipt(eng text)
RETURNS TABLE (receipt text, signer text, sign_pub bytea, state text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE;
BEGIN
    SELECT * INTO e FROM engagements x WHERE x.name = eng;
    IF e.id IS NULL OR NOT (is_admin() OR EXISTS (
        SELECT 1 FROM grants g WHERE g.engagement_id = e.id AND g.member = who)) THEN
        PERFORM audit_append(who, 'read the receipt', eng, NULL, 'denied', 'no grant');
        RETURN;
    END IF;
    IF e.receipt IS NOT NULL THEN
        PERFORM audit_append(who, 'receipt', eng, NULL, 'ok', 'purge receipt read');
    END IF;
    -- the signer: the member whose published key the receipt names, if they could sign it
    -- (the purging member, or an admin completing it); the reader checks the signature
    RETURN QUERY SELECT e.receipt, m.name, m.sign_pub, e.state
        FROM (SELECT 1) one LEFT JOIN members m
        ON e.receipt IS NOT NULL AND (m.admin OR m.name = e.purged_by)
           AND m.sign_pub = decode(e.receipt::jsonb ->> 'public_key', 'base64')
        LIMIT 1;
END $$;

-- The owner's rewrite (`credvault purge --rewrite`), in two calls around VACUUM FULL
-- (server.rewrite_after_purge), which cannot run in a function. VACUUM FULL keeps a deleted
-- row that some snapshot may still see, so only a purge older than every snapshot in the
-- cluster when the rewrite begins (sessions, standbys' feedback, replication slots,
-- prepared transactions) counts as rewritten: rewrite_candidates names those, before the
-- VACUUM; record_rewrite marks them after it. Owner only (members hold no EXECUTE).
CREATE FUNCTION credvault.rewrite_candidates() RETURNS SETOF text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
    SELECT e.name FROM engagements e
    WHERE e.state = 'purged' AND e.purge_facts IS NOT NULL AND e.rewritten_at IS NULL
      AND pg_xact_status(e.purge_xid) = 'committed'
      AND age(e.purge_xid::xid) > greatest(
          (SELECT max(age(a.backend_xmin)) FROM pg_stat_activity a WHERE a.pid <> pg_backend_pid()),
          (SELECT max(age(r.backend_xmin)) FROM pg_stat_replication r),
          (SELECT max(age(s.xmin)) FROM pg_replication_slots s),
          (SELECT max(age(x.transaction)) FROM pg_prepared_xacts x),
          0)
    ORDER BY e.name
$$;

CREATE FUNCTION credvault.record_rewrite(names text[], pending integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE n integer;
BEGIN
    UPDATE engagements SET rewritten_at = now()
        WHERE name = ANY (names) AND state = 'purged' AND rewritten_at IS NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM audit_append(current_user, 'purge-rewrite', NULL, NULL, 'ok',
        format('%s purged engagements rewritten out of the table files', n)
        || CASE WHEN pending > 0 THEN format('; %s still seen by an older snapshot', pending) ELSE '' END);
    RETURN n;
END $$;

-- The run itself, on the record (purge-run), as on SQLCipher.
CREATE FUNCTION credvault.purge_run(n integer) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := require_admin();
BEGIN
    PERFORM audit_append(who, 'purge-run', NULL, NULL, 'ok', format('%s engagements purged', n));
END $$;

-- Functions are executable by PUBLIC when created: none of ours is, but what the DO block
-- below grants to the member group (the rewrite's two stay the owner's alone).
REVOKE ALL ON FUNCTION credvault.iso(timestamptz), credvault.setting_days(text, integer),
    credvault.due_of(timestamptz, integer, timestamptz), credvault.lifecycle_denial(bigint),
    credvault.lifecycle(text), credvault.close_engagement(text, integer),
    credvault.set_hold(text, timestamptz, text), credvault.release_hold(text),
    credvault.clock_problem(), credvault.due_purges(date, boolean, boolean),
    credvault.destroy_engagement(text, text, boolean), credvault.store_receipt(text, text),
    credvault.receipts_to_sign(), credvault.awaiting_rewrite(), credvault.read_receipt(text),
    credvault.rewrite_candidates(), credvault.record_rewrite(text[], integer),
    credvault.purge_run(integer) FROM PUBLIC;

DO $$
DECLARE g text := credvault.member_group();
BEGIN
    EXECUTE format('GRANT SELECT (grace_days, hold_until, hold_reason, hold_by) ON credvault.engagements TO %I', g);
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.iso(timestamptz),'
                   ' credvault.lifecycle(text), credvault.close_engagement(text, integer),'
                   ' credvault.set_hold(text, timestamptz, text), credvault.release_hold(text),'
                   ' credvault.clock_problem(), credvault.due_purges(date, boolean, boolean),'
                   ' credvault.destroy_engagement(text, text, boolean),'
                   ' credvault.store_receipt(text, text), credvault.receipts_to_sign(),'
                   ' credvault.awaiting_rewrite(), credvault.read_receipt(text),'
                   ' credvault.purge_run(integer) TO %I', g);
END $$;

-- passwd on a team vault (credvault.team_passwd): the member's new login verifier, made on
-- their machine from the re-wrapped key slot (the password never travels), audited as on
-- SQLCipher. The owner's CREATEROLE changes the caller's own role only (session_user).
CREATE FUNCTION credvault.change_login(verifier text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me();
BEGIN
    IF verifier !~ '^SCRAM-SHA-256\$' THEN
        RAISE EXCEPTION 'credvault: a SCRAM verifier is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format('ALTER ROLE %I PASSWORD %L', session_user, verifier);
    PERFORM audit_append(who, 'passwd', NULL, who, 'ok', '');
END $$;

REVOKE ALL ON FUNCTION credvault.change_login(text) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.change_login(text) TO %I',
                   credvault.member_group());
END $$;

-- client export on a team vault (credvault.team_export): every secret is read through
-- request_read/fetch (audited `get`); these check every engagement first (a denial audited
-- as `export`, as on SQLCipher) and record the export file's digest afterwards.
CREATE FUNCTION credvault.export_check(eng text, reason text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; r text;
BEGIN
    SELECT * INTO e FROM engagements x WHERE x.name = eng;
    r := CASE WHEN e.id IS NULL THEN NULL ELSE role_in(e.id) END;
    IF r IS NULL OR r NOT IN ('lead', 'engineer', 'reader') THEN
        PERFORM audit_append(who, 'export', eng, NULL, 'denied',
                             CASE WHEN r IS NULL THEN 'no grant' ELSE 'role ' || r END);
        RETURN 'denied: ' || CASE WHEN r IS NULL THEN 'no grant' ELSE 'role ' || r END;
    END IF;
    IF e.require_reason AND coalesce(reason, '') = '' THEN
        PERFORM audit_append(who, 'export', eng, NULL, 'denied', 'this engagement requires --reason');
        RETURN 'denied: this engagement requires --reason';
    END IF;
    IF e.state <> 'active' THEN
        RETURN 'error: ' || e.state;
    END IF;
    RETURN 'ok';
END $$;

CREATE FUNCTION credvault.log_export(eng text, n integer, digest text, reason text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE;
BEGIN
    SELECT * INTO e FROM engagements x WHERE x.name = eng;
    IF e.id IS NULL OR coalesce(role_in(e.id), '') NOT IN ('lead', 'engineer', 'reader') THEN
        RAISE EXCEPTION 'credvault: % may not export %', who, eng USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF digest !~ '^[0-9a-f]{64}$' THEN
        RAISE EXCEPTION 'credvault: not a SHA-256 digest' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM audit_append(who, 'export', eng, NULL, 'ok', format('%s credentials exported', n)
        || CASE WHEN coalesce(reason, '') <> '' THEN '; reason: ' || reason ELSE '' END
        || '; sha256 ' || digest);
END $$;

REVOKE ALL ON FUNCTION credvault.export_check(text, text),
    credvault.log_export(text, integer, text, text) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.export_check(text, text),'
                   ' credvault.log_export(text, integer, text, text) TO %I',
                   credvault.member_group());
END $$;
