-- Lifecycle webhooks (portable: the same statements run on SQLite and PostgreSQL).
--
-- Every event is stored in webhook_events before it is delivered; each node's worker claims due
-- rows (a lease: claimed_by / lease_until; FOR UPDATE SKIP LOCKED on PostgreSQL, so nodes never
-- claim the same row at once), POSTs them and records the outcome, retrying with backoff until
-- the receiver answers 2xx or the attempts are used up. Rows left pending by a stopped node are
-- claimed again when their lease ends. Delivered and failed rows are the delivery log, deleted
-- after the retention.
CREATE TABLE webhook_events (
    -- A UUID (v7): the body's id and X-Signalbox-Delivery, the same in every attempt.
    id TEXT PRIMARY KEY,
    -- user.online, user.offline, connection.connected, connection.disconnected.
    event TEXT NOT NULL,
    user_name TEXT NOT NULL,
    connection_id TEXT,
    -- The node that recorded the event.
    node TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    -- The JSON body, signed and sent as it is in every attempt.
    body TEXT NOT NULL,
    -- Presence events: the user's transition number (webhook_presence.seq); a user's presence
    -- events are delivered in this order. NULL for connection events.
    seq BIGINT,
    -- pending, delivered or failed.
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    -- When the next attempt is due.
    due_at BIGINT NOT NULL,
    claimed_by TEXT,
    lease_until BIGINT,
    -- The last attempt: the receiver's status (NULL without an answer) and the error.
    last_status BIGINT,
    last_error TEXT,
    last_attempt_at BIGINT,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT
);
CREATE INDEX webhook_events_pending ON webhook_events (due_at) WHERE status = 'pending';
CREATE INDEX webhook_events_user ON webhook_events (user_name, seq) WHERE status = 'pending';
CREATE INDEX webhook_events_created ON webhook_events (created_at);

-- What receivers were last told about each user's presence (online 1 / 0), changed in the same
-- transaction as the events that tell them, under the lock of the user's row: the events follow
-- the recorded presence, whatever order the nodes see its edges in.
CREATE TABLE webhook_presence (
    user_name TEXT PRIMARY KEY,
    online BIGINT NOT NULL,
    changed_at BIGINT NOT NULL,
    seq BIGINT NOT NULL
);
