-- A notification to every account (`everyone`) is stored once, not once per recipient.
-- `seq` orders them: it is drawn from `broadcast_counter` inside the storing transaction, whose
-- row lock makes the transactions commit in `seq` order, so a node that has delivered up to `seq`
-- N never sees a smaller one appear later.
CREATE TABLE broadcast_counter (
    id INTEGER PRIMARY KEY,
    seq BIGINT NOT NULL
);
INSERT INTO broadcast_counter (id, seq) VALUES (1, 0);

-- `recipients`: how many accounts there were when it was stored (the unread count of the admin
-- statistics starts from it). An account sees the broadcasts stored since it was created.
CREATE TABLE broadcasts (
    seq BIGINT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    sender TEXT,
    message TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    recipients BIGINT NOT NULL
);
CREATE INDEX broadcasts_created ON broadcasts (created_at);

-- Which account read which broadcast.
CREATE TABLE broadcast_reads (
    user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    broadcast_id TEXT NOT NULL REFERENCES broadcasts (id) ON DELETE CASCADE,
    read_at BIGINT NOT NULL,
    PRIMARY KEY (user_name, broadcast_id)
);
CREATE INDEX broadcast_reads_broadcast ON broadcast_reads (broadcast_id);

-- Every broadcast with `seq` up to this one has been handed to a connection of the account
-- (or was stored before the account existed).
ALTER TABLE users ADD COLUMN broadcast_cursor BIGINT NOT NULL DEFAULT 0;
