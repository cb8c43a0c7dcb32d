-- Server-side OpenID Connect sign-in (confidential client): the pending authorization requests
-- (kind 'state') and the one-time tickets that hand the finished sign-in to the page (kind
-- 'ticket'). Only SHA-256 hashes of the random values are stored; every row is single use
-- (deleted when taken) and short-lived (expired rows are purged).
CREATE TABLE sign_in_flows (
    key_hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    binding_hash TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sign_in_flows_expires ON sign_in_flows (expires_at);
