-- Serverless hubs (portable: the same statements run on SQLite and PostgreSQL).
--
-- Users added to groups through the data-plane REST API (`PUT /api/hubs/{hub}/users/{user}/groups/{group}`).
-- The membership applies to the user's current connections at once and to the connections the
-- user opens later, until it expires or is removed. Timestamps are milliseconds since the epoch.
CREATE TABLE azure_user_groups (
    -- The internal hub name: lowercased, `{application}_{hub}` with an application.
    hub TEXT NOT NULL,
    user_id TEXT NOT NULL,
    group_name TEXT NOT NULL,
    -- The ttl given, in seconds; NULL when none was (then the membership lasts a year, and only
    -- the user's 100 most recently updated such memberships are kept).
    ttl_seconds BIGINT,
    expires_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (hub, user_id, group_name)
);

CREATE INDEX azure_user_groups_expiry ON azure_user_groups (expires_at);
