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

-- == pgcmds: the record commands on a team vault (systems; history; edit/mv/find; trash) ==
--
-- Same rules as version 1: members reach no envelope column directly; every function that
-- returns an envelope does so only against a committed, durable, unused, recent request of
-- the same member whose audit row names what it releases (request_record, then
-- fetch_record: the two phases of request_read/fetch, for other kinds of record); writes
-- check the caller's live role in the server's own grants (lead and engineer write, as
-- access.py says) and audit under the SQLCipher vault's action names.

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
                  WHEN 'version' THEN 'get' WHEN 'version-show' THEN 'show' END;
    IF act IS NULL OR (k LIKE 'version%' AND ver IS NULL) THEN
        RAISE EXCEPTION 'credvault: unknown kind of record %', k USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active';
    IF e.id IS NULL OR NOT may(e.id, 'read') THEN
        -- audited under the operation's verb, as SQLCipher does (access.py)
        PERFORM audit_append(who, CASE k WHEN 'system' THEN 'system show' ELSE act END,
                             eng, itm, 'denied', held(e.id));
        RETURN NULL;
    END IF;
    IF e.require_reason AND why = '' THEN
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
    IF NOT may(q.engagement_id, 'read') THEN
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
    -- FOR SHARE: a key rotation (FOR UPDATE) cannot interleave with this write
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active' FOR SHARE;
    IF e.id IS NULL OR NOT may(e.id, 'write') THEN
        PERFORM audit_append(who, 'system add', eng, s_name, 'denied', held(e.id));
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
CREATE FUNCTION credvault.remove_system(eng text, s_name text)
RETURNS TABLE (outcome text, until text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text := me(); e engagements%ROWTYPE; old systems%ROWTYPE; ends timestamptz;
    links bytea[];
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active' FOR SHARE;
    IF e.id IS NULL OR NOT may(e.id, 'write') THEN
        PERFORM audit_append(who, 'system rm', eng, s_name, 'denied', held(e.id));
        RETURN QUERY SELECT 'denied'::text, NULL::text;
        RETURN;
    END IF;
    SELECT * INTO old FROM systems WHERE engagement_id = e.id AND name = s_name FOR UPDATE;
    IF old.id IS NULL THEN
        PERFORM audit_append(who, 'system-rm', eng, s_name, 'error', 'not found');
        RETURN QUERY SELECT 'not found'::text, NULL::text;
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM credentials c WHERE c.system_id = old.id AND get_byte(c.secret_env, 0) = 2) THEN
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
    DELETE FROM systems WHERE id = old.id;
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
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active' FOR SHARE;
    IF e.id IS NULL OR NOT may(e.id, 'write') THEN
        PERFORM audit_append(who, 'revert', eng, itm, 'denied', held(e.id));
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
    changed text
) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; c credentials%ROWTYPE; sid bigint;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active' FOR SHARE;
    IF e.id IS NULL OR NOT may(e.id, 'write') THEN
        PERFORM audit_append(who, 'edit', eng, itm, 'denied', held(e.id));
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
    IF get_byte(c.secret_env, 0) = 2 AND (coalesce(c_kind, c.kind) <> c.kind
                                         OR sid IS DISTINCT FROM c.system_id) THEN
        RAISE EXCEPTION 'credvault: % is bound to its kind and system: put the value again to change them', itm
            USING ERRCODE = 'feature_not_supported';
    END IF;
    PERFORM set_config('credvault.changed', changed, true);
    UPDATE credentials SET
        username_env = CASE WHEN set_username THEN c_username_env ELSE username_env END,
        url_env = CASE WHEN set_url THEN c_url_env ELSE url_env END,
        notes_env = CASE WHEN set_notes THEN c_notes_env ELSE notes_env END,
        kind = coalesce(c_kind, kind), system_id = sid, updated_at = now()
        WHERE id = c.id;
    PERFORM audit_append(who, 'edit', eng, itm, 'ok', 'changed ' || changed);
    RETURN 'ok';
END $$;

-- mv within an engagement: a rename of the clear name (a record-bound anchor names it:
-- refused, put it again). Returns 'ok', 'denied', 'not found' or 'exists' (audited 'mv',
-- "renamed to …"). Earlier versions keep the name they had.
CREATE FUNCTION credvault.rename_credential(eng text, itm text, new_name text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; c credentials%ROWTYPE;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active' FOR SHARE;
    IF e.id IS NULL OR NOT may(e.id, 'write') THEN
        PERFORM audit_append(who, 'mv', eng, itm, 'denied', held(e.id));
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
    IF get_byte(c.secret_env, 0) = 2 THEN
        RAISE EXCEPTION 'credvault: % is bound to its name: put the value under the new name instead', itm
            USING ERRCODE = 'feature_not_supported';
    END IF;
    UPDATE credentials SET name = new_name, updated_at = now() WHERE id = c.id;
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
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active';
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

CREATE FUNCTION credvault.iso(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = credvault, pg_temp
AS $$ SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') $$;

-- rm: (outcome 'ok', 'denied' or 'not found', until), audited 'rm' as SQLCipher.
CREATE FUNCTION credvault.remove_credential(eng text, itm text)
RETURNS TABLE (outcome text, until text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; c credentials%ROWTYPE; ends timestamptz;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active' FOR SHARE;
    IF e.id IS NULL OR NOT may(e.id, 'write') THEN
        PERFORM audit_append(who, 'rm', eng, itm, 'denied', held(e.id));
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
CREATE FUNCTION credvault.restore_trashed(eng text, itm text, is_system boolean) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE
    who text := me(); e engagements%ROWTYPE; t credential_trash%ROWTYPE;
    st system_trash%ROWTYPE; sid bigint; n integer;
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active' FOR SHARE;
    IF e.id IS NULL OR NOT may(e.id, 'write') THEN
        PERFORM audit_append(who, CASE WHEN is_system THEN 'system restore' ELSE 'restore' END,
                             eng, itm, 'denied', held(e.id));
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
        UPDATE credentials SET system_id = sid
            WHERE engagement_id = e.id AND system_id IS NULL AND uid = ANY (st.linked);
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
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active' FOR SHARE;
    IF e.id IS NULL OR NOT may(e.id, 'write') THEN
        PERFORM audit_append(who, 'trash purge', eng, itm, 'denied', held(e.id));
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

-- Store a rotation: exactly the records there are now, each re-sealed (a write in between
-- makes this fail and the lead runs it again), and every live key copy replaced.
CREATE FUNCTION credvault.rotate_records(
    eng text, old_version integer, new_fp text, r_tbl text[], r_id bigint[],
    r_e1 bytea[], r_e2 bytea[], r_e3 bytea[], r_e4 bytea[],
    g_members text[], g_sealed bytea[], g_sigs bytea[]
) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
DECLARE who text := me(); e engagements%ROWTYPE; i integer; n integer := coalesce(cardinality(r_id), 0);
BEGIN
    SELECT * INTO e FROM engagements WHERE name = eng AND state = 'active' FOR UPDATE;
    IF e.id IS NULL OR NOT (is_admin() OR role_in(e.id) = 'lead') THEN
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
    IF EXISTS (SELECT 1 FROM grants g WHERE g.engagement_id = e.id AND g.revoked_at IS NULL
               AND g.sealed IS NOT NULL AND (g.expires_at IS NULL OR g.expires_at > now())
               AND NOT g.member = ANY (g_members)) THEN
        RAISE EXCEPTION 'credvault: key holders changed meanwhile; run the command again'
            USING ERRCODE = 'serialization_failure';
    END IF;
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

-- The removed-record tables leave with the engagement's purge (purge_engagement marks it
-- 'purged' after deleting its credentials and systems): no envelope stays behind.
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
                              bytea, text, boolean, text, text),
    credvault.rename_credential(text, text, text), credvault.request_find(text, text),
    credvault.fetch_find(bigint), credvault.iso(timestamptz),
    credvault.remove_credential(text, text), credvault.trash_list(text),
    credvault.restore_trashed(text, text, boolean), credvault.destroy_trashed(text, text, boolean),
    credvault.purge_records(), credvault.request_record(text, text, text, text, integer),
    credvault.fetch_record(bigint),
    credvault.put_system(text, text, bytea, integer, integer, text, bytea, bytea, boolean, text[]),
    credvault.remove_system(text, text), credvault.list_systems(text),
    credvault.put_credential_linked(text, text, text, bytea, integer, bytea, bytea, bytea, bytea, text, text),
    credvault.rotation_fetch_records(bigint),
    credvault.rotate_records(text, integer, text, text[], bigint[], bytea[], bytea[], bytea[],
                             bytea[], text[], bytea[], bytea[]) FROM PUBLIC;
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
                   ' bytea, boolean, bytea, text, boolean, text, text),'
                   ' credvault.rename_credential(text, text, text), credvault.request_find(text, text),'
                   ' credvault.fetch_find(bigint),'
                   ' credvault.remove_credential(text, text), credvault.trash_list(text),'
                   ' credvault.restore_trashed(text, text, boolean),'
                   ' credvault.destroy_trashed(text, text, boolean),'
                   ' credvault.request_record(text, text, text, text, integer), credvault.fetch_record(bigint),'
                   ' credvault.put_system(text, text, bytea, integer, integer, text, bytea, bytea,'
                   ' boolean, text[]),'
                   ' credvault.remove_system(text, text), credvault.list_systems(text),'
                   ' credvault.put_credential_linked(text, text, text, bytea, integer, bytea, bytea,'
                   ' bytea, bytea, text, text),'
                   ' credvault.rotation_fetch_records(bigint),'
                   ' credvault.rotate_records(text, integer, text, text[], bigint[], bytea[], bytea[],'
                   ' bytea[], bytea[], text[], bytea[], bytea[]) TO %I', g);
    -- version 1's rotation stores credentials only: it would leave systems under the old key
    EXECUTE format('REVOKE EXECUTE ON FUNCTION credvault.rotate_key(text, integer, text, bytea[],'
                   ' bytea[], bytea[], bytea[], bytea[], text[], bytea[], bytea[]) FROM %I', g);
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
