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
