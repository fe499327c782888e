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

-- == pglog: per-engagement signed membership log, member key certificates ==
--
-- The membership log (docs/format.md §17, the SQLCipher vault's own links) of each
-- engagement made on a schema-2 server, and the invitation/join statements that certify
-- each member's public keys (docs/format.md §19.4). The server cannot check Ed25519 cheaply
-- in SQL and need not: every client replays the log and checks every signature on its own
-- machine. What the server adds is order: a link is appended only through the functions
-- below, only after the link before it (seq and prev-hash continuity, checked here), in
-- the same transaction as the change it records. Members have no privilege on either table.

CREATE TABLE credvault.engagement_log (
    engagement_id bigint NOT NULL REFERENCES credvault.engagements (id) ON DELETE CASCADE,
    seq           bigint NOT NULL CHECK (seq >= 0),
    link          bytea NOT NULL,
    hash          bytea NOT NULL,   -- sha256('credvault/v1/membership-chain' || link)
    PRIMARY KEY (engagement_id, seq)
);

CREATE TABLE credvault.member_certs (
    member         text PRIMARY KEY REFERENCES credvault.members (name),
    inviter        text NOT NULL,
    admin          boolean NOT NULL,
    ipk            bytea NOT NULL,  -- the invitation's Ed25519 key (derived from its code)
    invitation_sig bytea NOT NULL,  -- the inviter's signature naming member, ipk, admin
    join_sig       bytea            -- ipk's signature over the member's public keys
);

-- Append one link after the engagement's last (not executable by members). Only the
-- header is read here: the length prefixes of format, vault id, engagement uid, seq and
-- prev (docs/format.md §17), the vault and engagement they name, seq = last + 1 and prev
-- = the last link's hash (zeros for link 0). The signature is the clients' to check.
CREATE FUNCTION credvault.log_append(eid bigint, new_link bytea) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    n integer := length(new_link);
    s bigint;
    prev bytea;
    last engagement_log%ROWTYPE;
BEGIN
    IF n < 100 + 64 OR n > 4096
       OR substring(new_link FROM 1 FOR 4) <> '\x00000008'::bytea
       OR substring(new_link FROM 13 FOR 4) <> '\x00000010'::bytea
       OR substring(new_link FROM 33 FOR 4) <> '\x00000010'::bytea
       OR substring(new_link FROM 53 FOR 4) <> '\x00000008'::bytea
       OR substring(new_link FROM 65 FOR 4) <> '\x00000020'::bytea THEN
        RAISE EXCEPTION 'credvault: membership link malformed' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF substring(new_link FROM 17 FOR 16) <> vault_id()
       OR substring(new_link FROM 37 FOR 16) IS DISTINCT FROM (SELECT uid FROM engagements WHERE id = eid) THEN
        RAISE EXCEPTION 'credvault: membership link of another vault or engagement'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    s := ('x' || encode(substring(new_link FROM 57 FOR 8), 'hex'))::bit(64)::bigint;
    prev := substring(new_link FROM 69 FOR 32);
    SELECT * INTO last FROM engagement_log l WHERE l.engagement_id = eid ORDER BY l.seq DESC LIMIT 1;
    IF (last.seq IS NULL AND (s <> 0 OR prev <> '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea))
       OR (last.seq IS NOT NULL AND (s <> last.seq + 1 OR prev <> last.hash)) THEN
        RAISE EXCEPTION 'credvault: membership link out of order (expected link %)', coalesce(last.seq + 1, 0)
            USING ERRCODE = 'serialization_failure';
    END IF;
    INSERT INTO engagement_log (engagement_id, seq, link, hash)
    VALUES (eid, s, new_link, sha256(convert_to('credvault/v1/membership-chain', 'UTF8') || new_link));
    RETURN s;
END $$;

-- The links after `after` of an engagement the caller holds a live role in (or any, for an
-- admin), with the last link's seq: what a client replays (seq -1: no log).
CREATE FUNCTION credvault.engagement_log_links(eng text, after bigint DEFAULT -1)
RETURNS TABLE (seq bigint, link bytea)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE e engagements%ROWTYPE;
BEGIN
    PERFORM me();
    SELECT * INTO e FROM engagements WHERE name = eng;
    IF e.id IS NULL OR NOT (is_admin() OR role_in(e.id) IS NOT NULL) THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT l.seq, l.link FROM engagement_log l
        WHERE l.engagement_id = e.id AND l.seq > after ORDER BY l.seq;
END $$;

-- The last link's seq of an engagement the caller may see (-1: none).
CREATE FUNCTION credvault.engagement_log_head(eid bigint) RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
    SELECT coalesce(max(l.seq), -1) FROM engagement_log l
    WHERE l.engagement_id = eid AND (is_admin() OR role_in(eid) IS NOT NULL)
$$;

-- Every member's certificate parts, with the keys they published (any active member).
CREATE FUNCTION credvault.member_certificates()
RETURNS TABLE (member text, inviter text, admin boolean, ipk bytea, invitation_sig bytea,
               join_sig bytea, sign_pub bytea, kem_pub bytea, state text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    PERFORM me();
    RETURN QUERY SELECT c.member, c.inviter, c.admin, c.ipk, c.invitation_sig, c.join_sig,
                        m.sign_pub, m.kem_pub, m.state
        FROM member_certs c JOIN members m ON m.name = c.member ORDER BY c.member;
END $$;

-- The engagements `credvault migrate` carried without a membership log, as the list the
-- migrating admin (the founder) signed (docs/format.md §19.6); NULL on a vault made new.
-- A client accepts an engagement without a log only if the founder listed it.
CREATE FUNCTION credvault.pre_log_engagements() RETURNS bytea
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    PERFORM me();
    RETURN (SELECT value FROM meta WHERE key = 'pre_log_engagements');
END $$;

-- An admin invites: the member's role (add_member) and the invitation the admin signed.
CREATE FUNCTION credvault.invite_member(member text, verifier text, make_admin boolean,
                                        i_ipk bytea, i_sig bytea)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := require_admin();
BEGIN
    PERFORM add_member(member, verifier, make_admin);
    INSERT INTO member_certs (member, inviter, admin, ipk, invitation_sig)
    VALUES (member, who, make_admin, i_ipk, i_sig);
END $$;

-- The invited member joins (join_vault) and stores the proof that the holder of the
-- invitation code published these keys.
CREATE FUNCTION credvault.join_vault_proved(sign_pub bytea, kem_pub bytea, verifier text, proof bytea)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text;
BEGIN
    PERFORM join_vault(sign_pub, kem_pub, verifier);
    SELECT name INTO who FROM members WHERE role_name = session_user AND state = 'active';
    -- a migrated member's proof was written by migrate (join_vault checked the same keys)
    UPDATE member_certs SET join_sig = proof WHERE member_certs.member = who AND join_sig IS NULL;
    IF NOT EXISTS (SELECT 1 FROM member_certs WHERE member_certs.member = who) THEN
        RAISE EXCEPTION 'credvault: no invitation certificate for %', who
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END $$;

-- An admin creates a logged engagement: no key yet (its first lead makes it), the lead's
-- role row, and link 0 (create) in the same transaction. The creation record column keeps
-- link 0's signature: not a valid creation statement, so a client that finds this
-- engagement without its log refuses it instead of trusting the unlogged path.
CREATE FUNCTION credvault.create_engagement_logged(
    e_uid bytea, e_name text, e_client text, e_lead text, link0 bytea
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := require_admin(); eid bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM members WHERE name = e_lead AND state = 'active') THEN
        RAISE EXCEPTION 'credvault: no active member %', e_lead USING ERRCODE = 'no_data_found';
    END IF;
    INSERT INTO engagements (uid, name, client, state, key_version, key_fp, created_by, lead, creation_sig)
    VALUES (e_uid, e_name, e_client, 'active', 0, '', who, e_lead,
            substring(link0 FROM length(link0) - 63))
    RETURNING id INTO eid;
    INSERT INTO grants (engagement_id, member, role, granted_by, role_sig)
    VALUES (eid, e_lead, 'lead', who, '\x'::bytea);
    PERFORM log_append(eid, link0);
    PERFORM audit_append(who, 'create', e_name, NULL, 'ok', '');
    RETURN eid;
END $$;

-- A lead grants (a new member or a change of role) with the grant link, in one transaction.
CREATE FUNCTION credvault.put_grant_logged(
    eng text, grantee text, g_role text, g_key_version integer, g_sealed bytea,
    g_copy_sig bytea, g_expires_at timestamptz, new_link bytea
) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active' FOR UPDATE;
    IF e.id IS NULL THEN
        RAISE EXCEPTION 'credvault: no active engagement %', eng USING ERRCODE = 'no_data_found';
    END IF;
    IF coalesce(role_in(e.id), '') <> 'lead' THEN
        PERFORM audit_append(who, 'grant', eng, grantee, 'denied', g_role);
        RETURN false;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM members WHERE name = grantee AND state = 'active') THEN
        RAISE EXCEPTION 'credvault: no active member %', grantee USING ERRCODE = 'no_data_found';
    END IF;
    IF g_sealed IS NOT NULL AND g_key_version IS DISTINCT FROM e.key_version THEN
        RAISE EXCEPTION 'credvault: the engagement key was rotated meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    PERFORM log_append(e.id, new_link);
    INSERT INTO grants (engagement_id, member, role, granted_by, expires_at, role_sig,
                        key_version, sealed, sealed_by, copy_sig)
    VALUES (e.id, grantee, g_role, who, g_expires_at, '\x'::bytea, g_key_version, g_sealed,
            CASE WHEN g_sealed IS NULL THEN NULL ELSE who END, g_copy_sig)
    ON CONFLICT (engagement_id, member) DO UPDATE SET
        role = excluded.role, granted_by = excluded.granted_by, granted_at = now(),
        expires_at = excluded.expires_at, role_sig = excluded.role_sig,
        key_version = excluded.key_version, sealed = excluded.sealed,
        sealed_by = excluded.sealed_by, copy_sig = excluded.copy_sig, revoked_at = NULL;
    PERFORM audit_append(who, 'grant', eng, grantee, 'ok', g_role);
    RETURN true;
END $$;

-- A lead revokes with the revoke link: as revoke_grant, plus the link, in one transaction.
CREATE FUNCTION credvault.revoke_grant_logged(eng text, grantee text, new_link bytea) RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; readlist text[];
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active' FOR UPDATE;
    IF e.id IS NULL OR coalesce(role_in(e.id), '') <> 'lead' THEN
        PERFORM audit_append(who, 'revoke', eng, grantee, 'denied', '');
        RETURN NULL;
    END IF;
    PERFORM log_append(e.id, new_link);
    UPDATE grants SET revoked_at = now(), sealed = NULL, sealed_by = NULL, copy_sig = NULL
        WHERE engagement_id = e.id AND member = grantee;
    UPDATE engagements SET needs_rotation = true WHERE id = e.id;
    SELECT coalesce(array_agg(DISTINCT a.item ORDER BY a.item), '{}') INTO readlist
        FROM audit a WHERE a.engagement = eng AND a.member = grantee AND a.action = 'get'
        AND a.outcome = 'ok' AND a.item IS NOT NULL;
    PERFORM audit_append(who, 'revoke', eng, grantee, 'ok', '');
    RETURN readlist;
END $$;

-- Phase two of a rotation, systems included: (table, uid, key version, four envelopes).
-- For credentials: secret, username, url, notes; for systems: address, details, NULL, NULL.
CREATE FUNCTION credvault.rotation_fetch_all(request bigint)
RETURNS TABLE (tbl text, uid bytea, key_version integer, env1 bytea, env2 bytea, env3 bytea, env4 bytea)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    want pg_lsn := pg_current_wal_insert_lsn();
    who text := me();
    q rotation_requests%ROWTYPE;
    tries integer := 0;
BEGIN
    SELECT * INTO q FROM rotation_requests r WHERE r.id = request FOR UPDATE;
    IF q.id IS NULL OR q.member <> who OR q.used_at IS NOT NULL
       OR q.created_at < clock_timestamp() - interval '60 seconds' THEN
        RAISE EXCEPTION 'credvault: no such rotation request' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF pg_xact_status(q.xid) IS DISTINCT FROM 'committed' THEN
        RAISE EXCEPTION 'credvault: rotation request not committed' USING ERRCODE = 'insufficient_privilege';
    END IF;
    WHILE pg_current_wal_flush_lsn() < want LOOP
        tries := tries + 1;
        IF tries > 25 THEN
            RAISE EXCEPTION 'credvault: rotation request not yet durable; retry'
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        PERFORM pg_sleep(0.002);
    END LOOP;
    IF coalesce(role_in(q.engagement_id), '') <> 'lead' THEN
        RAISE EXCEPTION 'credvault: no longer a lead' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE rotation_requests SET used_at = clock_timestamp() WHERE id = q.id;
    RETURN QUERY
        SELECT 'credentials'::text, c.uid, c.key_version, c.secret_env, c.username_env, c.url_env, c.notes_env
        FROM credentials c WHERE c.engagement_id = q.engagement_id
        UNION ALL
        SELECT 'systems'::text, s.uid, get_byte(s.address_env, 1) * 16777216 + get_byte(s.address_env, 2) * 65536
               + get_byte(s.address_env, 3) * 256 + get_byte(s.address_env, 4),
               s.address_env, s.details_env, NULL::bytea, NULL::bytea
        FROM systems s WHERE s.engagement_id = q.engagement_id
        ORDER BY 1, 2;
END $$;

-- Store a logged rotation: the links (removals the lead's replay found due, then the rotate
-- link naming the new key's fingerprint), every credential and system re-sealed (exactly
-- the set there is now), a copy for each member the log says holds the new key, and no
-- copy for anyone else. old_version 0: the first lead's first key.
CREATE FUNCTION credvault.rotate_key_logged(
    eng text, old_version integer, new_fp text,
    c_uids bytea[], c_secret bytea[], c_username bytea[], c_url bytea[], c_notes bytea[],
    s_uids bytea[], s_address bytea[], s_details bytea[],
    g_members text[], g_sealed bytea[], g_sigs bytea[], links bytea[]
) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; n integer; i integer;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active' FOR UPDATE;
    IF e.id IS NULL OR coalesce(role_in(e.id), '') <> 'lead' THEN
        RAISE EXCEPTION 'credvault: % may not rotate %', who, eng USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF e.key_version <> old_version THEN
        RAISE EXCEPTION 'credvault: the key was rotated meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    SELECT count(*) INTO n FROM credentials WHERE engagement_id = e.id;
    IF n <> coalesce(cardinality(c_uids), 0) OR EXISTS (
        SELECT 1 FROM credentials c WHERE c.engagement_id = e.id AND NOT c.uid = ANY (c_uids)) THEN
        RAISE EXCEPTION 'credvault: credentials changed meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    SELECT count(*) INTO n FROM systems WHERE engagement_id = e.id;
    IF n <> coalesce(cardinality(s_uids), 0) OR EXISTS (
        SELECT 1 FROM systems s WHERE s.engagement_id = e.id AND NOT s.uid = ANY (s_uids)) THEN
        RAISE EXCEPTION 'credvault: systems changed meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    FOR i IN 1 .. coalesce(cardinality(links), 0) LOOP
        PERFORM log_append(e.id, links[i]);
    END LOOP;
    FOR i IN 1 .. coalesce(cardinality(c_uids), 0) LOOP
        UPDATE credentials SET key_version = old_version + 1, secret_env = c_secret[i],
            username_env = c_username[i], url_env = c_url[i], notes_env = c_notes[i]
        WHERE engagement_id = e.id AND uid = c_uids[i];
    END LOOP;
    FOR i IN 1 .. coalesce(cardinality(s_uids), 0) LOOP
        UPDATE systems SET address_env = s_address[i], details_env = s_details[i]
        WHERE engagement_id = e.id AND uid = s_uids[i];
    END LOOP;
    -- only the replayed roster gets a copy: every other row's copy goes
    UPDATE grants SET key_version = NULL, sealed = NULL, sealed_by = NULL, copy_sig = NULL
        WHERE engagement_id = e.id AND NOT member = ANY (coalesce(g_members, '{}'));
    FOR i IN 1 .. coalesce(cardinality(g_members), 0) LOOP
        UPDATE grants SET key_version = old_version + 1, sealed = g_sealed[i], sealed_by = who,
            copy_sig = g_sigs[i]
        WHERE engagement_id = e.id AND member = g_members[i] AND revoked_at IS NULL;
    END LOOP;
    UPDATE engagements SET key_version = old_version + 1, key_fp = new_fp, needs_rotation = false
        WHERE id = e.id;
    PERFORM audit_append(who, 'rotate', eng, NULL, 'ok', format('key version %s', old_version + 1));
    RETURN old_version + 1;
END $$;

DO $$
DECLARE g text := credvault.member_group();
BEGIN
    -- new functions are executable by PUBLIC by default: not ours
    REVOKE ALL ON FUNCTION credvault.log_append(bigint, bytea) FROM PUBLIC;
    REVOKE ALL ON TABLE credvault.engagement_log, credvault.member_certs FROM PUBLIC;
    EXECUTE format('REVOKE ALL ON FUNCTION credvault.engagement_log_links(text, bigint),'
                   ' credvault.engagement_log_head(bigint), credvault.member_certificates(),'
                   ' credvault.pre_log_engagements(),'
                   ' credvault.invite_member(text, text, boolean, bytea, bytea),'
                   ' credvault.join_vault_proved(bytea, bytea, text, bytea),'
                   ' credvault.create_engagement_logged(bytea, text, text, text, bytea),'
                   ' credvault.put_grant_logged(text, text, text, integer, bytea, bytea, timestamptz, bytea),'
                   ' credvault.revoke_grant_logged(text, text, bytea),'
                   ' credvault.rotation_fetch_all(bigint),'
                   ' credvault.rotate_key_logged(text, integer, text, bytea[], bytea[], bytea[], bytea[],'
                   ' bytea[], bytea[], bytea[], bytea[], text[], bytea[], bytea[], bytea[]) FROM PUBLIC');
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.engagement_log_links(text, bigint),'
                   ' credvault.engagement_log_head(bigint), credvault.member_certificates(),'
                   ' credvault.pre_log_engagements(),'
                   ' credvault.invite_member(text, text, boolean, bytea, bytea),'
                   ' credvault.join_vault_proved(bytea, bytea, text, bytea),'
                   ' credvault.create_engagement_logged(bytea, text, text, text, bytea),'
                   ' credvault.put_grant_logged(text, text, text, integer, bytea, bytea, timestamptz, bytea),'
                   ' credvault.revoke_grant_logged(text, text, bytea),'
                   ' credvault.rotation_fetch_all(bigint),'
                   ' credvault.rotate_key_logged(text, integer, text, bytea[], bytea[], bytea[], bytea[],'
                   ' bytea[], bytea[], bytea[], bytea[], text[], bytea[], bytea[], bytea[]) TO %I', g);
END $$;
