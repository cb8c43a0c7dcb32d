-- First-run setup and settings changed at run time.
-- setup_tokens: the one-time links `serve` prints while no administrator exists. Only the SHA-256
-- hash of each link's random token is stored; a token is spent when the first administrator is
-- created (every row is then deleted) and refused after expires_at.
-- settings: values an administrator changes from the dashboard (e.g. whether registration is
-- open), kept across restarts and shared by every node of a cluster.
CREATE TABLE setup_tokens (
    token_hash TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
