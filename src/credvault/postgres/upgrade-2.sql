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
    -- Link 0 only with the engagement it creates (create_engagement_logged: key version 0,
    -- no key yet). An engagement without a log (a schema-1 vault's, or carried by migrate)
    -- has a key and stays without one: a lead's put_grant_logged, revoke_grant_logged or
    -- rotate_records on it must not start a log that no client could replay (section pgv1).
    IF last.seq IS NULL AND EXISTS (SELECT 1 FROM engagements x WHERE x.id = eid AND x.key_version <> 0) THEN
        RAISE EXCEPTION 'credvault: an engagement without a membership log cannot start one (only its creation writes link 0)'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
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
-- A closed engagement takes no grant: the lead is refused for its state (audited 'error',
-- "engagement is closed"), as on SQLCipher (section pgclosed).
CREATE FUNCTION credvault.put_grant_logged(
    eng text, grantee text, g_role text, g_key_version integer, g_sealed bytea,
    g_copy_sig bytea, g_expires_at timestamptz, new_link bytea
) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state <> 'purged' FOR UPDATE;
    IF e.id IS NULL THEN
        RAISE EXCEPTION 'credvault: no active engagement %', eng USING ERRCODE = 'no_data_found';
    END IF;
    IF coalesce(role_in(e.id), '') <> 'lead' THEN
        PERFORM audit_append(who, 'grant', eng, grantee, 'denied', g_role);
        RETURN false;
    END IF;
    IF e.state <> 'active' THEN  -- as SQLCipher's require_active: refused, on the record
        PERFORM audit_append(who, 'grant', eng, grantee, 'error', 'engagement is ' || e.state);
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
-- (Members call the two-argument one; this one is closed to them in section pgv1.)
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
-- Its earlier versions, the trash and record requests (tables of section pgcmds, below:
-- PL/pgSQL resolves them at the first call) go in the same transaction as the credentials
-- and systems, and the receipt counts them, as a SQLCipher receipt does.
CREATE FUNCTION credvault.destroy_engagement(eng text, why text, automatic boolean)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text := me(); e engagements%ROWTYPE; denial text;
    creds integer; syss integer; copies integer; vers integer; tcreds integer; tsyss integer; seq bigint; facts jsonb; reason text;
    purger text; at timestamptz := now();
BEGIN
    SELECT * INTO e FROM engagements x WHERE x.name = eng FOR UPDATE;
    IF why = 'request' THEN
        denial := lifecycle_denial(e.id);
    ELSIF why IN ('grace', 'hold', 'ledger') THEN  -- ledger: section pgrestore
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
    IF why IN ('grace', 'hold') AND (e.state <> 'closed' OR e.purge_due IS NULL OR e.purge_due > at) THEN
        RAISE EXCEPTION 'credvault: engagement % is not due for its purge', eng USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF why IN ('grace', 'hold') AND clock_problem() IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM audit a WHERE a.action = 'clock-confirm' AND a.member = who
        AND a.ts > at - interval '10 minutes') THEN
        RAISE EXCEPTION 'credvault: purge held: %', clock_problem() USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'clock';
    END IF;
    reason := CASE WHEN why = 'request' THEN 'client request'
                   WHEN why = 'ledger' THEN 'destroyed after this backup was made'
                   WHEN e.hold_until IS NOT NULL AND e.purge_due = e.hold_until
                   THEN 'retention hold expired' ELSE 'grace period expired' END;
    SELECT count(*) INTO creds FROM credentials WHERE engagement_id = e.id;
    SELECT count(*) INTO syss FROM systems WHERE engagement_id = e.id;
    SELECT count(*) INTO copies FROM grants WHERE engagement_id = e.id AND sealed IS NOT NULL;
    SELECT count(*) INTO vers FROM credential_versions WHERE engagement_id = e.id;
    SELECT count(*) INTO tcreds FROM credential_trash WHERE engagement_id = e.id;
    SELECT count(*) INTO tsyss FROM system_trash WHERE engagement_id = e.id;
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
            'credentials', creds, 'systems', syss, 'credential_versions', vers,
            'trashed_credentials', tcreds, 'trashed_systems', tsyss, 'key_copies', copies,
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
    DELETE FROM credential_versions WHERE engagement_id = e.id;
    DELETE FROM credential_trash WHERE engagement_id = e.id;
    DELETE FROM system_trash WHERE engagement_id = e.id;
    DELETE FROM record_requests WHERE engagement_id = e.id;
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

-- == pgcmds: the record commands on a team vault (systems; history; edit/mv/find; trash) ==
--
-- Same rules as version 1: members reach no envelope column directly; every function that
-- returns an envelope does so only against a committed, durable, unused, recent request of
-- the same member whose audit row names what it releases (request_record, then
-- fetch_record: the two phases of request_read/fetch, for other kinds of record); writes
-- check the caller's live role in the server's own grants (lead and engineer write, as
-- access.py says) and audit under the SQLCipher vault's action names.
--
-- Each write function opens with open_for_write (section pgclosed): the engagement locked
-- FOR SHARE, the writing role checked, a refusal audited ('denied', or 'error' for a closed
-- engagement, as SQLCipher's require_active).

-- When something removed now leaves the trash (days), as the SQLCipher setting trash-days.
INSERT INTO credvault.meta (key, value) VALUES ('trash_days', convert_to('30', 'UTF8'));

-- Phase one of a read of a record other than a credential's current value.
--   kind 'system'            a system's address and details (system show; audited system-show)
--   kind 'credential-system' the address and port of a credential's linked system
--                            (get --field address|port; audited show)
CREATE TABLE credvault.record_requests (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    member        text NOT NULL,
    kind          text NOT NULL,
    engagement_id bigint NOT NULL REFERENCES credvault.engagements (id) ON DELETE CASCADE,
    target_id     bigint NOT NULL,
    audit_seq     bigint NOT NULL REFERENCES credvault.audit (seq),
    xid           xid8 NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    used_at       timestamptz
);

-- Removed systems, until trash_days have passed (system rm; restore brings them back with
-- the links of the credentials that pointed at them: their uids, in `linked`).
CREATE TABLE credvault.system_trash (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    engagement_id bigint NOT NULL REFERENCES credvault.engagements (id) ON DELETE CASCADE,
    uid           bytea NOT NULL,
    name          text NOT NULL,
    port          integer,
    protocol      text,
    address_env   bytea NOT NULL,
    details_env   bytea,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    deleted_at    timestamptz NOT NULL DEFAULT now(),
    deleted_by    text NOT NULL,
    expires_at    timestamptz NOT NULL,
    linked        bytea[] NOT NULL DEFAULT '{}'
);

-- History (step 2): a credential's earlier versions, envelopes only, kept on the server.
-- Every value a credential had stays at the place it was sealed for (a put seals for a
-- new uid), so a version is the old row as it was: its uid, clear columns and envelopes.
-- The snapshot is taken by a trigger, whatever function wrote the row: no write can
-- replace a value without keeping the old one. A rotation (the key version changes, the
-- uid stays) re-seals versions too and is not a new version.
ALTER TABLE credvault.credentials ADD COLUMN version integer NOT NULL DEFAULT 1;
ALTER TABLE credvault.credentials ADD COLUMN updated_by text;
ALTER TABLE credvault.credentials ADD COLUMN changed text NOT NULL DEFAULT 'created';

CREATE TABLE credvault.credential_versions (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    engagement_id bigint NOT NULL REFERENCES credvault.engagements (id) ON DELETE CASCADE,
    credential_id bigint NOT NULL,   -- the live (or trashed) row's id: kept through the trash
    version       integer NOT NULL,
    uid           bytea NOT NULL,    -- the place its envelopes were sealed for
    name          text NOT NULL,
    kind          text NOT NULL,
    system_uid    bytea,             -- the linked system then (a bound anchor's binding)
    system_name   text,
    key_version   integer NOT NULL,
    secret_env    bytea NOT NULL,
    username_env  bytea,
    url_env       bytea,
    notes_env     bytea,
    created_at    timestamptz NOT NULL,
    created_by    text,
    changed       text NOT NULL,
    UNIQUE (credential_id, version)
);

CREATE FUNCTION credvault.keep_version() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE s systems%ROWTYPE; who text;
BEGIN
    SELECT name INTO who FROM members WHERE role_name = session_user;
    IF TG_OP = 'INSERT' THEN
        IF current_setting('credvault.restoring', true) = 'on' THEN
            RETURN NEW;  -- back from the trash with its own number and history
        END IF;
        NEW.version := 1;
        NEW.updated_by := who;
        NEW.changed := 'created';
        RETURN NEW;
    END IF;
    IF NEW.key_version <> OLD.key_version OR (
           NEW.secret_env IS NOT DISTINCT FROM OLD.secret_env
           AND NEW.username_env IS NOT DISTINCT FROM OLD.username_env
           AND NEW.url_env IS NOT DISTINCT FROM OLD.url_env
           AND NEW.notes_env IS NOT DISTINCT FROM OLD.notes_env
           AND NEW.kind = OLD.kind
           AND (NEW.system_id IS NOT DISTINCT FROM OLD.system_id
                -- put --system linking the row it has just written, system rm unlinking
                OR current_setting('credvault.linking', true) = 'on')) THEN
        -- not a new value: such a link, a rename, or a rotation (which re-seals the
        -- versions too). An edit of the link is a version, as on SQLCipher.
        NEW.version := OLD.version;
        RETURN NEW;
    END IF;
    IF current_setting('credvault.rebinding', true) = 'on'
       AND NEW.username_env IS NOT DISTINCT FROM OLD.username_env
       AND NEW.url_env IS NOT DISTINCT FROM OLD.url_env
       AND NEW.notes_env IS NOT DISTINCT FROM OLD.notes_env
       AND NEW.kind = OLD.kind AND (NEW.system_id IS NOT DISTINCT FROM OLD.system_id
                                   OR current_setting('credvault.linking', true) = 'on') THEN
        -- a rename (mv), or a system's removal or restore: the same value, its secret
        -- sealed again for the new name or link
        NEW.version := OLD.version;
        RETURN NEW;
    END IF;
    SELECT * INTO s FROM systems WHERE id = OLD.system_id;
    INSERT INTO credential_versions (engagement_id, credential_id, version, uid, name, kind,
        system_uid, system_name, key_version, secret_env, username_env, url_env, notes_env,
        created_at, created_by, changed)
    VALUES (OLD.engagement_id, OLD.id, OLD.version, OLD.uid, OLD.name, OLD.kind, s.uid, s.name,
        OLD.key_version, OLD.secret_env, OLD.username_env, OLD.url_env, OLD.notes_env,
        OLD.updated_at, OLD.updated_by, OLD.changed);
    NEW.version := OLD.version + 1;
    NEW.updated_by := who;
    NEW.changed := coalesce(nullif(current_setting('credvault.changed', true), ''), 'secret');
    RETURN NEW;
END $$;
CREATE TRIGGER keep_version BEFORE INSERT OR UPDATE ON credvault.credentials
    FOR EACH ROW EXECUTE FUNCTION credvault.keep_version();

-- The wait of fetch, for every phase two: the WAL up to `want` flushed (and on a
-- synchronous standby, if there is one), else object_not_in_prerequisite_state and the
-- client nudges and asks again. Not executable by members.
CREATE FUNCTION credvault.await_durable(want pg_lsn) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE tries integer := 0;
BEGIN
    WHILE pg_current_wal_flush_lsn() < want LOOP
        tries := tries + 1;
        IF tries > 25 THEN
            RAISE EXCEPTION 'credvault: read request not yet durable (asynchronous commit?); retry'
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        PERFORM pg_sleep(0.002);
    END LOOP;
    IF current_setting('synchronous_standby_names') <> '' THEN
        tries := 0;
        WHILE NOT EXISTS (SELECT 1 FROM pg_stat_replication r
                          WHERE r.sync_state IN ('sync', 'quorum') AND r.flush_lsn >= want) LOOP
            tries := tries + 1;
            IF tries > 250 THEN
                RAISE EXCEPTION 'credvault: read request not yet on the synchronous standby; retry'
                    USING ERRCODE = 'object_not_in_prerequisite_state';
            END IF;
            PERFORM pg_sleep(0.002);
        END LOOP;
    END IF;
END $$;

-- The caller's role allows `act` ('read', 'write', 'list') on engagement e (access.py).
CREATE FUNCTION credvault.may(eng_id bigint, act text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
    SELECT coalesce(CASE act
        WHEN 'read' THEN role_in(eng_id) IN ('lead', 'engineer', 'reader')
        WHEN 'write' THEN role_in(eng_id) IN ('lead', 'engineer')
        WHEN 'list' THEN role_in(eng_id) IS NOT NULL OR is_admin()
        ELSE false END, false)
$$;

-- What a denial's audit detail says, as SQLCipher's: the role held, or none.
CREATE FUNCTION credvault.held(eng_id bigint) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$ SELECT coalesce('role ' || role_in(eng_id), 'no grant') $$;

-- Phase one. Denials and misses are audited and return NULL (an exception would roll the
-- audit row back). The audit action and detail are the SQLCipher vault's:
--   kind               command                         audited as (a denial: verb)
--   system             system show                     system-show (system show)
--   credential-system  get --field address|port        show
--   fields             get --field username|url|notes, edit in $EDITOR
--                                                      show, "fields without the secret"
--   version            get --version N                 get, "version N"
--   version-show       get --version N --field F       show, "version N: fields without the secret"
CREATE FUNCTION credvault.request_record(
    k text, eng text, itm text, reason text DEFAULT '', ver integer DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text := me();
    e engagements%ROWTYPE;
    act text;
    cid bigint;
    tid bigint;
    why text := coalesce(reason, '');
    detail text;
    s bigint;
    rid bigint;
BEGIN
    act := CASE k WHEN 'system' THEN 'system-show' WHEN 'credential-system' THEN 'show'
                  WHEN 'fields' THEN 'show'
                  WHEN 'version' THEN 'get' WHEN 'version-show' THEN 'show'
                  -- a credential's secret, to seal it again bound to its new name (mv) or
                  -- kind and link (edit): the client then stores it with the change, which
                  -- the mv or edit function audits under its own name
                  WHEN 'rebind-mv' THEN 'rebind' WHEN 'rebind-edit' THEN 'rebind' END;
    IF act IS NULL OR (k LIKE 'version%' AND ver IS NULL) THEN
        RAISE EXCEPTION 'credvault: unknown kind of record %', k USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO e FROM engagements WHERE name = eng
        AND (state = 'active' OR (state = 'closed' AND k NOT LIKE 'rebind-%'));
    IF e.id IS NULL OR NOT may(e.id, 'read') OR (k LIKE 'rebind-%' AND NOT may(e.id, 'write')) THEN
        -- audited under the operation's verb, as SQLCipher does (access.py)
        PERFORM audit_append(who, CASE k WHEN 'system' THEN 'system show' ELSE act END,
                             eng, itm, 'denied', held(e.id));
        RETURN NULL;
    END IF;
    IF e.require_reason AND why = '' AND k NOT LIKE 'rebind-%' THEN
        PERFORM audit_append(who, act, eng, itm, 'denied', 'this engagement requires --reason');
        RETURN NULL;
    END IF;
    IF k = 'system' THEN
        SELECT id INTO tid FROM systems WHERE engagement_id = e.id AND name = itm;
        detail := CASE WHEN why = '' THEN '' ELSE 'reason: ' || why END;
    ELSE
        SELECT id INTO cid FROM credentials WHERE engagement_id = e.id AND name = itm;
        tid := cid;
        detail := CASE k
            WHEN 'credential-system' THEN 'system address and port, without the secret'
            WHEN 'fields' THEN 'fields without the secret'
            WHEN 'version' THEN format('version %s', ver)
            WHEN 'rebind-mv' THEN 'secret released to seal it again for its new name'
            WHEN 'rebind-edit' THEN 'secret released to seal it again for its new kind or link'
            ELSE format('version %s: fields without the secret', ver) END
            || CASE WHEN why = '' THEN '' ELSE '; reason: ' || why END;
    END IF;
    IF tid IS NULL THEN
        PERFORM audit_append(who, act, eng, itm, 'error', 'not found');
        RETURN NULL;
    END IF;
    IF k LIKE 'version%' THEN
        SELECT v.id INTO tid FROM credential_versions v WHERE v.credential_id = cid AND v.version = ver;
        IF tid IS NULL THEN
            PERFORM audit_append(who, act, eng, itm, 'error', format('no version %s', ver));
            RETURN NULL;
        END IF;
    END IF;
    s := audit_append(who, act, eng, itm, 'ok', detail);
    INSERT INTO record_requests (member, kind, engagement_id, target_id, audit_seq, xid)
    VALUES (who, k, e.id, tid, s, pg_current_xact_id()) RETURNING id INTO rid;
    RETURN rid;
END $$;

-- Phase two: the envelopes the request's audit row names, under fetch's conditions (the
-- caller's, unused, at most 60 s old, committed by an earlier transaction, durable, and a
-- reading role still held). One row:
--   system             e1 address, e2 details; the system's name, port, protocol
--   credential-system  e1 the linked system's address (NULL: no link); its name, port, protocol
--   version            e1..e4 secret, username, url, notes of that version; its uid, name,
--                      kind and linked system (uid and name) then
--   version-show       the same without the secret (e1 NULL)
--   fields             the current username, url, notes (e2..e4; e1 NULL: no secret), uid,
--                      name, kind, linked system
CREATE FUNCTION credvault.fetch_record(request bigint)
RETURNS TABLE (uid bytea, name text, kind text, port integer, protocol text, sys_uid bytea,
               sys_name text, e1 bytea, e2 bytea, e3 bytea, e4 bytea, audit_seq bigint,
               created_at timestamptz, updated_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    want pg_lsn := pg_current_wal_insert_lsn();
    who text := me();
    q record_requests%ROWTYPE;
BEGIN
    SELECT * INTO q FROM record_requests r WHERE r.id = request FOR UPDATE;
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
    PERFORM await_durable(want);
    IF NOT may(q.engagement_id, 'read')
       OR (q.kind LIKE 'rebind-%' AND NOT may(q.engagement_id, 'write')) THEN
        RAISE EXCEPTION 'credvault: access revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE record_requests SET used_at = clock_timestamp() WHERE id = q.id;
    IF q.kind = 'system' THEN
        RETURN QUERY SELECT s.uid, s.name, NULL::text, s.port, s.protocol, NULL::bytea, NULL::text,
                            s.address_env, s.details_env, NULL::bytea, NULL::bytea,
                            q.audit_seq, s.created_at, s.updated_at
            FROM systems s WHERE s.id = q.target_id AND s.engagement_id = q.engagement_id;
    ELSIF q.kind = 'credential-system' THEN
        RETURN QUERY SELECT s.uid, s.name, NULL::text, s.port, s.protocol, NULL::bytea, NULL::text,
                            s.address_env, NULL::bytea, NULL::bytea, NULL::bytea,
                            q.audit_seq, c.created_at, c.updated_at
            FROM credentials c LEFT JOIN systems s ON s.id = c.system_id
            WHERE c.id = q.target_id AND c.engagement_id = q.engagement_id;
    ELSIF q.kind = 'fields' THEN
        RETURN QUERY SELECT c.uid, c.name, c.kind, NULL::integer, NULL::text, s.uid, s.name,
                            NULL::bytea, c.username_env, c.url_env, c.notes_env,
                            q.audit_seq, c.created_at, c.updated_at
            FROM credentials c LEFT JOIN systems s ON s.id = c.system_id
            WHERE c.id = q.target_id AND c.engagement_id = q.engagement_id;
    ELSIF q.kind IN ('version', 'version-show') THEN
        RETURN QUERY SELECT v.uid, v.name, v.kind, NULL::integer, NULL::text, v.system_uid,
                            v.system_name,
                            CASE WHEN q.kind = 'version' THEN v.secret_env END,
                            v.username_env, v.url_env, v.notes_env,
                            q.audit_seq, c.created_at, v.created_at
            FROM credential_versions v LEFT JOIN credentials c ON c.id = v.credential_id
            WHERE v.id = q.target_id AND v.engagement_id = q.engagement_id;
    ELSIF q.kind LIKE 'rebind-%' THEN
        RETURN QUERY SELECT c.uid, c.name, c.kind, NULL::integer, NULL::text, s.uid, s.name,
                            c.secret_env, NULL::bytea, NULL::bytea, NULL::bytea,
                            q.audit_seq, c.created_at, c.updated_at
            FROM credentials c LEFT JOIN systems s ON s.id = c.system_id
            WHERE c.id = q.target_id AND c.engagement_id = q.engagement_id;
    END IF;
END $$;

-- system add: create, or change what is given (address always; port and protocol as the
-- client sends them, matching the binding it sealed the address with; details replaced
-- when given, else kept). The client names the uid it sealed for: an existing system's
-- own (its credentials' links are bound to it), else a new one. Returns the audited action
-- ('system-add', 'system-update'), or NULL when refused (audited).
CREATE FUNCTION credvault.put_system(
    eng text, s_name text, s_uid bytea, s_key_version integer, s_port integer,
    s_protocol text, s_address_env bytea, s_details_env bytea, keep_details boolean,
    changed text[]
) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; old systems%ROWTYPE;
BEGIN
    e := open_for_write(eng, 'system add', s_name);
    IF e.id IS NULL THEN  -- refused, and audited there: denied, or closed ('error')
        RETURN NULL;
    END IF;
    IF s_key_version <> e.key_version THEN
        RAISE EXCEPTION 'credvault: the engagement key was rotated meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    IF s_name !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' OR s_address_env IS NULL
       OR NOT changed <@ ARRAY['address', 'port', 'protocol', 'details'] THEN
        RAISE EXCEPTION 'credvault: invalid system' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO old FROM systems WHERE engagement_id = e.id AND name = s_name FOR UPDATE;
    IF old.id IS NULL THEN
        INSERT INTO systems (uid, engagement_id, name, port, protocol, address_env, details_env)
        VALUES (s_uid, e.id, s_name, s_port, s_protocol, s_address_env,
                CASE WHEN keep_details THEN NULL ELSE s_details_env END);
        PERFORM audit_append(who, 'system-add', eng, s_name, 'ok', '');
        RETURN 'system-add';
    END IF;
    IF old.uid <> s_uid THEN
        RAISE EXCEPTION 'credvault: the system changed meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    UPDATE systems SET port = s_port, protocol = s_protocol, address_env = s_address_env,
        details_env = CASE WHEN keep_details THEN details_env ELSE s_details_env END,
        updated_at = now()
        WHERE id = old.id;
    PERFORM audit_append(who, 'system-update', eng, s_name, 'ok',
                         'changed ' || array_to_string(changed, ', '));
    RETURN 'system-update';
END $$;

-- system ls: the clear columns, on the record as SQLCipher's listing is (system-ls); a
-- member without a role gets nothing and a 'list systems' denial.
CREATE FUNCTION credvault.list_systems(eng text)
RETURNS TABLE (uid bytea, name text, port integer, protocol text, created_at timestamptz,
               updated_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; n integer;
BEGIN
    SELECT * INTO e FROM engagements x WHERE x.name = eng AND x.state <> 'purged';
    IF e.id IS NULL OR NOT may(e.id, 'list') THEN
        PERFORM audit_append(who, 'list systems', eng, NULL, 'denied', held(e.id));
        RETURN;
    END IF;
    SELECT count(*) INTO n FROM systems s WHERE s.engagement_id = e.id;
    PERFORM audit_append(who, 'system-ls', eng, NULL, 'ok', format('%s systems listed', n));
    RETURN QUERY SELECT s.uid, s.name, s.port, s.protocol, s.created_at, s.updated_at
        FROM systems s WHERE s.engagement_id = e.id ORDER BY s.name;
END $$;

-- system rm: to the trash until trash_days from now. The credentials linked to it lose the
-- link (and get it back at restore). A linked credential whose anchor is record-bound
-- (format 0x02: its binding names this system) would no longer open: refused, until such
-- anchors are sealed again by their writers. Returns (outcome, until): outcome 'ok',
-- 'denied' or 'not found' (each audited).
-- c_uids, c_secrets: the secrets of the credentials linked to it, sealed again by the client
-- without the link (a bound secret names its system: as SQLCipher's system rm re-binds them).
CREATE FUNCTION credvault.remove_system(eng text, s_name text, c_uids bytea[] DEFAULT NULL,
                                        c_secrets bytea[] DEFAULT NULL)
RETURNS TABLE (outcome text, until text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text := me(); e engagements%ROWTYPE; old systems%ROWTYPE; ends timestamptz;
    links bytea[];
BEGIN
    e := open_for_write(eng, 'system rm', s_name);
    IF e.id IS NULL THEN  -- refused, and audited there: denied, or closed ('error')
        RETURN QUERY SELECT 'denied'::text, NULL::text;
        RETURN;
    END IF;
    SELECT * INTO old FROM systems WHERE engagement_id = e.id AND name = s_name FOR UPDATE;
    IF old.id IS NULL THEN
        PERFORM audit_append(who, 'system-rm', eng, s_name, 'error', 'not found');
        RETURN QUERY SELECT 'not found'::text, NULL::text;
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM credentials c WHERE c.system_id = old.id AND get_byte(c.secret_env, 0) = 2
               AND NOT EXISTS (SELECT 1 FROM unnest(c_uids, c_secrets) AS g(u, env)
                               WHERE g.u = c.uid AND rebound_ok(g.env, c.key_version))) THEN
        RAISE EXCEPTION 'credvault: a credential bound to system % links to it: put it again without the link first', s_name
            USING ERRCODE = 'feature_not_supported';
    END IF;
    ends := now() + make_interval(days => (SELECT convert_from(value, 'UTF8')::integer FROM meta WHERE key = 'trash_days'));
    SELECT coalesce(array_agg(c.uid ORDER BY c.uid), '{}') INTO links FROM credentials c WHERE c.system_id = old.id;
    INSERT INTO system_trash (engagement_id, uid, name, port, protocol, address_env, details_env,
                              created_at, updated_at, deleted_by, expires_at, linked)
    VALUES (e.id, old.uid, old.name, old.port, old.protocol, old.address_env, old.details_env,
            old.created_at, old.updated_at, who, ends, links);
    -- credentials.system_id: ON DELETE SET NULL, not a new version of them (keep_version)
    PERFORM set_config('credvault.linking', 'on', true);
    PERFORM set_config('credvault.rebinding', 'on', true);
    UPDATE credentials c SET secret_env = g.env
        FROM unnest(c_uids, c_secrets) AS g(u, env)
        WHERE c.system_id = old.id AND c.uid = g.u;
    DELETE FROM systems WHERE id = old.id;
    PERFORM set_config('credvault.rebinding', '', true);
    PERFORM set_config('credvault.linking', '', true);
    -- the vault's ISO form (model.iso): UTC, microseconds, Z
    until := to_char(ends AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    PERFORM audit_append(who, 'system-rm', eng, s_name, 'ok', 'to the trash until ' || until);
    RETURN QUERY SELECT 'ok'::text, until;
END $$;

-- put --system: store a credential as put_credential does, linked to a system of the
-- engagement (c_system NULL: keep the link it has; a new credential then has none).
CREATE FUNCTION credvault.put_credential_linked(
    eng text, c_name text, c_kind text, c_uid bytea, c_key_version integer,
    c_secret_env bytea, c_username_env bytea, c_url_env bytea, c_notes_env bytea,
    c_system text, c_changed text DEFAULT NULL
) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE e engagements%ROWTYPE; sid bigint; ok boolean;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active' FOR SHARE;
    IF c_system IS NOT NULL AND e.id IS NOT NULL AND may(e.id, 'write') THEN
        SELECT id INTO sid FROM systems WHERE engagement_id = e.id AND name = c_system;
        IF sid IS NULL THEN
            RAISE EXCEPTION 'credvault: system %/% not found', eng, c_system USING ERRCODE = 'no_data_found';
        END IF;
    END IF;
    IF c_system IS NULL AND e.id IS NOT NULL THEN
        SELECT system_id INTO sid FROM credentials WHERE engagement_id = e.id AND name = c_name;
    END IF;
    -- what the new version changed (history's "changed"; keep_version reads it)
    PERFORM set_config('credvault.changed', coalesce(c_changed, ''), true);
    ok := put_credential(eng, c_name, c_kind, c_uid, c_key_version, c_secret_env,
                         c_username_env, c_url_env, c_notes_env);
    IF ok THEN
        PERFORM set_config('credvault.linking', 'on', true);
        UPDATE credentials SET system_id = sid WHERE engagement_id = e.id AND name = c_name
            AND system_id IS DISTINCT FROM sid;
        PERFORM set_config('credvault.linking', '', true);
    END IF;
    RETURN ok;
END $$;

-- history: every version of a credential, oldest first (no values), on the record as
-- SQLCipher's listing is ('history', "N versions"). Nothing comes back when the member
-- holds no role (audited as a 'history' denial) or the credential does not exist
-- (audited as an error): a history always has the current version.
CREATE FUNCTION credvault.credential_history(eng text, itm text)
RETURNS TABLE (version integer, kind text, system_name text, by_member text, at text,
               changed text, is_current boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; c credentials%ROWTYPE; n integer;
BEGIN
    SELECT * INTO e FROM engagements x WHERE x.name = eng AND x.state <> 'purged';
    IF e.id IS NULL OR NOT may(e.id, 'list') THEN
        PERFORM audit_append(who, 'history', eng, itm, 'denied', held(e.id));
        RETURN;
    END IF;
    SELECT * INTO c FROM credentials x WHERE x.engagement_id = e.id AND x.name = itm;
    IF c.id IS NULL THEN
        PERFORM audit_append(who, 'history', eng, itm, 'error', 'not found');
        RETURN;
    END IF;
    SELECT count(*) + 1 INTO n FROM credential_versions v WHERE v.credential_id = c.id;
    PERFORM audit_append(who, 'history', eng, itm, 'ok', format('%s versions', n));
    RETURN QUERY
        SELECT v.version, v.kind, v.system_name, v.created_by,
               to_char(v.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
               v.changed, false
        FROM credential_versions v WHERE v.credential_id = c.id
        UNION ALL
        SELECT c.version, c.kind, (SELECT s.name FROM systems s WHERE s.id = c.system_id),
               c.updated_by,
               to_char(c.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
               c.changed, true
        ORDER BY 1;
END $$;

-- revert: an earlier version becomes current again, as a new version (keep_version keeps
-- the one it replaces). Done here, without the values leaving the server: a version's
-- envelopes are sealed for its own uid at the credentials' place, so the row takes that
-- uid with them; its kind and system link come back too (the link if that system still
-- exists). A record-bound anchor (0x02) names the credential and its link: one whose
-- name or system no longer match would not open, and is refused. Returns 'ok', 'denied',
-- 'not found' or 'no version' (each audited as SQLCipher does: 'revert').
CREATE FUNCTION credvault.revert_credential(eng text, itm text, ver integer) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text := me(); e engagements%ROWTYPE; c credentials%ROWTYPE;
    v credential_versions%ROWTYPE; sid bigint;
BEGIN
    e := open_for_write(eng, 'revert', itm);
    IF e.id IS NULL THEN  -- refused, and audited there: denied, or closed ('error')
        RETURN 'denied';
    END IF;
    SELECT * INTO c FROM credentials WHERE engagement_id = e.id AND name = itm FOR UPDATE;
    IF c.id IS NULL THEN
        RETURN 'not found';
    END IF;
    SELECT * INTO v FROM credential_versions WHERE credential_id = c.id AND version = ver;
    IF v.id IS NULL THEN
        RETURN 'no version';
    END IF;
    IF v.key_version <> e.key_version THEN
        RAISE EXCEPTION 'credvault: the engagement key was rotated meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    SELECT id INTO sid FROM systems WHERE engagement_id = e.id AND uid = v.system_uid;
    IF get_byte(v.secret_env, 0) = 2 AND (v.name <> c.name OR (v.system_uid IS NOT NULL AND sid IS NULL)) THEN
        RAISE EXCEPTION 'credvault: version % of % is bound to a name or system it no longer has: put the value again instead', ver, itm
            USING ERRCODE = 'feature_not_supported';
    END IF;
    PERFORM set_config('credvault.changed', format('revert to version %s', ver), true);
    UPDATE credentials SET uid = v.uid, kind = v.kind, system_id = sid, key_version = v.key_version,
        secret_env = v.secret_env, username_env = v.username_env, url_env = v.url_env,
        notes_env = v.notes_env, updated_at = now()
        WHERE id = c.id;
    PERFORM audit_append(who, 'revert', eng, itm, 'ok', format('to version %s', ver));
    RETURN 'ok';
END $$;

-- A secret the client sealed again (mv, edit of kind or link): record-bound (format 0x02)
-- and under the row's key version (bytes 1-4), or the row changed meanwhile.
CREATE FUNCTION credvault.rebound_ok(env bytea, kv integer) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = credvault, pg_temp
AS $$ SELECT length(env) > 5 AND get_byte(env, 0) = 2 AND get_byte(env, 1) * 16777216
      + get_byte(env, 2) * 65536 + get_byte(env, 3) * 256 + get_byte(env, 4) = kv $$;

-- edit: username, url and notes sealed again on the member's machine for the row's own uid
-- (the secret is neither asked for nor released), kind and system link changed in the
-- clear. keep_version keeps the version it replaces. A record-bound anchor (0x02) names
-- the kind and the link: changing either would need the secret sealed again, so it is
-- refused (put the value again). Returns 'ok', 'denied', 'not found' or 'no system'
-- (the first two audited as SQLCipher does: 'edit', "changed …").
CREATE FUNCTION credvault.edit_credential(
    eng text, itm text, c_uid bytea, c_key_version integer,
    set_username boolean, c_username_env bytea, set_url boolean, c_url_env bytea,
    set_notes boolean, c_notes_env bytea, c_kind text, set_system boolean, c_system text,
    changed text, c_secret_env bytea DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; c credentials%ROWTYPE; sid bigint;
BEGIN
    e := open_for_write(eng, 'edit', itm);
    IF e.id IS NULL THEN  -- refused, and audited there: denied, or closed ('error')
        RETURN 'denied';
    END IF;
    SELECT * INTO c FROM credentials WHERE engagement_id = e.id AND name = itm FOR UPDATE;
    IF c.id IS NULL THEN
        RETURN 'not found';  -- not audited, as on SQLCipher
    END IF;
    IF c.uid <> c_uid OR c_key_version <> e.key_version THEN
        RAISE EXCEPTION 'credvault: the credential changed meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    sid := c.system_id;
    IF set_system THEN
        sid := NULL;
        IF c_system IS NOT NULL THEN
            SELECT id INTO sid FROM systems WHERE engagement_id = e.id AND name = c_system;
            IF sid IS NULL THEN
                RETURN 'no system';
            END IF;
        END IF;
    END IF;
    IF c_secret_env IS NOT NULL AND NOT rebound_ok(c_secret_env, c.key_version) THEN
        RAISE EXCEPTION 'credvault: the credential changed meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    IF get_byte(c.secret_env, 0) = 2 AND c_secret_env IS NULL
       AND (coalesce(c_kind, c.kind) <> c.kind OR sid IS DISTINCT FROM c.system_id) THEN
        RAISE EXCEPTION 'credvault: % is bound to its kind and system: put the value again to change them', itm
            USING ERRCODE = 'feature_not_supported';
    END IF;
    PERFORM set_config('credvault.changed', changed, true);
    UPDATE credentials SET
        username_env = CASE WHEN set_username THEN c_username_env ELSE username_env END,
        url_env = CASE WHEN set_url THEN c_url_env ELSE url_env END,
        notes_env = CASE WHEN set_notes THEN c_notes_env ELSE notes_env END,
        kind = coalesce(c_kind, kind), system_id = sid, updated_at = now(),
        secret_env = coalesce(c_secret_env, secret_env)
        WHERE id = c.id;
    PERFORM audit_append(who, 'edit', eng, itm, 'ok', 'changed ' || changed);
    RETURN 'ok';
END $$;

-- mv within an engagement: a rename of the clear name (a record-bound anchor names it:
-- refused, put it again). Returns 'ok', 'denied', 'not found' or 'exists' (audited 'mv',
-- "renamed to …"). Earlier versions keep the name they had.
-- new_secret: the secret sealed again by the client for the new name (a record-bound one:
-- every secret under a membership log), at the row's uid and key version.
CREATE FUNCTION credvault.rename_credential(eng text, itm text, new_name text,
                                            new_secret bytea DEFAULT NULL) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; c credentials%ROWTYPE;
BEGIN
    e := open_for_write(eng, 'mv', itm);
    IF e.id IS NULL THEN  -- refused, and audited there: denied, or closed ('error')
        RETURN 'denied';
    END IF;
    IF new_name !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' THEN
        RAISE EXCEPTION 'credvault: invalid name' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO c FROM credentials WHERE engagement_id = e.id AND name = itm FOR UPDATE;
    IF c.id IS NULL THEN
        RETURN 'not found';
    END IF;
    IF EXISTS (SELECT 1 FROM credentials WHERE engagement_id = e.id AND name = new_name) THEN
        RETURN 'exists';
    END IF;
    IF get_byte(c.secret_env, 0) = 2 AND new_secret IS NULL THEN
        RAISE EXCEPTION 'credvault: % is bound to its name: put the value under the new name instead', itm
            USING ERRCODE = 'feature_not_supported';
    END IF;
    IF new_secret IS NOT NULL AND NOT rebound_ok(new_secret, c.key_version) THEN
        RAISE EXCEPTION 'credvault: the credential changed meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    PERFORM set_config('credvault.rebinding', 'on', true);
    UPDATE credentials SET name = new_name, updated_at = now(),
        secret_env = coalesce(new_secret, secret_env) WHERE id = c.id;
    PERFORM set_config('credvault.rebinding', '', true);
    PERFORM audit_append(who, 'mv', eng, itm, 'ok', 'renamed to ' || new_name);
    RETURN 'ok';
END $$;

-- find: the fields of one engagement's credentials and systems, for a member who may read
-- there, through the same two phases: request_find commits the audit row ('find',
-- "fields searched"), fetch_find releases the non-secret envelopes (username, url, notes;
-- address, details) against it. Names are searched in the clear columns (row-level
-- security: engagements with a role).
CREATE FUNCTION credvault.request_find(eng text, reason text DEFAULT '') RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; why text := coalesce(reason, ''); s bigint; rid bigint;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state IN ('active', 'closed');
    IF e.id IS NULL OR NOT may(e.id, 'read') THEN
        PERFORM audit_append(who, 'find', eng, NULL, 'denied', held(e.id));
        RETURN NULL;
    END IF;
    IF e.require_reason AND why = '' THEN
        PERFORM audit_append(who, 'find', eng, NULL, 'denied', 'this engagement requires --reason');
        RETURN NULL;
    END IF;
    s := audit_append(who, 'find', eng, NULL, 'ok',
                      'fields searched' || CASE WHEN why = '' THEN '' ELSE '; reason: ' || why END);
    INSERT INTO record_requests (member, kind, engagement_id, target_id, audit_seq, xid)
    VALUES (who, 'find', e.id, e.id, s, pg_current_xact_id()) RETURNING id INTO rid;
    RETURN rid;
END $$;

CREATE FUNCTION credvault.fetch_find(request bigint)
RETURNS TABLE (tbl text, name text, uid bytea, port integer, protocol text, e1 bytea,
               e2 bytea, e3 bytea)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    want pg_lsn := pg_current_wal_insert_lsn();
    who text := me();
    q record_requests%ROWTYPE;
BEGIN
    SELECT * INTO q FROM record_requests r WHERE r.id = request AND r.kind = 'find' FOR UPDATE;
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
    PERFORM await_durable(want);
    IF NOT may(q.engagement_id, 'read') THEN
        RAISE EXCEPTION 'credvault: access revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE record_requests SET used_at = clock_timestamp() WHERE id = q.id;
    RETURN QUERY
        SELECT 'credentials'::text, c.name, c.uid, NULL::integer, NULL::text, c.username_env,
               c.url_env, c.notes_env
        FROM credentials c WHERE c.engagement_id = q.engagement_id
        UNION ALL
        SELECT 'systems', s.name, s.uid, s.port, s.protocol, s.address_env, s.details_env, NULL
        FROM systems s WHERE s.engagement_id = q.engagement_id
        ORDER BY 1, 2;
END $$;

-- The trash (step 4): rm moves a credential here with its versions (they keep naming its
-- id); restore brings the latest removal of a name back, link included when that system
-- is still there; trash purge destroys one now. Envelopes move byte for byte (sealed for
-- the credentials' place and the row's uid), so nothing is sealed again.
CREATE TABLE credvault.credential_trash (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    engagement_id bigint NOT NULL REFERENCES credvault.engagements (id) ON DELETE CASCADE,
    credential_id bigint NOT NULL,
    uid           bytea NOT NULL,
    name          text NOT NULL,
    kind          text NOT NULL,
    system_uid    bytea,
    key_version   integer NOT NULL,
    secret_env    bytea NOT NULL,
    username_env  bytea,
    url_env       bytea,
    notes_env     bytea,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    version       integer NOT NULL,
    updated_by    text,
    changed       text NOT NULL,
    deleted_at    timestamptz NOT NULL DEFAULT now(),
    deleted_by    text NOT NULL,
    expires_at    timestamptz NOT NULL
);

-- (credvault.iso, the vault's timestamp form: made in section pgops above.)

-- rm: (outcome 'ok', 'denied' or 'not found', until), audited 'rm' as SQLCipher.
CREATE FUNCTION credvault.remove_credential(eng text, itm text)
RETURNS TABLE (outcome text, until text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; c credentials%ROWTYPE; ends timestamptz;
BEGIN
    e := open_for_write(eng, 'rm', itm);
    IF e.id IS NULL THEN  -- refused, and audited there: denied, or closed ('error')
        RETURN QUERY SELECT 'denied'::text, NULL::text;
        RETURN;
    END IF;
    SELECT * INTO c FROM credentials WHERE engagement_id = e.id AND name = itm FOR UPDATE;
    IF c.id IS NULL THEN
        PERFORM audit_append(who, 'rm', eng, itm, 'error', 'not found');
        RETURN QUERY SELECT 'not found'::text, NULL::text;
        RETURN;
    END IF;
    ends := now() + make_interval(days => (SELECT convert_from(value, 'UTF8')::integer FROM meta WHERE key = 'trash_days'));
    INSERT INTO credential_trash (engagement_id, credential_id, uid, name, kind, system_uid,
        key_version, secret_env, username_env, url_env, notes_env, created_at, updated_at,
        version, updated_by, changed, deleted_by, expires_at)
    SELECT c.engagement_id, c.id, c.uid, c.name, c.kind, (SELECT s.uid FROM systems s WHERE s.id = c.system_id),
        c.key_version, c.secret_env, c.username_env, c.url_env, c.notes_env, c.created_at,
        c.updated_at, c.version, c.updated_by, c.changed, who, ends;
    DELETE FROM credentials WHERE id = c.id;
    until := iso(ends);
    PERFORM audit_append(who, 'rm', eng, itm, 'ok', 'to the trash until ' || until);
    RETURN QUERY SELECT 'ok'::text, until;
END $$;

-- trash ls: names and dates, newest first, audited 'trash' ("N items in the trash").
CREATE FUNCTION credvault.trash_list(eng text)
RETURNS TABLE (typ text, name text, deleted_at text, deleted_by text, expires_at text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; n integer;
BEGIN
    SELECT * INTO e FROM engagements x WHERE x.name = eng AND x.state <> 'purged';
    IF e.id IS NULL OR NOT may(e.id, 'list') THEN
        PERFORM audit_append(who, 'trash', eng, NULL, 'denied', held(e.id));
        RETURN;
    END IF;
    SELECT (SELECT count(*) FROM credential_trash t WHERE t.engagement_id = e.id)
         + (SELECT count(*) FROM system_trash t WHERE t.engagement_id = e.id) INTO n;
    PERFORM audit_append(who, 'trash', eng, NULL, 'ok', format('%s items in the trash', n));
    RETURN QUERY SELECT x.typ, x.name, iso(x.deleted_at), x.deleted_by, iso(x.expires_at) FROM (
        SELECT 'credential' AS typ, t.id, t.name, t.deleted_at, t.deleted_by, t.expires_at
        FROM credential_trash t WHERE t.engagement_id = e.id
        UNION ALL
        SELECT 'system', t.id, t.name, t.deleted_at, t.deleted_by, t.expires_at
        FROM system_trash t WHERE t.engagement_id = e.id) x
        ORDER BY x.deleted_at DESC, x.id DESC;
END $$;

-- trash restore [--system]: the latest removal of that name back. Returns 'ok', 'denied',
-- 'not found' (not in the trash) or 'exists' (audited 'restore' / 'system-restore').
-- The live credentials the restore of system itm would link again (their names, for the
-- client to seal their secrets again for the link): writers only, nothing else.
CREATE FUNCTION credvault.trashed_system_links(eng text, itm text)
RETURNS TABLE (c_name text, sys_uid bytea)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE e engagements%ROWTYPE; st system_trash%ROWTYPE;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active';
    IF e.id IS NULL OR NOT may(e.id, 'write') THEN
        RETURN;
    END IF;
    SELECT * INTO st FROM system_trash x WHERE x.engagement_id = e.id AND x.name = itm
        ORDER BY x.deleted_at DESC, x.id DESC LIMIT 1;
    RETURN QUERY SELECT c.name, st.uid FROM credentials c
        WHERE c.engagement_id = e.id AND c.system_id IS NULL AND c.uid = ANY (st.linked)
        ORDER BY c.name;
END $$;

-- c_uids, c_secrets (a system's restore): the secrets of the credentials it relinks, sealed
-- again by the client for the link (trashed_system_links names them).
CREATE FUNCTION credvault.restore_trashed(eng text, itm text, is_system boolean,
                                          c_uids bytea[] DEFAULT NULL,
                                          c_secrets bytea[] DEFAULT NULL) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text := me(); e engagements%ROWTYPE; t credential_trash%ROWTYPE;
    st system_trash%ROWTYPE; sid bigint; n integer;
BEGIN
    e := open_for_write(eng, CASE WHEN is_system THEN 'system restore' ELSE 'restore' END, itm);
    IF e.id IS NULL THEN  -- refused, and audited there: denied, or closed ('error')
        RETURN 'denied';
    END IF;
    IF is_system THEN
        SELECT * INTO st FROM system_trash x WHERE x.engagement_id = e.id AND x.name = itm
            ORDER BY x.deleted_at DESC, x.id DESC LIMIT 1 FOR UPDATE;
        IF st.id IS NULL THEN RETURN 'not found'; END IF;
        IF EXISTS (SELECT 1 FROM systems WHERE engagement_id = e.id AND name = itm) THEN
            RETURN 'exists';
        END IF;
        INSERT INTO systems (uid, engagement_id, name, port, protocol, address_env, details_env,
                             created_at, updated_at)
        VALUES (st.uid, e.id, st.name, st.port, st.protocol, st.address_env, st.details_env,
                st.created_at, st.updated_at) RETURNING id INTO sid;
        DELETE FROM system_trash WHERE id = st.id;
        PERFORM set_config('credvault.linking', 'on', true);
        IF EXISTS (SELECT 1 FROM credentials c WHERE c.engagement_id = e.id AND c.system_id IS NULL
                   AND c.uid = ANY (st.linked) AND get_byte(c.secret_env, 0) = 2
                   AND NOT EXISTS (SELECT 1 FROM unnest(c_uids, c_secrets) AS g(u, env)
                                   WHERE g.u = c.uid AND rebound_ok(g.env, c.key_version))) THEN
            RAISE EXCEPTION 'credvault: the credentials linked to % changed meanwhile; run the command again', itm
                USING ERRCODE = 'serialization_failure';
        END IF;
        PERFORM set_config('credvault.rebinding', 'on', true);
        UPDATE credentials c SET system_id = sid,
            secret_env = coalesce((SELECT g.env FROM unnest(c_uids, c_secrets) AS g(u, env)
                                   WHERE g.u = c.uid LIMIT 1), c.secret_env)
            WHERE c.engagement_id = e.id AND c.system_id IS NULL AND c.uid = ANY (st.linked);
        PERFORM set_config('credvault.rebinding', '', true);
        GET DIAGNOSTICS n = ROW_COUNT;
        PERFORM set_config('credvault.linking', '', true);
        UPDATE credential_trash SET system_uid = st.uid
            WHERE engagement_id = e.id AND system_uid IS NULL AND uid = ANY (st.linked);
        PERFORM audit_append(who, 'system-restore', eng, itm, 'ok',
                             format('%s credentials relinked', n));
        RETURN 'ok';
    END IF;
    SELECT * INTO t FROM credential_trash x WHERE x.engagement_id = e.id AND x.name = itm
        ORDER BY x.deleted_at DESC, x.id DESC LIMIT 1 FOR UPDATE;
    IF t.id IS NULL THEN RETURN 'not found'; END IF;
    IF EXISTS (SELECT 1 FROM credentials WHERE engagement_id = e.id AND name = itm) THEN
        RETURN 'exists';
    END IF;
    SELECT id INTO sid FROM systems WHERE engagement_id = e.id AND uid = t.system_uid;
    IF get_byte(t.secret_env, 0) = 2 AND t.system_uid IS NOT NULL AND sid IS NULL THEN
        RAISE EXCEPTION 'credvault: % is bound to a system that is not there: restore the system first', itm
            USING ERRCODE = 'feature_not_supported';
    END IF;
    PERFORM set_config('credvault.restoring', 'on', true);
    INSERT INTO credentials (id, uid, engagement_id, name, kind, system_id, key_version,
        secret_env, username_env, url_env, notes_env, created_at, updated_at, version,
        updated_by, changed)
    OVERRIDING SYSTEM VALUE
    VALUES (t.credential_id, t.uid, e.id, t.name, t.kind, sid, t.key_version, t.secret_env,
        t.username_env, t.url_env, t.notes_env, t.created_at, t.updated_at, t.version,
        t.updated_by, t.changed);
    PERFORM set_config('credvault.restoring', '', true);
    DELETE FROM credential_trash WHERE id = t.id;
    PERFORM audit_append(who, 'restore', eng, itm, 'ok',
                         format('removed %s by %s', iso(t.deleted_at), t.deleted_by));
    RETURN 'ok';
END $$;

-- trash purge [--system]: destroy the latest removal of that name now, its versions too.
-- Returns 'ok', 'denied' or 'not found' (audited 'trash-purge').
CREATE FUNCTION credvault.destroy_trashed(eng text, itm text, is_system boolean) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; tid bigint; cid bigint; at timestamptz;
BEGIN
    -- a closed engagement's trash may still be destroyed, as on SQLCipher
    e := open_for_write(eng, 'trash purge', itm, true);
    IF e.id IS NULL THEN  -- refused, and audited there
        RETURN 'denied';
    END IF;
    IF is_system THEN
        SELECT x.id, x.deleted_at INTO tid, at FROM system_trash x
            WHERE x.engagement_id = e.id AND x.name = itm ORDER BY x.deleted_at DESC, x.id DESC LIMIT 1;
        IF tid IS NULL THEN RETURN 'not found'; END IF;
        DELETE FROM system_trash WHERE id = tid;
    ELSE
        SELECT x.id, x.credential_id, x.deleted_at INTO tid, cid, at FROM credential_trash x
            WHERE x.engagement_id = e.id AND x.name = itm ORDER BY x.deleted_at DESC, x.id DESC LIMIT 1;
        IF tid IS NULL THEN RETURN 'not found'; END IF;
        DELETE FROM credential_trash WHERE id = tid;
        DELETE FROM credential_versions WHERE credential_id = cid
            AND NOT EXISTS (SELECT 1 FROM credentials c WHERE c.id = cid);
    END IF;
    PERFORM audit_append(who, 'trash-purge', eng, itm, 'ok',
        format('%s removed %s destroyed', CASE WHEN is_system THEN 'system' ELSE 'credential' END, iso(at)));
    RETURN 'ok';
END $$;

-- Key rotation over every record of the engagement (credentials, systems, removed systems),
-- against a committed request_rotation: what rotation_fetch and rotate_key do for
-- credentials alone. Rows carry what a record-bound anchor's binding needs (name, kind,
-- linked system's uid; or name, port, protocol).
CREATE FUNCTION credvault.rotation_fetch_records(request bigint)
RETURNS TABLE (tbl text, id bigint, uid bytea, e1 bytea, e2 bytea, e3 bytea, e4 bytea,
               b_name text, b_kind text, b_port integer, b_protocol text, b_sys_uid bytea)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    want pg_lsn := pg_current_wal_insert_lsn();
    who text := me();
    q rotation_requests%ROWTYPE;
BEGIN
    SELECT * INTO q FROM rotation_requests r WHERE r.id = request FOR UPDATE;
    IF q.id IS NULL OR q.member <> who OR q.used_at IS NOT NULL
       OR q.created_at < clock_timestamp() - interval '60 seconds' THEN
        RAISE EXCEPTION 'credvault: no such rotation request' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF pg_xact_status(q.xid) IS DISTINCT FROM 'committed' THEN
        RAISE EXCEPTION 'credvault: rotation request not committed' USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM await_durable(want);
    IF NOT (is_admin() OR role_in(q.engagement_id) = 'lead') THEN
        RAISE EXCEPTION 'credvault: no longer a lead' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE rotation_requests SET used_at = clock_timestamp() WHERE rotation_requests.id = q.id;
    RETURN QUERY
        SELECT 'credentials'::text, c.id, c.uid, c.secret_env, c.username_env, c.url_env,
               c.notes_env, c.name, c.kind, NULL::integer, NULL::text, s.uid
        FROM credentials c LEFT JOIN systems s ON s.id = c.system_id
        WHERE c.engagement_id = q.engagement_id
        UNION ALL
        SELECT 'systems', s.id, s.uid, s.address_env, s.details_env, NULL, NULL, s.name, NULL,
               s.port, s.protocol, NULL
        FROM systems s WHERE s.engagement_id = q.engagement_id
        UNION ALL
        SELECT 'system_trash', t.id, t.uid, t.address_env, t.details_env, NULL, NULL, t.name,
               NULL, t.port, t.protocol, NULL
        FROM system_trash t WHERE t.engagement_id = q.engagement_id
        UNION ALL
        SELECT 'credential_versions', v.id, v.uid, v.secret_env, v.username_env, v.url_env,
               v.notes_env, v.name, v.kind, NULL, NULL, v.system_uid
        FROM credential_versions v WHERE v.engagement_id = q.engagement_id
        UNION ALL
        SELECT 'credential_trash', t.id, t.uid, t.secret_env, t.username_env, t.url_env,
               t.notes_env, t.name, t.kind, NULL, NULL, t.system_uid
        FROM credential_trash t WHERE t.engagement_id = q.engagement_id
        ORDER BY 1, 2;
END $$;

-- Store a rotation: exactly the records there are now (credentials, systems, removed
-- systems and credentials, earlier versions), each re-sealed (a write in between makes this
-- fail and the lead runs it again); the membership log's links first (section pglog: the
-- removals the lead's replay found due, then the rotate link naming the new key's
-- fingerprint; none on an engagement without a log); a copy for each member the log (or,
-- without one, the live grants) says holds the new key, and no copy for anyone else. This
-- is rotate_key_logged (pglog) over every record: the client calls only this one.
CREATE FUNCTION credvault.rotate_records(
    eng text, old_version integer, new_fp text, r_tbl text[], r_id bigint[],
    r_e1 bytea[], r_e2 bytea[], r_e3 bytea[], r_e4 bytea[],
    g_members text[], g_sealed bytea[], g_sigs bytea[], links bytea[]
) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; i integer; n integer := coalesce(cardinality(r_id), 0);
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active' FOR UPDATE;
    IF e.id IS NULL OR coalesce(role_in(e.id), '') <> 'lead' THEN
        RAISE EXCEPTION 'credvault: % may not rotate %', who, eng USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF e.key_version <> old_version THEN
        RAISE EXCEPTION 'credvault: the key was rotated meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    IF (SELECT count(*) FROM (
            SELECT 'credentials' AS t, c.id FROM credentials c WHERE c.engagement_id = e.id
            UNION ALL SELECT 'systems', s.id FROM systems s WHERE s.engagement_id = e.id
            UNION ALL SELECT 'system_trash', x.id FROM system_trash x WHERE x.engagement_id = e.id
            UNION ALL SELECT 'credential_versions', v.id FROM credential_versions v
                WHERE v.engagement_id = e.id
            UNION ALL SELECT 'credential_trash', t.id FROM credential_trash t
                WHERE t.engagement_id = e.id
        ) have FULL JOIN (SELECT * FROM unnest(r_tbl, r_id) AS g(t, id)) given
          ON have.t = given.t AND have.id = given.id
        WHERE have.id IS NULL OR given.id IS NULL) > 0
       OR (SELECT count(DISTINCT (t, id)) FROM unnest(r_tbl, r_id) AS g(t, id)) <> n THEN
        RAISE EXCEPTION 'credvault: records changed meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    FOR i IN 1 .. coalesce(cardinality(links), 0) LOOP
        PERFORM log_append(e.id, links[i]);
    END LOOP;
    FOR i IN 1 .. n LOOP
        IF r_e1[i] IS NULL THEN
            RAISE EXCEPTION 'credvault: a record without its anchor' USING ERRCODE = 'invalid_parameter_value';
        END IF;
        CASE r_tbl[i]
        WHEN 'credentials' THEN
            UPDATE credentials SET key_version = old_version + 1, secret_env = r_e1[i],
                username_env = r_e2[i], url_env = r_e3[i], notes_env = r_e4[i]
            WHERE credentials.id = r_id[i] AND engagement_id = e.id;
        WHEN 'systems' THEN
            UPDATE systems SET address_env = r_e1[i], details_env = r_e2[i]
            WHERE systems.id = r_id[i] AND engagement_id = e.id;
        WHEN 'system_trash' THEN
            UPDATE system_trash SET address_env = r_e1[i], details_env = r_e2[i]
            WHERE system_trash.id = r_id[i] AND engagement_id = e.id;
        WHEN 'credential_versions' THEN
            UPDATE credential_versions SET key_version = old_version + 1, secret_env = r_e1[i],
                username_env = r_e2[i], url_env = r_e3[i], notes_env = r_e4[i]
            WHERE credential_versions.id = r_id[i] AND engagement_id = e.id;
        WHEN 'credential_trash' THEN
            UPDATE credential_trash SET key_version = old_version + 1, secret_env = r_e1[i],
                username_env = r_e2[i], url_env = r_e3[i], notes_env = r_e4[i]
            WHERE credential_trash.id = r_id[i] AND engagement_id = e.id;
        END CASE;
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
        WHERE engagements.id = e.id;
    PERFORM audit_append(who, 'rotate', eng, NULL, 'ok', format('key version %s', old_version + 1));
    RETURN old_version + 1;
END $$;

-- The removed-record tables leave with the engagement whatever marks it 'purged'
-- (destroy_engagement, section pgops, deletes them itself; version 1's purge_engagement,
-- closed to members in section pgv1, did not): no envelope stays behind.
CREATE FUNCTION credvault.purge_records() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    DELETE FROM system_trash WHERE engagement_id = NEW.id;
    DELETE FROM credential_versions WHERE engagement_id = NEW.id;
    DELETE FROM credential_trash WHERE engagement_id = NEW.id;
    DELETE FROM record_requests WHERE engagement_id = NEW.id;
    RETURN NEW;
END $$;
CREATE TRIGGER purge_records AFTER UPDATE OF state ON credvault.engagements
    FOR EACH ROW WHEN (NEW.state = 'purged') EXECUTE FUNCTION credvault.purge_records();

REVOKE ALL ON credvault.record_requests, credvault.system_trash, credvault.credential_versions,
    credvault.credential_trash FROM PUBLIC;
REVOKE ALL ON FUNCTION credvault.await_durable(pg_lsn), credvault.may(bigint, text),
    credvault.held(bigint), credvault.keep_version(),
    credvault.credential_history(text, text), credvault.revert_credential(text, text, integer),
    credvault.edit_credential(text, text, bytea, integer, boolean, bytea, boolean, bytea, boolean,
                              bytea, text, boolean, text, text, bytea),
    credvault.rename_credential(text, text, text, bytea), credvault.request_find(text, text),
    credvault.rebound_ok(bytea, integer),
    credvault.fetch_find(bigint), credvault.iso(timestamptz),
    credvault.remove_credential(text, text), credvault.trash_list(text),
    credvault.restore_trashed(text, text, boolean, bytea[], bytea[]),
    credvault.trashed_system_links(text, text), credvault.destroy_trashed(text, text, boolean),
    credvault.purge_records(), credvault.request_record(text, text, text, text, integer),
    credvault.fetch_record(bigint),
    credvault.put_system(text, text, bytea, integer, integer, text, bytea, bytea, boolean, text[]),
    credvault.remove_system(text, text, bytea[], bytea[]), credvault.list_systems(text),
    credvault.put_credential_linked(text, text, text, bytea, integer, bytea, bytea, bytea, bytea, text, text),
    credvault.rotation_fetch_records(bigint),
    credvault.rotate_records(text, integer, text, text[], bigint[], bytea[], bytea[], bytea[],
                             bytea[], text[], bytea[], bytea[], bytea[]) FROM PUBLIC;
DO $$
DECLARE g text := credvault.member_group();
BEGIN
    -- the trash is listed through its clear columns only (names, dates; row-level security)
    EXECUTE format('GRANT SELECT (id, engagement_id, uid, name, port, protocol, created_at,'
                   ' updated_at, deleted_at, deleted_by, expires_at) ON credvault.system_trash TO %I', g);
    EXECUTE format('GRANT SELECT (version, updated_by, changed) ON credvault.credentials TO %I', g);
    EXECUTE format('GRANT SELECT (id, engagement_id, name, kind, deleted_at, deleted_by,'
                   ' expires_at) ON credvault.credential_trash TO %I', g);
    EXECUTE format('GRANT SELECT (id, engagement_id, credential_id, version, name, kind,'
                   ' system_name, key_version, created_at, created_by, changed)'
                   ' ON credvault.credential_versions TO %I', g);
    EXECUTE format('GRANT EXECUTE ON FUNCTION'
                   ' credvault.credential_history(text, text),'
                   ' credvault.revert_credential(text, text, integer),'
                   ' credvault.edit_credential(text, text, bytea, integer, boolean, bytea, boolean,'
                   ' bytea, boolean, bytea, text, boolean, text, text, bytea),'
                   ' credvault.rename_credential(text, text, text, bytea), credvault.request_find(text, text),'
                   ' credvault.fetch_find(bigint),'
                   ' credvault.remove_credential(text, text), credvault.trash_list(text),'
                   ' credvault.restore_trashed(text, text, boolean, bytea[], bytea[]),'
                   ' credvault.trashed_system_links(text, text),'
                   ' credvault.destroy_trashed(text, text, boolean),'
                   ' credvault.request_record(text, text, text, text, integer), credvault.fetch_record(bigint),'
                   ' credvault.put_system(text, text, bytea, integer, integer, text, bytea, bytea,'
                   ' boolean, text[]),'
                   ' credvault.remove_system(text, text, bytea[], bytea[]), credvault.list_systems(text),'
                   ' credvault.put_credential_linked(text, text, text, bytea, integer, bytea, bytea,'
                   ' bytea, bytea, text, text),'
                   ' credvault.rotation_fetch_records(bigint),'
                   ' credvault.rotate_records(text, integer, text, text[], bigint[], bytea[], bytea[],'
                   ' bytea[], bytea[], text[], bytea[], bytea[], bytea[]) TO %I', g);
    -- version 1's rotation and pglog's rotate_key_logged store credentials and systems
    -- only: they would leave versions and the trash under the old key
    EXECUTE format('REVOKE EXECUTE ON FUNCTION credvault.rotate_key(text, integer, text, bytea[],'
                   ' bytea[], bytea[], bytea[], bytea[], text[], bytea[], bytea[]) FROM %I', g);
    EXECUTE format('REVOKE EXECUTE ON FUNCTION credvault.rotate_key_logged(text, integer, text,'
                   ' bytea[], bytea[], bytea[], bytea[], bytea[], bytea[], bytea[], bytea[], text[],'
                   ' bytea[], bytea[], bytea[]) FROM %I', g);
END $$;
ALTER TABLE credvault.system_trash ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_system_trash ON credvault.system_trash FOR SELECT
    USING (engagement_id IN (SELECT credvault.my_engagement_ids()));
ALTER TABLE credvault.credential_versions ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_credential_versions ON credvault.credential_versions FOR SELECT
    USING (engagement_id IN (SELECT credvault.my_engagement_ids()));
ALTER TABLE credvault.credential_trash ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_credential_trash ON credvault.credential_trash FOR SELECT
    USING (engagement_id IN (SELECT credvault.my_engagement_ids()));

-- == upg: a schema-1 vault's members certified by its first admin after the upgrade ==
--
-- A vault made at schema 1 has members with published keys and no certificate, and
-- engagements without a membership log. The first admin who opens it after the upgrade
-- with a key slot that pins no founder (docs/security.md §12, "A vault upgraded from
-- schema 1") becomes its founder: they sign a certificate for every member's keys as the
-- server shows them now, and the list of the engagements that have no log (format.md
-- §19.4, §19.6). Trust on first use: once only, while no certificate exists at all.

-- The members that have published keys (any state: a removed member's key still checks
-- the copies they sealed) and no certificate; admins only.
CREATE FUNCTION credvault.uncertified_members()
RETURNS TABLE (member text, admin boolean, state text, sign_pub bytea, kem_pub bytea)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    PERFORM require_admin();
    RETURN QUERY SELECT m.name, m.admin, m.state, m.sign_pub, m.kem_pub FROM members m
        WHERE m.sign_pub IS NOT NULL AND m.kem_pub IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM member_certs c WHERE c.member = m.name)
        ORDER BY m.name;
END $$;

-- The uids of every engagement without a membership log (all of a schema-1 vault's); admins.
CREATE FUNCTION credvault.unlogged_engagements() RETURNS SETOF bytea
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    PERFORM require_admin();
    RETURN QUERY SELECT e.uid FROM engagements e
        WHERE NOT EXISTS (SELECT 1 FROM engagement_log l WHERE l.engagement_id = e.id)
        ORDER BY e.uid;
END $$;

-- Store the certificates the calling admin signed (the caller self-certified as founder)
-- and their signed list of engagements without a log, in one transaction. Refused once any
-- certificate exists (unique_violation: another admin was first), or if the set of
-- certified members is not exactly uncertified_members() (serialization_failure).
CREATE FUNCTION credvault.certify_upgraded(
    c_members text[], c_admin boolean[], c_ipk bytea[], c_inv bytea[], c_join bytea[],
    pre_log bytea, n_engagements integer
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := require_admin();
BEGIN
    LOCK TABLE member_certs IN EXCLUSIVE MODE;
    IF EXISTS (SELECT 1 FROM member_certs) THEN
        RAISE EXCEPTION 'credvault: the members are certified already' USING ERRCODE = 'unique_violation';
    END IF;
    IF NOT who = ANY (coalesce(c_members, '{}')) OR EXISTS (
        SELECT 1 FROM members m WHERE m.sign_pub IS NOT NULL AND m.kem_pub IS NOT NULL
        AND NOT m.name = ANY (c_members))
       OR EXISTS (SELECT 1 FROM unnest(c_members) AS x(n)
        WHERE NOT EXISTS (SELECT 1 FROM members m WHERE m.name = x.n AND m.sign_pub IS NOT NULL))
    THEN
        RAISE EXCEPTION 'credvault: the members changed meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    FOR i IN 1 .. cardinality(c_members) LOOP
        INSERT INTO member_certs (member, inviter, admin, ipk, invitation_sig, join_sig)
        VALUES (c_members[i], who, c_admin[i], c_ipk[i], c_inv[i], c_join[i]);
    END LOOP;
    INSERT INTO meta (key, value) VALUES ('pre_log_engagements', pre_log)
        ON CONFLICT (key) DO UPDATE SET value = excluded.value;
    PERFORM audit_append(who, 'certify', NULL, NULL, 'ok',
        format('schema-1 members certified by their founder %s: %s; %s engagements without a log listed',
               who, array_to_string(c_members, ', '), n_engagements));
END $$;

REVOKE ALL ON FUNCTION credvault.uncertified_members(), credvault.unlogged_engagements(),
    credvault.certify_upgraded(text[], boolean[], bytea[], bytea[], bytea[], bytea, integer)
    FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.uncertified_members(),'
                   ' credvault.unlogged_engagements(),'
                   ' credvault.certify_upgraded(text[], boolean[], bytea[], bytea[], bytea[],'
                   ' bytea, integer) TO %I', credvault.member_group());
END $$;

-- == rmrevoke: member rm signs the removed member's revoke link in every log at once ==
--
-- Before this section `remove_member` decided a removal by the `members.state` row alone
-- until a lead's next rotation signed the revocation, so a DBA who re-enabled the login in
-- between kept the removed member on every signed roster. Now the removing admin's client
-- reads every engagement log (engagement_logs), replays and verifies each on the admin's
-- machine, signs a `revoke` for the member in each log that names them (format.md §17: an
-- admin's certified key may sign a revoke on a team vault, §19.5), and
-- `remove_member_logged` appends those links and does remove_member's work (login off,
-- sessions ended, grants and copies dropped, rotation flagged) in ONE transaction. A link
-- out of order (another writer in between) fails the whole call (serialization_failure):
-- the client reads the logs again and retries. A member removed already (by an older
-- client, or a call cut short before this section) whom a log still names can be removed
-- again: the links are appended and the login disabled again.

-- Every engagement's log (not purged ones), for an admin: the links are signed public
-- statements, already readable by admins one engagement at a time (engagement_log_links).
CREATE FUNCTION credvault.engagement_logs()
RETURNS TABLE (e_uid bytea, e_name text, e_links bytea[])
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    PERFORM require_admin();
    RETURN QUERY SELECT e.uid, e.name,
            ARRAY(SELECT l.link FROM engagement_log l WHERE l.engagement_id = e.id ORDER BY l.seq)
        FROM engagements e
        WHERE e.state <> 'purged'
          AND EXISTS (SELECT 1 FROM engagement_log l WHERE l.engagement_id = e.id)
        ORDER BY e.name;
END $$;

-- Part i (from 0) of a membership link's body, NULL past its last part: the body is a run
-- of 4-byte big-endian lengths and their bytes, then the 64-byte signature (format.md §17).
-- The server cannot check a signature, but it can check what a link says it is.
CREATE FUNCTION credvault.link_part(link bytea, i integer) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE SET search_path = credvault, pg_temp
AS $$
DECLARE
    body integer := length(link) - 64;
    pos integer := 1;
    n bigint;
BEGIN
    FOR k IN 0 .. i LOOP
        IF pos + 3 > body THEN
            RETURN NULL;
        END IF;
        n := ('x' || encode(substring(link FROM pos FOR 4), 'hex'))::bit(32)::bigint;
        IF pos + 3 + n > body THEN
            RETURN NULL;
        END IF;
        IF k = i THEN
            RETURN substring(link FROM pos + 4 FOR n::integer);
        END IF;
        pos := pos + 4 + n::integer;
    END LOOP;
    RETURN NULL;
END $$;

-- Remove a member with their revoke links (engs[i] gets new_links[i]), in one transaction;
-- returns the sessions ended. Each appended link is audited as a `revoke` of the member.
CREATE FUNCTION credvault.remove_member_logged(member text, engs text[], new_links bytea[])
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text := require_admin();
    target members%ROWTYPE;
    eid bigint;
    killed integer := 0;
    pid integer;
BEGIN
    IF cardinality(coalesce(engs, '{}')) <> cardinality(coalesce(new_links, '{}')) THEN
        RAISE EXCEPTION 'credvault: one link per engagement' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO target FROM members m WHERE m.name = remove_member_logged.member FOR UPDATE;
    IF target.name IS NULL OR (target.state = 'removed' AND cardinality(coalesce(engs, '{}')) = 0) THEN
        RAISE EXCEPTION 'credvault: no member %', member USING ERRCODE = 'no_data_found';
    END IF;
    IF target.name = who THEN
        RAISE EXCEPTION 'credvault: an admin cannot remove themselves' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR i IN 1 .. cardinality(coalesce(engs, '{}')) LOOP
        SELECT e.id INTO eid FROM engagements e WHERE e.name = engs[i] AND e.state <> 'purged' FOR UPDATE;
        IF eid IS NULL THEN
            RAISE EXCEPTION 'credvault: engagement % changed meanwhile; run the command again', engs[i]
                USING ERRCODE = 'serialization_failure';
        END IF;
        -- only what the audit row says: a revoke of this member, signed by this admin
        -- (header parts 6 and 7, the revoke's one field 9, nothing after it)
        IF link_part(new_links[i], 6) IS DISTINCT FROM convert_to('revoke', 'UTF8')
           OR link_part(new_links[i], 7) IS DISTINCT FROM convert_to(who, 'UTF8')
           OR link_part(new_links[i], 9) IS DISTINCT FROM convert_to(member, 'UTF8')
           OR link_part(new_links[i], 10) IS NOT NULL THEN
            RAISE EXCEPTION 'credvault: not a revoke of % signed by %', member, who
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM log_append(eid, new_links[i]);
        PERFORM audit_append(who, 'revoke', engs[i], member, 'ok', 'member removed: revoke link signed');
    END LOOP;
    IF target.state <> 'removed' THEN
        RETURN remove_member(member);
    END IF;
    -- removed before: whatever was put back since goes again
    EXECUTE format('ALTER ROLE %I NOLOGIN PASSWORD NULL', target.role_name);
    UPDATE grants SET revoked_at = now(), sealed = NULL, sealed_by = NULL, copy_sig = NULL
        WHERE grants.member = remove_member_logged.member AND revoked_at IS NULL;
    FOR pid IN SELECT a.pid FROM pg_stat_activity a WHERE a.usename = target.role_name LOOP
        IF pg_terminate_backend(pid) THEN killed := killed + 1; END IF;
    END LOOP;
    PERFORM audit_append(who, 'member-remove', NULL, member, 'ok', format('sessions=%s', killed));
    RETURN killed;
END $$;

REVOKE ALL ON FUNCTION credvault.engagement_logs(),
    credvault.remove_member_logged(text, text[], bytea[]) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.engagement_logs(),'
                   ' credvault.remove_member_logged(text, text[], bytea[]) TO %I',
                   credvault.member_group());
END $$;

-- == pgv1: close version-1 entry points ==
--
-- Version 1's functions that change security state predate the per-engagement signed
-- membership log (section pglog). A schema-2 client seals and accepts key copies only for
-- the roster its replay of that log gives, so none of these could make a client trust a
-- key; but members could still call them, and an admin or lead with psql could make the
-- server's rows disagree with the signed log: grants the log never made, a revocation it
-- does not record, an engagement without a log, a purge without its receipt (denial of
-- service and confusing state). Here each goes (docs/team.md, "What the DBA cannot forge").
--
-- Closed to members; the schema-2 client calls the function after the arrow instead, and
-- a definer function that still calls the old one (invite_member, join_vault_proved) runs
-- as the owner, which keeps EXECUTE:
--   add_member                     invite_member (with the invitation the admin signed)
--   join_vault                     join_vault_proved
--   create_engagement              create_engagement_logged (link 0 in the same transaction)
--   close_engagement(text)         close_engagement(text, integer)
--   purge_engagement, purge_horizon  destroy_engagement, store_receipt (section pgops)
--   append_membership_log,         the per-engagement log (engagement_log_links)
--   membership_log_entries
--   rotation_fetch, rotation_fetch_all  rotation_fetch_records (section pgcmds)
--   (rotate_key and rotate_key_logged were closed in section pgcmds.)
--
-- The other way round, pglog's log_append refuses link 0 for an engagement that has a key
-- already (one without a log): put_grant_logged, revoke_grant_logged and rotate_records
-- cannot start a log on it.
--
-- Still needed for an engagement without a log (a schema-1 vault's after its upgrade, or
-- one `credvault migrate` carried without its log), so still executable, but refused for an
-- engagement that keeps a log, with insufficient_privilege (the client's one-line denial,
-- exit 4): put_grant and revoke_grant (put_grant_logged and revoke_grant_logged record the
-- change in the log) and rotation_grantees (a logged engagement's key holders are its
-- log's roster). Bodies otherwise as in version 1; CREATE OR REPLACE with the same
-- signature keeps the owner and the member group's EXECUTE.
--
-- Version 1's functions the schema-2 client calls for every engagement stay as they are:
-- the read path (request_read, fetch, my_grant, nudge_wal, the audit functions),
-- put_credential (put_credential_linked wraps it), request_rotation and remove_member
-- (whose dropped copies a lead's next rotation records in each log; closed to members in
-- section crlgaps, remove_member_logged calls it as the owner).

CREATE OR REPLACE FUNCTION credvault.put_grant(
    eng text, grantee text, g_role text, g_role_sig bytea, g_key_version integer,
    g_sealed bytea, g_copy_sig bytea, g_expires_at timestamptz DEFAULT NULL
) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active';
    IF e.id IS NULL THEN
        RAISE EXCEPTION 'credvault: no active engagement %', eng USING ERRCODE = 'no_data_found';
    END IF;
    IF EXISTS (SELECT 1 FROM engagement_log l WHERE l.engagement_id = e.id) THEN
        RAISE EXCEPTION 'credvault: % keeps a signed membership log: version 1''s put_grant is closed to it (put_grant_logged)', eng
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT (is_admin() OR role_in(e.id) = 'lead') THEN
        PERFORM audit_append(who, 'grant', eng, grantee, 'denied', g_role);
        RETURN false;
    END IF;
    IF grantee <> '@recovery' AND NOT EXISTS (SELECT 1 FROM members WHERE name = grantee AND state = 'active') THEN
        RAISE EXCEPTION 'credvault: no active member %', grantee USING ERRCODE = 'no_data_found';
    END IF;
    INSERT INTO grants (engagement_id, member, role, granted_by, expires_at, role_sig,
                        key_version, sealed, sealed_by, copy_sig)
    VALUES (e.id, grantee, g_role, who, g_expires_at, g_role_sig, g_key_version, g_sealed,
            CASE WHEN g_sealed IS NULL THEN NULL ELSE who END, g_copy_sig)
    ON CONFLICT (engagement_id, member) DO UPDATE SET
        role = excluded.role, granted_by = excluded.granted_by, granted_at = now(),
        expires_at = excluded.expires_at, role_sig = excluded.role_sig,
        key_version = excluded.key_version, sealed = excluded.sealed,
        sealed_by = excluded.sealed_by, copy_sig = excluded.copy_sig, revoked_at = NULL;
    PERFORM audit_append(who, 'grant', eng, grantee, 'ok', g_role);
    RETURN true;
END $$;

CREATE OR REPLACE FUNCTION credvault.revoke_grant(eng text, grantee text) RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; readlist text[];
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active' FOR UPDATE;
    IF e.id IS NOT NULL AND EXISTS (SELECT 1 FROM engagement_log l WHERE l.engagement_id = e.id) THEN
        RAISE EXCEPTION 'credvault: % keeps a signed membership log: version 1''s revoke_grant is closed to it (revoke_grant_logged)', eng
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF e.id IS NULL OR NOT (is_admin() OR role_in(e.id) = 'lead') THEN
        PERFORM audit_append(who, 'revoke', eng, grantee, 'denied', '');
        RETURN NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM grants WHERE engagement_id = e.id AND member = grantee
                   AND revoked_at IS NULL) THEN
        RAISE EXCEPTION 'credvault: % holds no role on %', grantee, eng USING ERRCODE = 'no_data_found';
    END IF;
    UPDATE grants SET revoked_at = now(), sealed = NULL, sealed_by = NULL, copy_sig = NULL
        WHERE engagement_id = e.id AND member = grantee;
    UPDATE engagements SET needs_rotation = true WHERE id = e.id;
    SELECT coalesce(array_agg(DISTINCT a.item ORDER BY a.item), '{}') INTO readlist
        FROM audit a WHERE a.engagement = eng AND a.member = grantee AND a.action = 'get'
        AND a.outcome = 'ok' AND a.item IS NOT NULL;
    PERFORM audit_append(who, 'revoke', eng, grantee, 'ok', '');
    RETURN readlist;
END $$;

CREATE OR REPLACE FUNCTION credvault.rotation_grantees(eng text) RETURNS TABLE (member text, role text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE e engagements%ROWTYPE;
BEGIN
    PERFORM me();
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active';
    IF e.id IS NULL OR NOT (is_admin() OR role_in(e.id) = 'lead') THEN
        RAISE EXCEPTION 'credvault: only a lead sees who holds a key copy' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF EXISTS (SELECT 1 FROM engagement_log l WHERE l.engagement_id = e.id) THEN
        RAISE EXCEPTION 'credvault: % keeps a signed membership log: its key holders are the log''s roster, not rotation_grantees', eng
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN QUERY SELECT g.member, g.role FROM grants g
        WHERE g.engagement_id = e.id AND g.revoked_at IS NULL AND g.sealed IS NOT NULL
          AND (g.expires_at IS NULL OR g.expires_at > now())
        ORDER BY g.member;
END $$;

DO $$
BEGIN
    EXECUTE format('REVOKE EXECUTE ON FUNCTION credvault.add_member(text, text, boolean),'
                   ' credvault.join_vault(bytea, bytea, text),'
                   ' credvault.create_engagement(bytea, text, text, text, bytea, text),'
                   ' credvault.close_engagement(text),'
                   ' credvault.purge_engagement(text, text), credvault.purge_horizon(),'
                   ' credvault.append_membership_log(bytea, bytea),'
                   ' credvault.membership_log_entries(),'
                   ' credvault.rotation_fetch(bigint), credvault.rotation_fetch_all(bigint)'
                   ' FROM %I', credvault.member_group());
END $$;


-- == pgdaily: otp, run and ssh read through the two-phase audited read ==
--
-- (docs/team.md, "Daily commands".) `credvault otp`, `run` and `ssh` read a credential on
-- the member's behalf. On SQLCipher they are audited under their own names and details
-- (credentials.py): `otp` as "otp" ("reason: R"); `run` and `ssh` as "get" with the command
-- ahead of the member's reason ("reason: run psql: R", "reason: ssh web1"), and run's
-- non-secret fields as "show" ("fields without the secret; reason: run psql"). request_use
-- writes exactly that audit row and a request naming it; fetch_use releases the
-- envelopes under fetch_record's conditions (the caller's, unused, at most 60 s old,
-- committed by an earlier transaction, durable, a reading role still held). The command's
-- name (`via`) is no reason: --require-reason is decided on `reason` alone.
--   kind         audited as   released
--   otp          otp          the secret, the fields, the linked system's address
--   get          get          the same
--   show         show         the fields without the secret
--   show-system  show         the fields and the linked system's address, without the secret
-- The linked system comes with the credential in the same read (ssh: address, port, user
-- and key in one audited step, as on SQLCipher).
CREATE FUNCTION credvault.request_use(
    k text, eng text, itm text, reason text DEFAULT '', via text DEFAULT ''
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text := me();
    e engagements%ROWTYPE;
    act text;
    cid bigint;
    why text := coalesce(reason, '');
    said text;
    detail text;
    s bigint;
    rid bigint;
BEGIN
    act := CASE k WHEN 'otp' THEN 'otp' WHEN 'get' THEN 'get'
                  WHEN 'show' THEN 'show' WHEN 'show-system' THEN 'show' END;
    IF act IS NULL THEN
        RAISE EXCEPTION 'credvault: unknown kind of use %', k USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO e FROM engagements WHERE name = eng AND state IN ('active', 'closed');
    IF e.id IS NULL OR NOT may(e.id, 'read') THEN
        PERFORM audit_append(who, act, eng, itm, 'denied', held(e.id));
        RETURN NULL;
    END IF;
    IF e.require_reason AND why = '' THEN  -- the command's name is no reason
        PERFORM audit_append(who, act, eng, itm, 'denied', 'this engagement requires --reason');
        RETURN NULL;
    END IF;
    -- what the detail says: the command, then the member's own reason (200 characters,
    -- validate.reason's limit, as SQLCipher cuts it)
    said := CASE WHEN coalesce(via, '') = '' THEN why
                 ELSE left(via || CASE WHEN why = '' THEN '' ELSE ': ' || why END, 200) END;
    detail := CASE k
        WHEN 'show' THEN 'fields without the secret'
                         || CASE WHEN said = '' THEN '' ELSE '; reason: ' || said END
        WHEN 'show-system' THEN 'system address and port, without the secret'
                         || CASE WHEN said = '' THEN '' ELSE '; reason: ' || said END
        ELSE CASE WHEN said = '' THEN '' ELSE 'reason: ' || said END END;
    SELECT id INTO cid FROM credentials WHERE engagement_id = e.id AND name = itm;
    IF cid IS NULL THEN
        PERFORM audit_append(who, act, eng, itm, 'error', 'not found');
        RETURN NULL;
    END IF;
    s := audit_append(who, act, eng, itm, 'ok', detail);
    INSERT INTO record_requests (member, kind, engagement_id, target_id, audit_seq, xid)
    VALUES (who, 'use-' || k, e.id, cid, s, pg_current_xact_id()) RETURNING id INTO rid;
    RETURN rid;
END $$;

-- Phase two of request_use: one row, the credential's clear columns (uid, name, kind), its
-- linked system's (uid, name, port, protocol), and what the kind releases: the secret
-- (otp, get only), username, url and notes, the system's address (all but show).
CREATE FUNCTION credvault.fetch_use(request bigint)
RETURNS TABLE (uid bytea, name text, kind text, sys_uid bytea, sys_name text, port integer,
               protocol text, secret_env bytea, username_env bytea, url_env bytea,
               notes_env bytea, address_env bytea, audit_seq bigint,
               created_at timestamptz, updated_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    want pg_lsn := pg_current_wal_insert_lsn();
    who text := me();
    q record_requests%ROWTYPE;
BEGIN
    SELECT * INTO q FROM record_requests r WHERE r.id = request FOR UPDATE;
    IF q.id IS NULL OR q.member <> who OR q.kind NOT LIKE 'use-%' THEN
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
    PERFORM await_durable(want);
    IF NOT may(q.engagement_id, 'read') THEN
        RAISE EXCEPTION 'credvault: access revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE record_requests SET used_at = clock_timestamp() WHERE id = q.id;
    RETURN QUERY SELECT c.uid, c.name, c.kind, s.uid, s.name, s.port, s.protocol,
                        CASE WHEN q.kind IN ('use-otp', 'use-get') THEN c.secret_env END,
                        c.username_env, c.url_env, c.notes_env,
                        CASE WHEN q.kind <> 'use-show' THEN s.address_env END,
                        q.audit_seq, c.created_at, c.updated_at
        FROM credentials c LEFT JOIN systems s ON s.id = c.system_id
        WHERE c.id = q.target_id AND c.engagement_id = q.engagement_id;
END $$;

-- revoke lists what the member read: a TOTP seed used by `otp` was read too (SQLCipher's
-- audit_reads_by counts 'get' and 'otp'); otherwise as pglog's revoke_grant_logged.
CREATE OR REPLACE FUNCTION credvault.revoke_grant_logged(eng text, grantee text, new_link bytea) RETURNS text[]
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
        FROM audit a WHERE a.engagement = eng AND a.member = grantee AND a.action IN ('get', 'otp')
        AND a.outcome = 'ok' AND a.item IS NOT NULL;
    PERFORM audit_append(who, 'revoke', eng, grantee, 'ok', '');
    RETURN readlist;
END $$;

REVOKE ALL ON FUNCTION credvault.request_use(text, text, text, text, text),
    credvault.fetch_use(bigint) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.request_use(text, text, text, text, text),'
                   ' credvault.fetch_use(bigint) TO %I', credvault.member_group());
END $$;

-- (pgdaily) `engagement ls` and `engagement show`, with SQLCipher's audit rows: an admin
-- lists every engagement, a member those they hold a live role in (not purged);
-- `engagement-ls` names the client filter as its item and counts what was listed. The
-- columns are lifecycle()'s, so the client builds the same Engagement from them.
CREATE FUNCTION credvault.visible_engagements(cl text)
RETURNS TABLE (uid bytea, name text, client text, state text, key_version integer,
               key_fp text, require_reason boolean, grace_days integer, effective_grace integer,
               created_at text, created_by text, lead text, closed_at text, purge_due text,
               hold_until text, hold_reason text, hold_by text, purged_at text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); n bigint;
BEGIN
    RETURN QUERY SELECT e.uid, e.name, e.client, e.state, e.key_version, e.key_fp,
        e.require_reason, e.grace_days,
        coalesce(e.grace_days, setting_days('purge_grace_days', 7)),
        iso(e.created_at), e.created_by, e.lead, iso(e.closed_at), iso(e.purge_due),
        iso(e.hold_until), e.hold_reason, e.hold_by, iso(e.purged_at)
        FROM engagements e
        WHERE (cl IS NULL OR e.client = cl)
          AND (is_admin() OR (e.state <> 'purged' AND role_in(e.id) IS NOT NULL))
        ORDER BY e.name COLLATE "C";
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM audit_append(who, 'engagement-ls', NULL, cl, 'ok', format('%s engagements listed', n));
END $$;

-- `engagement show`: an admin, or a member holding a role. A refusal is audited under the
-- verb `show` with the role held (none: hidden, as a name that does not exist) and returns
-- no row (not raised: the audit row commits).
CREATE FUNCTION credvault.show_engagement(eng text)
RETURNS TABLE (uid bytea, name text, client text, state text, key_version integer,
               key_fp text, require_reason boolean, grace_days integer, effective_grace integer,
               created_at text, created_by text, lead text, closed_at text, purge_due text,
               hold_until text, hold_reason text, hold_by text, purged_at text, your_role text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE;
BEGIN
    SELECT * INTO e FROM engagements x WHERE x.name = eng;
    IF e.id IS NULL OR NOT (is_admin() OR role_in(e.id) IS NOT NULL) THEN
        PERFORM audit_append(who, 'show', eng, NULL, 'denied', held(e.id));
        RETURN;
    END IF;
    PERFORM audit_append(who, 'engagement-show', eng, NULL, 'ok', '');
    RETURN QUERY SELECT e.uid, e.name, e.client, e.state, e.key_version, e.key_fp,
        e.require_reason, e.grace_days,
        coalesce(e.grace_days, setting_days('purge_grace_days', 7)),
        iso(e.created_at), e.created_by, e.lead, iso(e.closed_at), iso(e.purge_due),
        iso(e.hold_until), e.hold_reason, e.hold_by, iso(e.purged_at), role_in(e.id);
END $$;

-- Who holds which live role (for `engagement show`, whose entry covers it): whether their
-- copy is of the current key. The client checks these rows against the signed roster
-- where it can replay the log (docs/team.md).
CREATE FUNCTION credvault.engagement_grants(eng text)
RETURNS TABLE (member text, role text, granted_by text, granted_at text, expires_at text,
               has_key boolean)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE e engagements%ROWTYPE;
BEGIN
    PERFORM me();
    SELECT * INTO e FROM engagements x WHERE x.name = eng;
    IF e.id IS NULL OR NOT (is_admin() OR role_in(e.id) IS NOT NULL) THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT g.member, g.role, g.granted_by, iso(g.granted_at), iso(g.expires_at),
        g.sealed IS NOT NULL AND g.key_version = e.key_version
        FROM grants g
        WHERE g.engagement_id = e.id AND g.revoked_at IS NULL AND g.member <> '@recovery'
          AND (g.expires_at IS NULL OR g.expires_at > now())
        ORDER BY g.member COLLATE "C";
END $$;

REVOKE ALL ON FUNCTION credvault.visible_engagements(text), credvault.show_engagement(text),
    credvault.engagement_grants(text) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.visible_engagements(text),'
                   ' credvault.show_engagement(text), credvault.engagement_grants(text) TO %I',
                   credvault.member_group());
END $$;

-- == pgstatus: trash expiry (what was removed is destroyed after its recovery period) ==
-- SQLCipher destroys the trash past its expires_at when someone entitled to destroy (an
-- admin) opens the vault, and on `credvault purge` (purge.expire_trash): the team vault
-- does the same, when an admin's command first purges what is due. An admin only, never on
-- a suspect clock (as due_purges: it waits for an explicit, confirmed purge); one audit row
-- `trash-expire` with SQLCipher's text, when anything went. A credential's earlier versions
-- go with it unless the credential is live again (restored under the same row). Returns how
-- many removed credentials and systems were destroyed; 0 for anyone else, unaudited (it runs
-- on every command, as on SQLCipher's open). What it deletes was removed by a member who
-- could write, and its expires_at is set by the server (remove_credential/remove_system):
-- only the owner or the DBA could move it earlier, and they can delete the rows anyway.
CREATE FUNCTION credvault.expire_trash(confirmed boolean) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); nc integer; ns integer;
BEGIN
    IF NOT is_admin() OR (clock_problem() IS NOT NULL AND NOT confirmed) THEN
        RETURN 0;
    END IF;
    WITH gone AS (DELETE FROM credential_trash WHERE expires_at <= now() RETURNING credential_id),
    versions AS (
        DELETE FROM credential_versions v USING gone
        WHERE v.credential_id = gone.credential_id
          AND NOT EXISTS (SELECT 1 FROM credentials c WHERE c.id = gone.credential_id)
        RETURNING 1)
    SELECT count(*) INTO nc FROM gone;
    WITH gone AS (DELETE FROM system_trash WHERE expires_at <= now() RETURNING 1)
    SELECT count(*) INTO ns FROM gone;
    IF nc + ns > 0 THEN
        PERFORM audit_append(who, 'trash-expire', NULL, NULL, 'ok',
            format('%s credentials and %s systems destroyed', nc, ns));
    END IF;
    RETURN nc + ns;
END $$;

REVOKE ALL ON FUNCTION credvault.expire_trash(boolean) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.expire_trash(boolean) TO %I',
                   credvault.member_group());
END $$;

-- == pgreason: get's audit detail as SQLCipher's ("reason: R"); system set ==
--
-- (docs/team.md, "Daily commands".) Version 1's request_read wrote the member's reason as
-- the bare detail ("TICKET-7") where the SQLCipher vault writes "reason: TICKET-7"
-- (credentials.py), and its denials said "no reason given" or repeated the reason where
-- SQLCipher says "this engagement requires --reason" or the role held. Same signature,
-- same rules (a reading role; with --require-reason a non-empty reason), same request row;
-- only the details change, to the words request_use (pgdaily) already writes for run/ssh.
CREATE OR REPLACE FUNCTION credvault.request_read(eng text, itm text, reason text DEFAULT '')
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text := me();
    e engagements%ROWTYPE;
    cid bigint;
    r text;
    why text := coalesce(reason, '');
    s bigint;
    rid bigint;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state IN ('active', 'closed');
    r := CASE WHEN e.id IS NULL THEN NULL ELSE role_in(e.id) END;
    IF r IS NULL OR r NOT IN ('lead', 'engineer', 'reader') THEN
        PERFORM audit_append(who, 'get', eng, itm, 'denied', held(e.id));
        RETURN NULL;
    END IF;
    IF e.require_reason AND why = '' THEN
        PERFORM audit_append(who, 'get', eng, itm, 'denied', 'this engagement requires --reason');
        RETURN NULL;
    END IF;
    SELECT id INTO cid FROM credentials WHERE engagement_id = e.id AND name = itm;
    IF cid IS NULL THEN
        PERFORM audit_append(who, 'get', eng, itm, 'error', 'not found');
        RETURN NULL;
    END IF;
    s := audit_append(who, 'get', eng, itm, 'ok', CASE WHEN why = '' THEN '' ELSE 'reason: ' || why END);
    INSERT INTO read_requests (member, credential_id, audit_seq, xid)
    VALUES (who, cid, s, pg_current_xact_id()) RETURNING id INTO rid;
    RETURN rid;
END $$;

REVOKE ALL ON FUNCTION credvault.request_read(text, text, text) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.request_read(text, text, text) TO %I',
                   credvault.member_group());
END $$;

-- system set: change a system field by field, as SQLCipher's Systems.set (systems.py):
-- a writing role (leads, engineers), the system must exist (else 'system-set' 'error'
-- 'not found'), audited 'system-set' "changed address, port" (the fields named, in the
-- client's fixed order). The client seals the address again whenever the binding (name,
-- port, protocol) changes; s_address_env NULL keeps the stored one and is refused unless
-- port and protocol are unchanged (an address sealed for other columns would no longer
-- open). keep_details keeps the details; else s_details_env replaces them (NULL clears).
-- A denial is audited under SQLCipher's verb ('system set') with the role held. Returns
-- 'ok', 'denied' or 'not found' (each audited; no exception, so the audit row commits).
CREATE FUNCTION credvault.set_system(
    eng text, s_name text, s_uid bytea, s_key_version integer, s_port integer,
    s_protocol text, s_address_env bytea, s_details_env bytea, keep_details boolean,
    changed text[]
) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; old systems%ROWTYPE;
BEGIN
    e := open_for_write(eng, 'system set', s_name);
    IF e.id IS NULL THEN  -- refused, and audited there: denied, or closed ('error')
        RETURN 'denied';
    END IF;
    SELECT * INTO old FROM systems WHERE engagement_id = e.id AND name = s_name FOR UPDATE;
    IF old.id IS NULL THEN
        PERFORM audit_append(who, 'system-set', eng, s_name, 'error', 'not found');
        RETURN 'not found';
    END IF;
    IF s_key_version IS DISTINCT FROM e.key_version OR old.uid IS DISTINCT FROM s_uid THEN
        RAISE EXCEPTION 'credvault: the engagement key or the system changed meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    IF cardinality(changed) = 0 OR NOT changed <@ ARRAY['address', 'port', 'protocol', 'details']
       OR (s_address_env IS NULL AND (s_port IS DISTINCT FROM old.port
                                      OR s_protocol IS DISTINCT FROM old.protocol)) THEN
        RAISE EXCEPTION 'credvault: invalid system change' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE systems SET port = s_port, protocol = s_protocol,
        address_env = coalesce(s_address_env, address_env),
        details_env = CASE WHEN keep_details THEN details_env ELSE s_details_env END,
        updated_at = now()
        WHERE id = old.id;
    PERFORM audit_append(who, 'system-set', eng, s_name, 'ok',
                         'changed ' || array_to_string(changed, ', '));
    RETURN 'ok';
END $$;

REVOKE ALL ON FUNCTION credvault.set_system(text, text, bytea, integer, integer, text, bytea,
    bytea, boolean, text[]) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.set_system(text, text, bytea, integer,'
                   ' integer, text, bytea, bytea, boolean, text[]) TO %I',
                   credvault.member_group());
END $$;

-- == pgrestore: a restored database destroys again what a signed ledger says was purged ==
--
-- (docs/team.md, "Backups".) After the owner restores a dump made before a purge, the
-- purged engagement is alive again in the restored rows. `credvault purge` (an admin)
-- reads the purge ledger kept on the signing machine (credvault.team_ledger), checks each
-- receipt there against the signing keys it trusts (its own, certified admins'), and calls
-- destroy_engagement(name, 'ledger', false) for every engagement the database shows alive:
-- the same destruction as a purge (no second copy), admins only, whatever the state and
-- without the due date or the clock check (the signed receipt is the reason), its audit
-- and receipt reason "destroyed after this backup was made" as SQLCipher's restore writes.
-- That reason is three lines of destroy_engagement in section pgops, marked "pgrestore".
--
-- Closes, holds and releases made after the dump come back too: the member who closes (or
-- holds, or releases) signs a close record (SQLCipher's, format.md §11.1) on their machine
-- into the same ledger, and the admin's purge gives each engagement back the state of its
-- newest record through reapply_close: admins only; nothing for an engagement gone or
-- purged, or made after the record's close; nothing if this database already shows that
-- state ('same'), or a lifecycle change (close, retain, release) at or after the record's
-- time ('older': the database knows better). Audited as `close`, with SQLCipher's words.
CREATE FUNCTION credvault.reapply_close(
    eng text, closed timestamptz, grace integer, due timestamptz, until timestamptz,
    why text, held_by text, as_of timestamptz, source text
) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE;
BEGIN
    IF NOT is_admin() THEN
        PERFORM audit_append(who, 'close', eng, NULL, 'denied', 'admins only');
        RETURN 'denied: admins only';
    END IF;
    SELECT * INTO e FROM engagements x WHERE x.name = eng FOR UPDATE;
    IF e.id IS NULL OR e.state = 'purged' OR e.created_at > closed THEN
        RETURN 'gone';
    END IF;
    IF e.state = 'closed' AND e.closed_at IS NOT DISTINCT FROM closed
       AND e.purge_due IS NOT DISTINCT FROM due AND e.hold_until IS NOT DISTINCT FROM until THEN
        RETURN 'same';
    END IF;
    IF EXISTS (SELECT 1 FROM audit a WHERE a.engagement = eng AND a.outcome = 'ok'
               AND a.action IN ('close', 'retain', 'release') AND a.ts >= as_of) THEN
        RETURN 'older';
    END IF;
    UPDATE engagements SET state = 'closed', closed_at = closed, grace_days = grace,
        purge_due = due, hold_until = until, hold_reason = why, hold_by = held_by
        WHERE id = e.id;
    PERFORM audit_append(who, 'close', eng, NULL, 'ok', left(format(
        'as recorded after the backup (%s): closed %s, purge due %s%s', source,
        left(iso(closed), 16), left(iso(due), 16),
        CASE WHEN until IS NULL THEN '' ELSE '; held until ' || left(iso(until), 16) END), 400));
    RETURN 'ok';
END $$;

REVOKE ALL ON FUNCTION credvault.reapply_close(text, timestamptz, integer, timestamptz,
    timestamptz, text, text, timestamptz, text) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.reapply_close(text, timestamptz, '
                   'integer, timestamptz, timestamptz, text, text, timestamptz, text) TO %I',
                   credvault.member_group());
END $$;

-- == crl: the admin-signed, versioned revocation list of member keys ==
--
-- (docs/format.md §19.7, docs/team.md "Members", docs/security.md §12.) Before this section
-- a lead learnt who is still a member of the vault from the `members` rows, which the DBA
-- writes: a DBA who hid an engagement from `member rm`, or cut its revoke link before the
-- lead replayed it, and then put the member's rows back, got the lead's next rotation
-- sealed to the removed member. Now `member rm` also publishes, in the same transaction, a
-- new version of a vault-wide list naming the removed member's certified keys, signed by
-- the removing admin; every client that seals a key copy reads the list, checks every
-- version's signature against an admin's certified key, and refuses to seal to a listed
-- key. The server keeps the versions in order (version = last + 1, prev = the last one's
-- hash, signer = the caller) and appends only; it checks no signature (the clients do).

CREATE TABLE credvault.revocation_list (
    version    integer PRIMARY KEY CHECK (version >= 1),
    statement  bytea NOT NULL,  -- docs/format.md §19.7: body ‖ the signer's Ed25519 signature
    hash       bytea NOT NULL,  -- sha256('credvault/v1/team-revocation-chain' || statement)
    signer     text NOT NULL,
    member     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON TABLE credvault.revocation_list FROM PUBLIC;

-- Every version, oldest first (any member: the statements are signed public facts).
CREATE FUNCTION credvault.revocation_list()
RETURNS TABLE (version integer, statement bytea)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    PERFORM me();
    RETURN QUERY SELECT r.version, r.statement FROM revocation_list r ORDER BY r.version;
END $$;

-- Append the next version (not executable by members): its header must name this vault,
-- the next version, the last version's hash (zeros first), the calling admin and the member
-- being removed (parts 0-3, 5 and 7 of format.md §19.7; link_part reads them).
CREATE FUNCTION credvault.revocation_append(who text, removed text, stmt bytea) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    last revocation_list%ROWTYPE;
    v integer;
BEGIN
    LOCK TABLE revocation_list IN EXCLUSIVE MODE;
    SELECT * INTO last FROM revocation_list r ORDER BY r.version DESC LIMIT 1;
    v := coalesce(last.version, 0) + 1;
    IF stmt IS NULL OR length(stmt) < 64 + 100 OR length(stmt) > 262144
       OR link_part(stmt, 0) IS DISTINCT FROM int8send(1::bigint)
       OR link_part(stmt, 1) IS DISTINCT FROM vault_id()
       OR link_part(stmt, 5) IS DISTINCT FROM convert_to(who, 'UTF8')
       OR link_part(stmt, 7) IS DISTINCT FROM convert_to(removed, 'UTF8') THEN
        RAISE EXCEPTION 'credvault: not a revocation of % signed by %', removed, who
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF link_part(stmt, 2) IS DISTINCT FROM int8send(v::bigint)
       OR link_part(stmt, 3) IS DISTINCT FROM coalesce(last.hash, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea) THEN
        RAISE EXCEPTION 'credvault: the revocation list moved meanwhile (expected version %)', v
            USING ERRCODE = 'serialization_failure';
    END IF;
    INSERT INTO revocation_list (version, statement, hash, signer, member)
    VALUES (v, stmt, sha256(convert_to('credvault/v1/team-revocation-chain', 'UTF8') || stmt), who, removed);
    RETURN v;
END $$;

-- member rm: rmrevoke's removal with the revoke links, and the next version of the list, in
-- one transaction. The list version may be omitted (NULL) only for a member removed before
-- whose keys the list names already (a second `member rm` signing the links left over).
CREATE FUNCTION credvault.remove_member_logged(member text, engs text[], new_links bytea[],
                                               revocation bytea)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text := require_admin();
    was text;
    killed integer;
BEGIN
    SELECT m.state INTO was FROM members m WHERE m.name = remove_member_logged.member;
    killed := remove_member_logged(member, engs, new_links);
    IF revocation IS NOT NULL THEN
        PERFORM revocation_append(who, member, revocation);
    ELSIF was IS DISTINCT FROM 'removed' THEN
        RAISE EXCEPTION 'credvault: removing % needs the signed revocation of their keys', member
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN killed;
END $$;

-- Invite again a member removed before, under the same name: the row, login and certificate
-- start over (no keys: they join with new ones; the list names their old keys, not their name).
CREATE OR REPLACE FUNCTION credvault.invite_member(member text, verifier text, make_admin boolean,
                                                   i_ipk bytea, i_sig bytea)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := require_admin(); old members%ROWTYPE;
BEGIN
    SELECT * INTO old FROM members m WHERE m.name = invite_member.member FOR UPDATE;
    IF old.name IS NULL THEN
        PERFORM add_member(member, verifier, make_admin);
        INSERT INTO member_certs (member, inviter, admin, ipk, invitation_sig)
        VALUES (member, who, make_admin, i_ipk, i_sig);
        RETURN;
    END IF;
    IF old.state <> 'removed' THEN
        RAISE EXCEPTION 'credvault: % is a member already', member USING ERRCODE = 'unique_violation';
    END IF;
    -- a removed admin's signatures (list versions, revoke links, invitations) are checked
    -- against the certificate under their name: it stays; choose another name
    IF old.admin THEN
        RAISE EXCEPTION 'credvault: % was an admin: invite them under another name', member
            USING ERRCODE = 'unique_violation';
    END IF;
    IF verifier !~ '^SCRAM-SHA-256\$' THEN
        RAISE EXCEPTION 'credvault: a SCRAM verifier is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE members SET state = 'invited', admin = make_admin, sign_pub = NULL, kem_pub = NULL,
        created_at = now(), removed_at = NULL WHERE name = old.name;
    EXECUTE format('ALTER ROLE %I LOGIN PASSWORD %L', old.role_name, verifier);
    DELETE FROM member_certs c WHERE c.member = old.name;
    INSERT INTO member_certs (member, inviter, admin, ipk, invitation_sig)
    VALUES (member, who, make_admin, i_ipk, i_sig);
    PERFORM audit_append(who, 'member-add', NULL, member, 'ok',
                         CASE WHEN make_admin THEN 'admin, again' ELSE 'again' END);
END $$;

REVOKE ALL ON FUNCTION credvault.revocation_list(), credvault.revocation_append(text, text, bytea),
    credvault.remove_member_logged(text, text[], bytea[], bytea) FROM PUBLIC;
DO $$
BEGIN
    -- the 3-argument form publishes no list version: members call the 4-argument one
    EXECUTE format('REVOKE EXECUTE ON FUNCTION credvault.remove_member_logged(text, text[], bytea[])'
                   ' FROM %I', credvault.member_group());
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.revocation_list(),'
                   ' credvault.remove_member_logged(text, text[], bytea[], bytea) TO %I',
                   credvault.member_group());
END $$;

-- == pgeng: engagement settings signed in the membership log; engagement set ==
--
-- (docs/team.md, "Engagement settings".) `engagement new --require-reason/--grace-days` and
-- `engagement set --[no-]require-reason` write a `set` link (format.md §17) into the
-- engagement's membership log, signed by the admin or lead who decides it, and the same
-- values into the columns the server enforces (request_read and the other requests refuse a
-- read without a reason; close_engagement schedules by grace_days). The server checks that
-- the link says what the columns get; every client replays the log and refuses an
-- engagement whose require_reason column differs from its signed log (a DBA's unsigned
-- flip: exit 6), and closes with the signed grace period.

-- The engagement's creation on the record as SQLCipher's (`engagement-new`, "client C,
-- lead L"; section pglog wrote `create` with no detail). The same function otherwise.
CREATE OR REPLACE FUNCTION credvault.create_engagement_logged(
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
    PERFORM audit_append(who, 'engagement-new', e_name, NULL, 'ok',
                         format('client %s, lead %s', e_client, e_lead));
    RETURN eid;
END $$;

-- A `set` link of `who` saying require_reason = rr (and, unless NULL, grace_days = grace;
-- -1 for the vault's own), and nothing after it (header part 6 kind, 7 signer, 9 and 10
-- the two 8-byte integers).
CREATE FUNCTION credvault.settings_link_ok(link bytea, who text, rr boolean, grace integer)
RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = credvault, pg_temp
AS $$
    SELECT link_part(link, 6) IS NOT DISTINCT FROM convert_to('set', 'UTF8')
       AND link_part(link, 7) IS NOT DISTINCT FROM convert_to(who, 'UTF8')
       AND link_part(link, 9) IS NOT DISTINCT FROM int8send(CASE WHEN rr THEN 1 ELSE 0 END::bigint)
       AND (grace IS NULL OR link_part(link, 10) IS NOT DISTINCT FROM int8send(grace::bigint))
       AND link_part(link, 10) IS NOT NULL
       AND link_part(link, 11) IS NULL
$$;

-- An admin creates a logged engagement with its settings: create_engagement_logged's work,
-- then link 1 (`set`, signed by the same admin) and the columns, in one transaction.
CREATE FUNCTION credvault.create_engagement_set(
    e_uid bytea, e_name text, e_client text, e_lead text, link0 bytea,
    rr boolean, grace integer, link1 bytea
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := require_admin(); eid bigint;
BEGIN
    IF NOT settings_link_ok(link1, who, rr, coalesce(grace, -1)) THEN
        RAISE EXCEPTION 'credvault: not the settings link of this engagement'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    eid := create_engagement_logged(e_uid, e_name, e_client, e_lead, link0);
    PERFORM log_append(eid, link1);
    UPDATE engagements SET require_reason = rr, grace_days = grace WHERE id = eid;
    RETURN eid;
END $$;

-- `engagement set`: a lead or an admin (SQLCipher's engagement.set), with the `set` link
-- (NULL only for an engagement without a log: migrated, whose setting stays unsigned as
-- on SQLCipher). A denial is audited under SQLCipher's verb and returned, not raised.
-- 'ok' or 'denied: <why>'.
CREATE FUNCTION credvault.set_engagement_logged(eng text, rr boolean, new_link bytea)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; why text;
BEGIN
    SELECT * INTO e FROM engagements x WHERE x.name = eng AND x.state <> 'purged' FOR UPDATE;
    why := lifecycle_denial(e.id);
    IF why IS NOT NULL THEN
        PERFORM audit_append(who, 'change settings', eng, NULL, 'denied', why);
        RETURN 'denied: ' || why;
    END IF;
    IF e.id IS NULL THEN
        RAISE EXCEPTION 'credvault: engagement % not found', quote_literal(eng) USING ERRCODE = 'no_data_found';
    END IF;
    IF EXISTS (SELECT 1 FROM engagement_log l WHERE l.engagement_id = e.id) THEN
        IF new_link IS NULL OR NOT settings_link_ok(new_link, who, rr, NULL) THEN
            RAISE EXCEPTION 'credvault: not a settings link of %', who
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM log_append(e.id, new_link);
    ELSIF new_link IS NOT NULL THEN
        RAISE EXCEPTION 'credvault: an engagement without a membership log cannot start one'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE engagements SET require_reason = rr WHERE id = e.id;
    PERFORM audit_append(who, 'engagement-set', eng, NULL, 'ok',
                         'require-reason=' || CASE WHEN rr THEN 'True' ELSE 'False' END);
    RETURN 'ok';
END $$;

-- `engagement members`: an admin, or a member holding a role (SQLCipher's
-- engagement.members). Audited `engagement-members` "N members listed" (the live grants
-- engagement_grants returns), a denial as `list members` with the role held; returns
-- 'ok:<the caller's role>' or 'denied: <why>'. An admin naming no engagement: no_data_found.
CREATE FUNCTION credvault.members_listed(eng text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; r text; n bigint;
BEGIN
    SELECT * INTO e FROM engagements x WHERE x.name = eng AND x.state <> 'purged';
    r := CASE WHEN e.id IS NULL THEN NULL ELSE role_in(e.id) END;
    IF r IS NULL AND NOT is_admin() THEN
        PERFORM audit_append(who, 'list members', eng, NULL, 'denied', 'no grant');
        RETURN 'denied: no grant';
    END IF;
    IF e.id IS NULL THEN
        RAISE EXCEPTION 'credvault: engagement % not found', quote_literal(eng) USING ERRCODE = 'no_data_found';
    END IF;
    SELECT count(*) INTO n FROM engagement_grants(eng);
    PERFORM audit_append(who, 'engagement-members', eng, NULL, 'ok', format('%s members listed', n));
    RETURN 'ok:' || coalesce(r, '');
END $$;

-- `audit` (SQLCipher's AuditTrail.entries): with an engagement, its lead or auditor or an
-- admin (purged ones too); without, an admin reads the whole trail (vault-wide entries
-- too), anyone else the entries of the engagements they lead or audit (not purged). Then
-- filtered by member, action and time, the last `lim` (NULL: all), and audited
-- `audit-read` "N entries" after the query (the listing does not show its own entry). A
-- denial is audited as `read the audit trail` with the role held and returned as one row
-- with seq -1 and the reason as detail (not raised: the audit row commits).
CREATE FUNCTION credvault.audit_entries(eng text, mem text, act text, since timestamptz,
                                        lim integer)
RETURNS TABLE (seq bigint, ts timestamptz, member text, action text, engagement text,
               item text, outcome text, detail text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; r text; engs text[]; whole boolean := false; n bigint;
BEGIN
    IF eng IS NOT NULL THEN
        SELECT * INTO e FROM engagements x WHERE x.name = eng;
        r := CASE WHEN e.id IS NULL THEN NULL ELSE role_in(e.id) END;
        IF NOT (is_admin() OR coalesce(r, '') IN ('lead', 'auditor')) THEN
            PERFORM audit_append(who, 'read the audit trail', eng, NULL, 'denied',
                                 coalesce('role ' || r, 'no grant'));
            RETURN QUERY SELECT -1::bigint, now(), who, 'read the audit trail'::text, eng,
                NULL::text, 'denied'::text, coalesce('role ' || r, 'no grant');
            RETURN;
        END IF;
        IF e.id IS NULL THEN
            RAISE EXCEPTION 'credvault: engagement % not found', quote_literal(eng) USING ERRCODE = 'no_data_found';
        END IF;
        engs := ARRAY[eng];
    ELSIF is_admin() THEN
        whole := true;
    ELSE
        engs := ARRAY(SELECT x.name FROM engagements x
                      WHERE x.state <> 'purged' AND role_in(x.id) IN ('lead', 'auditor'));
    END IF;
    RETURN QUERY SELECT * FROM (
        SELECT a.seq, a.ts, a.member, a.action, a.engagement, a.item, a.outcome, a.detail
        FROM audit a
        WHERE (whole OR a.engagement = ANY (engs))
          AND (mem IS NULL OR a.member = mem) AND (act IS NULL OR a.action = act)
          AND (since IS NULL OR a.ts >= since)
        ORDER BY a.seq DESC LIMIT lim) last ORDER BY 1;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM audit_append(who, 'audit-read', eng, NULL, 'ok', format('%s entries', n));
END $$;

REVOKE ALL ON FUNCTION credvault.audit_entries(text, text, text, timestamptz, integer)
    FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.audit_entries(text, text, text,'
                   ' timestamptz, integer) TO %I', credvault.member_group());
END $$;

-- `engagement rotate` by someone the signed log does not make a lead (its client refuses
-- before asking for anything): the denial on the record as SQLCipher's, the verb `rotate`
-- and the role held. Does nothing else; returns the reason.
CREATE FUNCTION credvault.rotation_refused(eng text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); eid bigint; why text;
BEGIN
    SELECT x.id INTO eid FROM engagements x WHERE x.name = eng;
    why := held(eid);
    PERFORM audit_append(who, 'rotate', eng, NULL, 'denied', why);
    RETURN why;
END $$;

-- `client shred` (SQLCipher's Clients.shred): every engagement of the client not purged
-- yet, by name, each one the caller may shred (its lead or an admin) — all or none: the
-- first the caller may not shred is audited as `shred` denied with the role held and
-- returned alone with the reason (its name only if the caller holds a role in it: row-level
-- security hides the others' names). No row: nothing left to shred. Destroys nothing: the
-- client then shreds each through destroy_engagement, signing each receipt.
CREATE FUNCTION credvault.client_shred_check(cl text)
RETURNS TABLE (name text, denial text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; why text;
BEGIN
    FOR e IN SELECT * FROM engagements x WHERE x.client = cl AND x.state <> 'purged'
             ORDER BY x.name COLLATE "C" LOOP
        why := lifecycle_denial(e.id);
        IF why IS NOT NULL THEN
            PERFORM audit_append(who, 'shred', e.name, NULL, 'denied', why);
            RETURN QUERY SELECT CASE WHEN role_in(e.id) IS NULL THEN NULL ELSE e.name END, why;
            RETURN;
        END IF;
    END LOOP;
    RETURN QUERY SELECT x.name, NULL::text FROM engagements x
        WHERE x.client = cl AND x.state <> 'purged' ORDER BY x.name COLLATE "C";
END $$;

REVOKE ALL ON FUNCTION credvault.members_listed(text), credvault.rotation_refused(text),
    credvault.client_shred_check(text) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.members_listed(text),'
                   ' credvault.rotation_refused(text), credvault.client_shred_check(text) TO %I',
                   credvault.member_group());
END $$;

REVOKE ALL ON FUNCTION credvault.settings_link_ok(bytea, text, boolean, integer),
    credvault.create_engagement_set(bytea, text, text, text, bytea, boolean, integer, bytea),
    credvault.set_engagement_logged(text, boolean, bytea) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION'
                   ' credvault.create_engagement_set(bytea, text, text, text, bytea, boolean, integer, bytea),'
                   ' credvault.set_engagement_logged(text, boolean, bytea) TO %I',
                   credvault.member_group());
END $$;

-- == pgrec: mv to another engagement; import ==
--
-- (docs/team.md, "Daily commands".) `credvault mv ENG/NAME ENG2/NEW` on SQLCipher
-- (credentials.py, Credentials.move) needs a writing role on both engagements, re-seals the
-- credential and every earlier version under ENG2's key, stores them there and removes them
-- from ENG in one transaction, and audits 'mv' on both ("moved to ENG2/NEW", "moved from
-- ENG/NAME"); the link to a system stays behind. On a team vault the values go through the
-- member's machine, so three steps:
--   request_move     phase one: both writing roles checked (a denial audited 'mv' on the
--                    engagement that refuses, with the role held; a closed one 'error',
--                    "engagement is closed", as SQLCipher's require_active); the release audited
--                    'rebind' on ENG ("released to seal it again for ENG2/NEW") and
--                    committed; a move request names both engagements and the new name
--   fetch_move       phase two, under fetch_record's conditions (the caller's, unused, at
--                    most 60 s old, committed, durable) and both writing roles still held:
--                    the credential's envelopes and every earlier version's
--   move_credential  stores the client's re-sealed envelopes in ENG2 and removes the
--                    credential from ENG in ONE transaction, only against the caller's
--                    fetched, unconsumed request, with both writing roles held at that
--                    moment, the credential and its versions as the fetch released them and
--                    every envelope under ENG2's current key version; audited as SQLCipher.
-- The row keeps its id, uid, creation time, version number and history; its versions take
-- the new name and lose the link, as SQLCipher's move_versions does.
CREATE TABLE credvault.move_requests (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    member        text NOT NULL,
    engagement_id bigint NOT NULL REFERENCES credvault.engagements (id) ON DELETE CASCADE,
    credential_id bigint NOT NULL,
    target_id     bigint NOT NULL REFERENCES credvault.engagements (id) ON DELETE CASCADE,
    target_name   text NOT NULL,
    audit_seq     bigint NOT NULL REFERENCES credvault.audit (seq),
    xid           xid8 NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    used_at       timestamptz,
    moved_at      timestamptz
);

-- An envelope (any field) sealed under key version kv (bytes 1-4).
CREATE FUNCTION credvault.sealed_under(env bytea, kv integer) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = credvault, pg_temp
AS $$ SELECT env IS NULL OR (length(env) > 5 AND get_byte(env, 1) * 16777216
      + get_byte(env, 2) * 65536 + get_byte(env, 3) * 256 + get_byte(env, 4) = kv) $$;

-- Returns (outcome, request): 'ok' with the request, or 'denied' or 'inactive STATE ENG'
-- (audited), 'not found' or 'exists' (not audited, as on SQLCipher).
CREATE FUNCTION credvault.request_move(eng text, itm text, target text, new_name text)
RETURNS TABLE (outcome text, request bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text := me(); e engagements%ROWTYPE; te engagements%ROWTYPE; cid bigint; s bigint;
    rid bigint;
BEGIN
    IF new_name !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' OR eng = target THEN
        RAISE EXCEPTION 'credvault: invalid move' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- each engagement as SQLCipher's require_active checks it, the source first: a member
    -- who may not write there is denied; one who may is refused for its state ('error')
    SELECT * INTO e FROM engagements WHERE name = eng AND state <> 'purged';
    IF e.id IS NULL OR NOT may(e.id, 'write') THEN
        PERFORM audit_append(who, 'mv', eng, itm, 'denied', held(e.id));
        RETURN QUERY SELECT 'denied'::text, NULL::bigint;
        RETURN;
    END IF;
    IF e.state <> 'active' THEN
        PERFORM audit_append(who, 'mv', eng, itm, 'error', 'engagement is ' || e.state);
        RETURN QUERY SELECT format('inactive %s %s', e.state, eng), NULL::bigint;
        RETURN;
    END IF;
    SELECT * INTO te FROM engagements WHERE name = target AND state <> 'purged';
    IF te.id IS NULL OR NOT may(te.id, 'write') THEN
        PERFORM audit_append(who, 'mv', target, new_name, 'denied', held(te.id));
        RETURN QUERY SELECT 'denied'::text, NULL::bigint;
        RETURN;
    END IF;
    IF te.state <> 'active' THEN
        PERFORM audit_append(who, 'mv', target, new_name, 'error', 'engagement is ' || te.state);
        RETURN QUERY SELECT format('inactive %s %s', te.state, target), NULL::bigint;
        RETURN;
    END IF;
    SELECT id INTO cid FROM credentials WHERE engagement_id = e.id AND name = itm;
    IF cid IS NULL THEN
        RETURN QUERY SELECT 'not found'::text, NULL::bigint;
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM credentials WHERE engagement_id = te.id AND name = new_name) THEN
        RETURN QUERY SELECT 'exists'::text, NULL::bigint;
        RETURN;
    END IF;
    s := audit_append(who, 'rebind', eng, itm, 'ok',
                      format('released to seal it again for %s/%s', target, new_name));
    INSERT INTO move_requests (member, engagement_id, credential_id, target_id, target_name,
                               audit_seq, xid)
    VALUES (who, e.id, cid, te.id, new_name, s, pg_current_xact_id()) RETURNING id INTO rid;
    RETURN QUERY SELECT 'ok'::text, rid;
END $$;

-- Phase two: the credential's row ('credentials') and its earlier versions
-- ('credential_versions'), each with its version number and the clear columns its
-- anchor's binding covers (name, kind, linked system's uid).
CREATE FUNCTION credvault.fetch_move(request bigint)
RETURNS TABLE (tbl text, id bigint, uid bytea, version integer, e1 bytea, e2 bytea, e3 bytea,
               e4 bytea, b_name text, b_kind text, b_sys_uid bytea)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    want pg_lsn := pg_current_wal_insert_lsn();
    who text := me();
    q move_requests%ROWTYPE;
BEGIN
    SELECT * INTO q FROM move_requests r WHERE r.id = request FOR UPDATE;
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
    PERFORM await_durable(want);
    IF NOT may(q.engagement_id, 'write') OR NOT may(q.target_id, 'write') THEN
        RAISE EXCEPTION 'credvault: access revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE move_requests SET used_at = clock_timestamp() WHERE move_requests.id = q.id;
    RETURN QUERY
        SELECT 'credentials'::text, c.id, c.uid, c.version, c.secret_env, c.username_env,
               c.url_env, c.notes_env, c.name, c.kind, s.uid
        FROM credentials c LEFT JOIN systems s ON s.id = c.system_id
        WHERE c.id = q.credential_id AND c.engagement_id = q.engagement_id
        UNION ALL
        SELECT 'credential_versions', v.id, v.uid, v.version, v.secret_env, v.username_env,
               v.url_env, v.notes_env, v.name, v.kind, v.system_uid
        FROM credential_versions v
        WHERE v.credential_id = q.credential_id AND v.engagement_id = q.engagement_id
        ORDER BY 1, 4;
END $$;

-- Store the move. Returns 'ok', 'denied' (a writing role lost since the fetch; audited 'mv'
-- on that engagement) or 'exists' (the new name taken meanwhile); anything else that
-- changed meanwhile (the credential replaced or edited, a version added, ENG2's key
-- rotated) is a serialization failure: nothing is changed, the member runs it again.
CREATE FUNCTION credvault.move_credential(
    request bigint, c_uid bytea, c_version integer, t_key_version integer,
    c_e1 bytea, c_e2 bytea, c_e3 bytea, c_e4 bytea,
    v_id bigint[], v_e1 bytea[], v_e2 bytea[], v_e3 bytea[], v_e4 bytea[]
) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text := me(); q move_requests%ROWTYPE; e engagements%ROWTYPE; te engagements%ROWTYPE;
    c credentials%ROWTYPE; n integer := coalesce(cardinality(v_id), 0); i integer;
BEGIN
    SELECT * INTO q FROM move_requests r WHERE r.id = request FOR UPDATE;
    IF q.id IS NULL OR q.member <> who OR q.used_at IS NULL OR q.moved_at IS NOT NULL
       OR q.created_at < clock_timestamp() - interval '10 minutes' THEN
        RAISE EXCEPTION 'credvault: no such move request' USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- both engagements held against a rotation, in one order (two moves never deadlock)
    PERFORM 1 FROM engagements x WHERE x.id IN (q.engagement_id, q.target_id)
        ORDER BY x.id FOR SHARE;
    SELECT * INTO e FROM engagements x WHERE x.id = q.engagement_id;
    SELECT * INTO te FROM engagements x WHERE x.id = q.target_id;
    IF e.state <> 'active' OR NOT may(e.id, 'write') THEN
        PERFORM audit_append(who, 'mv', e.name, (SELECT x.name FROM credentials x
                             WHERE x.id = q.credential_id), 'denied', held(e.id));
        RETURN 'denied';
    END IF;
    IF te.state <> 'active' OR NOT may(te.id, 'write') THEN
        PERFORM audit_append(who, 'mv', te.name, q.target_name, 'denied', held(te.id));
        RETURN 'denied';
    END IF;
    SELECT * INTO c FROM credentials x WHERE x.id = q.credential_id FOR UPDATE;
    IF c.id IS NULL OR c.engagement_id <> e.id OR c.uid <> c_uid OR c.version <> c_version THEN
        RAISE EXCEPTION 'credvault: the credential changed meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    IF EXISTS (SELECT 1 FROM credentials x WHERE x.engagement_id = te.id AND x.name = q.target_name) THEN
        RETURN 'exists';
    END IF;
    -- every secret record-bound (0x02, as everything under a membership log) and every
    -- envelope under ENG2's current key version
    IF t_key_version <> te.key_version THEN
        RAISE EXCEPTION 'credvault: the engagement key was rotated meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    IF NOT coalesce(rebound_ok(c_e1, te.key_version), false)
       OR NOT (sealed_under(c_e2, te.key_version) AND sealed_under(c_e3, te.key_version)
               AND sealed_under(c_e4, te.key_version))
       OR EXISTS (SELECT 1 FROM unnest(v_e1, v_e2, v_e3, v_e4) AS g(a, b, d, f)
                  WHERE NOT coalesce(rebound_ok(a, te.key_version), false)
                     OR NOT (sealed_under(b, te.key_version) AND sealed_under(d, te.key_version)
                             AND sealed_under(f, te.key_version))) THEN
        RAISE EXCEPTION 'credvault: an envelope not sealed record-bound under %''s key version %', te.name, te.key_version
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- exactly the versions the credential has (each once), an envelope set for each
    IF (SELECT count(*) FROM credential_versions v WHERE v.credential_id = c.id) <> n
       OR (SELECT count(DISTINCT v.id) FROM credential_versions v
           WHERE v.credential_id = c.id AND v.id = ANY (v_id)) <> n
       OR coalesce(cardinality(v_e1), 0) <> n OR coalesce(cardinality(v_e2), 0) <> n
       OR coalesce(cardinality(v_e3), 0) <> n OR coalesce(cardinality(v_e4), 0) <> n THEN
        RAISE EXCEPTION 'credvault: the credential''s versions changed meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    DELETE FROM credentials WHERE credentials.id = c.id;
    PERFORM set_config('credvault.restoring', 'on', true);
    INSERT INTO credentials (id, uid, engagement_id, name, kind, system_id, key_version,
        secret_env, username_env, url_env, notes_env, created_at, updated_at, version,
        updated_by, changed)
    OVERRIDING SYSTEM VALUE
    VALUES (c.id, c.uid, te.id, q.target_name, c.kind, NULL, te.key_version, c_e1, c_e2, c_e3,
        c_e4, c.created_at, now(), c.version, c.updated_by, c.changed);
    PERFORM set_config('credvault.restoring', '', true);
    FOR i IN 1 .. n LOOP
        UPDATE credential_versions SET engagement_id = te.id, name = q.target_name,
            system_uid = NULL, system_name = NULL, key_version = te.key_version,
            secret_env = v_e1[i], username_env = v_e2[i], url_env = v_e3[i], notes_env = v_e4[i]
        WHERE credential_versions.id = v_id[i] AND credential_id = c.id;
    END LOOP;
    UPDATE move_requests SET moved_at = clock_timestamp() WHERE move_requests.id = q.id;
    PERFORM audit_append(who, 'mv', e.name, c.name, 'ok',
                         format('moved to %s/%s', te.name, q.target_name));
    PERFORM audit_append(who, 'mv', te.name, q.target_name, 'ok',
                         format('moved from %s/%s', e.name, c.name));
    RETURN 'ok';
END $$;

-- A move request names a credential of each engagement: it leaves with either's purge, as
-- the record requests do (purge_records, section pgcmds).
CREATE FUNCTION credvault.purge_move_requests() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    DELETE FROM move_requests WHERE engagement_id = NEW.id OR target_id = NEW.id;
    RETURN NEW;
END $$;
CREATE TRIGGER purge_move_requests AFTER UPDATE OF state ON credvault.engagements
    FOR EACH ROW WHEN (NEW.state = 'purged') EXECUTE FUNCTION credvault.purge_move_requests();

REVOKE ALL ON credvault.move_requests FROM PUBLIC;
REVOKE ALL ON FUNCTION credvault.purge_move_requests(), credvault.sealed_under(bytea, integer),
    credvault.request_move(text, text, text, text), credvault.fetch_move(bigint),
    credvault.move_credential(bigint, bytea, integer, integer, bytea, bytea, bytea, bytea,
                              bigint[], bytea[], bytea[], bytea[], bytea[]) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.request_move(text, text, text, text),'
                   ' credvault.fetch_move(bigint), credvault.move_credential(bigint, bytea,'
                   ' integer, integer, bytea, bytea, bytea, bytea, bigint[], bytea[], bytea[],'
                   ' bytea[], bytea[]) TO %I', credvault.member_group());
END $$;

-- import (credentials.py, import_entries): a writing role; an imported host equal to a
-- system the engagement has is linked to it, so the client first reads the systems'
-- addresses through two phases (request_import commits an 'import-read' row, "N system
-- addresses released to link the import's hosts"; fetch_import releases them under
-- fetch_record's conditions and a writing role still held; skipped when there is no
-- system). import_credentials then stores everything the client sealed, all or nothing,
-- audited as SQLCipher: 'import', "N credentials, M systems, K skipped" (or "dry run: …",
-- which stores nothing); a denial as 'import' denied with the role held. Returns 'ok',
-- 'denied', or 'credential NAME' / 'system NAME' for a name created meanwhile.
CREATE FUNCTION credvault.request_import(eng text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; n integer; s bigint; rid bigint;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state <> 'purged';
    IF e.id IS NULL OR NOT may(e.id, 'write') THEN
        PERFORM audit_append(who, 'import', eng, NULL, 'denied', held(e.id));
        RETURN NULL;
    END IF;
    IF e.state <> 'active' THEN  -- as SQLCipher's require_active: on the record, refused
        PERFORM audit_append(who, 'import', eng, NULL, 'error', 'engagement is ' || e.state);
        RETURN NULL;
    END IF;
    SELECT count(*) INTO n FROM systems WHERE engagement_id = e.id;
    s := audit_append(who, 'import-read', eng, NULL, 'ok',
                      format('%s system addresses released to link the import''s hosts', n));
    INSERT INTO record_requests (member, kind, engagement_id, target_id, audit_seq, xid)
    VALUES (who, 'import-systems', e.id, e.id, s, pg_current_xact_id()) RETURNING id INTO rid;
    RETURN rid;
END $$;

CREATE FUNCTION credvault.fetch_import(request bigint)
RETURNS TABLE (uid bytea, name text, port integer, protocol text, address_env bytea)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    want pg_lsn := pg_current_wal_insert_lsn();
    who text := me();
    q record_requests%ROWTYPE;
BEGIN
    SELECT * INTO q FROM record_requests r WHERE r.id = request FOR UPDATE;
    IF q.id IS NULL OR q.member <> who OR q.kind <> 'import-systems' THEN
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
    PERFORM await_durable(want);
    IF NOT may(q.engagement_id, 'write') THEN
        RAISE EXCEPTION 'credvault: access revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE record_requests SET used_at = clock_timestamp() WHERE record_requests.id = q.id;
    RETURN QUERY SELECT s.uid, s.name, s.port, s.protocol, s.address_env
        FROM systems s WHERE s.engagement_id = q.engagement_id ORDER BY s.name;
END $$;

CREATE FUNCTION credvault.import_credentials(
    eng text, dry boolean, t_key_version integer, n_skipped integer,
    s_names text[], s_uids bytea[], s_ports integer[], s_protocols text[], s_envs bytea[],
    c_names text[], c_kinds text[], c_uids bytea[], c_systems text[],
    c_e1 bytea[], c_e2 bytea[], c_e3 bytea[], c_e4 bytea[]
) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text := me(); e engagements%ROWTYPE; nc integer := coalesce(cardinality(c_names), 0);
    ns integer := coalesce(cardinality(s_names), 0); i integer; sid bigint; clash text;
    summary text;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active' FOR SHARE;
    IF e.id IS NULL OR NOT may(e.id, 'write') THEN
        PERFORM audit_append(who, 'import', eng, NULL, 'denied', held(e.id));
        RETURN 'denied';
    END IF;
    IF n_skipped < 0 THEN
        RAISE EXCEPTION 'credvault: invalid import' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    summary := format('%s credentials, %s systems, %s skipped', nc, ns, n_skipped);
    IF dry THEN
        PERFORM audit_append(who, 'import', eng, NULL, 'ok', 'dry run: ' || summary);
        RETURN 'ok';
    END IF;
    IF t_key_version <> e.key_version THEN
        RAISE EXCEPTION 'credvault: the engagement key was rotated meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    IF coalesce(cardinality(s_uids), 0) <> ns OR coalesce(cardinality(s_ports), 0) <> ns
       OR coalesce(cardinality(s_protocols), 0) <> ns OR coalesce(cardinality(s_envs), 0) <> ns
       OR coalesce(cardinality(c_kinds), 0) <> nc OR coalesce(cardinality(c_uids), 0) <> nc
       OR coalesce(cardinality(c_systems), 0) <> nc OR coalesce(cardinality(c_e1), 0) <> nc
       OR coalesce(cardinality(c_e2), 0) <> nc OR coalesce(cardinality(c_e3), 0) <> nc
       OR coalesce(cardinality(c_e4), 0) <> nc
       OR EXISTS (SELECT 1 FROM unnest(s_names || c_names) AS g(n)
                  WHERE g.n IS NULL OR g.n !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$')
       -- every anchor record-bound, every envelope under the current key version
       OR EXISTS (SELECT 1 FROM unnest(s_envs) AS g(a)
                  WHERE NOT coalesce(rebound_ok(a, e.key_version), false))
       OR EXISTS (SELECT 1 FROM unnest(c_e1, c_e2, c_e3, c_e4) AS g(a, b, d, f)
                  WHERE NOT coalesce(rebound_ok(a, e.key_version), false)
                     OR NOT (sealed_under(b, e.key_version) AND sealed_under(d, e.key_version)
                             AND sealed_under(f, e.key_version))) THEN
        RAISE EXCEPTION 'credvault: invalid import' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT x.name INTO clash FROM credentials x WHERE x.engagement_id = e.id
        AND x.name = ANY (c_names) ORDER BY array_position(c_names, x.name) LIMIT 1;
    IF clash IS NOT NULL THEN
        RETURN 'credential ' || clash;
    END IF;
    SELECT x.name INTO clash FROM systems x WHERE x.engagement_id = e.id
        AND x.name = ANY (s_names) ORDER BY array_position(s_names, x.name) LIMIT 1;
    IF clash IS NOT NULL THEN
        RETURN 'system ' || clash;
    END IF;
    FOR i IN 1 .. ns LOOP
        INSERT INTO systems (uid, engagement_id, name, port, protocol, address_env)
        VALUES (s_uids[i], e.id, s_names[i], s_ports[i], s_protocols[i], s_envs[i]);
    END LOOP;
    FOR i IN 1 .. nc LOOP
        sid := NULL;
        IF c_systems[i] IS NOT NULL THEN
            SELECT x.id INTO sid FROM systems x WHERE x.engagement_id = e.id AND x.name = c_systems[i];
            IF sid IS NULL THEN
                RAISE EXCEPTION 'credvault: system %/% not found', eng, c_systems[i]
                    USING ERRCODE = 'no_data_found';
            END IF;
        END IF;
        INSERT INTO credentials (uid, engagement_id, name, kind, system_id, key_version,
                                 secret_env, username_env, url_env, notes_env)
        VALUES (c_uids[i], e.id, c_names[i], c_kinds[i], sid, e.key_version, c_e1[i], c_e2[i],
                c_e3[i], c_e4[i]);
    END LOOP;
    PERFORM audit_append(who, 'import', eng, NULL, 'ok', summary);
    RETURN 'ok';
END $$;

REVOKE ALL ON FUNCTION credvault.request_import(text), credvault.fetch_import(bigint),
    credvault.import_credentials(text, boolean, integer, integer, text[], bytea[], integer[],
        text[], bytea[], text[], text[], bytea[], text[], bytea[], bytea[], bytea[], bytea[])
    FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.request_import(text),'
                   ' credvault.fetch_import(bigint), credvault.import_credentials(text, boolean,'
                   ' integer, integer, text[], bytea[], integer[], text[], bytea[], text[],'
                   ' text[], bytea[], text[], bytea[], bytea[], bytea[], bytea[]) TO %I',
                   credvault.member_group());
END $$;

-- == pgkeys: info, receipt-keys and passwd --compromised on a team vault ==
-- (docs/team.md, "`info`, `receipt-keys` and `passwd --compromised`".) `credvault info`
-- shows what SQLCipher's shows: the schema version, when the vault was made, how many
-- members are active and the settings the server keeps in meta. The creation time is kept
-- from now on; a vault made before this section gets its first member's creation (its
-- founder's `init`).
INSERT INTO credvault.meta (key, value)
    SELECT 'created_at', convert_to(credvault.iso(coalesce(min(created_at), now())), 'UTF8')
    FROM credvault.members
    ON CONFLICT (key) DO NOTHING;

-- Facts, not secrets: any active member; not audited (SQLCipher's info is not either).
CREATE FUNCTION credvault.vault_info() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    PERFORM me();
    RETURN jsonb_build_object(
        'schema', (SELECT version FROM schema_version),
        'created_at', (SELECT convert_from(value, 'UTF8') FROM meta WHERE key = 'created_at'),
        'members', (SELECT count(*) FROM members WHERE state = 'active'),
        'purge_grace_days', setting_days('purge_grace_days', 7),
        'backup_retention_days', setting_days('backup_retention_days', 35),
        'trash_days', setting_days('trash_days', 30));
END $$;

-- A member's signing-key history (passwd --compromised; format.md §11.2's links, one chain
-- per member): link seq N hands the member's key over from key N-1 (key 0: the key their
-- certificate chain certifies, members.sign_pub) to the key it names, signed by key N-1
-- on the member's machine. The server checks the link's shape only; every reader checks
-- the signature (receipt-keys, verify-receipt-key.sh). kem_pub: the new X25519 key, for
-- an admin's certification of the new pair (not built yet: docs/team.md).
CREATE TABLE credvault.member_key_links (
    member   text NOT NULL REFERENCES credvault.members (name),
    seq      integer NOT NULL CHECK (seq >= 1),
    link     text NOT NULL,
    sign_pub bytea NOT NULL CHECK (length(sign_pub) = 32),
    kem_pub  bytea NOT NULL CHECK (length(kem_pub) = 32),
    at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (member, seq)
);
REVOKE ALL ON credvault.member_key_links FROM PUBLIC;

-- Every member's links (any member reads them: they are signed statements, like the
-- certificates). A member with a link has retired the key their certificate names.
CREATE FUNCTION credvault.member_key_links() RETURNS TABLE (member text, seq integer, link text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    PERFORM me();
    RETURN QUERY SELECT k.member, k.seq, k.link FROM member_key_links k ORDER BY k.member, k.seq;
END $$;

-- passwd --compromised: the caller's next link (their current key hands over to new_sign),
-- their new login verifier (derived from the new key on their machine), and at once, in
-- the same transaction: every sealed copy of theirs dropped and their engagements flagged
-- for rotation (no copy reaches the old X25519 key again; a lead seals none to them until
-- an admin certifies the new keys). Audited as on SQLCipher (`passwd`, "compromised: …").
-- Returns the flagged engagements' names.
CREATE FUNCTION credvault.replace_keys(k_link text, new_sign bytea, new_kem bytea, verifier text)
RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); j jsonb; n integer; cur bytea; flagged text[];
BEGIN
    IF verifier !~ '^SCRAM-SHA-256\$' THEN
        RAISE EXCEPTION 'credvault: a SCRAM verifier is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF length(new_sign) IS DISTINCT FROM 32 OR length(new_kem) IS DISTINCT FROM 32 THEN
        RAISE EXCEPTION 'credvault: malformed public keys' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM 1 FROM members WHERE name = who FOR UPDATE;  -- one change at a time
    n := coalesce((SELECT max(k.seq) FROM member_key_links k WHERE k.member = who), 0) + 1;
    cur := coalesce((SELECT k.sign_pub FROM member_key_links k WHERE k.member = who AND k.seq = n - 1),
                    (SELECT m.sign_pub FROM members m WHERE m.name = who));
    BEGIN
        j := k_link::jsonb;
    EXCEPTION WHEN others THEN
        j := NULL;
    END;
    IF j IS NULL OR jsonb_typeof(j) <> 'object'
       OR j->>'format' IS DISTINCT FROM 'credvault-receipt-key/1'
       OR j->'seq' IS DISTINCT FROM to_jsonb(n)
       OR j->>'vault_id' IS DISTINCT FROM encode(vault_id(), 'hex')
       OR j->>'predecessor' IS DISTINCT FROM encode(sha256(cur), 'hex')
       OR j->>'public_key' IS DISTINCT FROM encode(new_sign, 'base64')
       OR j->>'key_id' IS DISTINCT FROM encode(sha256(new_sign), 'hex') THEN
        RAISE EXCEPTION 'credvault: not the next link of your key history' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO member_key_links (member, seq, link, sign_pub, kem_pub)
        VALUES (who, n, k_link, new_sign, new_kem);
    EXECUTE format('ALTER ROLE %I PASSWORD %L', session_user, verifier);
    SELECT coalesce(array_agg(e.name ORDER BY e.name), '{}') INTO flagged
        FROM grants g JOIN engagements e ON e.id = g.engagement_id
        WHERE g.member = who AND g.revoked_at IS NULL AND e.state <> 'purged';
    UPDATE engagements SET needs_rotation = true WHERE name = ANY (flagged);
    UPDATE grants SET sealed = NULL, sealed_by = NULL, copy_sig = NULL
        WHERE member = who AND revoked_at IS NULL;
    PERFORM audit_append(who, 'passwd', NULL, who, 'ok',
        format('compromised: new keys; old key retired by a signed hand-over; rotated 0, %s await a lead',
               cardinality(flagged)));
    RETURN flagged;
END $$;

REVOKE ALL ON FUNCTION credvault.vault_info(), credvault.member_key_links(),
    credvault.replace_keys(text, bytea, bytea, text) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.vault_info(), credvault.member_key_links(),'
                   ' credvault.replace_keys(text, bytea, bytea, text) TO %I',
                   credvault.member_group());
END $$;

-- == teamcheck: `credvault check` on a team vault, on the record ==
--
-- (docs/team.md, "Checking a team vault".) The checks run on the admin's machine (every
-- certificate chain, every membership log, the audit chain, every receipt); the server only
-- writes the audit row SQLCipher's check writes: 'check', 'ok' "sound" or 'error' with the
-- first problem (120 characters, as integrity.py cuts it). A member who is not an admin gets
-- the denial SQLCipher gives, audited, and FALSE.
CREATE FUNCTION credvault.record_check(problem text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    IF NOT is_admin() THEN
        PERFORM audit_append(me(), 'check', NULL, NULL, 'denied',
                             'admins and service identities only');
        RETURN false;
    END IF;
    PERFORM audit_append(me(), 'check', NULL, NULL,
                         CASE WHEN problem IS NULL THEN 'ok' ELSE 'error' END,
                         coalesce(left(problem, 120), 'sound'));
    RETURN true;
END $$;

REVOKE ALL ON FUNCTION credvault.record_check(text) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.record_check(text) TO %I',
                   credvault.member_group());
END $$;

-- `credvault witness accept` on a team vault (credvault/team_witness.py): a member accepts a
-- restored database for themselves, on the record as SQLCipher's 'witness-accept' entry. The
-- member writes only their own entry (the server names them), with what their client saw
-- that the database lacks (positions only; 500 characters at most).
CREATE FUNCTION credvault.record_witness_accept(detail text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    PERFORM audit_append(me(), 'witness-accept', NULL, NULL, 'ok', left(detail, 500));
END $$;

REVOKE ALL ON FUNCTION credvault.record_witness_accept(text) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.record_witness_accept(text) TO %I',
                   credvault.member_group());
END $$;

-- `credvault config set` on a team vault (credvault/team_keys.py): an admin changes a
-- setting the server keeps in meta, as SQLCipher's Vault.set_setting: audited 'config-set'
-- "NAME=N" (item: the CLI's name); a change of purge_grace_days moves the purge date of
-- every closed engagement that follows the vault's period (grace_days NULL; a hold still
-- wins), as lifecycle.reschedule. A member who is not an admin gets SQLCipher's denial
-- ('change settings', "admin only"), audited, and FALSE.
CREATE FUNCTION credvault.set_setting(k text, label text, n integer) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    IF NOT is_admin() THEN
        PERFORM audit_append(me(), 'change settings', NULL, NULL, 'denied', 'admin only');
        RETURN false;
    END IF;
    IF k NOT IN ('purge_grace_days', 'backup_retention_days', 'trash_days')
       OR n IS NULL OR n < 0 OR n > 36500 THEN
        RAISE EXCEPTION 'credvault: invalid setting' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO meta (key, value) VALUES (k, convert_to(n::text, 'UTF8'))
        ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
    IF k = 'purge_grace_days' THEN
        UPDATE engagements SET purge_due = due_of(closed_at, n, hold_until)
            WHERE state = 'closed' AND grace_days IS NULL AND closed_at IS NOT NULL;
    END IF;
    PERFORM audit_append(me(), 'config-set', NULL, label, 'ok', format('%s=%s', label, n));
    RETURN true;
END $$;

REVOKE ALL ON FUNCTION credvault.set_setting(text, text, integer) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.set_setting(text, text, integer) TO %I',
                   credvault.member_group());
END $$;

-- == pgclosed: a closed engagement's writes answer as on SQLCipher; one opening for them ==
-- SQLCipher's require_active (engagements.py): a member who may not write is denied (exit
-- 4, audited 'denied' with the role held); one who may is refused for the engagement's
-- state (exit 1, "engagement 'x' is closed: it takes no changes", audited 'error',
-- "engagement is closed"). The team's write functions looked up active engagements only,
-- so a closed one answered "denied, no grant". Their shared opening is now this one
-- function: it locks the engagement FOR SHARE (a key rotation, FOR UPDATE, cannot
-- interleave with the write), checks the caller's writing role and audits the refusal,
-- denied or 'error'. NULL (all fields NULL) when refused; the caller returns its own
-- refusal value ('denied', false, NULL) unchanged, and the client tells the two apart by
-- the engagement's state and its role (team_records.refusal). A denial's detail is the
-- role held, as SQLCipher's (version 1's put_credential wrote ''). `closed_ok`: a write
-- SQLCipher allows on a closed engagement too (trash purge destroys, adds nothing).
-- Owner-only: called from the SECURITY DEFINER write functions, never by a member.
CREATE FUNCTION credvault.open_for_write(eng text, verb text, itm text,
                                         closed_ok boolean DEFAULT false)
RETURNS credvault.engagements
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE e engagements%ROWTYPE;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state <> 'purged' FOR SHARE;
    IF e.id IS NULL OR NOT may(e.id, 'write') THEN
        -- returned, not raised: an exception would roll the refusal's audit row back
        PERFORM audit_append(me(), verb, eng, itm, 'denied', held(e.id));
        RETURN NULL;
    END IF;
    IF e.state <> 'active' AND NOT closed_ok THEN
        PERFORM audit_append(me(), verb, eng, itm, 'error', 'engagement is ' || e.state);
        RETURN NULL;
    END IF;
    RETURN e;
END $$;

REVOKE ALL ON FUNCTION credvault.open_for_write(text, text, text, boolean) FROM PUBLIC;

-- The write functions of sections pgcmds and pgreason open with it where they are defined
-- (put_system, set_system, remove_system, revert_credential, edit_credential,
-- rename_credential, remove_credential, restore_trashed, destroy_trashed); version 1's
-- put_credential (schema.sql) is restated here with it, nothing else changed but its
-- denial detail. Its EXECUTE grant stays as it was (CREATE OR REPLACE keeps it). A lead's
-- grant on a closed engagement (put_grant_logged, section pglog) is refused for its state
-- the same way, with its own opening (FOR UPDATE, leads only).

CREATE OR REPLACE FUNCTION credvault.put_credential(
    eng text, c_name text, c_kind text, c_uid bytea, c_key_version integer,
    c_secret_env bytea, c_username_env bytea DEFAULT NULL, c_url_env bytea DEFAULT NULL,
    c_notes_env bytea DEFAULT NULL
) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE;
BEGIN
    e := open_for_write(eng, 'put', c_name);
    IF e.id IS NULL THEN  -- refused, and audited there: denied, or closed ('error')
        RETURN false;
    END IF;
    IF c_key_version <> e.key_version THEN
        RAISE EXCEPTION 'credvault: the engagement key was rotated meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    INSERT INTO credentials (uid, engagement_id, name, kind, key_version, secret_env, username_env, url_env, notes_env)
    VALUES (c_uid, e.id, c_name, c_kind, c_key_version, c_secret_env, c_username_env, c_url_env, c_notes_env)
    -- a replaced value comes with the uid its envelopes were sealed for (part of their AAD)
    ON CONFLICT (engagement_id, name) DO UPDATE SET
        uid = excluded.uid,
        kind = excluded.kind, key_version = excluded.key_version, secret_env = excluded.secret_env,
        username_env = excluded.username_env, url_env = excluded.url_env,
        notes_env = excluded.notes_env, updated_at = now();
    PERFORM audit_append(who, 'put', eng, c_name, 'ok', '');
    RETURN true;
END $$;

-- == pgcert: an admin certifies the keys `passwd --compromised` made ==
--
-- (docs/team.md "`info`, `receipt-keys` and `passwd --compromised`", docs/format.md §19.8.)
-- After `passwd --compromised` (section pgkeys) nobody seals to the member's new keys: the
-- hand-over link is signed by the old key, which whoever stole it can sign with too. An
-- admin who compared the new key's fingerprint with the member out of band signs a
-- certificate of the new pair, chained to the pair certified before (the member's
-- invitation and join proof, or an earlier certificate): every client then believes the
-- new pair through it, and only through it. In the same transaction the admin's signed
-- revocation list (section crl) gets a version naming the old pair, so a lead whose client
-- never saw the hand-over link (the DBA may delete it) still seals nothing to the old key.
-- The server checks order and shape; every client checks the signatures.

CREATE TABLE credvault.member_rekeys (
    member        text NOT NULL REFERENCES credvault.members (name),
    seq           integer NOT NULL CHECK (seq >= 1),  -- the hand-over link it certifies
    sign_pub      bytea NOT NULL CHECK (length(sign_pub) = 32),
    kem_pub       bytea NOT NULL CHECK (length(kem_pub) = 32),
    certifier     text NOT NULL,
    certifier_key bytea NOT NULL CHECK (length(certifier_key) = 32),
    signature     bytea NOT NULL CHECK (length(signature) = 64),
    at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (member, seq)
);
REVOKE ALL ON credvault.member_rekeys FROM PUBLIC;

-- Every certificate of new keys, oldest first per member (any member: signed statements).
CREATE FUNCTION credvault.member_rekeys()
RETURNS TABLE (member text, seq integer, sign_pub bytea, kem_pub bytea, certifier text,
               certifier_key bytea, signature bytea)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    PERFORM me();
    RETURN QUERY SELECT r.member, r.seq, r.sign_pub, r.kem_pub, r.certifier, r.certifier_key,
                        r.signature
        FROM member_rekeys r ORDER BY r.member, r.seq;
END $$;

-- The keys a member's latest hand-over link names (seq, sign_pub, kem_pub): what an admin
-- compares and certifies. Any member (public keys); no row: no hand-over.
CREATE FUNCTION credvault.member_key_handover(k_member text)
RETURNS TABLE (seq integer, sign_pub bytea, kem_pub bytea)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    PERFORM me();
    RETURN QUERY SELECT k.seq, k.sign_pub, k.kem_pub FROM member_key_links k
        WHERE k.member = k_member ORDER BY k.seq DESC LIMIT 1;
END $$;

-- An admin (not the member themselves) certifies the keys of `k_member`'s latest hand-over
-- link `k_seq` (they must be the keys given, so a link replaced meanwhile fails), newer
-- than any certified before, with the revocation-list version naming the old keys
-- (revocation_append checks its header: the next version, this admin, this member).
CREATE FUNCTION credvault.certify_keys(k_member text, k_seq integer, k_sign bytea, k_kem bytea,
                                       k_certifier_key bytea, k_sig bytea, revocation bytea)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := require_admin(); l member_key_links%ROWTYPE; v integer;
BEGIN
    IF who = k_member THEN
        RAISE EXCEPTION 'credvault: an admin cannot certify their own keys (another admin does)'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM 1 FROM members m WHERE m.name = k_member AND m.state = 'active' FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'credvault: no active member %', k_member USING ERRCODE = 'no_data_found';
    END IF;
    SELECT * INTO l FROM member_key_links k WHERE k.member = k_member ORDER BY k.seq DESC LIMIT 1;
    IF l.seq IS NULL OR l.seq IS DISTINCT FROM k_seq OR l.sign_pub IS DISTINCT FROM k_sign
       OR l.kem_pub IS DISTINCT FROM k_kem THEN
        RAISE EXCEPTION 'credvault: not the keys of %''s latest key hand-over; run the command again', k_member
            USING ERRCODE = 'serialization_failure';
    END IF;
    IF EXISTS (SELECT 1 FROM member_rekeys r WHERE r.member = k_member AND r.seq >= k_seq) THEN
        RAISE EXCEPTION 'credvault: the new keys of % are certified already', k_member
            USING ERRCODE = 'unique_violation';
    END IF;
    IF length(k_certifier_key) IS DISTINCT FROM 32 OR length(k_sig) IS DISTINCT FROM 64
       OR revocation IS NULL THEN
        RAISE EXCEPTION 'credvault: a certificate needs a signature and a revocation list version'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO member_rekeys (member, seq, sign_pub, kem_pub, certifier, certifier_key, signature)
        VALUES (k_member, k_seq, k_sign, k_kem, who, k_certifier_key, k_sig);
    v := revocation_append(who, k_member, revocation);
    PERFORM audit_append(who, 'certify', NULL, k_member, 'ok',
        format('new keys (passwd --compromised) certified, fingerprint %s; old keys revoked (list version %s)',
               left(encode(sha256(k_sign), 'hex'), 32), v));
    RETURN v;
END $$;

REVOKE ALL ON FUNCTION credvault.member_rekeys(), credvault.member_key_handover(text),
    credvault.certify_keys(text, integer, bytea, bytea, bytea, bytea, bytea) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.member_rekeys(),'
                   ' credvault.member_key_handover(text),'
                   ' credvault.certify_keys(text, integer, bytea, bytea, bytea, bytea, bytea) TO %I',
                   credvault.member_group());
END $$;

-- An admin's client that sees a member's hand-over link not certified yet signs, at once,
-- the revocation-list version retiring the pair certified for them (the certification
-- later names it again): the retirement then rests on an admin's signature, not on the
-- link, for every lead whose client has not seen the link. Only for a member (not the
-- caller) with a hand-over newer than their last certificate.
CREATE FUNCTION credvault.retire_keys(k_member text, revocation bytea) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := require_admin(); v integer;
BEGIN
    IF who = k_member OR NOT EXISTS (
        SELECT 1 FROM member_key_links k WHERE k.member = k_member
        AND k.seq > coalesce((SELECT max(r.seq) FROM member_rekeys r WHERE r.member = k_member), 0))
    THEN
        RAISE EXCEPTION 'credvault: % has no key hand-over to retire', k_member
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v := revocation_append(who, k_member, revocation);
    PERFORM audit_append(who, 'key-retire', NULL, k_member, 'ok',
        format('key hand-over (passwd --compromised) seen: old keys revoked (list version %s)', v));
    RETURN v;
END $$;

REVOKE ALL ON FUNCTION credvault.retire_keys(text, bytea) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.retire_keys(text, bytea) TO %I',
                   credvault.member_group());
END $$;

-- == pgsmall: revoke on a closed engagement; grace-change close records; export tombstones ==
--
-- SQLCipher lets a lead revoke a member from a closed engagement (engagements.py,
-- Engagements.revoke: the revoke link, then the key rotates), and `engagement rotate` on
-- a closed one: a closed engagement takes no new records, but who may read what it keeps
-- until its purge still changes. The team's revoke and rotation functions looked up active
-- engagements only, so a closed one answered "denied" (exit 4). Here they accept any
-- engagement not purged; nothing else in their bodies changes (CREATE OR REPLACE keeps
-- the owner and the member group's EXECUTE). The rotation locks the engagement FOR UPDATE
-- and destroy_engagement marks it purged: a rotation racing a purge finds it purged and is
-- refused.

CREATE OR REPLACE FUNCTION credvault.request_rotation(eng text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; s bigint; rid bigint;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state <> 'purged';
    IF e.id IS NULL OR NOT (is_admin() OR role_in(e.id) = 'lead') THEN
        PERFORM audit_append(who, 'rotate', eng, NULL, 'denied', '');
        RETURN NULL;
    END IF;
    s := audit_append(who, 'rotate', eng, NULL, 'ok', 'read for rotation');
    INSERT INTO rotation_requests (member, engagement_id, audit_seq, xid)
    VALUES (who, e.id, s, pg_current_xact_id()) RETURNING id INTO rid;
    RETURN rid;
END $$;

CREATE OR REPLACE FUNCTION credvault.rotate_records(
    eng text, old_version integer, new_fp text, r_tbl text[], r_id bigint[],
    r_e1 bytea[], r_e2 bytea[], r_e3 bytea[], r_e4 bytea[],
    g_members text[], g_sealed bytea[], g_sigs bytea[], links bytea[]
) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; i integer; n integer := coalesce(cardinality(r_id), 0);
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state <> 'purged' FOR UPDATE;
    IF e.id IS NULL OR coalesce(role_in(e.id), '') <> 'lead' THEN
        RAISE EXCEPTION 'credvault: % may not rotate %', who, eng USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF e.key_version <> old_version THEN
        RAISE EXCEPTION 'credvault: the key was rotated meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    IF (SELECT count(*) FROM (
            SELECT 'credentials' AS t, c.id FROM credentials c WHERE c.engagement_id = e.id
            UNION ALL SELECT 'systems', s.id FROM systems s WHERE s.engagement_id = e.id
            UNION ALL SELECT 'system_trash', x.id FROM system_trash x WHERE x.engagement_id = e.id
            UNION ALL SELECT 'credential_versions', v.id FROM credential_versions v
                WHERE v.engagement_id = e.id
            UNION ALL SELECT 'credential_trash', t.id FROM credential_trash t
                WHERE t.engagement_id = e.id
        ) have FULL JOIN (SELECT * FROM unnest(r_tbl, r_id) AS g(t, id)) given
          ON have.t = given.t AND have.id = given.id
        WHERE have.id IS NULL OR given.id IS NULL) > 0
       OR (SELECT count(DISTINCT (t, id)) FROM unnest(r_tbl, r_id) AS g(t, id)) <> n THEN
        RAISE EXCEPTION 'credvault: records changed meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    FOR i IN 1 .. coalesce(cardinality(links), 0) LOOP
        PERFORM log_append(e.id, links[i]);
    END LOOP;
    FOR i IN 1 .. n LOOP
        IF r_e1[i] IS NULL THEN
            RAISE EXCEPTION 'credvault: a record without its anchor' USING ERRCODE = 'invalid_parameter_value';
        END IF;
        CASE r_tbl[i]
        WHEN 'credentials' THEN
            UPDATE credentials SET key_version = old_version + 1, secret_env = r_e1[i],
                username_env = r_e2[i], url_env = r_e3[i], notes_env = r_e4[i]
            WHERE credentials.id = r_id[i] AND engagement_id = e.id;
        WHEN 'systems' THEN
            UPDATE systems SET address_env = r_e1[i], details_env = r_e2[i]
            WHERE systems.id = r_id[i] AND engagement_id = e.id;
        WHEN 'system_trash' THEN
            UPDATE system_trash SET address_env = r_e1[i], details_env = r_e2[i]
            WHERE system_trash.id = r_id[i] AND engagement_id = e.id;
        WHEN 'credential_versions' THEN
            UPDATE credential_versions SET key_version = old_version + 1, secret_env = r_e1[i],
                username_env = r_e2[i], url_env = r_e3[i], notes_env = r_e4[i]
            WHERE credential_versions.id = r_id[i] AND engagement_id = e.id;
        WHEN 'credential_trash' THEN
            UPDATE credential_trash SET key_version = old_version + 1, secret_env = r_e1[i],
                username_env = r_e2[i], url_env = r_e3[i], notes_env = r_e4[i]
            WHERE credential_trash.id = r_id[i] AND engagement_id = e.id;
        END CASE;
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
        WHERE engagements.id = e.id;
    PERFORM audit_append(who, 'rotate', eng, NULL, 'ok', format('key version %s', old_version + 1));
    RETURN old_version + 1;
END $$;

CREATE OR REPLACE FUNCTION credvault.revoke_grant(eng text, grantee text) RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; readlist text[];
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state <> 'purged' FOR UPDATE;
    IF e.id IS NOT NULL AND EXISTS (SELECT 1 FROM engagement_log l WHERE l.engagement_id = e.id) THEN
        RAISE EXCEPTION 'credvault: % keeps a signed membership log: version 1''s revoke_grant is closed to it (revoke_grant_logged)', eng
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF e.id IS NULL OR NOT (is_admin() OR role_in(e.id) = 'lead') THEN
        PERFORM audit_append(who, 'revoke', eng, grantee, 'denied', '');
        RETURN NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM grants WHERE engagement_id = e.id AND member = grantee
                   AND revoked_at IS NULL) THEN
        RAISE EXCEPTION 'credvault: % holds no role on %', grantee, eng USING ERRCODE = 'no_data_found';
    END IF;
    UPDATE grants SET revoked_at = now(), sealed = NULL, sealed_by = NULL, copy_sig = NULL
        WHERE engagement_id = e.id AND member = grantee;
    UPDATE engagements SET needs_rotation = true WHERE id = e.id;
    SELECT coalesce(array_agg(DISTINCT a.item ORDER BY a.item), '{}') INTO readlist
        FROM audit a WHERE a.engagement = eng AND a.member = grantee AND a.action = 'get'
        AND a.outcome = 'ok' AND a.item IS NOT NULL;
    PERFORM audit_append(who, 'revoke', eng, grantee, 'ok', '');
    RETURN readlist;
END $$;

CREATE OR REPLACE FUNCTION credvault.rotation_grantees(eng text) RETURNS TABLE (member text, role text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE e engagements%ROWTYPE;
BEGIN
    PERFORM me();
    SELECT * INTO e FROM engagements WHERE name = eng AND state <> 'purged';
    IF e.id IS NULL OR NOT (is_admin() OR role_in(e.id) = 'lead') THEN
        RAISE EXCEPTION 'credvault: only a lead sees who holds a key copy' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF EXISTS (SELECT 1 FROM engagement_log l WHERE l.engagement_id = e.id) THEN
        RAISE EXCEPTION 'credvault: % keeps a signed membership log: its key holders are the log''s roster, not rotation_grantees', eng
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN QUERY SELECT g.member, g.role FROM grants g
        WHERE g.engagement_id = e.id AND g.revoked_at IS NULL AND g.sealed IS NOT NULL
          AND (g.expires_at IS NULL OR g.expires_at > now())
        ORDER BY g.member;
END $$;

CREATE OR REPLACE FUNCTION credvault.revoke_grant_logged(eng text, grantee text, new_link bytea) RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; readlist text[];
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state <> 'purged' FOR UPDATE;
    IF e.id IS NULL OR coalesce(role_in(e.id), '') <> 'lead' THEN
        PERFORM audit_append(who, 'revoke', eng, grantee, 'denied', '');
        RETURN NULL;
    END IF;
    PERFORM log_append(e.id, new_link);
    UPDATE grants SET revoked_at = now(), sealed = NULL, sealed_by = NULL, copy_sig = NULL
        WHERE engagement_id = e.id AND member = grantee;
    UPDATE engagements SET needs_rotation = true WHERE id = e.id;
    SELECT coalesce(array_agg(DISTINCT a.item ORDER BY a.item), '{}') INTO readlist
        FROM audit a WHERE a.engagement = eng AND a.member = grantee AND a.action IN ('get', 'otp')
        AND a.outcome = 'ok' AND a.item IS NOT NULL;
    PERFORM audit_append(who, 'revoke', eng, grantee, 'ok', '');
    RETURN readlist;
END $$;


-- `config set purge-grace-days N` (SQLCipher's Vault.set_setting rewrites its purge ledgers
-- after moving the dates: lifecycle.record_state): set_setting (section pgkeys) moves the
-- purge date of every closed engagement that follows the vault's grace period, and this
-- returns those engagements with their new dates (lifecycle()'s columns), so the admin's
-- client signs a close record of each into its machine's ledger (team_ledger.keep_closes).
-- Without them a dump from before the change, restored, keeps the old dates, and the
-- close records already in the ledgers (signed at the close, with the old date) even put
-- the old date back at the next admin's purge. A refusal (not an admin) is one row with
-- `refused` true and nothing else (the denial's audit row commits: returned, not raised).
CREATE FUNCTION credvault.set_purge_grace(n integer)
RETURNS TABLE (refused boolean, uid bytea, name text, client text, state text,
               key_version integer, key_fp text, require_reason boolean, grace_days integer,
               effective_grace integer, created_at text, created_by text, lead text,
               closed_at text, purge_due text, hold_until text, hold_reason text,
               hold_by text, purged_at text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    IF NOT set_setting('purge_grace_days', 'purge-grace-days', n) THEN
        refused := true;
        RETURN NEXT;
        RETURN;
    END IF;
    RETURN QUERY SELECT false, e.uid, e.name, e.client, e.state, e.key_version, e.key_fp,
        e.require_reason, e.grace_days, n, iso(e.created_at), e.created_by, e.lead,
        iso(e.closed_at), iso(e.purge_due), iso(e.hold_until), e.hold_reason, e.hold_by,
        iso(e.purged_at)
        FROM engagements e
        WHERE e.state = 'closed' AND e.grace_days IS NULL AND e.closed_at IS NOT NULL
        ORDER BY e.name COLLATE "C";
END $$;

-- reapply_close (section pgrestore) as before, and: a close record that followed the
-- vault's grace period (its grace_days null) is older than a `config set purge-grace-days`
-- the database has on the record at or after its time, which moved its purge date since
-- (another admin's machine keeps only the record signed at the close: its purge must not
-- put the old date back). A dump restored from before the change has no such entry, and
-- the newer record the change signed applies.
CREATE OR REPLACE FUNCTION credvault.reapply_close(
    eng text, closed timestamptz, grace integer, due timestamptz, until timestamptz,
    why text, held_by text, as_of timestamptz, source text
) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE;
BEGIN
    IF NOT is_admin() THEN
        PERFORM audit_append(who, 'close', eng, NULL, 'denied', 'admins only');
        RETURN 'denied: admins only';
    END IF;
    SELECT * INTO e FROM engagements x WHERE x.name = eng FOR UPDATE;
    IF e.id IS NULL OR e.state = 'purged' OR e.created_at > closed THEN
        RETURN 'gone';
    END IF;
    IF e.state = 'closed' AND e.closed_at IS NOT DISTINCT FROM closed
       AND e.purge_due IS NOT DISTINCT FROM due AND e.hold_until IS NOT DISTINCT FROM until THEN
        RETURN 'same';
    END IF;
    IF EXISTS (SELECT 1 FROM audit a WHERE a.engagement = eng AND a.outcome = 'ok'
               AND a.action IN ('close', 'retain', 'release') AND a.ts >= as_of)
       OR (grace IS NULL AND EXISTS (SELECT 1 FROM audit a WHERE a.engagement IS NULL
               AND a.action = 'config-set' AND a.item = 'purge-grace-days'
               AND a.outcome = 'ok' AND a.ts >= as_of)) THEN
        RETURN 'older';
    END IF;
    UPDATE engagements SET state = 'closed', closed_at = closed, grace_days = grace,
        purge_due = due, hold_until = until, hold_reason = why, hold_by = held_by
        WHERE id = e.id;
    PERFORM audit_append(who, 'close', eng, NULL, 'ok', left(format(
        'as recorded after the backup (%s): closed %s, purge due %s%s', source,
        left(iso(closed), 16), left(iso(due), 16),
        CASE WHEN until IS NULL THEN '' ELSE '; held until ' || left(iso(until), 16) END), 400));
    RETURN 'ok';
END $$;

REVOKE ALL ON FUNCTION credvault.set_purge_grace(integer) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.set_purge_grace(integer) TO %I',
                   credvault.member_group());
END $$;

-- `client export` of a client one of whose engagements is purged: SQLCipher's export
-- (clients.py, Clients.export) gives each purged engagement as a tombstone (its public
-- fields, empty lists), and a client whose engagements are all purged to admins only,
-- audited as `export` with the client as its item ("N purged engagements (tombstones)";
-- anyone else is denied, "admin only"). A purge ends every grant, so row-level security
-- hides a purged engagement from the member's own listing; this returns the client's
-- purged engagements the caller may see (lifecycle()'s rule: an admin all, a member those
-- they held a grant in), lifecycle()'s columns, ordered by name. `alone`: the export has
-- no live engagement besides them, and this writes the entry (or the denial: one row
-- with `refused` true) as SQLCipher does; otherwise nothing is audited here (the live
-- engagements' `export` entries are the record, as on SQLCipher).
CREATE FUNCTION credvault.export_tombstones(cl text, alone boolean)
RETURNS TABLE (refused boolean, uid bytea, name text, client text, state text,
               key_version integer, key_fp text, require_reason boolean, grace_days integer,
               effective_grace integer, created_at text, created_by text, lead text,
               closed_at text, purge_due text, hold_until text, hold_reason text,
               hold_by text, purged_at text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); n bigint;
BEGIN
    SELECT count(*) INTO n FROM engagements e
        WHERE e.client = cl AND e.state = 'purged'
          AND (is_admin() OR EXISTS (SELECT 1 FROM grants g
                                     WHERE g.engagement_id = e.id AND g.member = who));
    IF alone AND n > 0 THEN
        IF NOT is_admin() THEN
            PERFORM audit_append(who, 'export', NULL, cl, 'denied', 'admin only');
            refused := true;
            RETURN NEXT;
            RETURN;
        END IF;
        PERFORM audit_append(who, 'export', NULL, cl, 'ok',
                             format('%s purged engagements (tombstones)', n));
    END IF;
    RETURN QUERY SELECT false, e.uid, e.name, e.client, e.state, e.key_version, e.key_fp,
        e.require_reason, e.grace_days,
        coalesce(e.grace_days, setting_days('purge_grace_days', 7)),
        iso(e.created_at), e.created_by, e.lead, iso(e.closed_at), iso(e.purge_due),
        iso(e.hold_until), e.hold_reason, e.hold_by, iso(e.purged_at)
        FROM engagements e
        WHERE e.client = cl AND e.state = 'purged'
          AND (is_admin() OR EXISTS (SELECT 1 FROM grants g
                                     WHERE g.engagement_id = e.id AND g.member = who))
        ORDER BY e.name COLLATE "C";
END $$;

REVOKE ALL ON FUNCTION credvault.export_tombstones(text, boolean) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.export_tombstones(text, boolean) TO %I',
                   credvault.member_group());
END $$;


-- == crlgaps: a removed admin signs nothing new; version 1's remove_member closed ==
--
-- (docs/format.md §19.7 "Links a revoked key signed", docs/team.md "Members".) Section crl
-- listed a removed member's keys, but a removed admin's key still verified the links an
-- admin signs off the roster (link 0, `revoke`, `set`: §19.5), since what they signed
-- before must stay valid and a link carries no date anyone but its signer vouches for. Now
-- the version that revokes a signing key also names the chain hash of every link 0,
-- `revoke` and `set` that key signed in the logs the removing admin read; a client accepts
-- such a link by a revoked key only if a version names it. The server cannot check
-- signatures, but it keeps an honest removal from racing a link of the admin being
-- removed: the trigger below refuses a version that leaves out such a link of a live
-- engagement's log (serialization_failure: the client reads the logs again and retries),
-- under a lock that makes every append wait until the removal commits. The DBA can drop the
-- trigger: what it buys them is a list that refuses more of the removed admin's links
-- (denial of service), never one link more accepted.
--
-- Version 1's remove_member (an admin's, with psql) published no list version: closed to
-- members (remove_member_logged, which runs as the owner, still calls it).

-- Every part of a statement's body (the length-prefixed parts of format.md §4, the 64-byte
-- signature left out); NULL if the parts do not fill the body exactly.
CREATE FUNCTION credvault.statement_parts(stmt bytea) RETURNS bytea[]
LANGUAGE plpgsql IMMUTABLE SET search_path = credvault, pg_temp
AS $$
DECLARE
    body integer := length(stmt) - 64;
    pos integer := 1;
    n bigint;
    got bytea[] := '{}';
BEGIN
    WHILE pos <= body LOOP
        IF pos + 3 > body THEN
            RETURN NULL;
        END IF;
        n := ('x' || encode(substring(stmt FROM pos FOR 4), 'hex'))::bit(32)::bigint;
        IF pos + 3 + n > body THEN
            RETURN NULL;
        END IF;
        got := array_append(got, substring(stmt FROM pos + 4 FOR n::integer));
        pos := pos + 4 + n::integer;
    END LOOP;
    RETURN got;
END $$;

-- A new version must name every link 0, revoke, set and succeed link the signing keys it revokes
-- first signed in a live engagement's log (format.md §19.7: parts 9.. name n key pairs, m
-- endorsements, then h link hashes). Under the lock an append that conflicts with this
-- removal's own rows may deadlock with it: PostgreSQL ends one, and its client reruns.
CREATE FUNCTION credvault.revocation_names_links() RETURNS trigger
LANGUAGE plpgsql SET search_path = credvault, pg_temp
AS $$
DECLARE
    parts bytea[] := statement_parts(NEW.statement);
    n bigint;
    m bigint;
    h bigint;
    named bytea[] := '{}';
    listed bytea[] := '{}';
    earlier bytea[];
    missing bigint;
BEGIN
    -- part k (from 0) is parts[k + 1]
    IF parts IS NULL OR cardinality(parts) < 12 OR length(parts[10]) <> 8 THEN
        RAISE EXCEPTION 'credvault: a malformed revocation list version'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    n := ('x' || encode(parts[10], 'hex'))::bit(64)::bigint;
    IF n < 0 OR cardinality(parts) < 12 + 2 * n OR length(parts[11 + 2 * n]) <> 8 THEN
        RAISE EXCEPTION 'credvault: a malformed revocation list version'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    m := ('x' || encode(parts[11 + 2 * n], 'hex'))::bit(64)::bigint;
    IF m < 0 OR cardinality(parts) < 12 + 2 * n + 3 * m
       OR length(parts[12 + 2 * n + 3 * m]) <> 8 THEN
        RAISE EXCEPTION 'credvault: a malformed revocation list version'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    h := ('x' || encode(parts[12 + 2 * n + 3 * m], 'hex'))::bit(64)::bigint;
    IF h < 0 OR cardinality(parts) <> 12 + 2 * n + 3 * m + h THEN
        RAISE EXCEPTION 'credvault: a malformed revocation list version'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- the signing keys this version revokes first (an earlier version settled the links of
    -- the others, and what they signed since counts for nothing: it must not be named)
    SELECT coalesce(array_agg(DISTINCT e.p[11 + 2 * j.j]), '{}') INTO earlier
        FROM (SELECT statement_parts(r.statement) AS p FROM revocation_list r) e,
             LATERAL generate_series(0, ('x' || encode(e.p[10], 'hex'))::bit(64)::bigint - 1) j(j);
    FOR j IN 0 .. n - 1 LOOP
        IF NOT (parts[11 + 2 * j] = ANY (earlier)) THEN
            named := array_append(named, parts[11 + 2 * j]);
        END IF;
    END LOOP;
    FOR k IN 0 .. h - 1 LOOP
        listed := array_append(listed, parts[13 + 2 * n + 3 * m + k]);
    END LOOP;
    IF cardinality(named) = 0 THEN
        RETURN NEW;
    END IF;
    -- every append waits for this transaction; every one before it is counted
    LOCK TABLE engagement_log IN SHARE MODE;
    SELECT count(*) INTO missing
        FROM engagement_log l JOIN engagements e ON e.id = l.engagement_id
        WHERE e.state <> 'purged'
          AND sha256(link_part(l.link, 8)) = ANY (named)
          AND link_part(l.link, 6) IN (convert_to('create', 'UTF8'), convert_to('revoke', 'UTF8'),
                                       convert_to('set', 'UTF8'), convert_to('succeed', 'UTF8'))
          AND NOT (l.hash = ANY (listed));
    IF missing > 0 THEN
        RAISE EXCEPTION 'credvault: a membership log moved meanwhile (% link(s) of % not named); run the command again',
            missing, NEW.member USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER revocation_names_links BEFORE INSERT ON credvault.revocation_list
    FOR EACH ROW EXECUTE FUNCTION credvault.revocation_names_links();

REVOKE ALL ON FUNCTION credvault.statement_parts(bytea), credvault.revocation_names_links()
    FROM PUBLIC;
COMMENT ON FUNCTION credvault.remove_member(text) IS
    'closed to members since schema 2: it publishes no revocation list version; use `credvault member rm`';
DO $$
BEGIN
    EXECUTE format('REVOKE EXECUTE ON FUNCTION credvault.remove_member(text) FROM %I',
                   credvault.member_group());
END $$;

-- == pgexport: client export's systems, earlier versions and trash; revoke's and rotation's audit details ==
--
-- 1. SQLCipher's `client export` (clients.py) gives, beside each live engagement's
-- credentials, its systems, its credentials' earlier versions and its trash (credentials and
-- systems, newest first), decrypted. On a team vault the credentials come through
-- request_read/fetch (a `get` row each); the rest through these two phases, which release
-- nothing a committed audit row does not name. request_export_records checks the reading
-- role (and the reason the engagement requires), then writes one row per record, under the
-- action and detail the same read has on its own — a system `system-show` ("reason: R"), an
-- earlier version `get` ("version N; reason: R", the credential's name), a removed
-- credential `get` and a removed system `system-show` ("in the trash, removed T; reason:
-- R") — and keeps the ids it named. fetch_export_records releases those records (still
-- there) under fetch's conditions: the caller's request, unused, at most 60 s old,
-- committed by an earlier transaction, durable, a reading role still held. The client
-- opens every envelope and checks every binding, as for the same records elsewhere.
CREATE TABLE credvault.export_requests (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    member        text NOT NULL,
    engagement_id bigint NOT NULL REFERENCES credvault.engagements (id) ON DELETE CASCADE,
    system_ids    bigint[] NOT NULL,
    version_ids   bigint[] NOT NULL,
    ctrash_ids    bigint[] NOT NULL,
    strash_ids    bigint[] NOT NULL,
    xid           xid8 NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    used_at       timestamptz
);

CREATE FUNCTION credvault.request_export_records(eng text, reason text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text := me();
    e engagements%ROWTYPE;
    why text := CASE WHEN coalesce(reason, '') = '' THEN '' ELSE 'reason: ' || reason END;
    r record;
    sys bigint[] := '{}'; ver bigint[] := '{}'; ct bigint[] := '{}'; st bigint[] := '{}';
    rid bigint;
BEGIN
    SELECT * INTO e FROM engagements x WHERE x.name = eng AND x.state <> 'purged';
    IF e.id IS NULL OR NOT may(e.id, 'read') THEN
        PERFORM audit_append(who, 'export', eng, NULL, 'denied', held(e.id));
        RETURN NULL;
    END IF;
    IF e.require_reason AND why = '' THEN
        PERFORM audit_append(who, 'export', eng, NULL, 'denied', 'this engagement requires --reason');
        RETURN NULL;
    END IF;
    FOR r IN SELECT s.id, s.name FROM systems s WHERE s.engagement_id = e.id
             ORDER BY s.name COLLATE "C" LOOP
        PERFORM audit_append(who, 'system-show', eng, r.name, 'ok', why);
        sys := sys || r.id;
    END LOOP;
    FOR r IN SELECT v.id, v.version, coalesce(c.name, v.name) AS name
             FROM credential_versions v LEFT JOIN credentials c ON c.id = v.credential_id
             WHERE v.engagement_id = e.id ORDER BY v.id LOOP
        PERFORM audit_append(who, 'get', eng, r.name, 'ok',
                             format('version %s', r.version) || CASE WHEN why = '' THEN ''
                                                                     ELSE '; ' || why END);
        ver := ver || r.id;
    END LOOP;
    FOR r IN SELECT 'credential' AS typ, t.id, t.name, t.deleted_at
             FROM credential_trash t WHERE t.engagement_id = e.id
             UNION ALL
             SELECT 'system', t.id, t.name, t.deleted_at
             FROM system_trash t WHERE t.engagement_id = e.id
             ORDER BY 4 DESC, 2 DESC LOOP
        PERFORM audit_append(who, CASE r.typ WHEN 'system' THEN 'system-show' ELSE 'get' END,
                             eng, r.name, 'ok', 'in the trash, removed ' || iso(r.deleted_at)
                             || CASE WHEN why = '' THEN '' ELSE '; ' || why END);
        IF r.typ = 'system' THEN st := st || r.id; ELSE ct := ct || r.id; END IF;
    END LOOP;
    INSERT INTO export_requests (member, engagement_id, system_ids, version_ids, ctrash_ids,
                                 strash_ids, xid)
    VALUES (who, e.id, sys, ver, ct, st, pg_current_xact_id()) RETURNING id INTO rid;
    RETURN rid;
END $$;

-- One row per record the request named (and still there): tbl 'systems', 'system_trash'
-- (e1 address, e2 details; name, port, protocol), 'credential_versions', 'credential_trash'
-- (e1..e4 secret, username, url, notes; uid, name, kind, linked system's uid and name),
-- each with the envelopes' key version and the export's metadata as text (iso(): the
-- microseconds SQLCipher keeps). Ordered as SQLCipher's export lists them.
CREATE FUNCTION credvault.fetch_export_records(request bigint)
RETURNS TABLE (tbl text, uid bytea, name text, kind text, version integer, port integer,
               protocol text, sys_uid bytea, sys_name text, e1 bytea, e2 bytea, e3 bytea,
               e4 bytea, created_at text, updated_at text, created_by text, changed text,
               deleted_at text, deleted_by text, expires_at text, label text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    want pg_lsn := pg_current_wal_insert_lsn();
    who text := me();
    q export_requests%ROWTYPE;
BEGIN
    SELECT * INTO q FROM export_requests r WHERE r.id = request FOR UPDATE;
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
    PERFORM await_durable(want);
    IF NOT may(q.engagement_id, 'read') THEN
        RAISE EXCEPTION 'credvault: access revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE export_requests SET used_at = clock_timestamp() WHERE export_requests.id = q.id;
    RETURN QUERY
        SELECT 'systems'::text, s.uid, s.name, NULL::text, NULL::integer, s.port, s.protocol,
               NULL::bytea, NULL::text, s.address_env, s.details_env, NULL::bytea, NULL::bytea,
               iso(s.created_at), iso(s.updated_at), NULL::text, NULL::text, NULL::text,
               NULL::text, NULL::text, s.name
        FROM systems s WHERE s.engagement_id = q.engagement_id AND s.id = ANY (q.system_ids)
        ORDER BY s.name COLLATE "C";
    RETURN QUERY
        SELECT 'credential_versions'::text, v.uid, v.name, v.kind, v.version,
               NULL::integer, NULL::text, v.system_uid, v.system_name, v.secret_env,
               v.username_env, v.url_env, v.notes_env, iso(v.created_at), NULL::text,
               v.created_by, v.changed, NULL::text, NULL::text, NULL::text,
               coalesce(c.name, v.name)
        FROM credential_versions v LEFT JOIN credentials c ON c.id = v.credential_id
        WHERE v.engagement_id = q.engagement_id AND v.id = ANY (q.version_ids)
        ORDER BY v.id;
    RETURN QUERY
        SELECT x.tbl, x.uid, x.name, x.kind, NULL::integer, x.port, x.protocol, x.sys_uid,
               NULL::text, x.e1, x.e2, x.e3, x.e4, NULL::text, NULL::text, NULL::text,
               NULL::text, iso(x.deleted_at), x.deleted_by, iso(x.expires_at), x.name
        FROM (SELECT 'credential_trash'::text AS tbl, t.id, t.uid, t.name, t.kind,
                     NULL::integer AS port, NULL::text AS protocol, t.system_uid AS sys_uid,
                     t.secret_env AS e1, t.username_env AS e2, t.url_env AS e3,
                     t.notes_env AS e4, t.deleted_at, t.deleted_by, t.expires_at
              FROM credential_trash t
              WHERE t.engagement_id = q.engagement_id AND t.id = ANY (q.ctrash_ids)
              UNION ALL
              SELECT 'system_trash', t.id, t.uid, t.name, NULL, t.port, t.protocol, NULL,
                     t.address_env, t.details_env, NULL, NULL, t.deleted_at, t.deleted_by,
                     t.expires_at
              FROM system_trash t
              WHERE t.engagement_id = q.engagement_id AND t.id = ANY (q.strash_ids)) x
        ORDER BY x.deleted_at DESC, x.id DESC;
END $$;

-- 2. revoke's audit detail as SQLCipher's (engagements.py, Engagements._revoke_write):
-- "N credentials to change" and, if any, "; M viewed" — N the items the member read a secret
-- of (`get`, `otp`), or, after a client export of theirs, every credential and system of
-- the engagement; M the records they only viewed (`show`, `system-show`). Both revoke
-- functions as pgsmall left them but for that detail, and version 1's now counting `otp`
-- as the logged one does (and SQLCipher). revoked_views gives the lead the list of what
-- was only viewed, which SQLCipher's revoke prints too.
CREATE FUNCTION credvault.revoke_reads(eng_id bigint, eng text, grantee text) RETURNS text[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
    SELECT coalesce(array_agg(DISTINCT i ORDER BY i), '{}') FROM (
        SELECT a.item AS i FROM audit a WHERE a.engagement = eng AND a.member = grantee
            AND a.action IN ('get', 'otp') AND a.outcome = 'ok' AND a.item IS NOT NULL
        UNION ALL
        SELECT x.name FROM (SELECT c.name FROM credentials c WHERE c.engagement_id = eng_id
                            UNION ALL
                            SELECT s.name FROM systems s WHERE s.engagement_id = eng_id) x
        WHERE EXISTS (SELECT 1 FROM audit a WHERE a.engagement = eng AND a.member = grantee
                      AND a.action = 'export' AND a.outcome = 'ok')) r
$$;

CREATE FUNCTION credvault.revoke_views(eng text, grantee text, readlist text[]) RETURNS text[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
    SELECT coalesce(array_agg(DISTINCT a.item ORDER BY a.item), '{}') FROM audit a
    WHERE a.engagement = eng AND a.member = grantee AND a.action IN ('show', 'system-show')
      AND a.outcome = 'ok' AND a.item IS NOT NULL AND NOT a.item = ANY (readlist)
$$;

CREATE FUNCTION credvault.revoke_detail(eng text, grantee text, readlist text[]) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
    SELECT format('%s credentials to change', cardinality(readlist))
        || CASE WHEN n > 0 THEN format('; %s viewed', n) ELSE '' END
    FROM (SELECT cardinality(revoke_views(eng, grantee, readlist)) AS n) v
$$;

-- What `revoke` prints after the reads, as on SQLCipher: the records the revoked member
-- only viewed (no secret read; nothing to change). For a lead of the engagement or an
-- admin, once the member holds no live grant there (else NULL: nothing is said about a
-- member still working on it). Reads the audit trail; writes nothing.
CREATE FUNCTION credvault.revoked_views(eng text, grantee text) RETURNS text[]
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE e engagements%ROWTYPE;
BEGIN
    PERFORM me();
    SELECT * INTO e FROM engagements x WHERE x.name = eng AND x.state <> 'purged';
    IF e.id IS NULL OR NOT (is_admin() OR coalesce(role_in(e.id), '') = 'lead')
       OR EXISTS (SELECT 1 FROM grants g WHERE g.engagement_id = e.id AND g.member = grantee
                  AND g.revoked_at IS NULL) THEN
        RETURN NULL;
    END IF;
    RETURN revoke_views(eng, grantee, revoke_reads(e.id, eng, grantee));
END $$;

CREATE OR REPLACE FUNCTION credvault.revoke_grant(eng text, grantee text) RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; readlist text[];
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state <> 'purged' FOR UPDATE;
    IF e.id IS NOT NULL AND EXISTS (SELECT 1 FROM engagement_log l WHERE l.engagement_id = e.id) THEN
        RAISE EXCEPTION 'credvault: % keeps a signed membership log: version 1''s revoke_grant is closed to it (revoke_grant_logged)', eng
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF e.id IS NULL OR NOT (is_admin() OR coalesce(role_in(e.id), '') = 'lead') THEN
        PERFORM audit_append(who, 'revoke', eng, grantee, 'denied', '');
        RETURN NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM grants WHERE engagement_id = e.id AND member = grantee
                   AND revoked_at IS NULL) THEN
        RAISE EXCEPTION 'credvault: % holds no role on %', grantee, eng USING ERRCODE = 'no_data_found';
    END IF;
    UPDATE grants SET revoked_at = now(), sealed = NULL, sealed_by = NULL, copy_sig = NULL
        WHERE engagement_id = e.id AND member = grantee;
    UPDATE engagements SET needs_rotation = true WHERE id = e.id;
    readlist := revoke_reads(e.id, eng, grantee);
    PERFORM audit_append(who, 'revoke', eng, grantee, 'ok', revoke_detail(eng, grantee, readlist));
    RETURN readlist;
END $$;

CREATE OR REPLACE FUNCTION credvault.revoke_grant_logged(eng text, grantee text, new_link bytea) RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; readlist text[];
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state <> 'purged' FOR UPDATE;
    IF e.id IS NULL OR coalesce(role_in(e.id), '') <> 'lead' THEN
        PERFORM audit_append(who, 'revoke', eng, grantee, 'denied', '');
        RETURN NULL;
    END IF;
    PERFORM log_append(e.id, new_link);
    UPDATE grants SET revoked_at = now(), sealed = NULL, sealed_by = NULL, copy_sig = NULL
        WHERE engagement_id = e.id AND member = grantee;
    UPDATE engagements SET needs_rotation = true WHERE id = e.id;
    readlist := revoke_reads(e.id, eng, grantee);
    PERFORM audit_append(who, 'revoke', eng, grantee, 'ok', revoke_detail(eng, grantee, readlist));
    RETURN readlist;
END $$;

-- 3. The rotation's audit detail as SQLCipher's (engagement_keys.py, rotate and
-- rotate_logged): "key version N (WHY); fingerprint FP" — WHY what the lead's client says
-- made it rotate ("revoked bob", "on request", "pending rotation", "the first lead's own
-- key"; at most 200 characters, one line), FP the new key's fingerprint the rotate link
-- signs. rotate_records as pgsmall left it, with that one more argument (the old signature
-- dropped: a call without `why` gets no parenthesis).
DROP FUNCTION credvault.rotate_records(text, integer, text, text[], bigint[], bytea[], bytea[],
                                       bytea[], bytea[], text[], bytea[], bytea[], bytea[]);
CREATE FUNCTION credvault.rotate_records(
    eng text, old_version integer, new_fp text, r_tbl text[], r_id bigint[],
    r_e1 bytea[], r_e2 bytea[], r_e3 bytea[], r_e4 bytea[],
    g_members text[], g_sealed bytea[], g_sigs bytea[], links bytea[], why text DEFAULT NULL
) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; i integer; n integer := coalesce(cardinality(r_id), 0);
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state <> 'purged' FOR UPDATE;
    IF e.id IS NULL OR coalesce(role_in(e.id), '') <> 'lead' THEN
        RAISE EXCEPTION 'credvault: % may not rotate %', who, eng USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF e.key_version <> old_version THEN
        RAISE EXCEPTION 'credvault: the key was rotated meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    IF why IS NOT NULL AND (length(why) > 200 OR why ~ '[[:cntrl:]]') THEN
        RAISE EXCEPTION 'credvault: a rotation''s reason is one line of at most 200 characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF (SELECT count(*) FROM (
            SELECT 'credentials' AS t, c.id FROM credentials c WHERE c.engagement_id = e.id
            UNION ALL SELECT 'systems', s.id FROM systems s WHERE s.engagement_id = e.id
            UNION ALL SELECT 'system_trash', x.id FROM system_trash x WHERE x.engagement_id = e.id
            UNION ALL SELECT 'credential_versions', v.id FROM credential_versions v
                WHERE v.engagement_id = e.id
            UNION ALL SELECT 'credential_trash', t.id FROM credential_trash t
                WHERE t.engagement_id = e.id
        ) have FULL JOIN (SELECT * FROM unnest(r_tbl, r_id) AS g(t, id)) given
          ON have.t = given.t AND have.id = given.id
        WHERE have.id IS NULL OR given.id IS NULL) > 0
       OR (SELECT count(DISTINCT (t, id)) FROM unnest(r_tbl, r_id) AS g(t, id)) <> n THEN
        RAISE EXCEPTION 'credvault: records changed meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    FOR i IN 1 .. coalesce(cardinality(links), 0) LOOP
        PERFORM log_append(e.id, links[i]);
    END LOOP;
    FOR i IN 1 .. n LOOP
        IF r_e1[i] IS NULL THEN
            RAISE EXCEPTION 'credvault: a record without its anchor' USING ERRCODE = 'invalid_parameter_value';
        END IF;
        CASE r_tbl[i]
        WHEN 'credentials' THEN
            UPDATE credentials SET key_version = old_version + 1, secret_env = r_e1[i],
                username_env = r_e2[i], url_env = r_e3[i], notes_env = r_e4[i]
            WHERE credentials.id = r_id[i] AND engagement_id = e.id;
        WHEN 'systems' THEN
            UPDATE systems SET address_env = r_e1[i], details_env = r_e2[i]
            WHERE systems.id = r_id[i] AND engagement_id = e.id;
        WHEN 'system_trash' THEN
            UPDATE system_trash SET address_env = r_e1[i], details_env = r_e2[i]
            WHERE system_trash.id = r_id[i] AND engagement_id = e.id;
        WHEN 'credential_versions' THEN
            UPDATE credential_versions SET key_version = old_version + 1, secret_env = r_e1[i],
                username_env = r_e2[i], url_env = r_e3[i], notes_env = r_e4[i]
            WHERE credential_versions.id = r_id[i] AND engagement_id = e.id;
        WHEN 'credential_trash' THEN
            UPDATE credential_trash SET key_version = old_version + 1, secret_env = r_e1[i],
                username_env = r_e2[i], url_env = r_e3[i], notes_env = r_e4[i]
            WHERE credential_trash.id = r_id[i] AND engagement_id = e.id;
        END CASE;
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
        WHERE engagements.id = e.id;
    PERFORM audit_append(who, 'rotate', eng, NULL, 'ok', format('key version %s', old_version + 1)
        || CASE WHEN why IS NULL THEN '' ELSE ' (' || why || ')' END || '; fingerprint ' || new_fp);
    RETURN old_version + 1;
END $$;

-- 4. (Found while writing 2, outside this section's purpose, reported to the lead.) A role
-- check written `NOT (is_admin() OR role_in(e) = 'lead')` is NULL, not true, for a member
-- who holds no role at all (role_in is NULL, and NULL = 'lead' is NULL), so IF let them
-- through: a member with no role on an engagement could request its rotation and fetch
-- every envelope of it (rotation_fetch_records: on the record, "read for rotation", but
-- ciphertext of an engagement row-level security hides from them), list its key holders,
-- and grant themselves a role on an engagement without a log (put_grant); the same with
-- `role_in(e) IN ('lead', 'auditor')` let them read its audit trail (version 1's
-- audit_rows: who read what, when). The latest definitions of those five, with the check
-- made NULL-safe and nothing else changed.

CREATE OR REPLACE FUNCTION credvault.put_grant(
    eng text, grantee text, g_role text, g_role_sig bytea, g_key_version integer,
    g_sealed bytea, g_copy_sig bytea, g_expires_at timestamptz DEFAULT NULL
) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active';
    IF e.id IS NULL THEN
        RAISE EXCEPTION 'credvault: no active engagement %', eng USING ERRCODE = 'no_data_found';
    END IF;
    IF EXISTS (SELECT 1 FROM engagement_log l WHERE l.engagement_id = e.id) THEN
        RAISE EXCEPTION 'credvault: % keeps a signed membership log: version 1''s put_grant is closed to it (put_grant_logged)', eng
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT (is_admin() OR coalesce(role_in(e.id), '') = 'lead') THEN
        PERFORM audit_append(who, 'grant', eng, grantee, 'denied', g_role);
        RETURN false;
    END IF;
    IF grantee <> '@recovery' AND NOT EXISTS (SELECT 1 FROM members WHERE name = grantee AND state = 'active') THEN
        RAISE EXCEPTION 'credvault: no active member %', grantee USING ERRCODE = 'no_data_found';
    END IF;
    INSERT INTO grants (engagement_id, member, role, granted_by, expires_at, role_sig,
                        key_version, sealed, sealed_by, copy_sig)
    VALUES (e.id, grantee, g_role, who, g_expires_at, g_role_sig, g_key_version, g_sealed,
            CASE WHEN g_sealed IS NULL THEN NULL ELSE who END, g_copy_sig)
    ON CONFLICT (engagement_id, member) DO UPDATE SET
        role = excluded.role, granted_by = excluded.granted_by, granted_at = now(),
        expires_at = excluded.expires_at, role_sig = excluded.role_sig,
        key_version = excluded.key_version, sealed = excluded.sealed,
        sealed_by = excluded.sealed_by, copy_sig = excluded.copy_sig, revoked_at = NULL;
    PERFORM audit_append(who, 'grant', eng, grantee, 'ok', g_role);
    RETURN true;
END $$;

CREATE OR REPLACE FUNCTION credvault.rotation_grantees(eng text) RETURNS TABLE (member text, role text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE e engagements%ROWTYPE;
BEGIN
    PERFORM me();
    SELECT * INTO e FROM engagements WHERE name = eng AND state <> 'purged';
    IF e.id IS NULL OR NOT (is_admin() OR coalesce(role_in(e.id), '') = 'lead') THEN
        RAISE EXCEPTION 'credvault: only a lead sees who holds a key copy' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF EXISTS (SELECT 1 FROM engagement_log l WHERE l.engagement_id = e.id) THEN
        RAISE EXCEPTION 'credvault: % keeps a signed membership log: its key holders are the log''s roster, not rotation_grantees', eng
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN QUERY SELECT g.member, g.role FROM grants g
        WHERE g.engagement_id = e.id AND g.revoked_at IS NULL AND g.sealed IS NOT NULL
          AND (g.expires_at IS NULL OR g.expires_at > now())
        ORDER BY g.member;
END $$;

CREATE OR REPLACE FUNCTION credvault.request_rotation(eng text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; s bigint; rid bigint;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state <> 'purged';
    IF e.id IS NULL OR NOT (is_admin() OR coalesce(role_in(e.id), '') = 'lead') THEN
        PERFORM audit_append(who, 'rotate', eng, NULL, 'denied', '');
        RETURN NULL;
    END IF;
    s := audit_append(who, 'rotate', eng, NULL, 'ok', 'read for rotation');
    INSERT INTO rotation_requests (member, engagement_id, audit_seq, xid)
    VALUES (who, e.id, s, pg_current_xact_id()) RETURNING id INTO rid;
    RETURN rid;
END $$;

CREATE OR REPLACE FUNCTION credvault.rotation_fetch_records(request bigint)
RETURNS TABLE (tbl text, id bigint, uid bytea, e1 bytea, e2 bytea, e3 bytea, e4 bytea,
               b_name text, b_kind text, b_port integer, b_protocol text, b_sys_uid bytea)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    want pg_lsn := pg_current_wal_insert_lsn();
    who text := me();
    q rotation_requests%ROWTYPE;
BEGIN
    SELECT * INTO q FROM rotation_requests r WHERE r.id = request FOR UPDATE;
    IF q.id IS NULL OR q.member <> who OR q.used_at IS NOT NULL
       OR q.created_at < clock_timestamp() - interval '60 seconds' THEN
        RAISE EXCEPTION 'credvault: no such rotation request' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF pg_xact_status(q.xid) IS DISTINCT FROM 'committed' THEN
        RAISE EXCEPTION 'credvault: rotation request not committed' USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM await_durable(want);
    IF NOT (is_admin() OR coalesce(role_in(q.engagement_id), '') = 'lead') THEN
        RAISE EXCEPTION 'credvault: no longer a lead' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE rotation_requests SET used_at = clock_timestamp() WHERE rotation_requests.id = q.id;
    RETURN QUERY
        SELECT 'credentials'::text, c.id, c.uid, c.secret_env, c.username_env, c.url_env,
               c.notes_env, c.name, c.kind, NULL::integer, NULL::text, s.uid
        FROM credentials c LEFT JOIN systems s ON s.id = c.system_id
        WHERE c.engagement_id = q.engagement_id
        UNION ALL
        SELECT 'systems', s.id, s.uid, s.address_env, s.details_env, NULL, NULL, s.name, NULL,
               s.port, s.protocol, NULL
        FROM systems s WHERE s.engagement_id = q.engagement_id
        UNION ALL
        SELECT 'system_trash', t.id, t.uid, t.address_env, t.details_env, NULL, NULL, t.name,
               NULL, t.port, t.protocol, NULL
        FROM system_trash t WHERE t.engagement_id = q.engagement_id
        UNION ALL
        SELECT 'credential_versions', v.id, v.uid, v.secret_env, v.username_env, v.url_env,
               v.notes_env, v.name, v.kind, NULL, NULL, v.system_uid
        FROM credential_versions v WHERE v.engagement_id = q.engagement_id
        UNION ALL
        SELECT 'credential_trash', t.id, t.uid, t.secret_env, t.username_env, t.url_env,
               t.notes_env, t.name, t.kind, NULL, NULL, t.system_uid
        FROM credential_trash t WHERE t.engagement_id = q.engagement_id
        ORDER BY 1, 2;
END $$;

CREATE OR REPLACE FUNCTION credvault.audit_rows(eng text)
RETURNS TABLE (seq bigint, ts timestamptz, member text, action text, item text, outcome text, detail text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE e engagements%ROWTYPE;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng;
    IF e.id IS NULL OR NOT (is_admin() OR coalesce(role_in(e.id), '') IN ('lead', 'auditor')) THEN
        RAISE EXCEPTION 'credvault: not allowed to read the audit of %', eng
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN QUERY SELECT a.seq, a.ts, a.member, a.action, a.item, a.outcome, a.detail
        FROM audit a WHERE a.engagement = eng ORDER BY a.seq;
END $$;

REVOKE ALL ON FUNCTION credvault.request_export_records(text, text),
    credvault.fetch_export_records(bigint), credvault.revoke_reads(bigint, text, text),
    credvault.revoke_views(text, text, text[]), credvault.revoke_detail(text, text, text[]),
    credvault.revoked_views(text, text),
    credvault.rotate_records(text, integer, text, text[], bigint[], bytea[], bytea[], bytea[],
                             bytea[], text[], bytea[], bytea[], bytea[], text) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.request_export_records(text, text),'
                   ' credvault.fetch_export_records(bigint), credvault.revoked_views(text, text),'
                   ' credvault.rotate_records(text, integer, text, text[], bigint[], bytea[],'
                   ' bytea[], bytea[], bytea[], text[], bytea[], bytea[], bytea[], text) TO %I',
                   credvault.member_group());
END $$;

-- == pgput: put on an existing credential keeps what it is not given; get shows the link ==
--
-- (docs/team.md, "Daily commands".) SQLCipher's put on an existing credential replaces the
-- secret and keeps the username, url, notes, kind and system link it is not given
-- (credentials.py, store.update_credential). The team put sent a fresh uid with every
-- value, so the envelopes it was not given could not be kept (each is sealed for its
-- row's uid) and were dropped. Now the client seals the new value for the row's own uid
-- (as edit does) and the fields not given are kept here, envelope for envelope: nothing is
-- opened or sealed on the server, and a kept envelope still opens at its place (table,
-- uid, field) under the row's key version (a rotation, FOR UPDATE on the engagement,
-- cannot interleave: put locks it FOR SHARE). A uid that is not the row's (a revert or
-- another put meanwhile gave it another) is refused as a conflict: run the command again.
-- A new credential is stored as before. Version 1's put_credential is unchanged (it
-- replaces a row whole, with the uid it is given).
CREATE OR REPLACE FUNCTION credvault.put_credential_linked(
    eng text, c_name text, c_kind text, c_uid bytea, c_key_version integer,
    c_secret_env bytea, c_username_env bytea, c_url_env bytea, c_notes_env bytea,
    c_system text, c_changed text DEFAULT NULL
) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE e engagements%ROWTYPE; sid bigint; ok boolean; old credentials%ROWTYPE;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active' FOR SHARE;
    IF e.id IS NOT NULL AND may(e.id, 'write') THEN
        IF c_system IS NOT NULL THEN
            SELECT id INTO sid FROM systems WHERE engagement_id = e.id AND name = c_system;
            IF sid IS NULL THEN
                RAISE EXCEPTION 'credvault: system %/% not found', eng, c_system USING ERRCODE = 'no_data_found';
            END IF;
        END IF;
        SELECT * INTO old FROM credentials WHERE engagement_id = e.id AND name = c_name FOR UPDATE;
        IF old.id IS NOT NULL AND old.uid <> c_uid THEN
            RAISE EXCEPTION 'credvault: the credential changed meanwhile; run the command again'
                USING ERRCODE = 'serialization_failure';
        END IF;
    END IF;
    IF c_system IS NULL AND e.id IS NOT NULL THEN
        SELECT system_id INTO sid FROM credentials WHERE engagement_id = e.id AND name = c_name;
    END IF;
    -- what the new version changed (history's "changed"; keep_version reads it)
    PERFORM set_config('credvault.changed', coalesce(c_changed, ''), true);
    -- old is empty unless the member may write and the row is theirs to replace (same uid)
    ok := put_credential(eng, c_name, c_kind, c_uid, c_key_version, c_secret_env,
                         coalesce(c_username_env, old.username_env),
                         coalesce(c_url_env, old.url_env),
                         coalesce(c_notes_env, old.notes_env));
    IF ok THEN
        PERFORM set_config('credvault.linking', 'on', true);
        UPDATE credentials SET system_id = sid WHERE engagement_id = e.id AND name = c_name
            AND system_id IS DISTINCT FROM sid;
        PERFORM set_config('credvault.linking', '', true);
    END IF;
    RETURN ok;
END $$;


-- (pgput) get: the linked system comes with the credential, as SQLCipher's get gives it
-- (its name, port and address; `get --json` showed "system": null). fetch is pgspeed's,
-- with the credential's linked system added at the end of its row: its uid and clear
-- columns (the address's binding, and the secret's) and the address envelope, released
-- under the same committed 'get' audit entry as the rest, as fetch_use ('get', section
-- pgdaily) releases it for run and ssh. A changed row type needs the function made again.
DROP FUNCTION credvault.fetch(bigint);
CREATE FUNCTION credvault.fetch(request bigint)
RETURNS TABLE (secret_env bytea, username_env bytea, url_env bytea, notes_env bytea,
               key_version integer, uid bytea, kind text, audit_seq bigint,
               created_at timestamptz, updated_at timestamptz, sys_uid bytea, sys_name text,
               port integer, protocol text, address_env bytea)
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
                        c.uid, c.kind, q.audit_seq, c.created_at, c.updated_at,
                        s.uid, s.name, s.port, s.protocol, s.address_env
        FROM credentials c LEFT JOIN systems s ON s.id = c.system_id
        WHERE c.id = q.credential_id;
END $$;

REVOKE ALL ON FUNCTION credvault.fetch(bigint) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.fetch(bigint) TO %I', credvault.member_group());
END $$;

-- == succeed: member certify re-pins the member's keys in every membership log ==
--
-- (docs/team.md "`info`, `receipt-keys` and `passwd --compromised`", docs/format.md §17 and
-- §19.8.) After `member certify` every log still pinned the member's old keys: a lead had to
-- grant them again, and an engagement whose only lead had re-keyed had nobody left who could
-- sign its log. Now the certifying admin's client also signs, in every log whose roster names
-- the member, a `succeed` link (the member, the certified new pair, compromised = 1), appended
-- here in the certificate's own transaction. Clients accept such a link off the roster only
-- from an admin, only as compromised, only to a pair an admin's certificate certifies for
-- that member, and bounded by the revocation list like `revoke` and `set` — so the server
-- checks only what the audit row says (kind, signer, member, keys, flag); the DBA who
-- writes another link gets a log every client refuses (exit 6), never a copy sealed to it.

-- certify_keys with the succeed links (engs[i] gets new_links[i]); returns the list version.
CREATE FUNCTION credvault.certify_keys_logged(k_member text, k_seq integer, k_sign bytea,
                                              k_kem bytea, k_certifier_key bytea, k_sig bytea,
                                              revocation bytea, engs text[], new_links bytea[])
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := require_admin(); v integer; eid bigint;
BEGIN
    IF cardinality(coalesce(engs, '{}')) <> cardinality(coalesce(new_links, '{}')) THEN
        RAISE EXCEPTION 'credvault: one link per engagement' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR i IN 1 .. cardinality(coalesce(engs, '{}')) LOOP
        -- only what the audit row says: this admin re-pins this member to the keys certified,
        -- as compromised (parts 6 and 7 of the header, the succeed's fields 9 to 12)
        IF link_part(new_links[i], 6) IS DISTINCT FROM convert_to('succeed', 'UTF8')
           OR link_part(new_links[i], 7) IS DISTINCT FROM convert_to(who, 'UTF8')
           OR link_part(new_links[i], 9) IS DISTINCT FROM convert_to(k_member, 'UTF8')
           OR link_part(new_links[i], 10) IS DISTINCT FROM k_sign
           OR link_part(new_links[i], 11) IS DISTINCT FROM k_kem
           OR link_part(new_links[i], 12) IS DISTINCT FROM int8send(1::bigint)
           OR link_part(new_links[i], 13) IS NOT NULL THEN
            RAISE EXCEPTION 'credvault: not a succeed of % to the keys certified, signed by %', k_member, who
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    v := certify_keys(k_member, k_seq, k_sign, k_kem, k_certifier_key, k_sig, revocation);
    FOR i IN 1 .. cardinality(coalesce(engs, '{}')) LOOP
        SELECT e.id INTO eid FROM engagements e WHERE e.name = engs[i] AND e.state <> 'purged' FOR UPDATE;
        IF eid IS NULL THEN
            RAISE EXCEPTION 'credvault: engagement % changed meanwhile; run the command again', engs[i]
                USING ERRCODE = 'serialization_failure';
        END IF;
        PERFORM log_append(eid, new_links[i]);
        UPDATE engagements SET needs_rotation = true WHERE id = eid;
        PERFORM audit_append(who, 'certify', engs[i], k_member, 'ok',
                             'new keys pinned in the membership log: succeed link signed');
    END LOOP;
    RETURN v;
END $$;

-- passwd --compromised keeping the caller's copies of the engagements they lead, sealed on
-- their machine to the new X25519 key (engs[i] at key version versions[i]): replace_keys drops
-- every copy, then these go back, in one transaction. Only the new key opens them and the
-- member's client uses one only once member certify's succeed link pins the new keys: so a
-- lead, even the only one, can rotate again. Each must be the engagement's current version
-- and a live grant of the caller (else serialization_failure: run the command again).
CREATE FUNCTION credvault.replace_keys_kept(k_link text, new_sign bytea, new_kem bytea,
                                            verifier text, engs text[], versions integer[],
                                            copies bytea[], sigs bytea[])
RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); flagged text[]; n integer; k integer := cardinality(coalesce(engs, '{}'));
BEGIN
    IF k <> cardinality(coalesce(versions, '{}')) OR k <> cardinality(coalesce(copies, '{}'))
       OR k <> cardinality(coalesce(sigs, '{}')) THEN
        RAISE EXCEPTION 'credvault: one copy per engagement' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    flagged := replace_keys(k_link, new_sign, new_kem, verifier);
    FOR i IN 1 .. k LOOP
        UPDATE grants g SET sealed = copies[i], sealed_by = who, copy_sig = sigs[i]
            FROM engagements e
            WHERE e.id = g.engagement_id AND e.name = engs[i] AND e.state = 'active'
              AND e.key_version = versions[i] AND g.member = who AND g.revoked_at IS NULL
              AND g.key_version = versions[i] AND copies[i] IS NOT NULL;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n <> 1 THEN
            RAISE EXCEPTION 'credvault: engagement % changed meanwhile; run the command again', engs[i]
                USING ERRCODE = 'serialization_failure';
        END IF;
    END LOOP;
    RETURN flagged;
END $$;

REVOKE ALL ON FUNCTION credvault.replace_keys_kept(text, bytea, bytea, text, text[], integer[],
    bytea[], bytea[]) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.replace_keys_kept(text, bytea, bytea, text,'
                   ' text[], integer[], bytea[], bytea[]) TO %I', credvault.member_group());
END $$;

REVOKE ALL ON FUNCTION credvault.certify_keys_logged(text, integer, bytea, bytea, bytea, bytea,
    bytea, text[], bytea[]) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.certify_keys_logged(text, integer, bytea,'
                   ' bytea, bytea, bytea, bytea, text[], bytea[]) TO %I', credvault.member_group());
END $$;

-- == readpath: the audited read's server work cut (chain lock, one query per check, no RI) ==
--
-- (issue 14, "Figures": >= 2,000 audited reads/s from 16 clients on 2 cores; docs/team.md
-- "Figures".) Profiled with 16 clients, three costs grew with concurrency, not with work:
--
-- * audit_append locked the head row (SELECT ... FOR UPDATE) and then updated it. Under 16
--   clients the row's page is pinned by waiters whenever an update wants to prune it, so
--   pruning failed and every update went to a new page: the one-row table measured 31 pages
--   after a few seconds, and each append scanned them all. The head is now serialised by a
--   table lock (LOCK TABLE audit_head IN EXCLUSIVE MODE: conflicts with every writer, not
--   with a reader's ACCESS SHARE; members hold no privilege that could take it), so only the
--   lock holder touches the row and it stays one page. Same total order, same row, same hash.
-- * request_read and fetch called me(), role_in() and held(): each a SECURITY DEFINER call
--   that pushes and pops the search_path setting and revalidates cached plans. request_read
--   now asks for the member, engagement, role and credential in one query and fetch claims
--   its request in one UPDATE and checks the role in the query that returns the row; the
--   rules, their order, the audit words and every error message are version 2's (sections
--   pgreason and pgput), the diagnosis of a refused claim runs only when it is refused.
-- * read_requests' two foreign keys ran two referential-integrity queries per request inside
--   the chain's critical section, one of them row-locking the credential (a WAL record per
--   read), and made every credential delete scan read_requests (no index on credential_id;
--   the table has a row per read ever made). Both rows are written only by request_read in
--   the transaction that makes the audit row. The cascade on a credential's delete is not
--   optional (mv and the trash's restore make the row again under the same id): section
--   rpreview keeps it with a trigger and an index.
--
-- Same-run A/B, 16 client processes (benchmarks/results/issue14-readpath-2026-11-30.txt).

CREATE OR REPLACE FUNCTION credvault.audit_append(
    who text, act text, eng text, itm text, result text, info text
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    head audit_head%ROWTYPE;
    at timestamptz;
    canon text;
    h bytea;
BEGIN
    LOCK TABLE audit_head IN EXCLUSIVE MODE;
    at := clock_timestamp();
    SELECT * INTO head FROM audit_head;
    canon := json_build_array(
        head.seq + 1,
        to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        who, act, eng, itm, result, coalesce(info, '')
    )::text;
    h := sha256(head.hash || convert_to(canon, 'UTF8'));
    -- the head first: a REPEATABLE READ or SERIALIZABLE caller whose snapshot predates
    -- another append read a stale head above (no row lock now) and gets
    -- serialization_failure here, as version 2's FOR UPDATE gave it, not a duplicate key
    UPDATE audit_head SET seq = head.seq + 1, hash = h;
    INSERT INTO audit (seq, ts, member, action, engagement, item, outcome, detail, prev, hash)
    VALUES (head.seq + 1, at, who, act, eng, itm, result, coalesce(info, ''), head.hash, h);
    RETURN head.seq + 1;
END $$;

ALTER TABLE credvault.read_requests DROP CONSTRAINT read_requests_audit_seq_fkey;
ALTER TABLE credvault.read_requests DROP CONSTRAINT read_requests_credential_id_fkey;

CREATE OR REPLACE FUNCTION credvault.request_read(eng text, itm text, reason text DEFAULT '')
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text;
    eid bigint;
    need_reason boolean;
    r text;
    cid bigint;
    why text := coalesce(reason, '');
    s bigint;
    rid bigint;
BEGIN
    -- me(), the engagement (active or closed), role_in() and the credential, in one query:
    -- at most one row (members.role_name, engagements.name, grants' and credentials' keys
    -- are unique); a missing engagement leaves role and credential NULL.
    SELECT m.name, e.id, e.require_reason, g.role, c.id INTO who, eid, need_reason, r, cid
    FROM members m
    LEFT JOIN engagements e ON e.name = eng AND e.state IN ('active', 'closed')
    LEFT JOIN grants g ON g.engagement_id = e.id AND g.member = m.name
         AND g.revoked_at IS NULL AND (g.expires_at IS NULL OR g.expires_at > now())
    LEFT JOIN credentials c ON c.engagement_id = e.id AND c.name = itm
    WHERE m.role_name = session_user AND m.state = 'active';
    IF who IS NULL THEN
        RAISE EXCEPTION 'credvault: % is not an active member', session_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF r IS NULL OR r NOT IN ('lead', 'engineer', 'reader') THEN
        -- held()'s words: 'role auditor', or 'no grant'
        PERFORM audit_append(who, 'get', eng, itm, 'denied', coalesce('role ' || r, 'no grant'));
        RETURN NULL;
    END IF;
    IF need_reason AND why = '' THEN
        PERFORM audit_append(who, 'get', eng, itm, 'denied', 'this engagement requires --reason');
        RETURN NULL;
    END IF;
    IF cid IS NULL THEN
        PERFORM audit_append(who, 'get', eng, itm, 'error', 'not found');
        RETURN NULL;
    END IF;
    s := audit_append(who, 'get', eng, itm, 'ok', CASE WHEN why = '' THEN '' ELSE 'reason: ' || why END);
    -- Still the row the query above found, seen after the chain's lock (a statement of its
    -- own: a fresh snapshot): an `mv` to another engagement committed while this waited for
    -- the lock leaves a row under the same id elsewhere, an `rm` none; this request must not
    -- name either (section rpreview). Then nothing is kept, the audit row included.
    INSERT INTO read_requests (member, credential_id, audit_seq, xid)
    SELECT who, c.id, s, pg_current_xact_id() FROM credentials c
    WHERE c.id = cid AND c.engagement_id = eid AND c.name = itm
    RETURNING id INTO rid;
    IF rid IS NULL THEN
        RAISE EXCEPTION 'credvault: %/% changed meanwhile; run the command again', eng, itm
            USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN rid;
END $$;

CREATE OR REPLACE FUNCTION credvault.fetch(request bigint)
RETURNS TABLE (secret_env bytea, username_env bytea, url_env bytea, notes_env bytea,
               key_version integer, uid bytea, kind text, audit_seq bigint,
               created_at timestamptz, updated_at timestamptz, sys_uid bytea, sys_name text,
               port integer, protocol text, address_env bytea)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    -- taken first, before this function writes anything (the claim below is WAL too)
    want pg_lsn := pg_current_wal_insert_lsn();
    who text;
    q read_requests%ROWTYPE;
    tries integer := 0;
BEGIN
    -- The claim: the caller's own, unused, recent request, marked used (rolled back with
    -- everything else if a check below refuses). A concurrent claim of the same request
    -- waits for the row and then finds it used.
    UPDATE read_requests rq SET used_at = clock_timestamp()
    WHERE rq.id = request AND rq.used_at IS NULL
      AND rq.member = (SELECT m.name FROM members m
                       WHERE m.role_name = session_user AND m.state = 'active')
      AND rq.created_at >= clock_timestamp() - interval '60 seconds'
    RETURNING rq.* INTO q;
    IF q.id IS NULL THEN
        -- refused: say why, in version 2's words and order
        SELECT m.name INTO who FROM members m WHERE m.role_name = session_user AND m.state = 'active';
        IF who IS NULL THEN
            RAISE EXCEPTION 'credvault: % is not an active member', session_user
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        SELECT * INTO q FROM read_requests rq WHERE rq.id = request;
        IF q.id IS NULL OR q.member <> who THEN
            RAISE EXCEPTION 'credvault: no such read request' USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF q.used_at IS NOT NULL THEN
            RAISE EXCEPTION 'credvault: read request already used' USING ERRCODE = 'insufficient_privilege';
        END IF;
        RAISE EXCEPTION 'credvault: read request expired' USING ERRCODE = 'insufficient_privilege';
    END IF;
    who := q.member;
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
    -- role_in() folded in: a reading role held now (a revoked, expired or changed grant, or a
    -- credential gone since the request, returns nothing)
    RETURN QUERY SELECT c.secret_env, c.username_env, c.url_env, c.notes_env, c.key_version,
                        c.uid, c.kind, q.audit_seq, c.created_at, c.updated_at,
                        s.uid, s.name, s.port, s.protocol, s.address_env
        FROM credentials c
        JOIN grants g ON g.engagement_id = c.engagement_id AND g.member = who
             AND g.revoked_at IS NULL AND (g.expires_at IS NULL OR g.expires_at > now())
             AND g.role IN ('lead', 'engineer', 'reader')
        LEFT JOIN systems s ON s.id = c.system_id
        WHERE c.id = q.credential_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'credvault: access revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
END $$;

-- == rpreview: a read request goes with its credential row again (readpath's dropped cascade) ==
--
-- Section readpath dropped read_requests' foreign keys. The one on credential_id was ON
-- DELETE CASCADE, and two commands delete a credential's row and make it again under the
-- same id: `mv` to another engagement (pgrec) and the trash's restore (pgcmds). Without the
-- cascade a request made before either survived it, and fetch released the row that now
-- has that id: after a move, another engagement's envelope under a 'get' entry naming the
-- old engagement and item (and without the reason the new engagement may require). Version
-- 2 refused it ('no such read request'), as it refused any request whose credential was
-- deleted. This trigger deletes what the cascade deleted, at the deleting transaction's
-- commit: every deleting function appends to the audit chain, whose lock a request_read in
-- flight holds until it commits, so a request inserted meanwhile is seen and deleted too;
-- the other order (the delete's transaction took the lock first) is request_read's check of
-- the row after the lock (section readpath). A stale REPEATABLE READ snapshot in
-- audit_append: readpath's audit_append updates the head before it inserts the entry.
-- The read path keeps what readpath won: no row lock on the credential and no
-- referential-integrity query per request; one index entry per request instead, which also
-- spares a credential delete the scan of read_requests.

CREATE INDEX read_requests_credential ON credvault.read_requests (credential_id);

CREATE FUNCTION credvault.read_requests_cascade() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    DELETE FROM read_requests WHERE credential_id = OLD.id;
    RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION credvault.read_requests_cascade() FROM PUBLIC;

CREATE CONSTRAINT TRIGGER read_requests_cascade AFTER DELETE ON credvault.credentials
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION credvault.read_requests_cascade();

-- == readclaim: the audited read in one call, its audit row's flush shared (group commit) ==
--
-- (issue 14, "Figures": >= 2,000 audited reads/s from 16 clients on 2 cores, on a server
-- that syncs its commits.) request_read commits while it holds the audit chain's lock (no
-- other transaction can read an uncommitted head), so with synchronous commit every read's
-- WAL flush happened inside that lock, one after another: a group commit could never form,
-- and the chain ran at one disk flush per read (~1,000-1,300 reads/s here, fsync on).
--
-- Now the read is three transactions in one round trip, `CALL credvault.read(...)`:
--   1. request_read, committed asynchronously: the chain's lock is held for the append's
--      CPU work only; the entry is not yet durable and nothing has been released.
--   2. claim_read(request): marks the request used and records the WAL insert position as
--      its UPDATE finds the request (claim_lsn). The request was visible to it, so the
--      request's commit record lies before claim_lsn; the claim commits synchronously, and
--      its flush (shared with every other client's claim in flight: a group commit) makes
--      the request durable.
--   3. release(request): returns the envelope only for the caller's claimed request whose
--      claim committed in an earlier transaction (pg_xact_status of claim_xid, so claim and
--      release in one transaction yield nothing), whose claim_lsn is flushed (and on a
--      synchronous standby, when one is configured), within the request's 60 s, for a
--      reading role held now; request, member, role and row in one snapshot.
-- So the rule stands as version 2 wrote it: no envelope leaves the server before its
-- 'get' entry is committed and durable. A member who runs the steps by hand, rolls any of
-- them back, commits the claim asynchronously or skips the procedure gains nothing: each
-- condition is checked by the function that releases. A claimed request may be released
-- again (same member, same credential, within the request's 60 s), as version 2's fetch
-- could be after a ROLLBACK.
--
-- The procedure is SECURITY INVOKER (PostgreSQL allows COMMIT in no other kind) and holds
-- no rule: it only sequences the three definer functions a member may call anyway. fetch
-- (request + fetch, two round trips, two flushes, the first inside the lock) stays for
-- clients of earlier builds.

ALTER TABLE credvault.read_requests ADD COLUMN claim_lsn pg_lsn, ADD COLUMN claim_xid xid8;

CREATE FUNCTION credvault.claim_read(request bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text;
    q read_requests%ROWTYPE;
BEGIN
    -- claim_lsn: evaluated for the row this statement's snapshot found, so after the
    -- request's commit record (the row's heap record for this update comes after it)
    UPDATE read_requests rq
    SET used_at = clock_timestamp(), claim_lsn = pg_current_wal_insert_lsn(),
        claim_xid = pg_current_xact_id()
    WHERE rq.id = request AND rq.used_at IS NULL
      AND rq.member = (SELECT m.name FROM members m
                       WHERE m.role_name = session_user AND m.state = 'active')
      AND rq.created_at >= clock_timestamp() - interval '60 seconds'
    RETURNING rq.* INTO q;
    IF q.id IS NULL THEN
        -- refused: fetch's words and order (section readpath)
        SELECT m.name INTO who FROM members m WHERE m.role_name = session_user AND m.state = 'active';
        IF who IS NULL THEN
            RAISE EXCEPTION 'credvault: % is not an active member', session_user
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        SELECT * INTO q FROM read_requests rq WHERE rq.id = request;
        IF q.id IS NULL OR q.member <> who THEN
            RAISE EXCEPTION 'credvault: no such read request' USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF q.used_at IS NOT NULL THEN
            RAISE EXCEPTION 'credvault: read request already used' USING ERRCODE = 'insufficient_privilege';
        END IF;
        RAISE EXCEPTION 'credvault: read request expired' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF pg_xact_status(q.xid) IS DISTINCT FROM 'committed' THEN
        RAISE EXCEPTION 'credvault: read request not committed' USING ERRCODE = 'insufficient_privilege';
    END IF;
END $$;

CREATE FUNCTION credvault.release(request bigint)
RETURNS TABLE (secret_env bytea, username_env bytea, url_env bytea, notes_env bytea,
               key_version integer, uid bytea, kind text, audit_seq bigint,
               created_at timestamptz, updated_at timestamptz, sys_uid bytea, sys_name text,
               port integer, protocol text, address_env bytea)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    q read_requests%ROWTYPE;
    tries integer := 0;
BEGIN
    SELECT rq.* INTO q FROM read_requests rq
    WHERE rq.id = request AND rq.claim_lsn IS NOT NULL
      AND rq.member = (SELECT m.name FROM members m
                       WHERE m.role_name = session_user AND m.state = 'active')
      AND rq.created_at >= clock_timestamp() - interval '60 seconds';
    IF q.id IS NULL THEN
        IF NOT EXISTS (SELECT 1 FROM members m WHERE m.role_name = session_user AND m.state = 'active') THEN
            RAISE EXCEPTION 'credvault: % is not an active member', session_user
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RAISE EXCEPTION 'credvault: no such claimed read request (or expired)'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF pg_xact_status(q.claim_xid) IS DISTINCT FROM 'committed' THEN
        RAISE EXCEPTION 'credvault: read request claim not committed' USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- durability of the request, as section readclaim: claim_lsn lies after its commit record
    WHILE pg_current_wal_flush_lsn() < q.claim_lsn LOOP
        tries := tries + 1;
        IF tries > 10 THEN
            RAISE EXCEPTION 'credvault: read request not yet durable (asynchronous commit?); retry'
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        PERFORM pg_sleep(0.001);
    END LOOP;
    IF current_setting('synchronous_standby_names') <> '' THEN
        tries := 0;
        WHILE NOT EXISTS (SELECT 1 FROM pg_stat_replication r
                          WHERE r.sync_state IN ('sync', 'quorum') AND r.flush_lsn >= q.claim_lsn) LOOP
            tries := tries + 1;
            IF tries > 500 THEN
                RAISE EXCEPTION 'credvault: read request not yet on the synchronous standby; retry'
                    USING ERRCODE = 'object_not_in_prerequisite_state';
            END IF;
            PERFORM pg_sleep(0.001);
        END LOOP;
    END IF;
    -- one snapshot for the request, the member, the role and the row: a credential deleted
    -- and made again under the same id since the statement above (mv, the trash's restore)
    -- took its requests with it (section rpreview), so nothing comes back
    RETURN QUERY SELECT c.secret_env, c.username_env, c.url_env, c.notes_env, c.key_version,
                        c.uid, c.kind, rq.audit_seq, c.created_at, c.updated_at,
                        s.uid, s.name, s.port, s.protocol, s.address_env
        FROM read_requests rq
        JOIN members m ON m.name = rq.member AND m.role_name = session_user AND m.state = 'active'
        JOIN credentials c ON c.id = rq.credential_id
        JOIN grants g ON g.engagement_id = c.engagement_id AND g.member = rq.member
             AND g.revoked_at IS NULL AND (g.expires_at IS NULL OR g.expires_at > now())
             AND g.role IN ('lead', 'engineer', 'reader')
        LEFT JOIN systems s ON s.id = c.system_id
        WHERE rq.id = q.id AND rq.claim_xid = q.claim_xid;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'credvault: access revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
END $$;

-- Sequences the three; holds no rule (see above). The request id comes back as `request`
-- (NULL: refused, and audited); the rest is release's row.
CREATE PROCEDURE credvault.read(eng text, itm text, reason text,
    INOUT request bigint DEFAULT NULL,
    INOUT secret_env bytea DEFAULT NULL, INOUT username_env bytea DEFAULT NULL,
    INOUT url_env bytea DEFAULT NULL, INOUT notes_env bytea DEFAULT NULL,
    INOUT key_version integer DEFAULT NULL, INOUT uid bytea DEFAULT NULL,
    INOUT kind text DEFAULT NULL, INOUT audit_seq bigint DEFAULT NULL,
    INOUT created_at timestamptz DEFAULT NULL, INOUT updated_at timestamptz DEFAULT NULL,
    INOUT sys_uid bytea DEFAULT NULL, INOUT sys_name text DEFAULT NULL,
    INOUT port integer DEFAULT NULL, INOUT protocol text DEFAULT NULL,
    INOUT address_env bytea DEFAULT NULL)
LANGUAGE plpgsql
AS $$
BEGIN
    -- 1: the entry, its flush left to the claim's (the chain's lock is not held across it)
    PERFORM pg_catalog.set_config('synchronous_commit', 'off', true);
    request := credvault.request_read(eng, itm, reason);
    COMMIT;
    IF request IS NULL THEN
        RETURN;
    END IF;
    -- 2: synchronously: a session's 'off' turned 'on' ('local' kept: release then waits
    -- for the standby); release checks the flush whatever happened here
    IF pg_catalog.current_setting('synchronous_commit') = 'off' THEN
        PERFORM pg_catalog.set_config('synchronous_commit', 'on', true);
    END IF;
    PERFORM credvault.claim_read(request);
    COMMIT;
    -- 3
    SELECT r.secret_env, r.username_env, r.url_env, r.notes_env, r.key_version, r.uid, r.kind,
           r.audit_seq, r.created_at, r.updated_at, r.sys_uid, r.sys_name, r.port, r.protocol,
           r.address_env
    INTO secret_env, username_env, url_env, notes_env, key_version, uid, kind, audit_seq,
         created_at, updated_at, sys_uid, sys_name, port, protocol, address_env
    FROM credvault.release(request) r;
END $$;

REVOKE ALL ON FUNCTION credvault.claim_read(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION credvault.release(bigint) FROM PUBLIC;
REVOKE ALL ON PROCEDURE credvault.read(text, text, text, bigint, bytea, bytea, bytea, bytea,
    integer, bytea, text, bigint, timestamptz, timestamptz, bytea, text, integer, text, bytea)
    FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.claim_read(bigint) TO %I', credvault.member_group());
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.release(bigint) TO %I', credvault.member_group());
    EXECUTE format('GRANT EXECUTE ON PROCEDURE credvault.read(text, text, text, bigint, bytea, '
                   'bytea, bytea, bytea, integer, bytea, text, bigint, timestamptz, timestamptz, '
                   'bytea, text, integer, text, bytea) TO %I', credvault.member_group());
END $$;

-- The review of this section (helper clmreview; tests/postgres/test_insider_pg.py) found two
-- races a member can drive from two sessions in its first version; the functions above
-- close both without a new round trip:
--
-- * claim_read took claim_lsn in its DECLARE, before its UPDATE. Under READ COMMITTED that
--   UPDATE takes a snapshot of its own, later: a request whose transaction committed in
--   between (the member's own, from a second session, asynchronously) was seen, claimed,
--   and given a claim_lsn BELOW its commit record. release's "flushed up to claim_lsn" (and
--   the synchronous standby's) then did not cover the audit row: a claim committed
--   asynchronously could be released while the 'get' entry was not yet on disk. claim_lsn
--   is taken by the UPDATE itself, for the row it found: that row was visible, so its
--   transaction's commit record was inserted before the snapshot, below claim_lsn. (Version
--   1's fetch and every phase two written after it took their `want` the same early way,
--   which matters only for a request its member committed asynchronously: section early.)
-- * release read its request in one statement and returned the credential from another,
--   each with its own snapshot, with no row lock in between: an `mv` to another engagement
--   committed between the two (the row made again under the same id, the request deleted by
--   section rpreview's cascade) was released under the old engagement's 'get' entry, with
--   the new engagement's envelope, without its required reason: rpreview's hole again. The
--   returning query now joins the request (and the member) again, so one snapshot decides:
--   the request and the credential it named then, or nothing.


-- == early: phase two's WAL position covers a request that commits while it starts ==
--
-- (Review finding F4; docs/team.md, "Not built yet", until now.) Every phase two waits for
-- the WAL flushed up to `want`, read in its DECLARE, and then finds its request in a
-- statement of its own. Under READ COMMITTED that statement takes a later snapshot: a
-- request whose transaction committed in between, asynchronously (the member's own
-- `SET synchronous_commit = off`, from a second session), was found and released with its
-- commit record AFTER `want`, so the wait did not cover the 'get' entry and a crash within
-- the WAL writer's cycle could lose it after the envelope left. Section readclaim closed
-- this for claim_read; here the others. Each takes a snapshot before `want` and refuses,
-- as "not yet durable", a request not yet visible in it: a transaction visible in a
-- snapshot had inserted its commit record before the snapshot was taken, so below `want`.
-- The refusal rolls the claim back; the client's nudge and new attempt (a new snapshot)
-- then succeeds. Bodies otherwise as before (the last definition of each above); CREATE OR
-- REPLACE with the same signature keeps the owner and the member group's EXECUTE.
-- Version 1's rotation_fetch and rotation_fetch_all take `want` the same way but are closed
-- to members (section pgv1) and called by no function: not changed.

CREATE OR REPLACE FUNCTION credvault.fetch(request bigint)
RETURNS TABLE (secret_env bytea, username_env bytea, url_env bytea, notes_env bytea,
               key_version integer, uid bytea, kind text, audit_seq bigint,
               created_at timestamptz, updated_at timestamptz, sys_uid bytea, sys_name text,
               port integer, protocol text, address_env bytea)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    -- before want: a request visible in this snapshot committed, its commit record
    -- inserted, before want was read (section early)
    snap pg_snapshot := pg_current_snapshot();
    -- taken first, before this function writes anything (the claim below is WAL too)
    want pg_lsn := pg_current_wal_insert_lsn();
    who text;
    q read_requests%ROWTYPE;
    tries integer := 0;
BEGIN
    -- The claim: the caller's own, unused, recent request, marked used (rolled back with
    -- everything else if a check below refuses). A concurrent claim of the same request
    -- waits for the row and then finds it used.
    UPDATE read_requests rq SET used_at = clock_timestamp()
    WHERE rq.id = request AND rq.used_at IS NULL
      AND rq.member = (SELECT m.name FROM members m
                       WHERE m.role_name = session_user AND m.state = 'active')
      AND rq.created_at >= clock_timestamp() - interval '60 seconds'
    RETURNING rq.* INTO q;
    IF q.id IS NULL THEN
        -- refused: say why, in version 2's words and order
        SELECT m.name INTO who FROM members m WHERE m.role_name = session_user AND m.state = 'active';
        IF who IS NULL THEN
            RAISE EXCEPTION 'credvault: % is not an active member', session_user
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        SELECT * INTO q FROM read_requests rq WHERE rq.id = request;
        IF q.id IS NULL OR q.member <> who THEN
            RAISE EXCEPTION 'credvault: no such read request' USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF q.used_at IS NOT NULL THEN
            RAISE EXCEPTION 'credvault: read request already used' USING ERRCODE = 'insufficient_privilege';
        END IF;
        RAISE EXCEPTION 'credvault: read request expired' USING ERRCODE = 'insufficient_privilege';
    END IF;
    who := q.member;
    IF pg_xact_status(q.xid) IS DISTINCT FROM 'committed' THEN
        RAISE EXCEPTION 'credvault: read request not committed' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT pg_visible_in_snapshot(q.xid, snap) THEN
        RAISE EXCEPTION 'credvault: read request not yet durable (asynchronous commit?); retry'
            USING ERRCODE = 'object_not_in_prerequisite_state';
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
    -- role_in() folded in: a reading role held now (a revoked, expired or changed grant, or a
    -- credential gone since the request, returns nothing)
    RETURN QUERY SELECT c.secret_env, c.username_env, c.url_env, c.notes_env, c.key_version,
                        c.uid, c.kind, q.audit_seq, c.created_at, c.updated_at,
                        s.uid, s.name, s.port, s.protocol, s.address_env
        FROM credentials c
        JOIN grants g ON g.engagement_id = c.engagement_id AND g.member = who
             AND g.revoked_at IS NULL AND (g.expires_at IS NULL OR g.expires_at > now())
             AND g.role IN ('lead', 'engineer', 'reader')
        LEFT JOIN systems s ON s.id = c.system_id
        WHERE c.id = q.credential_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'credvault: access revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
END $$;

CREATE OR REPLACE FUNCTION credvault.fetch_use(request bigint)
RETURNS TABLE (uid bytea, name text, kind text, sys_uid bytea, sys_name text, port integer,
               protocol text, secret_env bytea, username_env bytea, url_env bytea,
               notes_env bytea, address_env bytea, audit_seq bigint,
               created_at timestamptz, updated_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    -- before want: a request visible in this snapshot committed, its commit record
    -- inserted, before want was read (section early)
    snap pg_snapshot := pg_current_snapshot();
    want pg_lsn := pg_current_wal_insert_lsn();
    who text := me();
    q record_requests%ROWTYPE;
BEGIN
    SELECT * INTO q FROM record_requests r WHERE r.id = request FOR UPDATE;
    IF q.id IS NULL OR q.member <> who OR q.kind NOT LIKE 'use-%' THEN
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
    IF NOT pg_visible_in_snapshot(q.xid, snap) THEN
        RAISE EXCEPTION 'credvault: read request not yet durable (asynchronous commit?); retry'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM await_durable(want);
    IF NOT may(q.engagement_id, 'read') THEN
        RAISE EXCEPTION 'credvault: access revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE record_requests SET used_at = clock_timestamp() WHERE id = q.id;
    RETURN QUERY SELECT c.uid, c.name, c.kind, s.uid, s.name, s.port, s.protocol,
                        CASE WHEN q.kind IN ('use-otp', 'use-get') THEN c.secret_env END,
                        c.username_env, c.url_env, c.notes_env,
                        CASE WHEN q.kind <> 'use-show' THEN s.address_env END,
                        q.audit_seq, c.created_at, c.updated_at
        FROM credentials c LEFT JOIN systems s ON s.id = c.system_id
        WHERE c.id = q.target_id AND c.engagement_id = q.engagement_id;
END $$;

CREATE OR REPLACE FUNCTION credvault.fetch_record(request bigint)
RETURNS TABLE (uid bytea, name text, kind text, port integer, protocol text, sys_uid bytea,
               sys_name text, e1 bytea, e2 bytea, e3 bytea, e4 bytea, audit_seq bigint,
               created_at timestamptz, updated_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    -- before want: a request visible in this snapshot committed, its commit record
    -- inserted, before want was read (section early)
    snap pg_snapshot := pg_current_snapshot();
    want pg_lsn := pg_current_wal_insert_lsn();
    who text := me();
    q record_requests%ROWTYPE;
BEGIN
    SELECT * INTO q FROM record_requests r WHERE r.id = request FOR UPDATE;
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
    IF NOT pg_visible_in_snapshot(q.xid, snap) THEN
        RAISE EXCEPTION 'credvault: read request not yet durable (asynchronous commit?); retry'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM await_durable(want);
    IF NOT may(q.engagement_id, 'read')
       OR (q.kind LIKE 'rebind-%' AND NOT may(q.engagement_id, 'write')) THEN
        RAISE EXCEPTION 'credvault: access revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE record_requests SET used_at = clock_timestamp() WHERE id = q.id;
    IF q.kind = 'system' THEN
        RETURN QUERY SELECT s.uid, s.name, NULL::text, s.port, s.protocol, NULL::bytea, NULL::text,
                            s.address_env, s.details_env, NULL::bytea, NULL::bytea,
                            q.audit_seq, s.created_at, s.updated_at
            FROM systems s WHERE s.id = q.target_id AND s.engagement_id = q.engagement_id;
    ELSIF q.kind = 'credential-system' THEN
        RETURN QUERY SELECT s.uid, s.name, NULL::text, s.port, s.protocol, NULL::bytea, NULL::text,
                            s.address_env, NULL::bytea, NULL::bytea, NULL::bytea,
                            q.audit_seq, c.created_at, c.updated_at
            FROM credentials c LEFT JOIN systems s ON s.id = c.system_id
            WHERE c.id = q.target_id AND c.engagement_id = q.engagement_id;
    ELSIF q.kind = 'fields' THEN
        RETURN QUERY SELECT c.uid, c.name, c.kind, NULL::integer, NULL::text, s.uid, s.name,
                            NULL::bytea, c.username_env, c.url_env, c.notes_env,
                            q.audit_seq, c.created_at, c.updated_at
            FROM credentials c LEFT JOIN systems s ON s.id = c.system_id
            WHERE c.id = q.target_id AND c.engagement_id = q.engagement_id;
    ELSIF q.kind IN ('version', 'version-show') THEN
        RETURN QUERY SELECT v.uid, v.name, v.kind, NULL::integer, NULL::text, v.system_uid,
                            v.system_name,
                            CASE WHEN q.kind = 'version' THEN v.secret_env END,
                            v.username_env, v.url_env, v.notes_env,
                            q.audit_seq, c.created_at, v.created_at
            FROM credential_versions v LEFT JOIN credentials c ON c.id = v.credential_id
            WHERE v.id = q.target_id AND v.engagement_id = q.engagement_id;
    ELSIF q.kind LIKE 'rebind-%' THEN
        RETURN QUERY SELECT c.uid, c.name, c.kind, NULL::integer, NULL::text, s.uid, s.name,
                            c.secret_env, NULL::bytea, NULL::bytea, NULL::bytea,
                            q.audit_seq, c.created_at, c.updated_at
            FROM credentials c LEFT JOIN systems s ON s.id = c.system_id
            WHERE c.id = q.target_id AND c.engagement_id = q.engagement_id;
    END IF;
END $$;

CREATE OR REPLACE FUNCTION credvault.fetch_find(request bigint)
RETURNS TABLE (tbl text, name text, uid bytea, port integer, protocol text, e1 bytea,
               e2 bytea, e3 bytea)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    -- before want: a request visible in this snapshot committed, its commit record
    -- inserted, before want was read (section early)
    snap pg_snapshot := pg_current_snapshot();
    want pg_lsn := pg_current_wal_insert_lsn();
    who text := me();
    q record_requests%ROWTYPE;
BEGIN
    SELECT * INTO q FROM record_requests r WHERE r.id = request AND r.kind = 'find' FOR UPDATE;
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
    IF NOT pg_visible_in_snapshot(q.xid, snap) THEN
        RAISE EXCEPTION 'credvault: read request not yet durable (asynchronous commit?); retry'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM await_durable(want);
    IF NOT may(q.engagement_id, 'read') THEN
        RAISE EXCEPTION 'credvault: access revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE record_requests SET used_at = clock_timestamp() WHERE id = q.id;
    RETURN QUERY
        SELECT 'credentials'::text, c.name, c.uid, NULL::integer, NULL::text, c.username_env,
               c.url_env, c.notes_env
        FROM credentials c WHERE c.engagement_id = q.engagement_id
        UNION ALL
        SELECT 'systems', s.name, s.uid, s.port, s.protocol, s.address_env, s.details_env, NULL
        FROM systems s WHERE s.engagement_id = q.engagement_id
        ORDER BY 1, 2;
END $$;

CREATE OR REPLACE FUNCTION credvault.fetch_move(request bigint)
RETURNS TABLE (tbl text, id bigint, uid bytea, version integer, e1 bytea, e2 bytea, e3 bytea,
               e4 bytea, b_name text, b_kind text, b_sys_uid bytea)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    -- before want: a request visible in this snapshot committed, its commit record
    -- inserted, before want was read (section early)
    snap pg_snapshot := pg_current_snapshot();
    want pg_lsn := pg_current_wal_insert_lsn();
    who text := me();
    q move_requests%ROWTYPE;
BEGIN
    SELECT * INTO q FROM move_requests r WHERE r.id = request FOR UPDATE;
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
    IF NOT pg_visible_in_snapshot(q.xid, snap) THEN
        RAISE EXCEPTION 'credvault: read request not yet durable (asynchronous commit?); retry'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM await_durable(want);
    IF NOT may(q.engagement_id, 'write') OR NOT may(q.target_id, 'write') THEN
        RAISE EXCEPTION 'credvault: access revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE move_requests SET used_at = clock_timestamp() WHERE move_requests.id = q.id;
    RETURN QUERY
        SELECT 'credentials'::text, c.id, c.uid, c.version, c.secret_env, c.username_env,
               c.url_env, c.notes_env, c.name, c.kind, s.uid
        FROM credentials c LEFT JOIN systems s ON s.id = c.system_id
        WHERE c.id = q.credential_id AND c.engagement_id = q.engagement_id
        UNION ALL
        SELECT 'credential_versions', v.id, v.uid, v.version, v.secret_env, v.username_env,
               v.url_env, v.notes_env, v.name, v.kind, v.system_uid
        FROM credential_versions v
        WHERE v.credential_id = q.credential_id AND v.engagement_id = q.engagement_id
        ORDER BY 1, 4;
END $$;

CREATE OR REPLACE FUNCTION credvault.fetch_import(request bigint)
RETURNS TABLE (uid bytea, name text, port integer, protocol text, address_env bytea)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    -- before want: a request visible in this snapshot committed, its commit record
    -- inserted, before want was read (section early)
    snap pg_snapshot := pg_current_snapshot();
    want pg_lsn := pg_current_wal_insert_lsn();
    who text := me();
    q record_requests%ROWTYPE;
BEGIN
    SELECT * INTO q FROM record_requests r WHERE r.id = request FOR UPDATE;
    IF q.id IS NULL OR q.member <> who OR q.kind <> 'import-systems' THEN
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
    IF NOT pg_visible_in_snapshot(q.xid, snap) THEN
        RAISE EXCEPTION 'credvault: read request not yet durable (asynchronous commit?); retry'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM await_durable(want);
    IF NOT may(q.engagement_id, 'write') THEN
        RAISE EXCEPTION 'credvault: access revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE record_requests SET used_at = clock_timestamp() WHERE record_requests.id = q.id;
    RETURN QUERY SELECT s.uid, s.name, s.port, s.protocol, s.address_env
        FROM systems s WHERE s.engagement_id = q.engagement_id ORDER BY s.name;
END $$;

CREATE OR REPLACE FUNCTION credvault.fetch_export_records(request bigint)
RETURNS TABLE (tbl text, uid bytea, name text, kind text, version integer, port integer,
               protocol text, sys_uid bytea, sys_name text, e1 bytea, e2 bytea, e3 bytea,
               e4 bytea, created_at text, updated_at text, created_by text, changed text,
               deleted_at text, deleted_by text, expires_at text, label text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    -- before want: a request visible in this snapshot committed, its commit record
    -- inserted, before want was read (section early)
    snap pg_snapshot := pg_current_snapshot();
    want pg_lsn := pg_current_wal_insert_lsn();
    who text := me();
    q export_requests%ROWTYPE;
BEGIN
    SELECT * INTO q FROM export_requests r WHERE r.id = request FOR UPDATE;
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
    IF NOT pg_visible_in_snapshot(q.xid, snap) THEN
        RAISE EXCEPTION 'credvault: read request not yet durable (asynchronous commit?); retry'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM await_durable(want);
    IF NOT may(q.engagement_id, 'read') THEN
        RAISE EXCEPTION 'credvault: access revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE export_requests SET used_at = clock_timestamp() WHERE export_requests.id = q.id;
    RETURN QUERY
        SELECT 'systems'::text, s.uid, s.name, NULL::text, NULL::integer, s.port, s.protocol,
               NULL::bytea, NULL::text, s.address_env, s.details_env, NULL::bytea, NULL::bytea,
               iso(s.created_at), iso(s.updated_at), NULL::text, NULL::text, NULL::text,
               NULL::text, NULL::text, s.name
        FROM systems s WHERE s.engagement_id = q.engagement_id AND s.id = ANY (q.system_ids)
        ORDER BY s.name COLLATE "C";
    RETURN QUERY
        SELECT 'credential_versions'::text, v.uid, v.name, v.kind, v.version,
               NULL::integer, NULL::text, v.system_uid, v.system_name, v.secret_env,
               v.username_env, v.url_env, v.notes_env, iso(v.created_at), NULL::text,
               v.created_by, v.changed, NULL::text, NULL::text, NULL::text,
               coalesce(c.name, v.name)
        FROM credential_versions v LEFT JOIN credentials c ON c.id = v.credential_id
        WHERE v.engagement_id = q.engagement_id AND v.id = ANY (q.version_ids)
        ORDER BY v.id;
    RETURN QUERY
        SELECT x.tbl, x.uid, x.name, x.kind, NULL::integer, x.port, x.protocol, x.sys_uid,
               NULL::text, x.e1, x.e2, x.e3, x.e4, NULL::text, NULL::text, NULL::text,
               NULL::text, iso(x.deleted_at), x.deleted_by, iso(x.expires_at), x.name
        FROM (SELECT 'credential_trash'::text AS tbl, t.id, t.uid, t.name, t.kind,
                     NULL::integer AS port, NULL::text AS protocol, t.system_uid AS sys_uid,
                     t.secret_env AS e1, t.username_env AS e2, t.url_env AS e3,
                     t.notes_env AS e4, t.deleted_at, t.deleted_by, t.expires_at
              FROM credential_trash t
              WHERE t.engagement_id = q.engagement_id AND t.id = ANY (q.ctrash_ids)
              UNION ALL
              SELECT 'system_trash', t.id, t.uid, t.name, NULL, t.port, t.protocol, NULL,
                     t.address_env, t.details_env, NULL, NULL, t.deleted_at, t.deleted_by,
                     t.expires_at
              FROM system_trash t
              WHERE t.engagement_id = q.engagement_id AND t.id = ANY (q.strash_ids)) x
        ORDER BY x.deleted_at DESC, x.id DESC;
END $$;

CREATE OR REPLACE FUNCTION credvault.rotation_fetch_records(request bigint)
RETURNS TABLE (tbl text, id bigint, uid bytea, e1 bytea, e2 bytea, e3 bytea, e4 bytea,
               b_name text, b_kind text, b_port integer, b_protocol text, b_sys_uid bytea)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    -- before want: a request visible in this snapshot committed, its commit record
    -- inserted, before want was read (section early)
    snap pg_snapshot := pg_current_snapshot();
    want pg_lsn := pg_current_wal_insert_lsn();
    who text := me();
    q rotation_requests%ROWTYPE;
BEGIN
    SELECT * INTO q FROM rotation_requests r WHERE r.id = request FOR UPDATE;
    IF q.id IS NULL OR q.member <> who OR q.used_at IS NOT NULL
       OR q.created_at < clock_timestamp() - interval '60 seconds' THEN
        RAISE EXCEPTION 'credvault: no such rotation request' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF pg_xact_status(q.xid) IS DISTINCT FROM 'committed' THEN
        RAISE EXCEPTION 'credvault: rotation request not committed' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT pg_visible_in_snapshot(q.xid, snap) THEN
        RAISE EXCEPTION 'credvault: read request not yet durable (asynchronous commit?); retry'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM await_durable(want);
    IF NOT (is_admin() OR coalesce(role_in(q.engagement_id), '') = 'lead') THEN
        RAISE EXCEPTION 'credvault: no longer a lead' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE rotation_requests SET used_at = clock_timestamp() WHERE rotation_requests.id = q.id;
    RETURN QUERY
        SELECT 'credentials'::text, c.id, c.uid, c.secret_env, c.username_env, c.url_env,
               c.notes_env, c.name, c.kind, NULL::integer, NULL::text, s.uid
        FROM credentials c LEFT JOIN systems s ON s.id = c.system_id
        WHERE c.engagement_id = q.engagement_id
        UNION ALL
        SELECT 'systems', s.id, s.uid, s.address_env, s.details_env, NULL, NULL, s.name, NULL,
               s.port, s.protocol, NULL
        FROM systems s WHERE s.engagement_id = q.engagement_id
        UNION ALL
        SELECT 'system_trash', t.id, t.uid, t.address_env, t.details_env, NULL, NULL, t.name,
               NULL, t.port, t.protocol, NULL
        FROM system_trash t WHERE t.engagement_id = q.engagement_id
        UNION ALL
        SELECT 'credential_versions', v.id, v.uid, v.secret_env, v.username_env, v.url_env,
               v.notes_env, v.name, v.kind, NULL, NULL, v.system_uid
        FROM credential_versions v WHERE v.engagement_id = q.engagement_id
        UNION ALL
        SELECT 'credential_trash', t.id, t.uid, t.secret_env, t.username_env, t.url_env,
               t.notes_env, t.name, t.kind, NULL, NULL, t.system_uid
        FROM credential_trash t WHERE t.engagement_id = q.engagement_id
        ORDER BY 1, 2;
END $$;



-- == standbys: a read waits for as many synchronous standbys as the setting names ==
--
-- (docs/team.md "High availability".) With `synchronous_standby_names = 'FIRST 2 (s1, s2)'`
-- or `'ANY 2 (s1, s2, s3)'` the operator asks for every commit on two standbys. A session's
-- own `synchronous_commit = local` skips that wait, so release, fetch and every other
-- phase two check the standbys themselves before anything leaves, but they asked for ONE
-- standby with the request's WAL flushed: a member in such a session could have a secret
-- released while its 'get' entry was on the primary and one standby, where the operator's
-- setting promises two. Now the count the setting names (FIRST n, ANY n, n (...); a plain
-- list or '*' is one) of synchronous or quorum standbys must have flushed it; fewer
-- connected than that, the read waits and is refused as "not yet on the synchronous
-- standby", as PostgreSQL's own commits then wait.

CREATE FUNCTION credvault.standbys_have(want pg_lsn) RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    need integer := coalesce((regexp_match(current_setting('synchronous_standby_names'),
        '^\s*(?:(?:first|any)\s+)?([0-9]+)\s*\(', 'i'))[1]::integer, 1);
BEGIN
    RETURN (SELECT count(*) FROM pg_stat_replication r
            WHERE r.sync_state IN ('sync', 'quorum') AND r.flush_lsn >= want) >= need;
END $$;
REVOKE ALL ON FUNCTION credvault.standbys_have(pg_lsn) FROM PUBLIC;

CREATE OR REPLACE FUNCTION credvault.await_durable(want pg_lsn) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE tries integer := 0;
BEGIN
    WHILE pg_current_wal_flush_lsn() < want LOOP
        tries := tries + 1;
        IF tries > 25 THEN
            RAISE EXCEPTION 'credvault: read request not yet durable (asynchronous commit?); retry'
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        PERFORM pg_sleep(0.002);
    END LOOP;
    IF current_setting('synchronous_standby_names') <> '' THEN
        tries := 0;
        WHILE NOT standbys_have(want) LOOP
            tries := tries + 1;
            IF tries > 250 THEN
                RAISE EXCEPTION 'credvault: read request not yet on the synchronous standby; retry'
                    USING ERRCODE = 'object_not_in_prerequisite_state';
            END IF;
            PERFORM pg_sleep(0.002);
        END LOOP;
    END IF;
END $$;

-- == pinned: a read request releases the row versions it was made for, not later ones ==
--
-- (docs/team.md "Reading a secret".) A claimed request could be released again within its
-- 60 s (release is read-only; fetch's claim can be rolled back and fetched again), and
-- each time it returned the credential as it was THEN: a member who read a password once
-- could call release again after a lead's `put` and receive the new value under the entry
-- of the earlier read, at a time before the change. An investigator reading the trail
-- ("bob last read alpha/db before the rotation") would be wrong. Now request_read records
-- the row version it found (the row's xmin, which every UPDATE of the row changes: a put,
-- an edit, a rotation's re-sealing; a move or a restore makes a new row, whose requests
-- section rpreview deletes), and the linked system's row version too (sys_xmin; NULL
-- without a link): release and fetch return the linked system's sealed address from the
-- `systems` row, which `system set` writes without writing the credential's. release and
-- fetch return the row only when both versions are the ones found (IS NOT DISTINCT FROM:
-- no link then, none now), in the snapshot that decides the release (the same query).
-- Released again, a request gives what its entry already covers; a row written since is
-- refused as serialization_failure ("changed since the read request"), and the client
-- reads again: a new request, a new entry. That answer is given only while the request
-- still exists: a release racing an `mv` (the row made again under its id elsewhere, the
-- request deleted by rpreview's cascade) is refused as 'access revoked', as before.
-- A version is its xmin AND its ctid: every row version one transaction writes carries
-- that transaction's xmin, so a member who wrote alpha/db, asked to read it and wrote it
-- again (put, edit, revert, system set), all in one transaction, would have found version
-- A and been released version B under A's entry, dated before B's write; a version's own
-- place (ctid) tells them apart (an UPDATE makes a new tuple elsewhere, and the one it
-- replaced keeps its place until the writing transaction has ended). VACUUM (freezing,
-- pruning) keeps a live tuple's xmin and place: released as before; VACUUM FULL or CLUSTER
-- (the owner's) move it: refused once, and the client asks again. Requests made before
-- this section carry no versions and release nothing (the client reads again). (Found by
-- two reviews, helpers pinrev and pinrev2: the system row, the race with mv, the freeze,
-- the two writes of one transaction.)

ALTER TABLE credvault.read_requests ADD COLUMN cred_xmin xid, ADD COLUMN sys_xmin xid,
    ADD COLUMN cred_ctid tid, ADD COLUMN sys_ctid tid;

CREATE OR REPLACE FUNCTION credvault.request_read(eng text, itm text, reason text DEFAULT '')
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text;
    eid bigint;
    need_reason boolean;
    r text;
    cid bigint;
    why text := coalesce(reason, '');
    s bigint;
    rid bigint;
BEGIN
    -- me(), the engagement (active or closed), role_in() and the credential, in one query:
    -- at most one row (members.role_name, engagements.name, grants' and credentials' keys
    -- are unique); a missing engagement leaves role and credential NULL.
    SELECT m.name, e.id, e.require_reason, g.role, c.id INTO who, eid, need_reason, r, cid
    FROM members m
    LEFT JOIN engagements e ON e.name = eng AND e.state IN ('active', 'closed')
    LEFT JOIN grants g ON g.engagement_id = e.id AND g.member = m.name
         AND g.revoked_at IS NULL AND (g.expires_at IS NULL OR g.expires_at > now())
    LEFT JOIN credentials c ON c.engagement_id = e.id AND c.name = itm
    WHERE m.role_name = session_user AND m.state = 'active';
    IF who IS NULL THEN
        RAISE EXCEPTION 'credvault: % is not an active member', session_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF r IS NULL OR r NOT IN ('lead', 'engineer', 'reader') THEN
        -- held()'s words: 'role auditor', or 'no grant'
        PERFORM audit_append(who, 'get', eng, itm, 'denied', coalesce('role ' || r, 'no grant'));
        RETURN NULL;
    END IF;
    IF need_reason AND why = '' THEN
        PERFORM audit_append(who, 'get', eng, itm, 'denied', 'this engagement requires --reason');
        RETURN NULL;
    END IF;
    IF cid IS NULL THEN
        PERFORM audit_append(who, 'get', eng, itm, 'error', 'not found');
        RETURN NULL;
    END IF;
    s := audit_append(who, 'get', eng, itm, 'ok', CASE WHEN why = '' THEN '' ELSE 'reason: ' || why END);
    -- Still the row the query above found, seen after the chain's lock (a statement of its
    -- own: a fresh snapshot): an `mv` to another engagement committed while this waited for
    -- the lock leaves a row under the same id elsewhere, an `rm` none; this request must not
    -- name either (section rpreview). Then nothing is kept, the audit row included.
    -- (and the row version it found, which alone may be released under this entry:
    -- section pinned; and its linked system's row version; both with their places)
    INSERT INTO read_requests (member, credential_id, audit_seq, xid, cred_xmin, sys_xmin,
                               cred_ctid, sys_ctid)
    SELECT who, c.id, s, pg_current_xact_id(), c.xmin, sy.xmin, c.ctid, sy.ctid
    FROM credentials c
    LEFT JOIN systems sy ON sy.id = c.system_id
    WHERE c.id = cid AND c.engagement_id = eid AND c.name = itm
    RETURNING id INTO rid;
    IF rid IS NULL THEN
        RAISE EXCEPTION 'credvault: %/% changed meanwhile; run the command again', eng, itm
            USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN rid;
END $$;

CREATE OR REPLACE FUNCTION credvault.release(request bigint)
RETURNS TABLE (secret_env bytea, username_env bytea, url_env bytea, notes_env bytea,
               key_version integer, uid bytea, kind text, audit_seq bigint,
               created_at timestamptz, updated_at timestamptz, sys_uid bytea, sys_name text,
               port integer, protocol text, address_env bytea)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    q read_requests%ROWTYPE;
    tries integer := 0;
BEGIN
    SELECT rq.* INTO q FROM read_requests rq
    WHERE rq.id = request AND rq.claim_lsn IS NOT NULL
      AND rq.member = (SELECT m.name FROM members m
                       WHERE m.role_name = session_user AND m.state = 'active')
      AND rq.created_at >= clock_timestamp() - interval '60 seconds';
    IF q.id IS NULL THEN
        IF NOT EXISTS (SELECT 1 FROM members m WHERE m.role_name = session_user AND m.state = 'active') THEN
            RAISE EXCEPTION 'credvault: % is not an active member', session_user
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RAISE EXCEPTION 'credvault: no such claimed read request (or expired)'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF pg_xact_status(q.claim_xid) IS DISTINCT FROM 'committed' THEN
        RAISE EXCEPTION 'credvault: read request claim not committed' USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- durability of the request, as section readclaim: claim_lsn lies after its commit record
    WHILE pg_current_wal_flush_lsn() < q.claim_lsn LOOP
        tries := tries + 1;
        IF tries > 10 THEN
            RAISE EXCEPTION 'credvault: read request not yet durable (asynchronous commit?); retry'
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        PERFORM pg_sleep(0.001);
    END LOOP;
    IF current_setting('synchronous_standby_names') <> '' THEN
        tries := 0;
        WHILE NOT standbys_have(q.claim_lsn) LOOP  -- as many as the setting asks (section standbys)
            tries := tries + 1;
            IF tries > 500 THEN
                RAISE EXCEPTION 'credvault: read request not yet on the synchronous standby; retry'
                    USING ERRCODE = 'object_not_in_prerequisite_state';
            END IF;
            PERFORM pg_sleep(0.001);
        END LOOP;
    END IF;
    -- one snapshot for the request, the member, the role and the row: a credential deleted
    -- and made again under the same id since the statement above (mv, the trash's restore)
    -- took its requests with it (section rpreview), so nothing comes back
    RETURN QUERY SELECT c.secret_env, c.username_env, c.url_env, c.notes_env, c.key_version,
                        c.uid, c.kind, rq.audit_seq, c.created_at, c.updated_at,
                        s.uid, s.name, s.port, s.protocol, s.address_env
        FROM read_requests rq
        JOIN members m ON m.name = rq.member AND m.role_name = session_user AND m.state = 'active'
        JOIN credentials c ON c.id = rq.credential_id
        JOIN grants g ON g.engagement_id = c.engagement_id AND g.member = rq.member
             AND g.revoked_at IS NULL AND (g.expires_at IS NULL OR g.expires_at > now())
             AND g.role IN ('lead', 'engineer', 'reader')
        LEFT JOIN systems s ON s.id = c.system_id
        WHERE rq.id = q.id AND rq.claim_xid = q.claim_xid AND c.xmin = rq.cred_xmin
          AND s.xmin IS NOT DISTINCT FROM rq.sys_xmin
          AND c.ctid = rq.cred_ctid AND s.ctid IS NOT DISTINCT FROM rq.sys_ctid;
    IF NOT FOUND THEN
        -- the row or its system's written since the request (put, edit, rotation, system
        -- set): its entry names an earlier value; a new request (a new entry) reads this
        -- one. A request gone with its row (mv, restore: section rpreview) is refused as
        -- before section pinned, not read again.
        IF EXISTS (SELECT 1 FROM read_requests rq JOIN credentials c ON c.id = rq.credential_id
                   LEFT JOIN systems s ON s.id = c.system_id
                   WHERE rq.id = q.id
                   AND ((c.xmin = q.cred_xmin) IS NOT TRUE OR s.xmin IS DISTINCT FROM q.sys_xmin
                        OR (c.ctid = q.cred_ctid) IS NOT TRUE
                        OR s.ctid IS DISTINCT FROM q.sys_ctid)) THEN
            RAISE EXCEPTION 'credvault: the credential changed since the read request; run the command again'
                USING ERRCODE = 'serialization_failure';
        END IF;
        RAISE EXCEPTION 'credvault: access revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
END $$;

CREATE OR REPLACE FUNCTION credvault.fetch(request bigint)
RETURNS TABLE (secret_env bytea, username_env bytea, url_env bytea, notes_env bytea,
               key_version integer, uid bytea, kind text, audit_seq bigint,
               created_at timestamptz, updated_at timestamptz, sys_uid bytea, sys_name text,
               port integer, protocol text, address_env bytea)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    -- before want: a request visible in this snapshot committed, its commit record
    -- inserted, before want was read (section early)
    snap pg_snapshot := pg_current_snapshot();
    -- taken first, before this function writes anything (the claim below is WAL too)
    want pg_lsn := pg_current_wal_insert_lsn();
    who text;
    q read_requests%ROWTYPE;
    tries integer := 0;
BEGIN
    -- The claim: the caller's own, unused, recent request, marked used (rolled back with
    -- everything else if a check below refuses). A concurrent claim of the same request
    -- waits for the row and then finds it used.
    UPDATE read_requests rq SET used_at = clock_timestamp()
    WHERE rq.id = request AND rq.used_at IS NULL
      AND rq.member = (SELECT m.name FROM members m
                       WHERE m.role_name = session_user AND m.state = 'active')
      AND rq.created_at >= clock_timestamp() - interval '60 seconds'
    RETURNING rq.* INTO q;
    IF q.id IS NULL THEN
        -- refused: say why, in version 2's words and order
        SELECT m.name INTO who FROM members m WHERE m.role_name = session_user AND m.state = 'active';
        IF who IS NULL THEN
            RAISE EXCEPTION 'credvault: % is not an active member', session_user
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        SELECT * INTO q FROM read_requests rq WHERE rq.id = request;
        IF q.id IS NULL OR q.member <> who THEN
            RAISE EXCEPTION 'credvault: no such read request' USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF q.used_at IS NOT NULL THEN
            RAISE EXCEPTION 'credvault: read request already used' USING ERRCODE = 'insufficient_privilege';
        END IF;
        RAISE EXCEPTION 'credvault: read request expired' USING ERRCODE = 'insufficient_privilege';
    END IF;
    who := q.member;
    IF pg_xact_status(q.xid) IS DISTINCT FROM 'committed' THEN
        RAISE EXCEPTION 'credvault: read request not committed' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT pg_visible_in_snapshot(q.xid, snap) THEN
        RAISE EXCEPTION 'credvault: read request not yet durable (asynchronous commit?); retry'
            USING ERRCODE = 'object_not_in_prerequisite_state';
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
    -- With synchronous standbys configured, the request must be flushed on them too.
    IF current_setting('synchronous_standby_names') <> '' THEN
        tries := 0;
        WHILE NOT standbys_have(want) LOOP  -- as many as the setting asks (section standbys)
            tries := tries + 1;
            IF tries > 500 THEN
                RAISE EXCEPTION 'credvault: read request not yet on the synchronous standby; retry'
                    USING ERRCODE = 'object_not_in_prerequisite_state';
            END IF;
            PERFORM pg_sleep(0.001);
        END LOOP;
    END IF;
    -- role_in() folded in: a reading role held now (a revoked, expired or changed grant, or a
    -- credential gone since the request, returns nothing)
    RETURN QUERY SELECT c.secret_env, c.username_env, c.url_env, c.notes_env, c.key_version,
                        c.uid, c.kind, q.audit_seq, c.created_at, c.updated_at,
                        s.uid, s.name, s.port, s.protocol, s.address_env
        FROM credentials c
        JOIN grants g ON g.engagement_id = c.engagement_id AND g.member = who
             AND g.revoked_at IS NULL AND (g.expires_at IS NULL OR g.expires_at > now())
             AND g.role IN ('lead', 'engineer', 'reader')
        LEFT JOIN systems s ON s.id = c.system_id
        WHERE c.id = q.credential_id AND c.xmin = q.cred_xmin
          AND s.xmin IS NOT DISTINCT FROM q.sys_xmin
          AND c.ctid = q.cred_ctid AND s.ctid IS NOT DISTINCT FROM q.sys_ctid;
    IF NOT FOUND THEN
        -- the row or its system's written since the request (put, edit, rotation, system
        -- set): its entry names an earlier value; a new request (a new entry) reads this
        -- one. A request gone with its row (mv, restore: section rpreview) is refused as
        -- before section pinned, not read again.
        IF EXISTS (SELECT 1 FROM read_requests rq JOIN credentials c ON c.id = rq.credential_id
                   LEFT JOIN systems s ON s.id = c.system_id
                   WHERE rq.id = q.id
                   AND ((c.xmin = q.cred_xmin) IS NOT TRUE OR s.xmin IS DISTINCT FROM q.sys_xmin
                        OR (c.ctid = q.cred_ctid) IS NOT TRUE
                        OR s.ctid IS DISTINCT FROM q.sys_ctid)) THEN
            RAISE EXCEPTION 'credvault: the credential changed since the read request; run the command again'
                USING ERRCODE = 'serialization_failure';
        END IF;
        RAISE EXCEPTION 'credvault: access revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
END $$;

-- The same for `otp`, `run` and `ssh` (request_use and fetch_use, section pgdaily): the row
-- versions found by request_use, in record_requests; fetch_use returns those only, else
-- 40001 and the client asks again. fetch_use's other kinds of release are unchanged.

ALTER TABLE credvault.record_requests ADD COLUMN target_xmin xid, ADD COLUMN sys_xmin xid,
    ADD COLUMN target_ctid tid, ADD COLUMN sys_ctid tid;

CREATE OR REPLACE FUNCTION credvault.request_use(
    k text, eng text, itm text, reason text DEFAULT '', via text DEFAULT ''
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text := me();
    e engagements%ROWTYPE;
    act text;
    cid bigint;
    cx xid;
    sx xid;
    ct tid;
    st tid;
    why text := coalesce(reason, '');
    said text;
    detail text;
    s bigint;
    rid bigint;
BEGIN
    act := CASE k WHEN 'otp' THEN 'otp' WHEN 'get' THEN 'get'
                  WHEN 'show' THEN 'show' WHEN 'show-system' THEN 'show' END;
    IF act IS NULL THEN
        RAISE EXCEPTION 'credvault: unknown kind of use %', k USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO e FROM engagements WHERE name = eng AND state IN ('active', 'closed');
    IF e.id IS NULL OR NOT may(e.id, 'read') THEN
        PERFORM audit_append(who, act, eng, itm, 'denied', held(e.id));
        RETURN NULL;
    END IF;
    IF e.require_reason AND why = '' THEN  -- the command's name is no reason
        PERFORM audit_append(who, act, eng, itm, 'denied', 'this engagement requires --reason');
        RETURN NULL;
    END IF;
    -- what the detail says: the command, then the member's own reason (200 characters,
    -- validate.reason's limit, as SQLCipher cuts it)
    said := CASE WHEN coalesce(via, '') = '' THEN why
                 ELSE left(via || CASE WHEN why = '' THEN '' ELSE ': ' || why END, 200) END;
    detail := CASE k
        WHEN 'show' THEN 'fields without the secret'
                         || CASE WHEN said = '' THEN '' ELSE '; reason: ' || said END
        WHEN 'show-system' THEN 'system address and port, without the secret'
                         || CASE WHEN said = '' THEN '' ELSE '; reason: ' || said END
        ELSE CASE WHEN said = '' THEN '' ELSE 'reason: ' || said END END;
    -- and the versions of the row and of its linked system's row, which alone may be
    -- released under this entry, with their places (section pinned)
    SELECT c.id, c.xmin, sy.xmin, c.ctid, sy.ctid INTO cid, cx, sx, ct, st FROM credentials c
    LEFT JOIN systems sy ON sy.id = c.system_id
    WHERE c.engagement_id = e.id AND c.name = itm;
    IF cid IS NULL THEN
        PERFORM audit_append(who, act, eng, itm, 'error', 'not found');
        RETURN NULL;
    END IF;
    s := audit_append(who, act, eng, itm, 'ok', detail);
    INSERT INTO record_requests (member, kind, engagement_id, target_id, audit_seq, xid,
                                 target_xmin, sys_xmin, target_ctid, sys_ctid)
    VALUES (who, 'use-' || k, e.id, cid, s, pg_current_xact_id(), cx, sx, ct, st)
    RETURNING id INTO rid;
    RETURN rid;
END $$;

CREATE OR REPLACE FUNCTION credvault.fetch_use(request bigint)
RETURNS TABLE (uid bytea, name text, kind text, sys_uid bytea, sys_name text, port integer,
               protocol text, secret_env bytea, username_env bytea, url_env bytea,
               notes_env bytea, address_env bytea, audit_seq bigint,
               created_at timestamptz, updated_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    -- before want: a request visible in this snapshot committed, its commit record
    -- inserted, before want was read (section early)
    snap pg_snapshot := pg_current_snapshot();
    want pg_lsn := pg_current_wal_insert_lsn();
    who text := me();
    q record_requests%ROWTYPE;
BEGIN
    SELECT * INTO q FROM record_requests r WHERE r.id = request FOR UPDATE;
    IF q.id IS NULL OR q.member <> who OR q.kind NOT LIKE 'use-%' THEN
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
    IF NOT pg_visible_in_snapshot(q.xid, snap) THEN
        RAISE EXCEPTION 'credvault: read request not yet durable (asynchronous commit?); retry'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM await_durable(want);
    IF NOT may(q.engagement_id, 'read') THEN
        RAISE EXCEPTION 'credvault: access revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE record_requests SET used_at = clock_timestamp() WHERE id = q.id;
    RETURN QUERY SELECT c.uid, c.name, c.kind, s.uid, s.name, s.port, s.protocol,
                        CASE WHEN q.kind IN ('use-otp', 'use-get') THEN c.secret_env END,
                        c.username_env, c.url_env, c.notes_env,
                        CASE WHEN q.kind <> 'use-show' THEN s.address_env END,
                        q.audit_seq, c.created_at, c.updated_at
        FROM credentials c LEFT JOIN systems s ON s.id = c.system_id
        WHERE c.id = q.target_id AND c.engagement_id = q.engagement_id
          AND c.xmin = q.target_xmin AND s.xmin IS NOT DISTINCT FROM q.sys_xmin
          AND c.ctid = q.target_ctid AND s.ctid IS NOT DISTINCT FROM q.sys_ctid;
    IF NOT FOUND AND EXISTS (SELECT 1 FROM credentials c
                             WHERE c.id = q.target_id AND c.engagement_id = q.engagement_id) THEN
        -- the row (or its system's) written since the request: its entry names an earlier
        -- value; a new request (a new entry) reads this one (section pinned). A row gone
        -- still returns nothing, as before (the client says not found).
        RAISE EXCEPTION 'credvault: the credential changed since the read request; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
END $$;


-- The same for `get --field`, `system show`, a credential's system address and the rebind
-- reads of mv and edit (request_record and fetch_record, section pgcmds): request_record
-- records the versions it found (the system's row for 'system'; the credential's and its
-- system's for the others; none for an earlier version, which never changes) and
-- fetch_record releases only those, else 40001 and the client asks again
-- (PgStore.record).

CREATE OR REPLACE FUNCTION credvault.request_record(
    k text, eng text, itm text, reason text DEFAULT '', ver integer DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text := me();
    e engagements%ROWTYPE;
    act text;
    cid bigint;
    tid bigint;
    tx xid;
    tc tid;
    sx xid;
    sc tid;
    why text := coalesce(reason, '');
    detail text;
    s bigint;
    rid bigint;
BEGIN
    act := CASE k WHEN 'system' THEN 'system-show' WHEN 'credential-system' THEN 'show'
                  WHEN 'fields' THEN 'show'
                  WHEN 'version' THEN 'get' WHEN 'version-show' THEN 'show'
                  -- a credential's secret, to seal it again bound to its new name (mv) or
                  -- kind and link (edit): the client then stores it with the change, which
                  -- the mv or edit function audits under its own name
                  WHEN 'rebind-mv' THEN 'rebind' WHEN 'rebind-edit' THEN 'rebind' END;
    IF act IS NULL OR (k LIKE 'version%' AND ver IS NULL) THEN
        RAISE EXCEPTION 'credvault: unknown kind of record %', k USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO e FROM engagements WHERE name = eng
        AND (state = 'active' OR (state = 'closed' AND k NOT LIKE 'rebind-%'));
    IF e.id IS NULL OR NOT may(e.id, 'read') OR (k LIKE 'rebind-%' AND NOT may(e.id, 'write')) THEN
        -- audited under the operation's verb, as SQLCipher does (access.py)
        PERFORM audit_append(who, CASE k WHEN 'system' THEN 'system show' ELSE act END,
                             eng, itm, 'denied', held(e.id));
        RETURN NULL;
    END IF;
    IF e.require_reason AND why = '' AND k NOT LIKE 'rebind-%' THEN
        PERFORM audit_append(who, act, eng, itm, 'denied', 'this engagement requires --reason');
        RETURN NULL;
    END IF;
    IF k = 'system' THEN
        -- and the versions found, which alone may be released under this entry (section
        -- pinned): the system's row; for the others the credential's and its system's
        SELECT sy.id, sy.xmin, sy.ctid INTO tid, tx, tc FROM systems sy
        WHERE sy.engagement_id = e.id AND sy.name = itm;
        detail := CASE WHEN why = '' THEN '' ELSE 'reason: ' || why END;
    ELSE
        SELECT c.id, c.xmin, c.ctid, sy.xmin, sy.ctid INTO cid, tx, tc, sx, sc
        FROM credentials c LEFT JOIN systems sy ON sy.id = c.system_id
        WHERE c.engagement_id = e.id AND c.name = itm;
        tid := cid;
        detail := CASE k
            WHEN 'credential-system' THEN 'system address and port, without the secret'
            WHEN 'fields' THEN 'fields without the secret'
            WHEN 'version' THEN format('version %s', ver)
            WHEN 'rebind-mv' THEN 'secret released to seal it again for its new name'
            WHEN 'rebind-edit' THEN 'secret released to seal it again for its new kind or link'
            ELSE format('version %s: fields without the secret', ver) END
            || CASE WHEN why = '' THEN '' ELSE '; reason: ' || why END;
    END IF;
    IF tid IS NULL THEN
        PERFORM audit_append(who, act, eng, itm, 'error', 'not found');
        RETURN NULL;
    END IF;
    IF k LIKE 'version%' THEN
        SELECT v.id INTO tid FROM credential_versions v WHERE v.credential_id = cid AND v.version = ver;
        IF tid IS NULL THEN
            PERFORM audit_append(who, act, eng, itm, 'error', format('no version %s', ver));
            RETURN NULL;
        END IF;
    END IF;
    s := audit_append(who, act, eng, itm, 'ok', detail);
    INSERT INTO record_requests (member, kind, engagement_id, target_id, audit_seq, xid,
                                 target_xmin, target_ctid, sys_xmin, sys_ctid)
    VALUES (who, k, e.id, tid, s, pg_current_xact_id(), tx, tc, sx, sc) RETURNING id INTO rid;
    RETURN rid;
END $$;

CREATE OR REPLACE FUNCTION credvault.fetch_record(request bigint)
RETURNS TABLE (uid bytea, name text, kind text, port integer, protocol text, sys_uid bytea,
               sys_name text, e1 bytea, e2 bytea, e3 bytea, e4 bytea, audit_seq bigint,
               created_at timestamptz, updated_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    -- before want: a request visible in this snapshot committed, its commit record
    -- inserted, before want was read (section early)
    snap pg_snapshot := pg_current_snapshot();
    want pg_lsn := pg_current_wal_insert_lsn();
    who text := me();
    q record_requests%ROWTYPE;
BEGIN
    SELECT * INTO q FROM record_requests r WHERE r.id = request FOR UPDATE;
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
    IF NOT pg_visible_in_snapshot(q.xid, snap) THEN
        RAISE EXCEPTION 'credvault: read request not yet durable (asynchronous commit?); retry'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM await_durable(want);
    IF NOT may(q.engagement_id, 'read')
       OR (q.kind LIKE 'rebind-%' AND NOT may(q.engagement_id, 'write')) THEN
        RAISE EXCEPTION 'credvault: access revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE record_requests SET used_at = clock_timestamp() WHERE id = q.id;
    IF q.kind = 'system' THEN
        RETURN QUERY SELECT s.uid, s.name, NULL::text, s.port, s.protocol, NULL::bytea, NULL::text,
                            s.address_env, s.details_env, NULL::bytea, NULL::bytea,
                            q.audit_seq, s.created_at, s.updated_at
            FROM systems s WHERE s.id = q.target_id AND s.engagement_id = q.engagement_id
            AND s.xmin = q.target_xmin AND s.ctid = q.target_ctid;
    ELSIF q.kind = 'credential-system' THEN
        RETURN QUERY SELECT s.uid, s.name, NULL::text, s.port, s.protocol, NULL::bytea, NULL::text,
                            s.address_env, NULL::bytea, NULL::bytea, NULL::bytea,
                            q.audit_seq, c.created_at, c.updated_at
            FROM credentials c LEFT JOIN systems s ON s.id = c.system_id
            WHERE c.id = q.target_id AND c.engagement_id = q.engagement_id
            AND c.xmin = q.target_xmin AND c.ctid = q.target_ctid
            AND s.xmin IS NOT DISTINCT FROM q.sys_xmin AND s.ctid IS NOT DISTINCT FROM q.sys_ctid;
    ELSIF q.kind = 'fields' THEN
        RETURN QUERY SELECT c.uid, c.name, c.kind, NULL::integer, NULL::text, s.uid, s.name,
                            NULL::bytea, c.username_env, c.url_env, c.notes_env,
                            q.audit_seq, c.created_at, c.updated_at
            FROM credentials c LEFT JOIN systems s ON s.id = c.system_id
            WHERE c.id = q.target_id AND c.engagement_id = q.engagement_id
            AND c.xmin = q.target_xmin AND c.ctid = q.target_ctid
            AND s.xmin IS NOT DISTINCT FROM q.sys_xmin AND s.ctid IS NOT DISTINCT FROM q.sys_ctid;
    ELSIF q.kind IN ('version', 'version-show') THEN
        RETURN QUERY SELECT v.uid, v.name, v.kind, NULL::integer, NULL::text, v.system_uid,
                            v.system_name,
                            CASE WHEN q.kind = 'version' THEN v.secret_env END,
                            v.username_env, v.url_env, v.notes_env,
                            q.audit_seq, c.created_at, v.created_at
            FROM credential_versions v LEFT JOIN credentials c ON c.id = v.credential_id
            WHERE v.id = q.target_id AND v.engagement_id = q.engagement_id;
    ELSIF q.kind LIKE 'rebind-%' THEN
        RETURN QUERY SELECT c.uid, c.name, c.kind, NULL::integer, NULL::text, s.uid, s.name,
                            c.secret_env, NULL::bytea, NULL::bytea, NULL::bytea,
                            q.audit_seq, c.created_at, c.updated_at
            FROM credentials c LEFT JOIN systems s ON s.id = c.system_id
            WHERE c.id = q.target_id AND c.engagement_id = q.engagement_id
            AND c.xmin = q.target_xmin AND c.ctid = q.target_ctid
            AND s.xmin IS NOT DISTINCT FROM q.sys_xmin AND s.ctid IS NOT DISTINCT FROM q.sys_ctid;
    END IF;
    -- the row (or its system's) written since the request: its entry names an earlier
    -- value; a new request (a new entry) reads this one (section pinned). A row gone still
    -- returns nothing, as before; an earlier version never changes.
    IF NOT FOUND AND q.kind NOT LIKE 'version%'
       AND ((q.kind = 'system' AND EXISTS (SELECT 1 FROM systems s WHERE s.id = q.target_id
                                           AND s.engagement_id = q.engagement_id))
            OR (q.kind <> 'system' AND EXISTS (SELECT 1 FROM credentials c
                                               WHERE c.id = q.target_id
                                               AND c.engagement_id = q.engagement_id))) THEN
        RAISE EXCEPTION 'credvault: the record changed since the read request; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
END $$;

-- == pinmany: the phase twos that release many rows release the versions their request found ==
--
-- (docs/team.md "Reading a secret".) Section pinned made every one-row read release the row
-- version its request found. The five phase twos that release many rows at once did not:
-- a field search (fetch_find), a client export (fetch_export_records), import's read of the
-- systems' addresses (fetch_import), a move across engagements (fetch_move) and a
-- rotation's read (rotation_fetch_records). Called inside a transaction and rolled back,
-- then called again within the minute, each returned the rows as they stood THEN: values
-- written in between, under the entries made before them. And a rotation stored what its
-- read had released without asking whether a row had been written since: a `system set`
-- (or an `edit`) landing between rotation_fetch_records and rotate_records was undone, its
-- row given the old envelopes re-sealed; an address sealed for the old port no longer
-- opened for the new one, and every later read of that system failed as tampering.
--
-- Now each request records the versions it found: `pins`, one text per row, pin(table, id,
-- xmin, ctid) (a version is its xmin and its place: section pinned), sorted. The phase two
-- returns only the rows whose version is pinned, in the query that releases them, and
-- counts them: fewer than the request pinned (a row written, removed or moved since) is
-- refused as serialization_failure ("changed since the read request"), which rolls back
-- the claim and every row returned; the client asks again under a new request and a new
-- entry (PgStore.asked_again). A row made since is not released: the request's entries do
-- not name it. Requests made before this section carry no pins and release nothing.
-- rotate_records now takes the rotation's request and stores nothing unless every record of
-- the engagement is still at the version that request pinned (serialization_failure: the
-- client rotates again from a fresh read, as for any write in between).

ALTER TABLE credvault.record_requests ADD COLUMN pins text[];
ALTER TABLE credvault.move_requests ADD COLUMN pins text[];
ALTER TABLE credvault.export_requests ADD COLUMN pins text[];
ALTER TABLE credvault.rotation_requests ADD COLUMN pins text[];

-- A row version's name: its table, id, xmin and ctid. Plain SQL (inlined where it is used).
CREATE FUNCTION credvault.pin(tbl text, id bigint, x xid, t tid) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT tbl || ':' || id::text || ':' || x::text || ':' || t::text $$;
REVOKE ALL ON FUNCTION credvault.pin(text, bigint, xid, tid) FROM PUBLIC;

-- Every record of an engagement, as pins sorted (a rotation re-seals all of them).
CREATE FUNCTION credvault.engagement_pins(eid bigint) RETURNS text[]
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    RETURN (SELECT coalesce(array_agg(x.p ORDER BY x.p COLLATE "C"), '{}') FROM (
        SELECT pin('credentials', c.id, c.xmin, c.ctid) FROM credentials c
            WHERE c.engagement_id = eid
        UNION ALL SELECT pin('systems', s.id, s.xmin, s.ctid) FROM systems s
            WHERE s.engagement_id = eid
        UNION ALL SELECT pin('system_trash', t.id, t.xmin, t.ctid) FROM system_trash t
            WHERE t.engagement_id = eid
        UNION ALL SELECT pin('credential_versions', v.id, v.xmin, v.ctid)
            FROM credential_versions v WHERE v.engagement_id = eid
        UNION ALL SELECT pin('credential_trash', t.id, t.xmin, t.ctid) FROM credential_trash t
            WHERE t.engagement_id = eid) x(p));
END $$;
REVOKE ALL ON FUNCTION credvault.engagement_pins(bigint) FROM PUBLIC;

CREATE OR REPLACE FUNCTION credvault.request_find(eng text, reason text DEFAULT '') RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; why text := coalesce(reason, ''); s bigint; rid bigint;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state IN ('active', 'closed');
    IF e.id IS NULL OR NOT may(e.id, 'read') THEN
        PERFORM audit_append(who, 'find', eng, NULL, 'denied', held(e.id));
        RETURN NULL;
    END IF;
    IF e.require_reason AND why = '' THEN
        PERFORM audit_append(who, 'find', eng, NULL, 'denied', 'this engagement requires --reason');
        RETURN NULL;
    END IF;
    s := audit_append(who, 'find', eng, NULL, 'ok',
                      'fields searched' || CASE WHEN why = '' THEN '' ELSE '; reason: ' || why END);
    INSERT INTO record_requests (member, kind, engagement_id, target_id, audit_seq, xid, pins)
    SELECT who, 'find', e.id, e.id, s, pg_current_xact_id(),
           (SELECT coalesce(array_agg(x.p ORDER BY x.p COLLATE "C"), '{}') FROM (
                SELECT pin('credentials', c.id, c.xmin, c.ctid) FROM credentials c
                    WHERE c.engagement_id = e.id
                UNION ALL SELECT pin('systems', y.id, y.xmin, y.ctid) FROM systems y
                    WHERE y.engagement_id = e.id) x(p))
    RETURNING id INTO rid;
    RETURN rid;
END $$;

CREATE OR REPLACE FUNCTION credvault.fetch_find(request bigint)
RETURNS TABLE (tbl text, name text, uid bytea, port integer, protocol text, e1 bytea,
               e2 bytea, e3 bytea)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    -- before want: a request visible in this snapshot committed, its commit record
    -- inserted, before want was read (section early)
    snap pg_snapshot := pg_current_snapshot();
    want pg_lsn := pg_current_wal_insert_lsn();
    who text := me();
    q record_requests%ROWTYPE;
    n bigint;
BEGIN
    SELECT * INTO q FROM record_requests r WHERE r.id = request AND r.kind = 'find' FOR UPDATE;
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
    IF NOT pg_visible_in_snapshot(q.xid, snap) THEN
        RAISE EXCEPTION 'credvault: read request not yet durable (asynchronous commit?); retry'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM await_durable(want);
    IF NOT may(q.engagement_id, 'read') THEN
        RAISE EXCEPTION 'credvault: access revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE record_requests SET used_at = clock_timestamp() WHERE id = q.id;
    RETURN QUERY
        SELECT 'credentials'::text, c.name, c.uid, NULL::integer, NULL::text, c.username_env,
               c.url_env, c.notes_env
        FROM credentials c WHERE c.engagement_id = q.engagement_id
            AND pin('credentials', c.id, c.xmin, c.ctid) IN (SELECT unnest(q.pins))
        UNION ALL
        SELECT 'systems', s.name, s.uid, s.port, s.protocol, s.address_env, s.details_env, NULL
        FROM systems s WHERE s.engagement_id = q.engagement_id
            AND pin('systems', s.id, s.xmin, s.ctid) IN (SELECT unnest(q.pins))
        ORDER BY 1, 2;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n IS DISTINCT FROM cardinality(q.pins)::bigint THEN
        RAISE EXCEPTION 'credvault: records changed since the read request; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
END $$;

CREATE OR REPLACE FUNCTION credvault.request_import(eng text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; p text[]; s bigint; rid bigint;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state <> 'purged';
    IF e.id IS NULL OR NOT may(e.id, 'write') THEN
        PERFORM audit_append(who, 'import', eng, NULL, 'denied', held(e.id));
        RETURN NULL;
    END IF;
    IF e.state <> 'active' THEN  -- as SQLCipher's require_active: on the record, refused
        PERFORM audit_append(who, 'import', eng, NULL, 'error', 'engagement is ' || e.state);
        RETURN NULL;
    END IF;
    -- the systems counted in the entry are the ones pinned: one query
    SELECT coalesce(array_agg(pin('systems', y.id, y.xmin, y.ctid)
                              ORDER BY pin('systems', y.id, y.xmin, y.ctid) COLLATE "C"), '{}')
        INTO p FROM systems y WHERE y.engagement_id = e.id;
    s := audit_append(who, 'import-read', eng, NULL, 'ok',
                      format('%s system addresses released to link the import''s hosts',
                             cardinality(p)));
    INSERT INTO record_requests (member, kind, engagement_id, target_id, audit_seq, xid, pins)
    VALUES (who, 'import-systems', e.id, e.id, s, pg_current_xact_id(), p) RETURNING id INTO rid;
    RETURN rid;
END $$;

CREATE OR REPLACE FUNCTION credvault.fetch_import(request bigint)
RETURNS TABLE (uid bytea, name text, port integer, protocol text, address_env bytea)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    -- before want: a request visible in this snapshot committed, its commit record
    -- inserted, before want was read (section early)
    snap pg_snapshot := pg_current_snapshot();
    want pg_lsn := pg_current_wal_insert_lsn();
    who text := me();
    q record_requests%ROWTYPE;
    n bigint;
BEGIN
    SELECT * INTO q FROM record_requests r WHERE r.id = request FOR UPDATE;
    IF q.id IS NULL OR q.member <> who OR q.kind <> 'import-systems' THEN
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
    IF NOT pg_visible_in_snapshot(q.xid, snap) THEN
        RAISE EXCEPTION 'credvault: read request not yet durable (asynchronous commit?); retry'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM await_durable(want);
    IF NOT may(q.engagement_id, 'write') THEN
        RAISE EXCEPTION 'credvault: access revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE record_requests SET used_at = clock_timestamp() WHERE record_requests.id = q.id;
    RETURN QUERY SELECT s.uid, s.name, s.port, s.protocol, s.address_env
        FROM systems s WHERE s.engagement_id = q.engagement_id
            AND pin('systems', s.id, s.xmin, s.ctid) IN (SELECT unnest(q.pins))
        ORDER BY s.name;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n IS DISTINCT FROM cardinality(q.pins)::bigint THEN
        RAISE EXCEPTION 'credvault: records changed since the read request; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
END $$;

CREATE OR REPLACE FUNCTION credvault.request_move(eng text, itm text, target text, new_name text)
RETURNS TABLE (outcome text, request bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text := me(); e engagements%ROWTYPE; te engagements%ROWTYPE; cid bigint; s bigint;
    rid bigint;
BEGIN
    IF new_name !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' OR eng = target THEN
        RAISE EXCEPTION 'credvault: invalid move' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- each engagement as SQLCipher's require_active checks it, the source first: a member
    -- who may not write there is denied; one who may is refused for its state ('error')
    SELECT * INTO e FROM engagements WHERE name = eng AND state <> 'purged';
    IF e.id IS NULL OR NOT may(e.id, 'write') THEN
        PERFORM audit_append(who, 'mv', eng, itm, 'denied', held(e.id));
        RETURN QUERY SELECT 'denied'::text, NULL::bigint;
        RETURN;
    END IF;
    IF e.state <> 'active' THEN
        PERFORM audit_append(who, 'mv', eng, itm, 'error', 'engagement is ' || e.state);
        RETURN QUERY SELECT format('inactive %s %s', e.state, eng), NULL::bigint;
        RETURN;
    END IF;
    SELECT * INTO te FROM engagements WHERE name = target AND state <> 'purged';
    IF te.id IS NULL OR NOT may(te.id, 'write') THEN
        PERFORM audit_append(who, 'mv', target, new_name, 'denied', held(te.id));
        RETURN QUERY SELECT 'denied'::text, NULL::bigint;
        RETURN;
    END IF;
    IF te.state <> 'active' THEN
        PERFORM audit_append(who, 'mv', target, new_name, 'error', 'engagement is ' || te.state);
        RETURN QUERY SELECT format('inactive %s %s', te.state, target), NULL::bigint;
        RETURN;
    END IF;
    SELECT id INTO cid FROM credentials WHERE engagement_id = e.id AND name = itm;
    IF cid IS NULL THEN
        RETURN QUERY SELECT 'not found'::text, NULL::bigint;
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM credentials WHERE engagement_id = te.id AND name = new_name) THEN
        RETURN QUERY SELECT 'exists'::text, NULL::bigint;
        RETURN;
    END IF;
    s := audit_append(who, 'rebind', eng, itm, 'ok',
                      format('released to seal it again for %s/%s', target, new_name));
    INSERT INTO move_requests (member, engagement_id, credential_id, target_id, target_name,
                               audit_seq, xid, pins)
    SELECT who, e.id, cid, te.id, new_name, s, pg_current_xact_id(),
           (SELECT coalesce(array_agg(x.p ORDER BY x.p COLLATE "C"), '{}') FROM (
                SELECT pin('credentials', c.id, c.xmin, c.ctid) FROM credentials c
                    WHERE c.id = cid AND c.engagement_id = e.id
                UNION ALL SELECT pin('credential_versions', v.id, v.xmin, v.ctid)
                    FROM credential_versions v
                    WHERE v.credential_id = cid AND v.engagement_id = e.id) x(p))
    RETURNING id INTO rid;
    RETURN QUERY SELECT 'ok'::text, rid;
END $$;

CREATE OR REPLACE FUNCTION credvault.fetch_move(request bigint)
RETURNS TABLE (tbl text, id bigint, uid bytea, version integer, e1 bytea, e2 bytea, e3 bytea,
               e4 bytea, b_name text, b_kind text, b_sys_uid bytea)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    -- before want: a request visible in this snapshot committed, its commit record
    -- inserted, before want was read (section early)
    snap pg_snapshot := pg_current_snapshot();
    want pg_lsn := pg_current_wal_insert_lsn();
    who text := me();
    q move_requests%ROWTYPE;
    n bigint;
BEGIN
    SELECT * INTO q FROM move_requests r WHERE r.id = request FOR UPDATE;
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
    IF NOT pg_visible_in_snapshot(q.xid, snap) THEN
        RAISE EXCEPTION 'credvault: read request not yet durable (asynchronous commit?); retry'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM await_durable(want);
    IF NOT may(q.engagement_id, 'write') OR NOT may(q.target_id, 'write') THEN
        RAISE EXCEPTION 'credvault: access revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE move_requests SET used_at = clock_timestamp() WHERE move_requests.id = q.id;
    RETURN QUERY
        SELECT 'credentials'::text, c.id, c.uid, c.version, c.secret_env, c.username_env,
               c.url_env, c.notes_env, c.name, c.kind, s.uid
        FROM credentials c LEFT JOIN systems s ON s.id = c.system_id
        WHERE c.id = q.credential_id AND c.engagement_id = q.engagement_id
            AND pin('credentials', c.id, c.xmin, c.ctid) IN (SELECT unnest(q.pins))
        UNION ALL
        SELECT 'credential_versions', v.id, v.uid, v.version, v.secret_env, v.username_env,
               v.url_env, v.notes_env, v.name, v.kind, v.system_uid
        FROM credential_versions v
        WHERE v.credential_id = q.credential_id AND v.engagement_id = q.engagement_id
            AND pin('credential_versions', v.id, v.xmin, v.ctid) IN (SELECT unnest(q.pins))
        ORDER BY 1, 4;
    GET DIAGNOSTICS n = ROW_COUNT;
    -- a credential moved or removed since (none left): nothing, as before; the client says
    -- not found
    IF n IS DISTINCT FROM cardinality(q.pins)::bigint
       AND EXISTS (SELECT 1 FROM credentials c WHERE c.id = q.credential_id
                   AND c.engagement_id = q.engagement_id) THEN
        RAISE EXCEPTION 'credvault: the credential changed since the read request; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
END $$;

CREATE OR REPLACE FUNCTION credvault.request_export_records(eng text, reason text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text := me();
    e engagements%ROWTYPE;
    why text := CASE WHEN coalesce(reason, '') = '' THEN '' ELSE 'reason: ' || reason END;
    sys bigint[]; ver bigint[]; ids bigint[]; kinds text[]; names text[]; notes text[];
    ct bigint[] := '{}'; st bigint[] := '{}';
    p1 text[]; p2 text[]; p3 text[];
    i integer;
    rid bigint;
BEGIN
    SELECT * INTO e FROM engagements x WHERE x.name = eng AND x.state <> 'purged';
    IF e.id IS NULL OR NOT may(e.id, 'read') THEN
        PERFORM audit_append(who, 'export', eng, NULL, 'denied', held(e.id));
        RETURN NULL;
    END IF;
    IF e.require_reason AND why = '' THEN
        PERFORM audit_append(who, 'export', eng, NULL, 'denied', 'this engagement requires --reason');
        RETURN NULL;
    END IF;
    -- each kind of record read once (ids, names and versions in one snapshot), then an
    -- entry per record, in the order SQLCipher's export lists them. (Arrays built by one
    -- aggregate each: appending in the loop copied the array every time, O(n^2).)
    SELECT coalesce(array_agg(s.id ORDER BY s.name COLLATE "C"), '{}'),
           coalesce(array_agg(s.name ORDER BY s.name COLLATE "C"), '{}'),
           coalesce(array_agg(pin('systems', s.id, s.xmin, s.ctid)), '{}')
        INTO sys, names, p1 FROM systems s WHERE s.engagement_id = e.id;
    FOR i IN 1 .. cardinality(sys) LOOP
        PERFORM audit_append(who, 'system-show', eng, names[i], 'ok', why);
    END LOOP;
    SELECT coalesce(array_agg(v.id ORDER BY v.id), '{}'),
           coalesce(array_agg(coalesce(c.name, v.name) ORDER BY v.id), '{}'),
           coalesce(array_agg(format('version %s', v.version)
                              || CASE WHEN why = '' THEN '' ELSE '; ' || why END ORDER BY v.id), '{}'),
           coalesce(array_agg(pin('credential_versions', v.id, v.xmin, v.ctid)), '{}')
        INTO ver, names, notes, p2
        FROM credential_versions v LEFT JOIN credentials c ON c.id = v.credential_id
        WHERE v.engagement_id = e.id;
    FOR i IN 1 .. cardinality(ver) LOOP
        PERFORM audit_append(who, 'get', eng, names[i], 'ok', notes[i]);
    END LOOP;
    SELECT coalesce(array_agg(x.id ORDER BY x.deleted_at DESC, x.id DESC), '{}'),
           coalesce(array_agg(x.typ ORDER BY x.deleted_at DESC, x.id DESC), '{}'),
           coalesce(array_agg(x.name ORDER BY x.deleted_at DESC, x.id DESC), '{}'),
           coalesce(array_agg('in the trash, removed ' || iso(x.deleted_at)
                              || CASE WHEN why = '' THEN '' ELSE '; ' || why END
                              ORDER BY x.deleted_at DESC, x.id DESC), '{}'),
           coalesce(array_agg(x.p), '{}')
        INTO ids, kinds, names, notes, p3
        FROM (SELECT 'credential' AS typ, t.id, t.name, t.deleted_at,
                     pin('credential_trash', t.id, t.xmin, t.ctid) AS p
              FROM credential_trash t WHERE t.engagement_id = e.id
              UNION ALL
              SELECT 'system', t.id, t.name, t.deleted_at, pin('system_trash', t.id, t.xmin, t.ctid)
              FROM system_trash t WHERE t.engagement_id = e.id) x;
    FOR i IN 1 .. cardinality(ids) LOOP
        PERFORM audit_append(who, CASE kinds[i] WHEN 'system' THEN 'system-show' ELSE 'get' END,
                             eng, names[i], 'ok', notes[i]);
    END LOOP;
    SELECT coalesce(array_agg(k.id) FILTER (WHERE k.typ = 'credential'), '{}'),
           coalesce(array_agg(k.id) FILTER (WHERE k.typ = 'system'), '{}')
        INTO ct, st FROM unnest(ids, kinds) AS k(id, typ);
    INSERT INTO export_requests (member, engagement_id, system_ids, version_ids, ctrash_ids,
                                 strash_ids, xid, pins)
    VALUES (who, e.id, sys, ver, ct, st, pg_current_xact_id(), p1 || p2 || p3)
    RETURNING id INTO rid;
    RETURN rid;
END $$;

CREATE OR REPLACE FUNCTION credvault.fetch_export_records(request bigint)
RETURNS TABLE (tbl text, uid bytea, name text, kind text, version integer, port integer,
               protocol text, sys_uid bytea, sys_name text, e1 bytea, e2 bytea, e3 bytea,
               e4 bytea, created_at text, updated_at text, created_by text, changed text,
               deleted_at text, deleted_by text, expires_at text, label text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
-- planned for the request's own arrays at every call: after five calls PL/pgSQL may keep a
-- generic plan, which cannot see their sizes and tested each row against every pin in
-- turn (12 ms became 330 ms at 2,100 records, the same from then on)
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    -- before want: a request visible in this snapshot committed, its commit record
    -- inserted, before want was read (section early)
    snap pg_snapshot := pg_current_snapshot();
    want pg_lsn := pg_current_wal_insert_lsn();
    who text := me();
    q export_requests%ROWTYPE;
    n bigint;
    total bigint := 0;
BEGIN
    SELECT * INTO q FROM export_requests r WHERE r.id = request FOR UPDATE;
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
    IF NOT pg_visible_in_snapshot(q.xid, snap) THEN
        RAISE EXCEPTION 'credvault: read request not yet durable (asynchronous commit?); retry'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM await_durable(want);
    IF NOT may(q.engagement_id, 'read') THEN
        RAISE EXCEPTION 'credvault: access revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE export_requests SET used_at = clock_timestamp() WHERE export_requests.id = q.id;
    -- three queries, three snapshots: a row is released only at its pinned version, and
    -- all of them or the call fails (the count below)
    RETURN QUERY
        SELECT 'systems'::text, s.uid, s.name, NULL::text, NULL::integer, s.port, s.protocol,
               NULL::bytea, NULL::text, s.address_env, s.details_env, NULL::bytea, NULL::bytea,
               iso(s.created_at), iso(s.updated_at), NULL::text, NULL::text, NULL::text,
               NULL::text, NULL::text, s.name
        FROM systems s WHERE s.engagement_id = q.engagement_id AND s.id = ANY (q.system_ids)
            AND pin('systems', s.id, s.xmin, s.ctid) IN (SELECT unnest(q.pins))
        ORDER BY s.name COLLATE "C";
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    RETURN QUERY
        SELECT 'credential_versions'::text, v.uid, v.name, v.kind, v.version,
               NULL::integer, NULL::text, v.system_uid, v.system_name, v.secret_env,
               v.username_env, v.url_env, v.notes_env, iso(v.created_at), NULL::text,
               v.created_by, v.changed, NULL::text, NULL::text, NULL::text,
               coalesce(c.name, v.name)
        FROM credential_versions v LEFT JOIN credentials c ON c.id = v.credential_id
        WHERE v.engagement_id = q.engagement_id AND v.id = ANY (q.version_ids)
            AND pin('credential_versions', v.id, v.xmin, v.ctid) IN (SELECT unnest(q.pins))
        ORDER BY v.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    RETURN QUERY
        SELECT x.tbl, x.uid, x.name, x.kind, NULL::integer, x.port, x.protocol, x.sys_uid,
               NULL::text, x.e1, x.e2, x.e3, x.e4, NULL::text, NULL::text, NULL::text,
               NULL::text, iso(x.deleted_at), x.deleted_by, iso(x.expires_at), x.name
        FROM (SELECT 'credential_trash'::text AS tbl, t.id, t.uid, t.name, t.kind,
                     NULL::integer AS port, NULL::text AS protocol, t.system_uid AS sys_uid,
                     t.secret_env AS e1, t.username_env AS e2, t.url_env AS e3,
                     t.notes_env AS e4, t.deleted_at, t.deleted_by, t.expires_at
              FROM credential_trash t
              WHERE t.engagement_id = q.engagement_id AND t.id = ANY (q.ctrash_ids)
                  AND pin('credential_trash', t.id, t.xmin, t.ctid) IN (SELECT unnest(q.pins))
              UNION ALL
              SELECT 'system_trash', t.id, t.uid, t.name, NULL, t.port, t.protocol, NULL,
                     t.address_env, t.details_env, NULL, NULL, t.deleted_at, t.deleted_by,
                     t.expires_at
              FROM system_trash t
              WHERE t.engagement_id = q.engagement_id AND t.id = ANY (q.strash_ids)
                  AND pin('system_trash', t.id, t.xmin, t.ctid) IN (SELECT unnest(q.pins))) x
        ORDER BY x.deleted_at DESC, x.id DESC;
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    IF total IS DISTINCT FROM cardinality(q.pins)::bigint THEN
        RAISE EXCEPTION 'credvault: records changed since the read request; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
END $$;

CREATE OR REPLACE FUNCTION credvault.request_rotation(eng text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; s bigint; rid bigint;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state <> 'purged';
    IF e.id IS NULL OR NOT (is_admin() OR coalesce(role_in(e.id), '') = 'lead') THEN
        PERFORM audit_append(who, 'rotate', eng, NULL, 'denied', '');
        RETURN NULL;
    END IF;
    s := audit_append(who, 'rotate', eng, NULL, 'ok', 'read for rotation');
    INSERT INTO rotation_requests (member, engagement_id, audit_seq, xid, pins)
    VALUES (who, e.id, s, pg_current_xact_id(), engagement_pins(e.id)) RETURNING id INTO rid;
    RETURN rid;
END $$;

CREATE OR REPLACE FUNCTION credvault.rotation_fetch_records(request bigint)
RETURNS TABLE (tbl text, id bigint, uid bytea, e1 bytea, e2 bytea, e3 bytea, e4 bytea,
               b_name text, b_kind text, b_port integer, b_protocol text, b_sys_uid bytea)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    -- before want: a request visible in this snapshot committed, its commit record
    -- inserted, before want was read (section early)
    snap pg_snapshot := pg_current_snapshot();
    want pg_lsn := pg_current_wal_insert_lsn();
    who text := me();
    q rotation_requests%ROWTYPE;
    n bigint;
BEGIN
    SELECT * INTO q FROM rotation_requests r WHERE r.id = request FOR UPDATE;
    IF q.id IS NULL OR q.member <> who OR q.used_at IS NOT NULL
       OR q.created_at < clock_timestamp() - interval '60 seconds' THEN
        RAISE EXCEPTION 'credvault: no such rotation request' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF pg_xact_status(q.xid) IS DISTINCT FROM 'committed' THEN
        RAISE EXCEPTION 'credvault: rotation request not committed' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT pg_visible_in_snapshot(q.xid, snap) THEN
        RAISE EXCEPTION 'credvault: read request not yet durable (asynchronous commit?); retry'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM await_durable(want);
    IF NOT (is_admin() OR coalesce(role_in(q.engagement_id), '') = 'lead') THEN
        RAISE EXCEPTION 'credvault: no longer a lead' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE rotation_requests SET used_at = clock_timestamp() WHERE rotation_requests.id = q.id;
    RETURN QUERY
        SELECT x.tbl, x.id, x.uid, x.e1, x.e2, x.e3, x.e4, x.b_name, x.b_kind, x.b_port,
               x.b_protocol, x.b_sys_uid
        FROM (SELECT 'credentials'::text AS tbl, c.id, c.uid, c.secret_env AS e1,
                     c.username_env AS e2, c.url_env AS e3, c.notes_env AS e4,
                     c.name AS b_name, c.kind AS b_kind, NULL::integer AS b_port,
                     NULL::text AS b_protocol, s.uid AS b_sys_uid,
                     pin('credentials', c.id, c.xmin, c.ctid) AS p
              FROM credentials c LEFT JOIN systems s ON s.id = c.system_id
              WHERE c.engagement_id = q.engagement_id
              UNION ALL
              SELECT 'systems', s.id, s.uid, s.address_env, s.details_env, NULL, NULL, s.name,
                     NULL, s.port, s.protocol, NULL, pin('systems', s.id, s.xmin, s.ctid)
              FROM systems s WHERE s.engagement_id = q.engagement_id
              UNION ALL
              SELECT 'system_trash', t.id, t.uid, t.address_env, t.details_env, NULL, NULL,
                     t.name, NULL, t.port, t.protocol, NULL,
                     pin('system_trash', t.id, t.xmin, t.ctid)
              FROM system_trash t WHERE t.engagement_id = q.engagement_id
              UNION ALL
              SELECT 'credential_versions', v.id, v.uid, v.secret_env, v.username_env,
                     v.url_env, v.notes_env, v.name, v.kind, NULL, NULL, v.system_uid,
                     pin('credential_versions', v.id, v.xmin, v.ctid)
              FROM credential_versions v WHERE v.engagement_id = q.engagement_id
              UNION ALL
              SELECT 'credential_trash', t.id, t.uid, t.secret_env, t.username_env, t.url_env,
                     t.notes_env, t.name, t.kind, NULL, NULL, t.system_uid,
                     pin('credential_trash', t.id, t.xmin, t.ctid)
              FROM credential_trash t WHERE t.engagement_id = q.engagement_id) x
        WHERE x.p IN (SELECT unnest(q.pins))
        ORDER BY 1, 2;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n IS DISTINCT FROM cardinality(q.pins)::bigint THEN
        RAISE EXCEPTION 'credvault: records changed since the read request; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
END $$;

-- rotate_records: as section pgsmall's fix 3 left it, with the rotation's request (new
-- argument, before `why`; the old signature dropped, so no client stores a rotation
-- without it) and the check above the log's links.
DROP FUNCTION credvault.rotate_records(text, integer, text, text[], bigint[], bytea[], bytea[],
                                       bytea[], bytea[], text[], bytea[], bytea[], bytea[], text);
CREATE FUNCTION credvault.rotate_records(
    eng text, old_version integer, new_fp text, r_tbl text[], r_id bigint[],
    r_e1 bytea[], r_e2 bytea[], r_e3 bytea[], r_e4 bytea[],
    g_members text[], g_sealed bytea[], g_sigs bytea[], links bytea[], request bigint,
    why text DEFAULT NULL
) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text := me(); e engagements%ROWTYPE; i integer; n integer := coalesce(cardinality(r_id), 0);
    q rotation_requests%ROWTYPE;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state <> 'purged' FOR UPDATE;
    IF e.id IS NULL OR coalesce(role_in(e.id), '') <> 'lead' THEN
        RAISE EXCEPTION 'credvault: % may not rotate %', who, eng USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF e.key_version <> old_version THEN
        RAISE EXCEPTION 'credvault: the key was rotated meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    IF why IS NOT NULL AND (length(why) > 200 OR why ~ '[[:cntrl:]]') THEN
        RAISE EXCEPTION 'credvault: a rotation''s reason is one line of at most 200 characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- every record still at the version the rotation's read released (section pinmany):
    -- else a write in between (a system set, an edit) would be undone by its old envelopes
    SELECT * INTO q FROM rotation_requests r WHERE r.id = request;
    IF q.id IS NULL OR q.member <> who OR q.engagement_id <> e.id OR q.used_at IS NULL THEN
        RAISE EXCEPTION 'credvault: no such rotation request' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF engagement_pins(e.id) IS DISTINCT FROM q.pins THEN
        RAISE EXCEPTION 'credvault: records changed meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    IF (SELECT count(*) FROM (
            SELECT 'credentials' AS t, c.id FROM credentials c WHERE c.engagement_id = e.id
            UNION ALL SELECT 'systems', s.id FROM systems s WHERE s.engagement_id = e.id
            UNION ALL SELECT 'system_trash', x.id FROM system_trash x WHERE x.engagement_id = e.id
            UNION ALL SELECT 'credential_versions', v.id FROM credential_versions v
                WHERE v.engagement_id = e.id
            UNION ALL SELECT 'credential_trash', t.id FROM credential_trash t
                WHERE t.engagement_id = e.id
        ) have FULL JOIN (SELECT * FROM unnest(r_tbl, r_id) AS g(t, id)) given
          ON have.t = given.t AND have.id = given.id
        WHERE have.id IS NULL OR given.id IS NULL) > 0
       OR (SELECT count(DISTINCT (t, id)) FROM unnest(r_tbl, r_id) AS g(t, id)) <> n THEN
        RAISE EXCEPTION 'credvault: records changed meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    FOR i IN 1 .. coalesce(cardinality(links), 0) LOOP
        PERFORM log_append(e.id, links[i]);
    END LOOP;
    FOR i IN 1 .. n LOOP
        IF r_e1[i] IS NULL THEN
            RAISE EXCEPTION 'credvault: a record without its anchor' USING ERRCODE = 'invalid_parameter_value';
        END IF;
        CASE r_tbl[i]
        WHEN 'credentials' THEN
            UPDATE credentials SET key_version = old_version + 1, secret_env = r_e1[i],
                username_env = r_e2[i], url_env = r_e3[i], notes_env = r_e4[i]
            WHERE credentials.id = r_id[i] AND engagement_id = e.id;
        WHEN 'systems' THEN
            UPDATE systems SET address_env = r_e1[i], details_env = r_e2[i]
            WHERE systems.id = r_id[i] AND engagement_id = e.id;
        WHEN 'system_trash' THEN
            UPDATE system_trash SET address_env = r_e1[i], details_env = r_e2[i]
            WHERE system_trash.id = r_id[i] AND engagement_id = e.id;
        WHEN 'credential_versions' THEN
            UPDATE credential_versions SET key_version = old_version + 1, secret_env = r_e1[i],
                username_env = r_e2[i], url_env = r_e3[i], notes_env = r_e4[i]
            WHERE credential_versions.id = r_id[i] AND engagement_id = e.id;
        WHEN 'credential_trash' THEN
            UPDATE credential_trash SET key_version = old_version + 1, secret_env = r_e1[i],
                username_env = r_e2[i], url_env = r_e3[i], notes_env = r_e4[i]
            WHERE credential_trash.id = r_id[i] AND engagement_id = e.id;
        END CASE;
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
        WHERE engagements.id = e.id;
    PERFORM audit_append(who, 'rotate', eng, NULL, 'ok', format('key version %s', old_version + 1)
        || CASE WHEN why IS NULL THEN '' ELSE ' (' || why || ')' END || '; fingerprint ' || new_fp);
    RETURN old_version + 1;
END $$;
REVOKE ALL ON FUNCTION credvault.rotate_records(text, integer, text, text[], bigint[], bytea[],
    bytea[], bytea[], bytea[], text[], bytea[], bytea[], bytea[], bigint, text) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.rotate_records(text, integer, text,'
                   ' text[], bigint[], bytea[], bytea[], bytea[], bytea[], text[], bytea[],'
                   ' bytea[], bytea[], bigint, text) TO %I', credvault.member_group());
END $$;

-- == rebindpin: a secret sealed again for a new binding is stored only over the version read ==
--
-- (Found reviewing section pinmany.) `mv` within an engagement, `edit` of kind or link,
-- `system rm` and `system restore` (linked credentials) read the secret through
-- request_record/fetch_record ('rebind-mv', 'rebind-edit'), seal it again on the member's
-- machine for the new name, kind or link, and store it (rename_credential,
-- edit_credential, remove_system, restore_trashed). Those checked only the envelope's format and key version (rebound_ok): a `put` of a new value
-- landing between the read and the store was overwritten by the old value, and for a
-- rename or a system's removal (a "rebinding", keep_version) not even kept as an earlier
-- version: the lost update section pinmany fixed for a rotation. Now the credential row,
-- locked, must still be at the version (xmin and ctid, section pinned) that the claimed
-- rebind request the secret was read through found; else serialization_failure ("run the
-- command again"), as for the other writes in between. The client names that request
-- (a new last argument of each function: the old signatures are dropped). Any claimed
-- request of the member at the current version would not do: a second mv or edit of the
-- same credential by the same member, started after a colleague's put, would vouch for
-- the first one's secret, read before the put. (Found by the review of this section,
-- helper rev2.)

-- Whether request `req` is `who`'s, of kind `k`, claimed, and found credential `cid` at the
-- version it has now (the caller holds the row locked).
CREATE FUNCTION credvault.rebind_read(who text, k text, cid bigint, req bigint) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
    SELECT EXISTS (SELECT 1 FROM credentials c JOIN record_requests r ON r.target_id = c.id
                   WHERE r.id = req AND c.id = cid AND r.member = who AND r.kind = k
                     AND r.used_at IS NOT NULL AND r.target_xmin = c.xmin
                     AND r.target_ctid = c.ctid)
$$;
REVOKE ALL ON FUNCTION credvault.rebind_read(text, text, bigint, bigint) FROM PUBLIC;

DROP FUNCTION credvault.remove_system(text, text, bytea[], bytea[]);
DROP FUNCTION credvault.edit_credential(text, text, bytea, integer, boolean, bytea, boolean, bytea,
                                        boolean, bytea, text, boolean, text, text, bytea);
DROP FUNCTION credvault.rename_credential(text, text, text, bytea);
DROP FUNCTION credvault.restore_trashed(text, text, boolean, bytea[], bytea[]);

CREATE FUNCTION credvault.remove_system(eng text, s_name text, c_uids bytea[] DEFAULT NULL,
                                        c_secrets bytea[] DEFAULT NULL,
                                        c_requests bigint[] DEFAULT NULL)
RETURNS TABLE (outcome text, until text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text := me(); e engagements%ROWTYPE; old systems%ROWTYPE; ends timestamptz;
    links bytea[];
BEGIN
    e := open_for_write(eng, 'system rm', s_name);
    IF e.id IS NULL THEN  -- refused, and audited there: denied, or closed ('error')
        RETURN QUERY SELECT 'denied'::text, NULL::text;
        RETURN;
    END IF;
    SELECT * INTO old FROM systems WHERE engagement_id = e.id AND name = s_name FOR UPDATE;
    IF old.id IS NULL THEN
        PERFORM audit_append(who, 'system-rm', eng, s_name, 'error', 'not found');
        RETURN QUERY SELECT 'not found'::text, NULL::text;
        RETURN;
    END IF;
    -- each secret sealed again here read at the version it replaces (section rebindpin);
    -- locked before their formats are checked: a put in flight (a new uid, a value bound to
    -- this link) committing between the check and the lock matched no secret sent, and was
    -- left bound to a link it no longer had
    PERFORM 1 FROM credentials c WHERE c.system_id = old.id ORDER BY c.id FOR UPDATE;
    IF EXISTS (SELECT 1 FROM credentials c WHERE c.system_id = old.id AND get_byte(c.secret_env, 0) = 2
               AND NOT EXISTS (SELECT 1 FROM unnest(c_uids, c_secrets) AS g(u, env)
                               WHERE g.u = c.uid AND rebound_ok(g.env, c.key_version))) THEN
        RAISE EXCEPTION 'credvault: a credential bound to system % links to it: put it again without the link first', s_name
            USING ERRCODE = 'feature_not_supported';
    END IF;
    IF EXISTS (SELECT 1 FROM credentials c
                   JOIN unnest(c_uids, c_secrets, c_requests) AS g(u, env, req) ON g.u = c.uid
               WHERE c.system_id = old.id
                 AND NOT coalesce(rebind_read(who, 'rebind-edit', c.id, g.req), false)) THEN
        RAISE EXCEPTION 'credvault: a linked credential changed meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    ends := now() + make_interval(days => (SELECT convert_from(value, 'UTF8')::integer FROM meta WHERE key = 'trash_days'));
    SELECT coalesce(array_agg(c.uid ORDER BY c.uid), '{}') INTO links FROM credentials c WHERE c.system_id = old.id;
    INSERT INTO system_trash (engagement_id, uid, name, port, protocol, address_env, details_env,
                              created_at, updated_at, deleted_by, expires_at, linked)
    VALUES (e.id, old.uid, old.name, old.port, old.protocol, old.address_env, old.details_env,
            old.created_at, old.updated_at, who, ends, links);
    -- credentials.system_id: ON DELETE SET NULL, not a new version of them (keep_version)
    PERFORM set_config('credvault.linking', 'on', true);
    PERFORM set_config('credvault.rebinding', 'on', true);
    UPDATE credentials c SET secret_env = g.env
        FROM unnest(c_uids, c_secrets) AS g(u, env)
        WHERE c.system_id = old.id AND c.uid = g.u;
    DELETE FROM systems WHERE id = old.id;
    PERFORM set_config('credvault.rebinding', '', true);
    PERFORM set_config('credvault.linking', '', true);
    -- the vault's ISO form (model.iso): UTC, microseconds, Z
    until := to_char(ends AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    PERFORM audit_append(who, 'system-rm', eng, s_name, 'ok', 'to the trash until ' || until);
    RETURN QUERY SELECT 'ok'::text, until;
END $$;

CREATE FUNCTION credvault.edit_credential(
    eng text, itm text, c_uid bytea, c_key_version integer,
    set_username boolean, c_username_env bytea, set_url boolean, c_url_env bytea,
    set_notes boolean, c_notes_env bytea, c_kind text, set_system boolean, c_system text,
    changed text, c_secret_env bytea DEFAULT NULL, c_request bigint DEFAULT NULL,
    c_bound_sys bytea DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; c credentials%ROWTYPE; sid bigint;
    nsid bigint;
BEGIN
    e := open_for_write(eng, 'edit', itm);
    IF e.id IS NULL THEN  -- refused, and audited there: denied, or closed ('error')
        RETURN 'denied';
    END IF;
    -- the system named held until commit (not removed under the link made to it, section
    -- putbind), before the credential: remove_system's order (system, then its linked
    -- credentials), or the two deadlock
    IF set_system AND c_system IS NOT NULL THEN
        SELECT id INTO nsid FROM systems WHERE engagement_id = e.id AND name = c_system
            FOR KEY SHARE;
    END IF;
    SELECT * INTO c FROM credentials WHERE engagement_id = e.id AND name = itm FOR UPDATE;
    IF c.id IS NULL THEN
        RETURN 'not found';  -- not audited, as on SQLCipher
    END IF;
    IF c.uid <> c_uid OR c_key_version <> e.key_version THEN
        RAISE EXCEPTION 'credvault: the credential changed meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    sid := c.system_id;
    IF set_system THEN
        sid := nsid;
        IF c_system IS NOT NULL THEN
            IF sid IS NULL THEN
                RETURN 'no system';
            END IF;
        END IF;
        -- the secret sealed again for the link the client found: this one (section
        -- putbind; a system removed and made again under the name has another uid)
        IF c_secret_env IS NOT NULL AND coalesce((SELECT y.uid FROM systems y WHERE y.id = sid), '')
                                        IS DISTINCT FROM coalesce(c_bound_sys, '') THEN
            RAISE EXCEPTION 'credvault: the credential''s system changed meanwhile; run the command again'
                USING ERRCODE = 'serialization_failure';
        END IF;
    END IF;
    IF c_secret_env IS NOT NULL AND (NOT rebound_ok(c_secret_env, c.key_version)
                                     OR NOT coalesce(rebind_read(who, 'rebind-edit', c.id,
                                                                 c_request), false)) THEN
        RAISE EXCEPTION 'credvault: the credential changed meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    IF get_byte(c.secret_env, 0) = 2 AND c_secret_env IS NULL
       AND (coalesce(c_kind, c.kind) <> c.kind OR sid IS DISTINCT FROM c.system_id) THEN
        RAISE EXCEPTION 'credvault: % is bound to its kind and system: put the value again to change them', itm
            USING ERRCODE = 'feature_not_supported';
    END IF;
    PERFORM set_config('credvault.changed', changed, true);
    UPDATE credentials SET
        username_env = CASE WHEN set_username THEN c_username_env ELSE username_env END,
        url_env = CASE WHEN set_url THEN c_url_env ELSE url_env END,
        notes_env = CASE WHEN set_notes THEN c_notes_env ELSE notes_env END,
        kind = coalesce(c_kind, kind), system_id = sid, updated_at = now(),
        secret_env = coalesce(c_secret_env, secret_env)
        WHERE id = c.id;
    PERFORM audit_append(who, 'edit', eng, itm, 'ok', 'changed ' || changed);
    RETURN 'ok';
END $$;

CREATE FUNCTION credvault.rename_credential(eng text, itm text, new_name text,
                                            new_secret bytea DEFAULT NULL,
                                            rebind bigint DEFAULT NULL) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; c credentials%ROWTYPE;
BEGIN
    e := open_for_write(eng, 'mv', itm);
    IF e.id IS NULL THEN  -- refused, and audited there: denied, or closed ('error')
        RETURN 'denied';
    END IF;
    IF new_name !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' THEN
        RAISE EXCEPTION 'credvault: invalid name' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO c FROM credentials WHERE engagement_id = e.id AND name = itm FOR UPDATE;
    IF c.id IS NULL THEN
        RETURN 'not found';
    END IF;
    IF EXISTS (SELECT 1 FROM credentials WHERE engagement_id = e.id AND name = new_name) THEN
        RETURN 'exists';
    END IF;
    IF get_byte(c.secret_env, 0) = 2 AND new_secret IS NULL THEN
        RAISE EXCEPTION 'credvault: % is bound to its name: put the value under the new name instead', itm
            USING ERRCODE = 'feature_not_supported';
    END IF;
    IF new_secret IS NOT NULL AND (NOT rebound_ok(new_secret, c.key_version)
                                   OR NOT coalesce(rebind_read(who, 'rebind-mv', c.id, rebind),
                                                   false)) THEN
        RAISE EXCEPTION 'credvault: the credential changed meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    PERFORM set_config('credvault.rebinding', 'on', true);
    UPDATE credentials SET name = new_name, updated_at = now(),
        secret_env = coalesce(new_secret, secret_env) WHERE id = c.id;
    PERFORM set_config('credvault.rebinding', '', true);
    PERFORM audit_append(who, 'mv', eng, itm, 'ok', 'renamed to ' || new_name);
    RETURN 'ok';
END $$;

CREATE FUNCTION credvault.restore_trashed(eng text, itm text, is_system boolean,
                                          c_uids bytea[] DEFAULT NULL,
                                          c_secrets bytea[] DEFAULT NULL,
                                          c_requests bigint[] DEFAULT NULL) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text := me(); e engagements%ROWTYPE; t credential_trash%ROWTYPE;
    st system_trash%ROWTYPE; sid bigint; n integer;
BEGIN
    e := open_for_write(eng, CASE WHEN is_system THEN 'system restore' ELSE 'restore' END, itm);
    IF e.id IS NULL THEN  -- refused, and audited there: denied, or closed ('error')
        RETURN 'denied';
    END IF;
    IF is_system THEN
        SELECT * INTO st FROM system_trash x WHERE x.engagement_id = e.id AND x.name = itm
            ORDER BY x.deleted_at DESC, x.id DESC LIMIT 1 FOR UPDATE;
        IF st.id IS NULL THEN RETURN 'not found'; END IF;
        IF EXISTS (SELECT 1 FROM systems WHERE engagement_id = e.id AND name = itm) THEN
            RETURN 'exists';
        END IF;
        INSERT INTO systems (uid, engagement_id, name, port, protocol, address_env, details_env,
                             created_at, updated_at)
        VALUES (st.uid, e.id, st.name, st.port, st.protocol, st.address_env, st.details_env,
                st.created_at, st.updated_at) RETURNING id INTO sid;
        DELETE FROM system_trash WHERE id = st.id;
        PERFORM set_config('credvault.linking', 'on', true);
        -- each secret sealed again here read at the version it replaces (section rebindpin);
        -- locked before their formats are checked (as remove_system)
        PERFORM 1 FROM credentials c WHERE c.engagement_id = e.id AND c.uid = ANY (st.linked)
            ORDER BY c.id FOR UPDATE;
        IF EXISTS (SELECT 1 FROM credentials c WHERE c.engagement_id = e.id AND c.system_id IS NULL
                   AND c.uid = ANY (st.linked) AND get_byte(c.secret_env, 0) = 2
                   AND NOT EXISTS (SELECT 1 FROM unnest(c_uids, c_secrets) AS g(u, env)
                                   WHERE g.u = c.uid AND rebound_ok(g.env, c.key_version))) THEN
            RAISE EXCEPTION 'credvault: the credentials linked to % changed meanwhile; run the command again', itm
                USING ERRCODE = 'serialization_failure';
        END IF;
        IF EXISTS (SELECT 1 FROM credentials c
                       JOIN unnest(c_uids, c_secrets, c_requests) AS g(u, env, req) ON g.u = c.uid
                   WHERE c.engagement_id = e.id AND c.system_id IS NULL
                     AND c.uid = ANY (st.linked)
                     AND NOT coalesce(rebind_read(who, 'rebind-edit', c.id, g.req), false)) THEN
            RAISE EXCEPTION 'credvault: the credentials linked to % changed meanwhile; run the command again', itm
                USING ERRCODE = 'serialization_failure';
        END IF;
        PERFORM set_config('credvault.rebinding', 'on', true);
        UPDATE credentials c SET system_id = sid,
            secret_env = coalesce((SELECT g.env FROM unnest(c_uids, c_secrets) AS g(u, env)
                                   WHERE g.u = c.uid LIMIT 1), c.secret_env)
            WHERE c.engagement_id = e.id AND c.system_id IS NULL AND c.uid = ANY (st.linked);
        PERFORM set_config('credvault.rebinding', '', true);
        GET DIAGNOSTICS n = ROW_COUNT;
        PERFORM set_config('credvault.linking', '', true);
        UPDATE credential_trash SET system_uid = st.uid
            WHERE engagement_id = e.id AND system_uid IS NULL AND uid = ANY (st.linked);
        PERFORM audit_append(who, 'system-restore', eng, itm, 'ok',
                             format('%s credentials relinked', n));
        RETURN 'ok';
    END IF;
    SELECT * INTO t FROM credential_trash x WHERE x.engagement_id = e.id AND x.name = itm
        ORDER BY x.deleted_at DESC, x.id DESC LIMIT 1 FOR UPDATE;
    IF t.id IS NULL THEN RETURN 'not found'; END IF;
    IF EXISTS (SELECT 1 FROM credentials WHERE engagement_id = e.id AND name = itm) THEN
        RETURN 'exists';
    END IF;
    SELECT id INTO sid FROM systems WHERE engagement_id = e.id AND uid = t.system_uid;
    IF get_byte(t.secret_env, 0) = 2 AND t.system_uid IS NOT NULL AND sid IS NULL THEN
        RAISE EXCEPTION 'credvault: % is bound to a system that is not there: restore the system first', itm
            USING ERRCODE = 'feature_not_supported';
    END IF;
    PERFORM set_config('credvault.restoring', 'on', true);
    INSERT INTO credentials (id, uid, engagement_id, name, kind, system_id, key_version,
        secret_env, username_env, url_env, notes_env, created_at, updated_at, version,
        updated_by, changed)
    OVERRIDING SYSTEM VALUE
    VALUES (t.credential_id, t.uid, e.id, t.name, t.kind, sid, t.key_version, t.secret_env,
        t.username_env, t.url_env, t.notes_env, t.created_at, t.updated_at, t.version,
        t.updated_by, t.changed);
    PERFORM set_config('credvault.restoring', '', true);
    DELETE FROM credential_trash WHERE id = t.id;
    PERFORM audit_append(who, 'restore', eng, itm, 'ok',
                         format('removed %s by %s', iso(t.deleted_at), t.deleted_by));
    RETURN 'ok';
END $$;

-- fetch_move: a credential removed (or moved away) between request_move and fetch_move
-- released its earlier versions' envelopes all the same (the count's fallback answers
-- nothing for a credential no longer there, but the versions had already been returned),
-- for a move that could not happen (the client says not found). Now the versions come only
-- with the credential's own pinned row, in the same query.

CREATE OR REPLACE FUNCTION credvault.fetch_move(request bigint)
RETURNS TABLE (tbl text, id bigint, uid bytea, version integer, e1 bytea, e2 bytea, e3 bytea,
               e4 bytea, b_name text, b_kind text, b_sys_uid bytea)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    -- before want: a request visible in this snapshot committed, its commit record
    -- inserted, before want was read (section early)
    snap pg_snapshot := pg_current_snapshot();
    want pg_lsn := pg_current_wal_insert_lsn();
    who text := me();
    q move_requests%ROWTYPE;
    n bigint;
BEGIN
    SELECT * INTO q FROM move_requests r WHERE r.id = request FOR UPDATE;
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
    IF NOT pg_visible_in_snapshot(q.xid, snap) THEN
        RAISE EXCEPTION 'credvault: read request not yet durable (asynchronous commit?); retry'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM await_durable(want);
    IF NOT may(q.engagement_id, 'write') OR NOT may(q.target_id, 'write') THEN
        RAISE EXCEPTION 'credvault: access revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE move_requests SET used_at = clock_timestamp() WHERE move_requests.id = q.id;
    RETURN QUERY
        SELECT 'credentials'::text, c.id, c.uid, c.version, c.secret_env, c.username_env,
               c.url_env, c.notes_env, c.name, c.kind, s.uid
        FROM credentials c LEFT JOIN systems s ON s.id = c.system_id
        WHERE c.id = q.credential_id AND c.engagement_id = q.engagement_id
            AND pin('credentials', c.id, c.xmin, c.ctid) IN (SELECT unnest(q.pins))
        UNION ALL
        SELECT 'credential_versions', v.id, v.uid, v.version, v.secret_env, v.username_env,
               v.url_env, v.notes_env, v.name, v.kind, v.system_uid
        FROM credential_versions v
        WHERE v.credential_id = q.credential_id AND v.engagement_id = q.engagement_id
            AND pin('credential_versions', v.id, v.xmin, v.ctid) IN (SELECT unnest(q.pins))
            -- its versions only with the credential at the version found (section rebindpin)
            AND EXISTS (SELECT 1 FROM credentials c2 WHERE c2.id = q.credential_id
                        AND c2.engagement_id = q.engagement_id
                        AND pin('credentials', c2.id, c2.xmin, c2.ctid) IN (SELECT unnest(q.pins)))
        ORDER BY 1, 4;
    GET DIAGNOSTICS n = ROW_COUNT;
    -- a credential moved or removed since (none left): nothing, as before; the client says
    -- not found
    IF n IS DISTINCT FROM cardinality(q.pins)::bigint
       AND EXISTS (SELECT 1 FROM credentials c WHERE c.id = q.credential_id
                   AND c.engagement_id = q.engagement_id) THEN
        RAISE EXCEPTION 'credvault: the credential changed since the read request; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
END $$;

REVOKE ALL ON FUNCTION credvault.remove_system(text, text, bytea[], bytea[], bigint[]),
    credvault.edit_credential(text, text, bytea, integer, boolean, bytea, boolean, bytea,
                              boolean, bytea, text, boolean, text, text, bytea, bigint, bytea),
    credvault.rename_credential(text, text, text, bytea, bigint),
    credvault.restore_trashed(text, text, boolean, bytea[], bytea[], bigint[]) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION'
                   ' credvault.remove_system(text, text, bytea[], bytea[], bigint[]),'
                   ' credvault.edit_credential(text, text, bytea, integer, boolean, bytea,'
                   ' boolean, bytea, boolean, bytea, text, boolean, text, text, bytea, bigint,'
                   ' bytea),'
                   ' credvault.rename_credential(text, text, text, bytea, bigint),'
                   ' credvault.restore_trashed(text, text, boolean, bytea[], bytea[], bigint[])'
                   ' TO %I', credvault.member_group());
END $$;

-- == putbind: a put stores a bound secret only under the link it was sealed for ==
--
-- (docs/team.md "Record binding".) A credential's secret is sealed bound to its name, kind
-- and linked system's uid (format 0x02). put_credential_linked linked the row by the
-- system's name (put --system NAME) or kept the link the row has (a put without --system),
-- whichever it found then: an `edit --system other` of a colleague between the client's
-- sealing (for web) and the store left a value bound to web in a row linked to other, and
-- `system rm X` + `system add X` (a new uid) did the same to `put --system X`. The value
-- then never opened: every read failed as tampering (exit 6), with none done. Now the
-- client says which system's uid it sealed for (c_bound_sys; '' or NULL: none) and the
-- server stores the put only under that link (serialization_failure otherwise: "run the
-- command again"), the system named held FOR KEY SHARE until commit so that it is not
-- removed under the new link. The same check for `edit --system` is in edit_credential
-- (section rebindpin; its secret sealed again for the new link). put_credential_linked as
-- section pgput left it, with that argument (the old signature dropped).

DROP FUNCTION credvault.put_credential_linked(text, text, text, bytea, integer, bytea, bytea,
                                              bytea, bytea, text, text);
CREATE FUNCTION credvault.put_credential_linked(
    eng text, c_name text, c_kind text, c_uid bytea, c_key_version integer,
    c_secret_env bytea, c_username_env bytea, c_url_env bytea, c_notes_env bytea,
    c_system text, c_changed text DEFAULT NULL, c_bound_sys bytea DEFAULT NULL
) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE e engagements%ROWTYPE; sid bigint; ok boolean; old credentials%ROWTYPE;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active' FOR SHARE;
    IF e.id IS NOT NULL AND may(e.id, 'write') THEN
        IF c_system IS NOT NULL THEN
            SELECT id INTO sid FROM systems WHERE engagement_id = e.id AND name = c_system
                FOR KEY SHARE;
            IF sid IS NULL THEN
                RAISE EXCEPTION 'credvault: system %/% not found', eng, c_system USING ERRCODE = 'no_data_found';
            END IF;
        END IF;
        SELECT * INTO old FROM credentials WHERE engagement_id = e.id AND name = c_name FOR UPDATE;
        IF old.id IS NOT NULL AND old.uid <> c_uid THEN
            RAISE EXCEPTION 'credvault: the credential changed meanwhile; run the command again'
                USING ERRCODE = 'serialization_failure';
        END IF;
    END IF;
    IF c_system IS NULL AND e.id IS NOT NULL THEN
        SELECT system_id INTO sid FROM credentials WHERE engagement_id = e.id AND name = c_name;
    END IF;
    IF e.id IS NOT NULL AND may(e.id, 'write') AND get_byte(c_secret_env, 0) = 2
       AND coalesce((SELECT y.uid FROM systems y WHERE y.id = sid), '')
           IS DISTINCT FROM coalesce(c_bound_sys, '') THEN
        RAISE EXCEPTION 'credvault: the credential''s system changed meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    -- what the new version changed (history's "changed"; keep_version reads it)
    PERFORM set_config('credvault.changed', coalesce(c_changed, ''), true);
    -- old is empty unless the member may write and the row is theirs to replace (same uid)
    ok := put_credential(eng, c_name, c_kind, c_uid, c_key_version, c_secret_env,
                         coalesce(c_username_env, old.username_env),
                         coalesce(c_url_env, old.url_env),
                         coalesce(c_notes_env, old.notes_env));
    IF ok THEN
        PERFORM set_config('credvault.linking', 'on', true);
        UPDATE credentials SET system_id = sid WHERE engagement_id = e.id AND name = c_name
            AND system_id IS DISTINCT FROM sid;
        PERFORM set_config('credvault.linking', '', true);
    END IF;
    RETURN ok;
END $$;

REVOKE ALL ON FUNCTION credvault.put_credential_linked(text, text, text, bytea, integer, bytea,
    bytea, bytea, bytea, text, text, bytea) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.put_credential_linked(text, text, text,'
                   ' bytea, integer, bytea, bytea, bytea, bytea, text, text, bytea) TO %I',
                   credvault.member_group());
END $$;

-- import_credentials the same way: an entry linked to an existing system by name was sealed
-- for the uid its read released (fetch_import); `system rm` + `system add` of that name in
-- between left a value bound to the old uid in a row linked to the new one. The client
-- now gives each credential's system uid (c_sys_uids; NULL: none) and the server stores
-- the import only if the system it links has it (serialization_failure otherwise).
DROP FUNCTION credvault.import_credentials(text, boolean, integer, integer, text[], bytea[],
    integer[], text[], bytea[], text[], text[], bytea[], text[], bytea[], bytea[], bytea[],
    bytea[]);
CREATE FUNCTION credvault.import_credentials(
    eng text, dry boolean, t_key_version integer, n_skipped integer,
    s_names text[], s_uids bytea[], s_ports integer[], s_protocols text[], s_envs bytea[],
    c_names text[], c_kinds text[], c_uids bytea[], c_systems text[],
    c_e1 bytea[], c_e2 bytea[], c_e3 bytea[], c_e4 bytea[], c_sys_uids bytea[] DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text := me(); e engagements%ROWTYPE; nc integer := coalesce(cardinality(c_names), 0);
    ns integer := coalesce(cardinality(s_names), 0); i integer; sid bigint; clash text;
    summary text;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active' FOR SHARE;
    IF e.id IS NULL OR NOT may(e.id, 'write') THEN
        PERFORM audit_append(who, 'import', eng, NULL, 'denied', held(e.id));
        RETURN 'denied';
    END IF;
    IF n_skipped < 0 THEN
        RAISE EXCEPTION 'credvault: invalid import' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    summary := format('%s credentials, %s systems, %s skipped', nc, ns, n_skipped);
    IF dry THEN
        PERFORM audit_append(who, 'import', eng, NULL, 'ok', 'dry run: ' || summary);
        RETURN 'ok';
    END IF;
    IF t_key_version <> e.key_version THEN
        RAISE EXCEPTION 'credvault: the engagement key was rotated meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    IF coalesce(cardinality(s_uids), 0) <> ns OR coalesce(cardinality(s_ports), 0) <> ns
       OR coalesce(cardinality(s_protocols), 0) <> ns OR coalesce(cardinality(s_envs), 0) <> ns
       OR coalesce(cardinality(c_kinds), 0) <> nc OR coalesce(cardinality(c_uids), 0) <> nc
       OR coalesce(cardinality(c_systems), 0) <> nc OR coalesce(cardinality(c_e1), 0) <> nc
       OR coalesce(cardinality(c_e2), 0) <> nc OR coalesce(cardinality(c_e3), 0) <> nc
       OR coalesce(cardinality(c_e4), 0) <> nc
       OR EXISTS (SELECT 1 FROM unnest(s_names || c_names) AS g(n)
                  WHERE g.n IS NULL OR g.n !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$')
       -- every anchor record-bound, every envelope under the current key version
       OR EXISTS (SELECT 1 FROM unnest(s_envs) AS g(a)
                  WHERE NOT coalesce(rebound_ok(a, e.key_version), false))
       OR EXISTS (SELECT 1 FROM unnest(c_e1, c_e2, c_e3, c_e4) AS g(a, b, d, f)
                  WHERE NOT coalesce(rebound_ok(a, e.key_version), false)
                     OR NOT (sealed_under(b, e.key_version) AND sealed_under(d, e.key_version)
                             AND sealed_under(f, e.key_version))) THEN
        RAISE EXCEPTION 'credvault: invalid import' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT x.name INTO clash FROM credentials x WHERE x.engagement_id = e.id
        AND x.name = ANY (c_names) ORDER BY array_position(c_names, x.name) LIMIT 1;
    IF clash IS NOT NULL THEN
        RETURN 'credential ' || clash;
    END IF;
    SELECT x.name INTO clash FROM systems x WHERE x.engagement_id = e.id
        AND x.name = ANY (s_names) ORDER BY array_position(s_names, x.name) LIMIT 1;
    IF clash IS NOT NULL THEN
        RETURN 'system ' || clash;
    END IF;
    FOR i IN 1 .. ns LOOP
        INSERT INTO systems (uid, engagement_id, name, port, protocol, address_env)
        VALUES (s_uids[i], e.id, s_names[i], s_ports[i], s_protocols[i], s_envs[i]);
    END LOOP;
    FOR i IN 1 .. nc LOOP
        sid := NULL;
        IF c_systems[i] IS NOT NULL THEN
            SELECT x.id INTO sid FROM systems x WHERE x.engagement_id = e.id AND x.name = c_systems[i]
                FOR KEY SHARE;
            IF sid IS NULL THEN
                RAISE EXCEPTION 'credvault: system %/% not found', eng, c_systems[i]
                    USING ERRCODE = 'no_data_found';
            END IF;
        END IF;
        -- the secret sealed for the system the client read: this one (a system removed
        -- and made again under the name since has another uid)
        IF get_byte(c_e1[i], 0) = 2
           AND coalesce((SELECT y.uid FROM systems y WHERE y.id = sid), '')
               IS DISTINCT FROM coalesce(c_sys_uids[i], '') THEN
            RAISE EXCEPTION 'credvault: system % changed meanwhile; run the command again', c_systems[i]
                USING ERRCODE = 'serialization_failure';
        END IF;
        INSERT INTO credentials (uid, engagement_id, name, kind, system_id, key_version,
                                 secret_env, username_env, url_env, notes_env)
        VALUES (c_uids[i], e.id, c_names[i], c_kinds[i], sid, e.key_version, c_e1[i], c_e2[i],
                c_e3[i], c_e4[i]);
    END LOOP;
    PERFORM audit_append(who, 'import', eng, NULL, 'ok', summary);
    RETURN 'ok';
END $$;

REVOKE ALL ON FUNCTION credvault.import_credentials(text, boolean, integer, integer, text[],
    bytea[], integer[], text[], bytea[], text[], text[], bytea[], text[], bytea[], bytea[],
    bytea[], bytea[], bytea[]) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.import_credentials(text, boolean,'
                   ' integer, integer, text[], bytea[], integer[], text[], bytea[], text[],'
                   ' text[], bytea[], text[], bytea[], bytea[], bytea[], bytea[], bytea[]) TO %I',
                   credvault.member_group());
END $$;

-- == verpin: an earlier version is released only with its credential as the request found it ==
--
-- (docs/team.md "Reading a secret"; found by tests/postgres/test_records_stateful_pg.py,
-- the state machine over history, mv and the trash.) Section pinned left `get --version N`
-- and `get --version N --field F` (fetch_record's 'version' and 'version-show' kinds)
-- unpinned, "an earlier version never changes". It does, and it outlives its credential's
-- row: `rm` leaves the versions in place (the trash keeps naming them), and an `mv` to
-- another engagement rewrites them (sealed again under the other key) and, moved back,
-- rewrites them again under the same ids. A request made before an `rm` was released the
-- removed credential's earlier value after it (bob asks for version 1, alice removes
-- alpha/db, bob's fetch_record still returns version 1's secret: a value of a credential
-- in the trash, whose `get` request the removal took with it, section rpreview); one made
-- before an `mv` there and back was released the version sealed again after it, bytes its
-- entry never covered; and a request made before an `rm` and a `restore` was released by
-- the restored credential. Now request_record records the version row's own version
-- (`pins`: pin(), section pinmany) beside the credential's (target_xmin, target_ctid,
-- which it already recorded for these kinds), and fetch_record releases the version only
-- while both are as found, in one query: a credential removed or moved away since gives
-- nothing (the client says not found, as for the other kinds); one written, restored or
-- moved back since is refused as serialization_failure ("changed since the read
-- request") and the client asks again (PgStore.asked_again): a `put` in between, which
-- leaves version N as it was, is refused too, as the cheap way to tell a restored row from
-- the one found. Requests made before this section carry no pins and release nothing.
-- request_record also looks the version up in the request's engagement only. Otherwise
-- both functions are as section pinned left them (grants kept: CREATE OR REPLACE).

CREATE OR REPLACE FUNCTION credvault.request_record(
    k text, eng text, itm text, reason text DEFAULT '', ver integer DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text := me();
    e engagements%ROWTYPE;
    act text;
    cid bigint;
    tid bigint;
    tx xid;
    tc tid;
    sx xid;
    sc tid;
    vp text[];
    why text := coalesce(reason, '');
    detail text;
    s bigint;
    rid bigint;
BEGIN
    -- this transaction has written nothing yet (section ownpin, below): every row version
    -- pinned below is one another transaction committed
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'credvault: a read request is made before any write of its transaction; make it in a transaction of its own'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    act := CASE k WHEN 'system' THEN 'system-show' WHEN 'credential-system' THEN 'show'
                  WHEN 'fields' THEN 'show'
                  WHEN 'version' THEN 'get' WHEN 'version-show' THEN 'show'
                  -- a credential's secret, to seal it again bound to its new name (mv) or
                  -- kind and link (edit): the client then stores it with the change, which
                  -- the mv or edit function audits under its own name
                  WHEN 'rebind-mv' THEN 'rebind' WHEN 'rebind-edit' THEN 'rebind' END;
    IF act IS NULL OR (k LIKE 'version%' AND ver IS NULL) THEN
        RAISE EXCEPTION 'credvault: unknown kind of record %', k USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO e FROM engagements WHERE name = eng
        AND (state = 'active' OR (state = 'closed' AND k NOT LIKE 'rebind-%'));
    IF e.id IS NULL OR NOT may(e.id, 'read') OR (k LIKE 'rebind-%' AND NOT may(e.id, 'write')) THEN
        -- audited under the operation's verb, as SQLCipher does (access.py)
        PERFORM audit_append(who, CASE k WHEN 'system' THEN 'system show' ELSE act END,
                             eng, itm, 'denied', held(e.id));
        RETURN NULL;
    END IF;
    IF e.require_reason AND why = '' AND k NOT LIKE 'rebind-%' THEN
        PERFORM audit_append(who, act, eng, itm, 'denied', 'this engagement requires --reason');
        RETURN NULL;
    END IF;
    IF k = 'system' THEN
        -- and the versions found, which alone may be released under this entry (section
        -- pinned): the system's row; for the others the credential's and its system's
        SELECT sy.id, sy.xmin, sy.ctid INTO tid, tx, tc FROM systems sy
        WHERE sy.engagement_id = e.id AND sy.name = itm;
        detail := CASE WHEN why = '' THEN '' ELSE 'reason: ' || why END;
    ELSE
        SELECT c.id, c.xmin, c.ctid, sy.xmin, sy.ctid INTO cid, tx, tc, sx, sc
        FROM credentials c LEFT JOIN systems sy ON sy.id = c.system_id
        WHERE c.engagement_id = e.id AND c.name = itm;
        tid := cid;
        detail := CASE k
            WHEN 'credential-system' THEN 'system address and port, without the secret'
            WHEN 'fields' THEN 'fields without the secret'
            WHEN 'version' THEN format('version %s', ver)
            WHEN 'rebind-mv' THEN 'secret released to seal it again for its new name'
            WHEN 'rebind-edit' THEN 'secret released to seal it again for its new kind or link'
            ELSE format('version %s: fields without the secret', ver) END
            || CASE WHEN why = '' THEN '' ELSE '; reason: ' || why END;
    END IF;
    IF tid IS NULL THEN
        PERFORM audit_append(who, act, eng, itm, 'error', 'not found');
        RETURN NULL;
    END IF;
    IF k LIKE 'version%' THEN
        -- and that version's own row version (section verpin): tx, tc stay the
        -- credential's, which fetch_record checks too
        SELECT v.id, ARRAY[pin('credential_versions', v.id, v.xmin, v.ctid)] INTO tid, vp
        FROM credential_versions v
        WHERE v.credential_id = cid AND v.engagement_id = e.id AND v.version = ver;
        IF tid IS NULL THEN
            PERFORM audit_append(who, act, eng, itm, 'error', format('no version %s', ver));
            RETURN NULL;
        END IF;
    END IF;
    s := audit_append(who, act, eng, itm, 'ok', detail);
    INSERT INTO record_requests (member, kind, engagement_id, target_id, audit_seq, xid,
                                 target_xmin, target_ctid, sys_xmin, sys_ctid, pins)
    VALUES (who, k, e.id, tid, s, pg_current_xact_id(), tx, tc, sx, sc, vp) RETURNING id INTO rid;
    RETURN rid;
END $$;

CREATE OR REPLACE FUNCTION credvault.fetch_record(request bigint)
RETURNS TABLE (uid bytea, name text, kind text, port integer, protocol text, sys_uid bytea,
               sys_name text, e1 bytea, e2 bytea, e3 bytea, e4 bytea, audit_seq bigint,
               created_at timestamptz, updated_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    -- before want: a request visible in this snapshot committed, its commit record
    -- inserted, before want was read (section early)
    snap pg_snapshot := pg_current_snapshot();
    want pg_lsn := pg_current_wal_insert_lsn();
    who text := me();
    q record_requests%ROWTYPE;
BEGIN
    SELECT * INTO q FROM record_requests r WHERE r.id = request FOR UPDATE;
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
    IF NOT pg_visible_in_snapshot(q.xid, snap) THEN
        RAISE EXCEPTION 'credvault: read request not yet durable (asynchronous commit?); retry'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM await_durable(want);
    IF NOT may(q.engagement_id, 'read')
       OR (q.kind LIKE 'rebind-%' AND NOT may(q.engagement_id, 'write')) THEN
        RAISE EXCEPTION 'credvault: access revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE record_requests SET used_at = clock_timestamp() WHERE id = q.id;
    IF q.kind = 'system' THEN
        RETURN QUERY SELECT s.uid, s.name, NULL::text, s.port, s.protocol, NULL::bytea, NULL::text,
                            s.address_env, s.details_env, NULL::bytea, NULL::bytea,
                            q.audit_seq, s.created_at, s.updated_at
            FROM systems s WHERE s.id = q.target_id AND s.engagement_id = q.engagement_id
            AND s.xmin = q.target_xmin AND s.ctid = q.target_ctid;
    ELSIF q.kind = 'credential-system' THEN
        RETURN QUERY SELECT s.uid, s.name, NULL::text, s.port, s.protocol, NULL::bytea, NULL::text,
                            s.address_env, NULL::bytea, NULL::bytea, NULL::bytea,
                            q.audit_seq, c.created_at, c.updated_at
            FROM credentials c LEFT JOIN systems s ON s.id = c.system_id
            WHERE c.id = q.target_id AND c.engagement_id = q.engagement_id
            AND c.xmin = q.target_xmin AND c.ctid = q.target_ctid
            AND s.xmin IS NOT DISTINCT FROM q.sys_xmin AND s.ctid IS NOT DISTINCT FROM q.sys_ctid;
    ELSIF q.kind = 'fields' THEN
        RETURN QUERY SELECT c.uid, c.name, c.kind, NULL::integer, NULL::text, s.uid, s.name,
                            NULL::bytea, c.username_env, c.url_env, c.notes_env,
                            q.audit_seq, c.created_at, c.updated_at
            FROM credentials c LEFT JOIN systems s ON s.id = c.system_id
            WHERE c.id = q.target_id AND c.engagement_id = q.engagement_id
            AND c.xmin = q.target_xmin AND c.ctid = q.target_ctid
            AND s.xmin IS NOT DISTINCT FROM q.sys_xmin AND s.ctid IS NOT DISTINCT FROM q.sys_ctid;
    ELSIF q.kind IN ('version', 'version-show') THEN
        RETURN QUERY SELECT v.uid, v.name, v.kind, NULL::integer, NULL::text, v.system_uid,
                            v.system_name,
                            CASE WHEN q.kind = 'version' THEN v.secret_env END,
                            v.username_env, v.url_env, v.notes_env,
                            q.audit_seq, c.created_at, v.created_at
            FROM credential_versions v
            JOIN credentials c ON c.id = v.credential_id AND c.engagement_id = q.engagement_id
            WHERE v.id = q.target_id AND v.engagement_id = q.engagement_id
            -- the version as the request found it, of the credential as it found it
            -- (section verpin)
            AND pin('credential_versions', v.id, v.xmin, v.ctid) = ANY (q.pins)
            AND c.xmin = q.target_xmin AND c.ctid = q.target_ctid;
    ELSIF q.kind LIKE 'rebind-%' THEN
        RETURN QUERY SELECT c.uid, c.name, c.kind, NULL::integer, NULL::text, s.uid, s.name,
                            c.secret_env, NULL::bytea, NULL::bytea, NULL::bytea,
                            q.audit_seq, c.created_at, c.updated_at
            FROM credentials c LEFT JOIN systems s ON s.id = c.system_id
            WHERE c.id = q.target_id AND c.engagement_id = q.engagement_id
            AND c.xmin = q.target_xmin AND c.ctid = q.target_ctid
            AND s.xmin IS NOT DISTINCT FROM q.sys_xmin AND s.ctid IS NOT DISTINCT FROM q.sys_ctid;
    END IF;
    -- the row (or its system's) written since the request: its entry names an earlier
    -- value; a new request (a new entry) reads this one (section pinned). A row gone still
    -- returns nothing, as before. An earlier version: refused likewise while its
    -- credential is in the engagement (a put, a restore, an mv back: section verpin);
    -- nothing when it is not (removed, moved away).
    IF NOT FOUND
       AND ((q.kind = 'system' AND EXISTS (SELECT 1 FROM systems s WHERE s.id = q.target_id
                                           AND s.engagement_id = q.engagement_id))
            OR (q.kind LIKE 'version%'
                AND EXISTS (SELECT 1 FROM credential_versions v
                            JOIN credentials c ON c.id = v.credential_id
                            WHERE v.id = q.target_id AND c.engagement_id = q.engagement_id))
            OR (q.kind <> 'system' AND q.kind NOT LIKE 'version%'
                AND EXISTS (SELECT 1 FROM credentials c WHERE c.id = q.target_id
                            AND c.engagement_id = q.engagement_id))) THEN
        RAISE EXCEPTION 'credvault: the record changed since the read request; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
END $$;

-- == chainheld: a member's open transaction does not hold the audit chain for ever ==
--
-- (docs/team.md "What members can and cannot touch"; until now under "Not built yet".)
-- Every audited action appends to one chain under one lock (audit_head, section readpath),
-- held until the appending transaction ends. A member with psql who called any audited
-- function inside a transaction and left it open (BEGIN; SELECT credvault.request_read(...);
-- then nothing), or kept it running (SELECT credvault.request_read(...), pg_sleep(1e6)),
-- stopped every audited action of every member until the DBA ended that session. An
-- honest client never holds the lock across a round trip: each audited call is one
-- autocommit statement, and CALL credvault.read commits each of its steps.
--
-- Now audit_append waits for the lock at most a second at a time (lock_timeout, caught in
-- a block of its own: one subtransaction per append, ~0.5 µs measured, and no wait at all
-- when the lock is free). Between waits, chain_blocker_ended() looks at the chain's holder
-- and at every session it waits for, directly or not (below), and ends at most one: a
-- *member's* whose transaction has been idle for more than chain_idle_seconds (meta,
-- default 5) or open for more than chain_hold_seconds (meta, default 60). Sessions of the
-- owner, of the DBA and of any role that is not a member are never ended: a waiter then
-- waits, as before. The ended transaction rolls back, its audit entries and its claims
-- with it, so nothing was released under them (a release needs a committed request and a
-- committed claim). Each end goes on the trail before the waiting action's own entry
-- ('session-end', by the waiting member, item the member whose session ended, detail: how
-- long and the pid) and into the server log; if the waiting action then fails, the server
-- log keeps it. The limits are the owner's to change: UPDATE credvault.meta.
--
-- Which session (the first version followed the holder's first blocker for at most 8
-- hops and judged the one it stopped on; review helper rev5, tests/postgres/
-- test_chain_held_review_pg.py):
-- * Every session the holder waits for, directly or not, is collected (a recursive query
--   over pg_blocking_pids; UNION drops a pid already seen, so a cycle ends it, and there
--   is no hop limit to stop short), and of those only the roots, which wait for nothing
--   themselves, are judged by the limits above. Otherwise bob, chaining nine sessions
--   through rows he locked (holder -> b2 -> ... -> b8 -> carol -> b9), made the walk
--   stop on carol, an honest autocommit put waiting behind his row ('active', as old as
--   her wait), and had her ended; and with the first blocker only he chose which of
--   several is judged.
-- * A root that someone has waited for an advisory lock (pg_locks.waitstart) for longer
--   than chain_hold_seconds is stale too: pg_advisory_lock, which every role may call,
--   outlives transactions, and bob's session holding one ran SELECT 1 every 0.2 s, never
--   idle in a transaction nor in one for long. Advisory locks only: no honest client takes
--   one, whereas an honest statement granted a relation lock after a long wait would be
--   judged by the wait of whoever queued behind it.
-- * The holder itself, waiting or not, once its transaction has been open longer than
--   chain_hold_seconds: bob's holder waited for a FOR UPDATE on the engagement row that
--   his other sessions kept starving with fresh FOR SHARE locks (a share lock may pass a
--   waiting FOR UPDATE), a new one every 0.5 s; each was ended once stale, the holder then
--   waited for the next, fresh one, and the chain stayed held as long as he relayed.
-- The oldest transaction among the candidates is ended first, so a stale root goes before
-- an honest holder that waits for it; only a relay of fresh roots makes an honest holder
-- the oldest, and then its one command fails (changing nothing) after the hold limit
-- instead of the whole team waiting.

INSERT INTO credvault.meta (key, value) VALUES ('chain_idle_seconds', convert_to('5', 'UTF8')),
                                               ('chain_hold_seconds', convert_to('60', 'UTF8'));

-- Ends the stale member session the chain's lock waits for, if there is one (above); says
-- whose, for the trail (NULL: none ended). Called only by audit_append, as the owner, who
-- holds pg_signal_backend and pg_read_all_stats (server.bootstrap_sql).
CREATE FUNCTION credvault.chain_blocker_ended(OUT member text, OUT detail text)
LANGUAGE plpgsql SET search_path = credvault, pg_temp
AS $$
DECLARE
    idle_s integer := coalesce((SELECT convert_from(value, 'UTF8')::integer FROM meta
                                WHERE key = 'chain_idle_seconds'), 5);
    hold_s integer := coalesce((SELECT convert_from(value, 'UTF8')::integer FROM meta
                                WHERE key = 'chain_hold_seconds'), 60);
    holder integer;
    a record;
BEGIN
    SELECT l.pid INTO holder FROM pg_locks l
    WHERE l.locktype = 'relation' AND l.relation = 'credvault.audit_head'::regclass
      AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
      AND l.granted AND l.mode <> 'AccessShareLock' AND l.pid <> pg_backend_pid()
    LIMIT 1;
    IF holder IS NULL THEN
        RETURN;  -- released meanwhile, or held by a prepared transaction (no session)
    END IF;
    WITH RECURSIVE up(pid) AS (  -- the holder and every session it waits for
        SELECT holder
        UNION
        SELECT unnest(pg_blocking_pids(up.pid)) FROM up WHERE up.pid <> pg_backend_pid()
    )
    SELECT m.name, x.pid, x.state, x.state_change, x.xact_start, w.since INTO a
    FROM up JOIN pg_stat_activity x ON x.pid = up.pid AND x.datname = current_database()
    JOIN members m ON m.role_name = x.usename
    LEFT JOIN LATERAL (  -- how long someone has waited for an advisory lock it holds
        SELECT min(l.waitstart) AS since FROM pg_locks l
        WHERE NOT l.granted AND l.locktype = 'advisory' AND x.pid = ANY (pg_blocking_pids(l.pid))
    ) w ON true
    WHERE up.pid <> pg_backend_pid()
      AND ((cardinality(pg_blocking_pids(up.pid)) = 0  -- waits for nothing: a root
            AND ((x.state LIKE 'idle in transaction%'
                  AND x.state_change < clock_timestamp() - make_interval(secs => idle_s))
                 OR x.xact_start < clock_timestamp() - make_interval(secs => hold_s)
                 OR w.since < clock_timestamp() - make_interval(secs => hold_s)))
           -- the holder, whatever it waits for (a relay of fresh roots in front of it)
           OR (up.pid = holder
               AND x.xact_start < clock_timestamp() - make_interval(secs => hold_s)))
    ORDER BY least(x.xact_start, w.since)  -- the oldest first: a cause before its victim
    LIMIT 1;
    IF a.name IS NULL THEN
        RETURN;  -- no stale member session: none ended here
    END IF;
    IF a.state LIKE 'idle in transaction%'
       AND a.state_change < clock_timestamp() - make_interval(secs => idle_s) THEN
        detail := format('its transaction idle for %s s held the audit chain: session ended (pid %s)',
                         floor(extract(epoch FROM clock_timestamp() - a.state_change)), a.pid);
    ELSIF a.xact_start < clock_timestamp() - make_interval(secs => hold_s) THEN
        detail := format('its transaction open for %s s held the audit chain: session ended (pid %s)',
                         floor(extract(epoch FROM clock_timestamp() - a.xact_start)), a.pid);
    ELSE
        detail := format('a lock it held for %s s held the audit chain: session ended (pid %s)',
                         floor(extract(epoch FROM clock_timestamp() - a.since)), a.pid);
    END IF;
    IF NOT pg_terminate_backend(a.pid, 5000) THEN
        detail := NULL;
        RETURN;
    END IF;
    member := a.name;
    RAISE LOG 'credvault: member %: %', member, detail;
END $$;
REVOKE ALL ON FUNCTION credvault.chain_blocker_ended() FROM PUBLIC;

-- One entry on the chain, its lock held by the caller (audit_append): section readpath's
-- append, unchanged, so that audit_append can put an ended session's entry before the
-- caller's with the same code.
CREATE FUNCTION credvault.chain_add(who text, act text, eng text, itm text, result text,
                                    info text) RETURNS bigint
LANGUAGE plpgsql SET search_path = credvault, pg_temp
AS $$
DECLARE
    head audit_head%ROWTYPE;
    at timestamptz;
    canon text;
    h bytea;
BEGIN
    at := clock_timestamp();
    SELECT * INTO head FROM audit_head;
    canon := json_build_array(
        head.seq + 1,
        to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        who, act, eng, itm, result, coalesce(info, '')
    )::text;
    h := sha256(head.hash || convert_to(canon, 'UTF8'));
    -- the head first: a stale snapshot's serialization_failure, not a duplicate key (readpath)
    UPDATE audit_head SET seq = head.seq + 1, hash = h;
    INSERT INTO audit (seq, ts, member, action, engagement, item, outcome, detail, prev, hash)
    VALUES (head.seq + 1, at, who, act, eng, itm, result, coalesce(info, ''), head.hash, h);
    RETURN head.seq + 1;
END $$;
REVOKE ALL ON FUNCTION credvault.chain_add(text, text, text, text, text, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION credvault.audit_append(
    who text, act text, eng text, itm text, result text, info text
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp SET lock_timeout = '1s'
AS $$
DECLARE
    e record;
    ended_members text[] := '{}';
    ended text[] := '{}';
BEGIN
    LOOP
        BEGIN
            LOCK TABLE audit_head IN EXCLUSIVE MODE;
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            SELECT * INTO e FROM chain_blocker_ended();
            IF e.member IS NOT NULL THEN
                ended_members := ended_members || e.member;
                ended := ended || e.detail;
            END IF;
        END;
    END LOOP;
    FOR i IN 1 .. cardinality(ended) LOOP  -- on the trail now that the lock is ours
        PERFORM chain_add(who, 'session-end', NULL, ended_members[i], 'ok', ended[i]);
    END LOOP;
    RETURN chain_add(who, act, eng, itm, result, info);
END $$;

-- == reinvite: inviting again a member who never joined replaces the invitation ==
--
-- (docs/team.md "Members: invite, join, remove".) invite_member refused a name whose member
-- is still `invited`: a `member invite` killed after the server stored the invitation and
-- before its code was written or shown left a code nobody has, and running it again said
-- "exists already" (an invited admin's name was then lost for good: a removed admin cannot
-- be invited again). Now inviting a member who is `invited` with no keys on record (a
-- member `credvault migrate` carried over has theirs) replaces the invitation: the login's
-- verifier and the signed invitation are the new code's, the old code logs in no more, and
-- the trail says `invitation replaced`. ALTER ROLE ends no session, so one that logged in
-- with the old code before could still call join_vault_proved (the server does not check
-- the proof) and take the member's row with keys of its own, the new code then refused:
-- replacing an invitation also ends that role's sessions, as member rm does (review rev6).
-- invite_member as section crl left it otherwise.

CREATE OR REPLACE FUNCTION credvault.invite_member(member text, verifier text, make_admin boolean,
                                                   i_ipk bytea, i_sig bytea)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := require_admin(); old members%ROWTYPE; pid integer; killed integer := 0;
BEGIN
    SELECT * INTO old FROM members m WHERE m.name = invite_member.member FOR UPDATE;
    IF old.name IS NULL THEN
        PERFORM add_member(member, verifier, make_admin);
        INSERT INTO member_certs (member, inviter, admin, ipk, invitation_sig)
        VALUES (member, who, make_admin, i_ipk, i_sig);
        RETURN;
    END IF;
    IF verifier !~ '^SCRAM-SHA-256\$' THEN
        RAISE EXCEPTION 'credvault: a SCRAM verifier is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF old.state = 'invited' AND old.sign_pub IS NULL THEN
        UPDATE members SET admin = make_admin, created_at = now() WHERE name = old.name;
        EXECUTE format('ALTER ROLE %I LOGIN PASSWORD %L', old.role_name, verifier);
        -- the old code's sessions go with it (nobody holds the new code yet)
        FOR pid IN SELECT a.pid FROM pg_stat_activity a WHERE a.usename = old.role_name LOOP
            IF pg_terminate_backend(pid) THEN killed := killed + 1; END IF;
        END LOOP;
        DELETE FROM member_certs c WHERE c.member = old.name;
        INSERT INTO member_certs (member, inviter, admin, ipk, invitation_sig)
        VALUES (member, who, make_admin, i_ipk, i_sig);
        PERFORM audit_append(who, 'member-add', NULL, member, 'ok',
                             CASE WHEN make_admin THEN 'admin, invitation replaced'
                                  ELSE 'invitation replaced' END
                             || CASE WHEN killed > 0 THEN format(', sessions=%s', killed)
                                     ELSE '' END);
        RETURN;
    END IF;
    IF old.state <> 'removed' THEN
        RAISE EXCEPTION 'credvault: % is a member already', member USING ERRCODE = 'unique_violation';
    END IF;
    -- a removed admin's signatures (list versions, revoke links, invitations) are checked
    -- against the certificate under their name: it stays; choose another name
    IF old.admin THEN
        RAISE EXCEPTION 'credvault: % was an admin: invite them under another name', member
            USING ERRCODE = 'unique_violation';
    END IF;
    UPDATE members SET state = 'invited', admin = make_admin, sign_pub = NULL, kem_pub = NULL,
        created_at = now(), removed_at = NULL WHERE name = old.name;
    EXECUTE format('ALTER ROLE %I LOGIN PASSWORD %L', old.role_name, verifier);
    DELETE FROM member_certs c WHERE c.member = old.name;
    INSERT INTO member_certs (member, inviter, admin, ipk, invitation_sig)
    VALUES (member, who, make_admin, i_ipk, i_sig);
    PERFORM audit_append(who, 'member-add', NULL, member, 'ok',
                         CASE WHEN make_admin THEN 'admin, again' ELSE 'again' END);
END $$;

-- == ownpin: a read request is made before its transaction writes ==
--
-- (docs/team.md "Reading a secret"; review helper rev7 of section verpin,
-- tests/postgres/test_ownpin_review_pg.py.) A pin names a row version by its id, xmin and
-- ctid: unique while the row stays where it is, and a VACUUM FULL or CLUSTER that moves it
-- keeps its xmin and gives it a new ctid, so a request made before is refused once and
-- asked again. Not when one transaction wrote the same row twice with a request between:
-- both versions have the same id and xmin, and the rewrite may put the second where the
-- first was (the live rows packed in order: one new row written between the two is
-- enough). Bob, an engineer: BEGIN; put alpha/db (his value, the row version A);
-- request_record('rebind-edit', alpha, db) pins A; put alpha/zz; revert_credential(alpha,
-- db, 1) (the row version B, alice's version 1 copied back by the server); COMMIT. After a
-- VACUUM FULL of credentials within the request's minute, B sat at A's ctid with A's xmin
-- and fetch_record released alice's secret under an entry made for bob's own value (no
-- 'get' of it on the trail); so for every kind, the versions' included. A request whose
-- transaction has written nothing before it pins only row versions other transactions
-- committed, each of which no later write can repeat (a later version has a later xmin):
-- request_record (its restatement in section verpin above carries the check) now refuses
-- (invalid_transaction_state) in a transaction that already has a transaction id, i.e. has
-- written something, even if rolled back to a savepoint since; an honest client makes each
-- request in an autocommit statement of its own. And request_read (`get`; CALL
-- credvault.read's first step, the first of its transaction) likewise, as section pinned
-- left it: the same story released alice's version 1 to bob's `get` request made for his
-- own value. The other phase ones (request_use for otp, run and ssh; find, export, import,
-- move, rotation) have the same gap and are not changed here.

CREATE OR REPLACE FUNCTION credvault.request_read(eng text, itm text, reason text DEFAULT '')
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text;
    eid bigint;
    need_reason boolean;
    r text;
    cid bigint;
    why text := coalesce(reason, '');
    s bigint;
    rid bigint;
BEGIN
    -- this transaction has written nothing yet (section ownpin)
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'credvault: a read request is made before any write of its transaction; make it in a transaction of its own'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    -- me(), the engagement (active or closed), role_in() and the credential, in one query:
    -- at most one row (members.role_name, engagements.name, grants' and credentials' keys
    -- are unique); a missing engagement leaves role and credential NULL.
    SELECT m.name, e.id, e.require_reason, g.role, c.id INTO who, eid, need_reason, r, cid
    FROM members m
    LEFT JOIN engagements e ON e.name = eng AND e.state IN ('active', 'closed')
    LEFT JOIN grants g ON g.engagement_id = e.id AND g.member = m.name
         AND g.revoked_at IS NULL AND (g.expires_at IS NULL OR g.expires_at > now())
    LEFT JOIN credentials c ON c.engagement_id = e.id AND c.name = itm
    WHERE m.role_name = session_user AND m.state = 'active';
    IF who IS NULL THEN
        RAISE EXCEPTION 'credvault: % is not an active member', session_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF r IS NULL OR r NOT IN ('lead', 'engineer', 'reader') THEN
        -- held()'s words: 'role auditor', or 'no grant'
        PERFORM audit_append(who, 'get', eng, itm, 'denied', coalesce('role ' || r, 'no grant'));
        RETURN NULL;
    END IF;
    IF need_reason AND why = '' THEN
        PERFORM audit_append(who, 'get', eng, itm, 'denied', 'this engagement requires --reason');
        RETURN NULL;
    END IF;
    IF cid IS NULL THEN
        PERFORM audit_append(who, 'get', eng, itm, 'error', 'not found');
        RETURN NULL;
    END IF;
    s := audit_append(who, 'get', eng, itm, 'ok', CASE WHEN why = '' THEN '' ELSE 'reason: ' || why END);
    -- Still the row the query above found, seen after the chain's lock (a statement of its
    -- own: a fresh snapshot): an `mv` to another engagement committed while this waited for
    -- the lock leaves a row under the same id elsewhere, an `rm` none; this request must not
    -- name either (section rpreview). Then nothing is kept, the audit row included.
    -- (and the row version it found, which alone may be released under this entry:
    -- section pinned; and its linked system's row version; both with their places)
    INSERT INTO read_requests (member, credential_id, audit_seq, xid, cred_xmin, sys_xmin,
                               cred_ctid, sys_ctid)
    SELECT who, c.id, s, pg_current_xact_id(), c.xmin, sy.xmin, c.ctid, sy.ctid
    FROM credentials c
    LEFT JOIN systems sy ON sy.id = c.system_id
    WHERE c.id = cid AND c.engagement_id = eid AND c.name = itm
    RETURNING id INTO rid;
    IF rid IS NULL THEN
        RAISE EXCEPTION 'credvault: %/% changed meanwhile; run the command again', eng, itm
            USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN rid;
END $$;
