-- Node heartbeats (scale-out): every node records a heartbeat every few seconds; the connections
-- of a node whose heartbeat is older than the node timeout are removed by the others.
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
