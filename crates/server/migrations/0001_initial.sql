-- Portable schema: the same statements run on SQLite and PostgreSQL.
-- Timestamps are milliseconds since the Unix epoch (BIGINT); ids are text.

CREATE TABLE users (
    name TEXT PRIMARY KEY,
    password_hash TEXT,
    roles TEXT NOT NULL DEFAULT '[]',
    claims TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    last_connected_at BIGINT,
    last_disconnected_at BIGINT
);

CREATE TABLE refresh_tokens (
    id TEXT PRIMARY KEY,
    family TEXT NOT NULL,
    user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);

CREATE TABLE connections (
    connection_id TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    node TEXT NOT NULL,
    connected_at BIGINT NOT NULL,
    user_agent TEXT
);
CREATE INDEX connections_user ON connections (user_name);
CREATE INDEX connections_node ON connections (node);

CREATE TABLE notifications (
    id TEXT PRIMARY KEY,
    recipient TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    sender TEXT,
    message TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT,
    read_at BIGINT
);
CREATE INDEX notifications_recipient ON notifications (recipient, created_at);
CREATE INDEX notifications_created ON notifications (created_at);

CREATE TABLE group_members (
    group_name TEXT NOT NULL,
    user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    PRIMARY KEY (group_name, user_name)
);
CREATE INDEX group_members_user ON group_members (user_name);
