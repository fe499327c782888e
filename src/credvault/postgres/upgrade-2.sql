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

-- == pgspeed: the read path's helper functions in PL/pgSQL; fetch waits 1 ms at a time ==
--
-- (issue 14, "Figures"; docs/team.md.) Version 1 wrote role_in, my_grant, vault_id,
-- is_admin and my_engagement_ids in LANGUAGE sql. With SECURITY DEFINER and a SET clause
-- PostgreSQL cannot inline them, and before PostgreSQL 18 a non-inlined SQL function is
-- parsed and planned again at every call: ~0.2 ms of server CPU for one role_in, which
-- request_read and fetch each call once per audited read. PL/pgSQL keeps each session's
-- plans, so the same queries cost ~15 us. Bodies, attributes (STABLE, SECURITY DEFINER,
-- search_path), signatures and grants are unchanged (CREATE OR REPLACE keeps privileges);
-- only the language differs.
--
-- fetch: identical to version 1 except the durability wait. pg_sleep rounds up to whole
-- milliseconds, so version 1's pg_sleep(0.002) waited 2 ms per turn for WAL that another
-- backend's commit usually flushes within microseconds; and WAL that nobody commits after
-- (autovacuum's, an asynchronous commit) waits for the WAL writer, up to wal_writer_delay
-- (200 ms), which version 1 sat out for 50 ms before refusing. This one re-checks every
-- 1 ms and refuses after ~10 ms, so the client's own flushing commit (nudge_wal, then the
-- same fetch again) comes sooner. The rule is unchanged: no envelope before the WAL up to
-- the call is flushed.

CREATE OR REPLACE FUNCTION credvault.vault_id() RETURNS bytea
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    RETURN (SELECT value FROM meta WHERE key = 'vault_id');
END $$;

CREATE OR REPLACE FUNCTION credvault.is_admin() RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    RETURN coalesce((SELECT admin FROM members WHERE role_name = session_user AND state = 'active'), false);
END $$;

CREATE OR REPLACE FUNCTION credvault.role_in(eng_id bigint) RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    RETURN (
        SELECT g.role FROM grants g JOIN members m ON m.name = g.member
        WHERE g.engagement_id = eng_id AND m.role_name = session_user AND m.state = 'active'
          AND g.revoked_at IS NULL AND (g.expires_at IS NULL OR g.expires_at > now())
    );
END $$;

CREATE OR REPLACE FUNCTION credvault.my_engagement_ids() RETURNS SETOF bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    RETURN QUERY
        SELECT g.engagement_id FROM grants g JOIN members m ON m.name = g.member
        WHERE m.role_name = session_user AND m.state = 'active'
          AND g.revoked_at IS NULL AND (g.expires_at IS NULL OR g.expires_at > now());
END $$;

CREATE OR REPLACE FUNCTION credvault.my_grant(eng text)
RETURNS TABLE (role text, role_sig bytea, granted_by text, key_version integer,
               sealed bytea, sealed_by text, copy_sig bytea, expires_at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    RETURN QUERY
        SELECT g.role, g.role_sig, g.granted_by, g.key_version, g.sealed, g.sealed_by, g.copy_sig, g.expires_at
        FROM grants g JOIN engagements e ON e.id = g.engagement_id
        WHERE e.name = eng AND g.member = me() AND g.revoked_at IS NULL
          AND (g.expires_at IS NULL OR g.expires_at > now());
END $$;

CREATE OR REPLACE FUNCTION credvault.fetch(request bigint)
RETURNS TABLE (secret_env bytea, username_env bytea, url_env bytea, notes_env bytea,
               key_version integer, uid bytea, kind text, audit_seq bigint,
               created_at timestamptz, updated_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    -- taken first, before this function writes anything (the row lock below is WAL too)
    want pg_lsn := pg_current_wal_insert_lsn();
    who text := me();
    q read_requests%ROWTYPE;
    tries integer := 0;
BEGIN
    SELECT * INTO q FROM read_requests WHERE id = request FOR UPDATE;
    IF q.id IS NULL OR q.member <> who THEN
        RAISE EXCEPTION 'credvault: no such read request' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF q.used_at IS NOT NULL THEN
        RAISE EXCEPTION 'credvault: read request already used' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF q.created_at < clock_timestamp() - interval '60 seconds' THEN
        RAISE EXCEPTION 'credvault: read request expired' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF pg_xact_status(q.xid) IS DISTINCT FROM 'committed' THEN
        RAISE EXCEPTION 'credvault: read request not committed' USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- Durability, as in version 1: everything inserted into the WAL before this call (the
    -- request's commit record included) must be flushed; re-checked every 1 ms (pg_sleep's
    -- granularity) for ~10 ms, then refused so the client flushes it (nudge_wal).
    WHILE pg_current_wal_flush_lsn() < want LOOP
        tries := tries + 1;
        IF tries > 10 THEN
            RAISE EXCEPTION 'credvault: read request not yet durable (asynchronous commit?); retry'
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        PERFORM pg_sleep(0.001);
    END LOOP;
    -- With synchronous standbys configured, the request must be flushed on one of them too.
    IF current_setting('synchronous_standby_names') <> '' THEN
        tries := 0;
        WHILE NOT EXISTS (SELECT 1 FROM pg_stat_replication r
                          WHERE r.sync_state IN ('sync', 'quorum') AND r.flush_lsn >= want) LOOP
            tries := tries + 1;
            IF tries > 500 THEN
                RAISE EXCEPTION 'credvault: read request not yet on the synchronous standby; retry'
                    USING ERRCODE = 'object_not_in_prerequisite_state';
            END IF;
            PERFORM pg_sleep(0.001);
        END LOOP;
    END IF;
    IF coalesce(role_in((SELECT c.engagement_id FROM credentials c WHERE c.id = q.credential_id)), '')
       NOT IN ('lead', 'engineer', 'reader') THEN
        RAISE EXCEPTION 'credvault: access revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE read_requests SET used_at = clock_timestamp() WHERE id = q.id;
    RETURN QUERY SELECT c.secret_env, c.username_env, c.url_env, c.notes_env, c.key_version,
                        c.uid, c.kind, q.audit_seq, c.created_at, c.updated_at
        FROM credentials c WHERE c.id = q.credential_id;
END $$;
