-- Ending sign-ins before their tokens expire. An account can be disabled (it keeps its data but
-- cannot sign in, and its connections end). Every ended session (a refresh-token family revoked
-- by sign-out or reuse) and every removed or disabled account is written to auth_events; each
-- node reads the new rows every few seconds and closes its own connections of that session or
-- user, so an ending reaches every node even when another process (the CLI) caused it.
ALTER TABLE users ADD COLUMN disabled_at BIGINT;

CREATE TABLE auth_events (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX auth_events_at ON auth_events (at);
