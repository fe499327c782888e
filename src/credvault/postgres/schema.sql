-- credvault team backend on PostgreSQL: schema version 1 (issue 14; docs/team.md).
--
-- Applied by credvault.postgres.server.apply_schema, connected as the database's dedicated
-- owner role (LOGIN CREATEROLE, never SUPERUSER, member of pg_signal_backend), inside one
-- transaction holding an advisory lock. Roles are cluster-wide, so every role this file
-- makes is prefixed with the database name: '<db>_members' (the group every member role
-- is in) and '<db>_<member>' (one login role per member, never shared).
--
-- The server holds only what the SQLCipher vault holds: envelopes (AES-256-GCM, made on a
-- member's machine), sealed key copies, signatures and metadata. What it adds is
-- enforcement: members reach secret-bearing columns, grants, the audit trail and the
-- membership log only through the SECURITY DEFINER functions below (owned by the owner,
-- fixed search_path), and every envelope leaves the server only after its audit row is
-- committed and durable (request_read, then fetch).

CREATE SCHEMA credvault;
REVOKE ALL ON SCHEMA credvault FROM PUBLIC;

CREATE TABLE credvault.schema_version (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    version integer NOT NULL
);
INSERT INTO credvault.schema_version (version) VALUES (1);

CREATE TABLE credvault.meta (
    key   text PRIMARY KEY,
    value bytea NOT NULL
);

-- The vault id: part of every envelope's and sealed copy's associated data, as in SQLCipher.
INSERT INTO credvault.meta (key, value) VALUES ('vault_id', uuid_send(gen_random_uuid()));
-- How long backups and WAL archives that may hold sealed copies are kept (days): the purge
-- receipt's horizon. The operator sets it to match pgBackRest/pg_dump retention.
INSERT INTO credvault.meta (key, value) VALUES ('backup_retention_days', convert_to('35', 'UTF8'));

CREATE TABLE credvault.members (
    name       text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_-]{0,30}$'),
    role_name  text NOT NULL UNIQUE,
    admin      boolean NOT NULL DEFAULT false,
    state      text NOT NULL CHECK (state IN ('invited', 'active', 'removed')),
    sign_pub   bytea,                 -- Ed25519 public key, made on the member's machine
    kem_pub    bytea,                 -- X25519 public key (HPKE), ditto
    created_at timestamptz NOT NULL DEFAULT now(),
    removed_at timestamptz
);

CREATE TABLE credvault.engagements (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uid            bytea NOT NULL UNIQUE,
    name           text NOT NULL UNIQUE,
    client         text NOT NULL,
    state          text NOT NULL CHECK (state IN ('active', 'closed', 'purged')),
    key_version    integer NOT NULL,
    key_fp         text NOT NULL,
    needs_rotation boolean NOT NULL DEFAULT false,
    require_reason boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    created_by     text NOT NULL,
    lead           text NOT NULL,
    creation_sig   bytea NOT NULL,
    closed_at      timestamptz,
    purge_due      timestamptz,
    purged_at      timestamptz,
    receipt        text
);

CREATE TABLE credvault.grants (
    engagement_id bigint NOT NULL REFERENCES credvault.engagements (id) ON DELETE CASCADE,
    member        text NOT NULL,          -- a member name, or '@recovery'
    role          text NOT NULL CHECK (role IN ('lead', 'engineer', 'reader', 'auditor', 'recovery')),
    granted_by    text NOT NULL,
    granted_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    role_sig      bytea NOT NULL,
    key_version   integer,
    sealed        bytea,
    sealed_by     text,
    copy_sig      bytea,
    revoked_at    timestamptz,
    PRIMARY KEY (engagement_id, member)
);
CREATE INDEX grants_member ON credvault.grants (member);

CREATE TABLE credvault.systems (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uid           bytea NOT NULL UNIQUE,
    engagement_id bigint NOT NULL REFERENCES credvault.engagements (id) ON DELETE CASCADE,
    name          text NOT NULL,
    port          integer,
    protocol      text,
    address_env   bytea NOT NULL,
    details_env   bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (engagement_id, name)
);

CREATE TABLE credvault.credentials (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uid           bytea NOT NULL UNIQUE,
    engagement_id bigint NOT NULL REFERENCES credvault.engagements (id) ON DELETE CASCADE,
    name          text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('password', 'ssh-key', 'token', 'other')),
    system_id     bigint REFERENCES credvault.systems (id) ON DELETE SET NULL,
    key_version   integer NOT NULL,
    secret_env    bytea NOT NULL,
    username_env  bytea,
    url_env       bytea,
    notes_env     bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (engagement_id, name)
);

-- The audit trail, chained on the server: hash = sha256(prev ‖ canonical entry), appended
-- only by audit_append under a row lock on audit_head, so the chain is one total order.
CREATE TABLE credvault.audit (
    seq        bigint PRIMARY KEY,
    ts         timestamptz NOT NULL,
    member     text NOT NULL,
    action     text NOT NULL,
    engagement text,
    item       text,
    outcome    text NOT NULL CHECK (outcome IN ('ok', 'denied', 'error')),
    detail     text NOT NULL DEFAULT '',
    prev       bytea NOT NULL,
    hash       bytea NOT NULL
);
CREATE INDEX audit_engagement ON credvault.audit (engagement, seq);

CREATE TABLE credvault.audit_head (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq  bigint NOT NULL,
    hash bytea NOT NULL
);
INSERT INTO credvault.audit_head (seq, hash) VALUES (0, '\x0000000000000000000000000000000000000000000000000000000000000000');

-- Signed membership log entries (made and signed on an admin's machine).
CREATE TABLE credvault.membership_log (
    seq    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts     timestamptz NOT NULL DEFAULT now(),
    signer text NOT NULL,
    entry  bytea NOT NULL,
    sig    bytea NOT NULL
);

-- Phase one of a read: a committed request naming its audit row.
CREATE TABLE credvault.read_requests (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    member        text NOT NULL,
    credential_id bigint NOT NULL REFERENCES credvault.credentials (id) ON DELETE CASCADE,
    audit_seq     bigint NOT NULL REFERENCES credvault.audit (seq),
    xid           xid8 NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    used_at       timestamptz
);

-- One row that nudge_wal updates (see there).
CREATE TABLE credvault.wal_nudge (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    n   bigint NOT NULL
);
INSERT INTO credvault.wal_nudge (n) VALUES (0);

-- Phase one of a key rotation's read of every envelope (request_rotation, rotation_fetch).
CREATE TABLE credvault.rotation_requests (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    member        text NOT NULL,
    engagement_id bigint NOT NULL REFERENCES credvault.engagements (id) ON DELETE CASCADE,
    audit_seq     bigint NOT NULL REFERENCES credvault.audit (seq),
    xid           xid8 NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    used_at       timestamptz
);

-- ---------------------------------------------------------------------------------------
-- Functions. All SECURITY DEFINER ones pin search_path (pg_catalog is searched first
-- implicitly; pg_temp last so a member's temporary objects never shadow ours). Who is
-- calling is session_user: SET ROLE cannot change it, and a member holds no other role.

CREATE FUNCTION credvault.member_group() RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = credvault, pg_temp
AS $$ SELECT current_database() || '_members' $$;

CREATE FUNCTION credvault.role_of(member text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = credvault, pg_temp
AS $$ SELECT current_database() || '_' || member $$;

-- The calling member, or an insufficient_privilege error.
CREATE FUNCTION credvault.me() RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text;
BEGIN
    SELECT name INTO who FROM members WHERE role_name = session_user AND state = 'active';
    IF who IS NULL THEN
        RAISE EXCEPTION 'credvault: % is not an active member', session_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN who;
END $$;

CREATE FUNCTION credvault.vault_id() RETURNS bytea
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$ SELECT value FROM meta WHERE key = 'vault_id' $$;

CREATE FUNCTION credvault.is_admin() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$ SELECT coalesce((SELECT admin FROM members WHERE role_name = session_user AND state = 'active'), false) $$;

-- The caller's live role in an engagement (NULL: none).
CREATE FUNCTION credvault.role_in(eng_id bigint) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
    SELECT g.role FROM grants g JOIN members m ON m.name = g.member
    WHERE g.engagement_id = eng_id AND m.role_name = session_user AND m.state = 'active'
      AND g.revoked_at IS NULL AND (g.expires_at IS NULL OR g.expires_at > now())
$$;

-- Engagements the caller holds a live role in: the row-level-security predicate.
CREATE FUNCTION credvault.my_engagement_ids() RETURNS SETOF bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
    SELECT g.engagement_id FROM grants g JOIN members m ON m.name = g.member
    WHERE m.role_name = session_user AND m.state = 'active'
      AND g.revoked_at IS NULL AND (g.expires_at IS NULL OR g.expires_at > now())
$$;

-- Append one entry to the chain. Not executable by members: only the functions below
-- write audit rows, always naming the calling member.
CREATE FUNCTION credvault.audit_append(
    who text, act text, eng text, itm text, result text, info text
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    head audit_head%ROWTYPE;
    at timestamptz := clock_timestamp();
    canon text;
    h bytea;
BEGIN
    SELECT * INTO head FROM audit_head FOR UPDATE;
    canon := json_build_array(
        head.seq + 1,
        to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        who, act, eng, itm, result, coalesce(info, '')
    )::text;
    h := sha256(head.hash || convert_to(canon, 'UTF8'));
    INSERT INTO audit (seq, ts, member, action, engagement, item, outcome, detail, prev, hash)
    VALUES (head.seq + 1, at, who, act, eng, itm, result, coalesce(info, ''), head.hash, h);
    UPDATE audit_head SET seq = head.seq + 1, hash = h;
    RETURN head.seq + 1;
END $$;

-- Recompute the chain; returns the first seq whose hash does not follow, or NULL.
CREATE FUNCTION credvault.audit_verify() RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    r audit%ROWTYPE;
    prev bytea := '\x0000000000000000000000000000000000000000000000000000000000000000';
    expect bigint := NULL;
BEGIN
    PERFORM me();
    FOR r IN SELECT * FROM audit ORDER BY seq LOOP
        IF expect IS NOT NULL AND r.seq <> expect THEN RETURN r.seq; END IF;
        IF r.prev <> prev OR r.hash <> sha256(prev || convert_to(json_build_array(
            r.seq, to_char(r.ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            r.member, r.action, r.engagement, r.item, r.outcome, r.detail)::text, 'UTF8'))
        THEN
            RETURN r.seq;
        END IF;
        prev := r.hash;
        expect := r.seq + 1;
    END LOOP;
    IF prev <> (SELECT hash FROM audit_head) THEN
        RETURN coalesce(expect, 0);
    END IF;
    RETURN NULL;
END $$;

-- The audit rows of one engagement, for its lead or auditor (or an admin).
CREATE FUNCTION credvault.audit_rows(eng text)
RETURNS TABLE (seq bigint, ts timestamptz, member text, action text, item text, outcome text, detail text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE e engagements%ROWTYPE;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng;
    IF e.id IS NULL OR NOT (is_admin() OR role_in(e.id) IN ('lead', 'auditor')) THEN
        RAISE EXCEPTION 'credvault: not allowed to read the audit of %', eng
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN QUERY SELECT a.seq, a.ts, a.member, a.action, a.item, a.outcome, a.detail
        FROM audit a WHERE a.engagement = eng ORDER BY a.seq;
END $$;

-- ---------------------------------------------------------------------------------------
-- Membership. Only admins; the owner's CREATEROLE does the role work, with every name
-- checked against members.name's pattern and quoted with %I.

CREATE FUNCTION credvault.require_admin() RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me();
BEGIN
    IF NOT is_admin() THEN
        RAISE EXCEPTION 'credvault: % is not an admin', who USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN who;
END $$;

-- Make a member's login role (owner-only; used by add_member and by the first admin's setup).
CREATE FUNCTION credvault.create_member_role(member text, verifier text, admin boolean, st text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    IF member !~ '^[a-z][a-z0-9_-]{0,30}$' THEN
        RAISE EXCEPTION 'credvault: bad member name' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO members (name, role_name, admin, state) VALUES (member, role_of(member), admin, st);
    EXECUTE format('CREATE ROLE %I LOGIN INHERIT NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD %L IN ROLE %I',
                   role_of(member), verifier, member_group());
    EXECUTE format('ALTER ROLE %I SET search_path = credvault, pg_temp', role_of(member));
END $$;

-- An admin adds a member (state 'invited' until they join with their own keys). The
-- password verifier is a SCRAM verifier made on the admin's machine for the one-time
-- invitation secret; the new member replaces it at join.
CREATE FUNCTION credvault.add_member(member text, verifier text, make_admin boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := require_admin();
BEGIN
    IF verifier !~ '^SCRAM-SHA-256\$' THEN
        RAISE EXCEPTION 'credvault: a SCRAM verifier is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM create_member_role(member, verifier, make_admin, 'invited');
    PERFORM audit_append(who, 'member-add', NULL, member, 'ok', CASE WHEN make_admin THEN 'admin' ELSE '' END);
END $$;

-- The invited member, on their own machine: publish public keys, set their own password
-- verifier; private keys never leave that machine.
CREATE FUNCTION credvault.join_vault(sign_pub bytea, kem_pub bytea, verifier text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text;
BEGIN
    SELECT name INTO who FROM members WHERE role_name = session_user AND state = 'invited';
    IF who IS NULL THEN
        RAISE EXCEPTION 'credvault: no pending invitation for %', session_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF verifier !~ '^SCRAM-SHA-256\$' THEN
        RAISE EXCEPTION 'credvault: a SCRAM verifier is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- A member carried over by `credvault migrate` has their public keys on record already
    -- (their sealed copies are sealed to them): they must join with those very keys.
    IF EXISTS (SELECT 1 FROM members m WHERE m.name = who AND m.sign_pub IS NOT NULL
               AND (m.sign_pub <> join_vault.sign_pub OR m.kem_pub <> join_vault.kem_pub)) THEN
        RAISE EXCEPTION 'credvault: % must join with the keys of their migrated vault (--from-vault)', who
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE members SET state = 'active', sign_pub = join_vault.sign_pub, kem_pub = join_vault.kem_pub
        WHERE name = who;
    EXECUTE format('ALTER ROLE %I PASSWORD %L', session_user, verifier);
    PERFORM audit_append(who, 'member-join', NULL, who, 'ok', '');
END $$;

-- Removal is immediate: login disabled, every open session terminated, grants revoked
-- (sealed copies dropped), engagements flagged for key rotation.
CREATE FUNCTION credvault.remove_member(member text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text := require_admin();
    target members%ROWTYPE;
    killed integer := 0;
    pid integer;
BEGIN
    SELECT * INTO target FROM members WHERE name = member AND state <> 'removed';
    IF target.name IS NULL THEN
        RAISE EXCEPTION 'credvault: no member %', member USING ERRCODE = 'no_data_found';
    END IF;
    IF target.name = who THEN
        RAISE EXCEPTION 'credvault: an admin cannot remove themselves' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format('ALTER ROLE %I NOLOGIN PASSWORD NULL', target.role_name);
    UPDATE members SET state = 'removed', removed_at = now() WHERE name = member;
    UPDATE engagements SET needs_rotation = true
        WHERE id IN (SELECT engagement_id FROM grants WHERE grants.member = remove_member.member
                     AND revoked_at IS NULL AND sealed IS NOT NULL);
    UPDATE grants SET revoked_at = now(), sealed = NULL, sealed_by = NULL, copy_sig = NULL
        WHERE grants.member = remove_member.member AND revoked_at IS NULL;
    FOR pid IN SELECT a.pid FROM pg_stat_activity a WHERE a.usename = target.role_name LOOP
        IF pg_terminate_backend(pid) THEN killed := killed + 1; END IF;
    END LOOP;
    PERFORM audit_append(who, 'member-remove', NULL, member, 'ok', format('sessions=%s', killed));
    RETURN killed;
END $$;

CREATE FUNCTION credvault.append_membership_log(entry bytea, sig bytea) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := require_admin(); s bigint;
BEGIN
    INSERT INTO membership_log (signer, entry, sig) VALUES (who, entry, sig) RETURNING seq INTO s;
    RETURN s;
END $$;

CREATE FUNCTION credvault.membership_log_entries()
RETURNS TABLE (seq bigint, ts timestamptz, signer text, entry bytea, sig bytea)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    PERFORM me();
    RETURN QUERY SELECT l.seq, l.ts, l.signer, l.entry, l.sig FROM membership_log l ORDER BY l.seq;
END $$;

-- ---------------------------------------------------------------------------------------
-- Engagements and grants. Certificates and sealed copies are made and signed on the
-- member's machine; the server checks who may store them.

CREATE FUNCTION credvault.create_engagement(
    e_uid bytea, e_name text, e_client text, e_key_fp text, e_creation_sig bytea, e_lead text
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := require_admin(); eid bigint;
BEGIN
    INSERT INTO engagements (uid, name, client, state, key_version, key_fp, created_by, lead, creation_sig)
    VALUES (e_uid, e_name, e_client, 'active', 1, e_key_fp, who, e_lead, e_creation_sig)
    RETURNING id INTO eid;
    PERFORM audit_append(who, 'create', e_name, NULL, 'ok', '');
    RETURN eid;
END $$;

CREATE FUNCTION credvault.put_grant(
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

-- The caller's own sealed key copy and certificate for one engagement.
CREATE FUNCTION credvault.my_grant(eng text)
RETURNS TABLE (role text, role_sig bytea, granted_by text, key_version integer,
               sealed bytea, sealed_by text, copy_sig bytea, expires_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
    SELECT g.role, g.role_sig, g.granted_by, g.key_version, g.sealed, g.sealed_by, g.copy_sig, g.expires_at
    FROM grants g JOIN engagements e ON e.id = g.engagement_id
    WHERE e.name = eng AND g.member = me() AND g.revoked_at IS NULL
      AND (g.expires_at IS NULL OR g.expires_at > now())
$$;

-- Store a credential (envelopes sealed on the member's machine): leads and engineers.
CREATE FUNCTION credvault.put_credential(
    eng text, c_name text, c_kind text, c_uid bytea, c_key_version integer,
    c_secret_env bytea, c_username_env bytea DEFAULT NULL, c_url_env bytea DEFAULT NULL,
    c_notes_env bytea DEFAULT NULL
) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE;
BEGIN
    -- FOR SHARE: a key rotation (FOR UPDATE) cannot interleave with this write
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active' FOR SHARE;
    IF e.id IS NULL OR coalesce(role_in(e.id), '') NOT IN ('lead', 'engineer') THEN
        -- returned, not raised: an exception would roll the denial's audit row back
        PERFORM audit_append(who, 'put', eng, c_name, 'denied', '');
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

-- ---------------------------------------------------------------------------------------
-- Two-phase audited read.
--
-- request_read writes the audit row (chained) and a request naming it; the client commits.
-- fetch releases the envelope only for a request that is the caller's, unused, at most
-- 60 s old, committed by an earlier transaction (pg_xact_status, so calling both in one
-- transaction and rolling back yields nothing), and durable: the WAL up to this moment is
-- flushed, which covers the request's commit record (it is visible to us, so it was
-- inserted). A member who SET synchronous_commit = off before requesting is refused until
-- the WAL writer has flushed it; the envelope never leaves ahead of its audit row.
-- A denied request is audited and returns NULL (no exception, so the denial commits).

CREATE FUNCTION credvault.request_read(eng text, itm text, reason text DEFAULT '')
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text := me();
    e engagements%ROWTYPE;
    cid bigint;
    r text;
    s bigint;
    rid bigint;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active';
    r := CASE WHEN e.id IS NULL THEN NULL ELSE role_in(e.id) END;
    IF r IS NULL OR r NOT IN ('lead', 'engineer', 'reader') THEN
        PERFORM audit_append(who, 'get', eng, itm, 'denied', coalesce(reason, ''));
        RETURN NULL;
    END IF;
    IF e.require_reason AND coalesce(reason, '') = '' THEN
        PERFORM audit_append(who, 'get', eng, itm, 'denied', 'no reason given');
        RETURN NULL;
    END IF;
    SELECT id INTO cid FROM credentials WHERE engagement_id = e.id AND name = itm;
    IF cid IS NULL THEN
        PERFORM audit_append(who, 'get', eng, itm, 'error', 'not found');
        RETURN NULL;
    END IF;
    s := audit_append(who, 'get', eng, itm, 'ok', coalesce(reason, ''));
    INSERT INTO read_requests (member, credential_id, audit_seq, xid)
    VALUES (who, cid, s, pg_current_xact_id()) RETURNING id INTO rid;
    RETURN rid;
END $$;

CREATE FUNCTION credvault.fetch(request bigint)
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
    -- Durability: everything inserted into the WAL before this call (the request's commit
    -- record included: it is visible, so it was inserted) must be flushed. A synchronous
    -- commit flushed it already; but other backends insert WAL without flushing it (the
    -- background writer logs a running-transactions record shortly after any activity
    -- that follows 15 s of quiet) and the idle WAL writer may sleep for seconds. So wait
    -- ~50 ms, then refuse; the client flushes with a commit of its own (nudge_wal) and
    -- asks again.
    WHILE pg_current_wal_flush_lsn() < want LOOP
        tries := tries + 1;
        IF tries > 25 THEN
            RAISE EXCEPTION 'credvault: read request not yet durable (asynchronous commit?); retry'
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        PERFORM pg_sleep(0.002);
    END LOOP;
    -- With synchronous standbys configured, the request must be flushed on one of them too:
    -- a member who SET synchronous_commit = local for the request would otherwise have its
    -- audit row missing after a failover. (Needs pg_read_all_stats to see flush_lsn.)
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
    IF coalesce(role_in((SELECT c.engagement_id FROM credentials c WHERE c.id = q.credential_id)), '')
       NOT IN ('lead', 'engineer', 'reader') THEN
        RAISE EXCEPTION 'credvault: access revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE read_requests SET used_at = clock_timestamp() WHERE id = q.id;
    RETURN QUERY SELECT c.secret_env, c.username_env, c.url_env, c.notes_env, c.key_version,
                        c.uid, c.kind, q.audit_seq, c.created_at, c.updated_at
        FROM credentials c WHERE c.id = q.credential_id;
END $$;

-- ---------------------------------------------------------------------------------------
-- Close and purge. The purge removes every envelope and every sealed copy of the engagement
-- key from the live tables; the owner then rewrites the tables (VACUUM FULL, which cannot
-- run inside a function). Backups and WAL may still hold sealed copies until the horizon.

CREATE FUNCTION credvault.close_engagement(eng text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active' FOR UPDATE;
    IF e.id IS NULL OR NOT (is_admin() OR role_in(e.id) = 'lead') THEN
        RAISE EXCEPTION 'credvault: % may not close %', who, eng USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE engagements SET state = 'closed', closed_at = now() WHERE id = e.id;
    PERFORM audit_append(who, 'close', eng, NULL, 'ok', '');
END $$;

-- The receipt horizon: after it, no backup or WAL archive within the stated retention can
-- still hold a sealed copy written before now.
CREATE FUNCTION credvault.purge_horizon() RETURNS timestamptz
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
    SELECT now() + make_interval(days => convert_from(value, 'UTF8')::integer)
    FROM meta WHERE key = 'backup_retention_days'
$$;

-- An admin purges a closed engagement, storing the receipt signed on their machine.
CREATE FUNCTION credvault.purge_engagement(eng text, signed_receipt text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := require_admin(); e engagements%ROWTYPE; n integer;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng FOR UPDATE;
    IF e.id IS NULL OR e.state <> 'closed' THEN
        RAISE EXCEPTION 'credvault: % is not a closed engagement', eng USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM credentials WHERE engagement_id = e.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM systems WHERE engagement_id = e.id;
    UPDATE grants SET sealed = NULL, sealed_by = NULL, copy_sig = NULL,
                      revoked_at = coalesce(revoked_at, now())
        WHERE engagement_id = e.id;
    UPDATE engagements SET state = 'purged', purged_at = now(), receipt = signed_receipt
        WHERE id = e.id;
    PERFORM audit_append(who, 'purge', eng, NULL, 'ok', format('credentials=%s', n));
    RETURN n;
END $$;

-- ---------------------------------------------------------------------------------------
-- Revocation and the audit head (the CLI's `revoke`, `audit verify`, `audit checkpoint`).

-- A lead or admin revokes a member's role at once: the sealed copy goes, the engagement is
-- flagged for key rotation, and the credentials the member read are returned (from the
-- server's own audit rows). A denial is audited and returns NULL: an exception would roll
-- the audit row back.
CREATE FUNCTION credvault.revoke_grant(eng text, grantee text) RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; readlist text[];
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active' FOR UPDATE;
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

-- WAL that another backend inserted without flushing it (the background writer's
-- running-transactions record, an asynchronous commit) makes fetch wait, and the WAL
-- writer may sleep for seconds when idle. A client whose fetch was refused as "not yet
-- durable" calls this in a transaction of its own with synchronous_commit = local: its
-- commit flushes everything inserted before it, the pending record included. Harmless to
-- call: one row, no data.
CREATE FUNCTION credvault.nudge_wal() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    PERFORM me();
    UPDATE wal_nudge SET n = n + 1;
END $$;

-- Key rotation after a revocation, done on the lead's machine: the lead asks (audited,
-- committed: phase one, as for a read), fetches every envelope of the engagement against
-- that request (phase two), re-seals them under a new key it makes, seals the new key to
-- every member still holding a reading role, and stores it all in one transaction.
CREATE FUNCTION credvault.request_rotation(eng text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; s bigint; rid bigint;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active';
    IF e.id IS NULL OR NOT (is_admin() OR role_in(e.id) = 'lead') THEN
        PERFORM audit_append(who, 'rotate', eng, NULL, 'denied', '');
        RETURN NULL;
    END IF;
    s := audit_append(who, 'rotate', eng, NULL, 'ok', 'read for rotation');
    INSERT INTO rotation_requests (member, engagement_id, audit_seq, xid)
    VALUES (who, e.id, s, pg_current_xact_id()) RETURNING id INTO rid;
    RETURN rid;
END $$;

CREATE FUNCTION credvault.rotation_fetch(request bigint)
RETURNS TABLE (uid bytea, key_version integer, secret_env bytea, username_env bytea,
               url_env bytea, notes_env bytea)
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
    IF NOT (is_admin() OR role_in(q.engagement_id) = 'lead') THEN
        RAISE EXCEPTION 'credvault: no longer a lead' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE rotation_requests SET used_at = clock_timestamp() WHERE id = q.id;
    RETURN QUERY SELECT c.uid, c.key_version, c.secret_env, c.username_env, c.url_env, c.notes_env
        FROM credentials c WHERE c.engagement_id = q.engagement_id ORDER BY c.uid;
END $$;

-- Who must get a copy of the new key: live reading roles (names only; leads and admins).
CREATE FUNCTION credvault.rotation_grantees(eng text) RETURNS TABLE (member text, role text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE e engagements%ROWTYPE;
BEGIN
    PERFORM me();
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active';
    IF e.id IS NULL OR NOT (is_admin() OR role_in(e.id) = 'lead') THEN
        RAISE EXCEPTION 'credvault: only a lead sees who holds a key copy' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN QUERY SELECT g.member, g.role FROM grants g
        WHERE g.engagement_id = e.id AND g.revoked_at IS NULL AND g.sealed IS NOT NULL
          AND (g.expires_at IS NULL OR g.expires_at > now())
        ORDER BY g.member;
END $$;

-- Store the rotation: every credential re-sealed (exactly the set there is now: a put in
-- between makes this fail, and the lead runs it again), every live key copy replaced.
CREATE FUNCTION credvault.rotate_key(
    eng text, old_version integer, new_fp text,
    c_uids bytea[], c_secret bytea[], c_username bytea[], c_url bytea[], c_notes bytea[],
    g_members text[], g_sealed bytea[], g_sigs bytea[]
) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; n integer; i integer;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active' FOR UPDATE;
    IF e.id IS NULL OR NOT (is_admin() OR role_in(e.id) = 'lead') THEN
        RAISE EXCEPTION 'credvault: % may not rotate %', who, eng USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF e.key_version <> old_version THEN
        RAISE EXCEPTION 'credvault: the key was rotated meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    IF EXISTS (SELECT 1 FROM systems WHERE engagement_id = e.id) THEN
        RAISE EXCEPTION 'credvault: rotating an engagement with systems is not supported yet'
            USING ERRCODE = 'feature_not_supported';
    END IF;
    SELECT count(*) INTO n FROM credentials WHERE engagement_id = e.id;
    IF n <> coalesce(cardinality(c_uids), 0) OR EXISTS (
        SELECT 1 FROM credentials c WHERE c.engagement_id = e.id AND NOT c.uid = ANY (c_uids)) THEN
        RAISE EXCEPTION 'credvault: credentials changed meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    IF EXISTS (SELECT 1 FROM grants g WHERE g.engagement_id = e.id AND g.revoked_at IS NULL
               AND g.sealed IS NOT NULL AND (g.expires_at IS NULL OR g.expires_at > now())
               AND NOT g.member = ANY (g_members)) THEN
        RAISE EXCEPTION 'credvault: key holders changed meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    FOR i IN 1 .. coalesce(cardinality(c_uids), 0) LOOP
        UPDATE credentials SET key_version = old_version + 1, secret_env = c_secret[i],
            username_env = c_username[i], url_env = c_url[i], notes_env = c_notes[i]
        WHERE engagement_id = e.id AND uid = c_uids[i];
    END LOOP;
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

-- The chain head (position, hash): what `credvault audit checkpoint` prints for keeping
-- off the server. Any active member may read it; it reveals no entry.
CREATE FUNCTION credvault.audit_head_info() RETURNS TABLE (seq bigint, hash bytea)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    PERFORM me();
    RETURN QUERY SELECT h.seq, h.hash FROM audit_head h;
END $$;

-- The hash of entry s (NULL if there is none): checked against an off-server checkpoint.
CREATE FUNCTION credvault.audit_hash_at(s bigint) RETURNS bytea
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    PERFORM me();
    RETURN (SELECT a.hash FROM audit a WHERE a.seq = s);
END $$;

-- ---------------------------------------------------------------------------------------
-- Row-level security and privileges.

ALTER TABLE credvault.engagements ENABLE ROW LEVEL SECURITY;
ALTER TABLE credvault.credentials ENABLE ROW LEVEL SECURITY;
ALTER TABLE credvault.systems ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_engagements ON credvault.engagements FOR SELECT
    USING (id IN (SELECT credvault.my_engagement_ids()));
CREATE POLICY own_credentials ON credvault.credentials FOR SELECT
    USING (engagement_id IN (SELECT credvault.my_engagement_ids()));
CREATE POLICY own_systems ON credvault.systems FOR SELECT
    USING (engagement_id IN (SELECT credvault.my_engagement_ids()));

REVOKE ALL ON ALL TABLES IN SCHEMA credvault FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA credvault FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA credvault FROM PUBLIC;

DO $$
DECLARE g text := credvault.member_group();
BEGIN
    EXECUTE format('CREATE ROLE %I NOLOGIN', g);
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), g);
    EXECUTE format('GRANT USAGE ON SCHEMA credvault TO %I', g);
    EXECUTE format('GRANT SELECT ON credvault.schema_version TO %I', g);
    EXECUTE format('GRANT SELECT (name, admin, state, sign_pub, kem_pub, created_at) ON credvault.members TO %I', g);
    EXECUTE format('GRANT SELECT (id, uid, name, client, state, key_version, key_fp, needs_rotation,'
                   ' require_reason, created_at, created_by, lead, creation_sig, closed_at, purge_due,'
                   ' purged_at) ON credvault.engagements TO %I', g);
    EXECUTE format('GRANT SELECT (id, uid, engagement_id, name, kind, system_id, key_version,'
                   ' created_at, updated_at) ON credvault.credentials TO %I', g);
    EXECUTE format('GRANT SELECT (id, uid, engagement_id, name, port, protocol, created_at,'
                   ' updated_at) ON credvault.systems TO %I', g);
    EXECUTE format('GRANT EXECUTE ON FUNCTION credvault.me(), credvault.is_admin(), credvault.vault_id(),'
                   ' credvault.my_engagement_ids(), credvault.role_in(bigint),'
                   ' credvault.member_group(), credvault.role_of(text),'
                   ' credvault.audit_verify(), credvault.audit_rows(text),'
                   ' credvault.add_member(text, text, boolean), credvault.join_vault(bytea, bytea, text),'
                   ' credvault.remove_member(text), credvault.append_membership_log(bytea, bytea),'
                   ' credvault.membership_log_entries(),'
                   ' credvault.create_engagement(bytea, text, text, text, bytea, text),'
                   ' credvault.put_grant(text, text, text, bytea, integer, bytea, bytea, timestamptz),'
                   ' credvault.my_grant(text),'
                   ' credvault.put_credential(text, text, text, bytea, integer, bytea, bytea, bytea, bytea),'
                   ' credvault.request_read(text, text, text), credvault.fetch(bigint),'
                   ' credvault.close_engagement(text), credvault.purge_horizon(),'
                   ' credvault.purge_engagement(text, text),'
                   ' credvault.revoke_grant(text, text), credvault.audit_head_info(),'
                   ' credvault.audit_hash_at(bigint), credvault.request_rotation(text),'
                   ' credvault.nudge_wal(),'
                   ' credvault.rotation_fetch(bigint), credvault.rotation_grantees(text),'
                   ' credvault.rotate_key(text, integer, text, bytea[], bytea[], bytea[], bytea[],'
                   ' bytea[], text[], bytea[], bytea[]) TO %I', g);
END $$;
