-- credvault database schema, format 1 (the base). Later formats are the steps in
-- store.MIGRATIONS, applied after this file at init and in place on open: together the
-- only DDL in the project.
-- Secrets, usernames, URLs, notes, addresses and system details are AES-256-GCM envelopes
-- (BLOB columns named *_env); everything else is protected by SQLCipher's page encryption.

-- Freed pages are returned to the file system by `PRAGMA incremental_vacuum` at the end of
-- a purge; with secure_delete they are zeroed first. Must precede the first table.
PRAGMA auto_vacuum = INCREMENTAL;

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE engagements (
    id             INTEGER PRIMARY KEY,
    uid            BLOB NOT NULL UNIQUE,          -- random 16 bytes, part of every AAD
    name           TEXT NOT NULL UNIQUE,
    client         TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('active', 'closed', 'purged')),
    key_version    INTEGER NOT NULL,
    key_fp         TEXT NOT NULL,                 -- public fingerprint of the current engagement key
    needs_rotation INTEGER NOT NULL DEFAULT 0,
    require_reason INTEGER NOT NULL DEFAULT 0,
    grace_days     INTEGER,                       -- NULL: the vault setting
    created_at     TEXT NOT NULL,
    created_by     TEXT NOT NULL,                 -- the admin who signed the creation record
    lead           TEXT NOT NULL,                 -- the first lead, named in the creation record
    creation_sig   BLOB NOT NULL,
    closed_at      TEXT,
    purge_due      TEXT,                          -- closed: max(closed_at + grace, hold_until)
    hold_until     TEXT,
    hold_reason    TEXT,
    hold_by        TEXT,
    purged_at      TEXT,
    receipt        TEXT                           -- signed purge receipt (JSON), tombstones only
);
CREATE INDEX engagements_due ON engagements (purge_due) WHERE state = 'closed';
CREATE INDEX engagements_client ON engagements (client);

-- A grant is a signed role certificate plus, for reading roles and the recovery key, the
-- engagement key sealed to the holder (HPKE) and signed by whoever sealed it.
CREATE TABLE grants (
    engagement_id INTEGER NOT NULL REFERENCES engagements (id) ON DELETE CASCADE,
    member        TEXT NOT NULL,                  -- a member name, or '@recovery'
    role          TEXT NOT NULL CHECK (role IN ('lead', 'engineer', 'reader', 'auditor', 'recovery')),
    granted_by    TEXT NOT NULL,
    granted_at    TEXT NOT NULL,
    expires_at    TEXT,
    role_sig      BLOB NOT NULL,
    key_version   INTEGER,
    sealed        BLOB,
    sealed_by     TEXT,
    copy_sig      BLOB,
    revoked_at    TEXT,                           -- kept (without key) so signatures it made still chain
    PRIMARY KEY (engagement_id, member)
);
CREATE INDEX grants_expiry ON grants (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX grants_member ON grants (member);

CREATE TABLE systems (
    id            INTEGER PRIMARY KEY,
    uid           BLOB NOT NULL UNIQUE,
    engagement_id INTEGER NOT NULL REFERENCES engagements (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    port          INTEGER,
    protocol      TEXT,
    address_env   BLOB NOT NULL,
    details_env   BLOB,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    UNIQUE (engagement_id, name)
);

CREATE TABLE credentials (
    id            INTEGER PRIMARY KEY,
    uid           BLOB NOT NULL UNIQUE,
    engagement_id INTEGER NOT NULL REFERENCES engagements (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('password', 'ssh-key', 'token', 'other')),
    system_id     INTEGER REFERENCES systems (id) ON DELETE SET NULL,
    secret_env    BLOB NOT NULL,
    username_env  BLOB,
    url_env       BLOB,
    notes_env     BLOB,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    UNIQUE (engagement_id, name)
);

-- Hash-chained audit trail: mac = HMAC(audit key, previous mac ‖ canonical entry).
CREATE TABLE audit (
    seq        INTEGER PRIMARY KEY,
    ts         TEXT NOT NULL,
    member     TEXT NOT NULL,
    action     TEXT NOT NULL,
    engagement TEXT,
    item       TEXT,
    outcome    TEXT NOT NULL CHECK (outcome IN ('ok', 'denied', 'error')),
    detail     TEXT NOT NULL DEFAULT '',
    mac        BLOB NOT NULL
);
CREATE INDEX audit_engagement ON audit (engagement, seq);
CREATE INDEX audit_member ON audit (member, engagement);  -- "what did they read" at revoke
