-- Transactional publish (PostgreSQL only; SQLite records version 6 and runs nothing).
--
-- An application calls signalbox_publish(...) inside its own transaction. The call validates the
-- request (as POST /api/notifications does), resolves the recipients, stores one row in
-- publish_requests and sends a NOTIFY on channel 'signalbox_publish': both take effect only if
-- the transaction commits. Every signalbox node LISTENs on that channel and also sweeps the table
-- periodically; a node claims pending rows (claimed_by / claimed_at, FOR UPDATE SKIP LOCKED),
-- then, in one transaction, stores the inbox rows and sets done_at. A claim older than the claim
-- timeout whose row is not done belongs to a node presumed dead and is taken over.
CREATE TABLE publish_requests (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    -- The request as the application passed it.
    body JSONB NOT NULL,
    -- The recipients resolved when it was published: a JSON array of user names.
    recipients JSONB NOT NULL,
    -- clock_timestamp(): several requests of one transaction keep their order.
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    claimed_by TEXT,
    claimed_at TIMESTAMPTZ,
    done_at TIMESTAMPTZ
);
CREATE INDEX publish_requests_pending ON publish_requests (created_at) WHERE done_at IS NULL;
CREATE INDEX publish_requests_done ON publish_requests (done_at) WHERE done_at IS NOT NULL;

-- The JSON variant: the body of POST /api/notifications, i.e. exactly one of "user", "users",
-- "group" or "everyone": true, and "message" (at most 16 KiB). A bad body raises an exception
-- (SQLSTATE 22023) in the caller's transaction. Returns the publish request's id.
CREATE FUNCTION signalbox_publish(body JSONB) RETURNS UUID
LANGUAGE plpgsql VOLATILE SECURITY DEFINER AS $$
DECLARE
    v_key TEXT;
    v_targets INT := 0;
    v_recipients JSONB;
    v_unknown TEXT;
    v_id UUID;
BEGIN
    IF body IS NULL OR jsonb_typeof(body) <> 'object' THEN
        RAISE EXCEPTION 'signalbox_publish: the body must be a JSON object'
            USING ERRCODE = '22023';
    END IF;
    SELECT k INTO v_key FROM jsonb_object_keys(body) AS k
        WHERE k NOT IN ('user', 'users', 'group', 'everyone', 'message') LIMIT 1;
    IF v_key IS NOT NULL THEN
        RAISE EXCEPTION 'signalbox_publish: unknown field "%"; expected user, users, group, everyone, message', v_key
            USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(body -> 'message') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION 'signalbox_publish: "message" must be a string' USING ERRCODE = '22023';
    END IF;
    IF octet_length(body ->> 'message') > 16384 THEN
        RAISE EXCEPTION 'signalbox_publish: the message is longer than 16384 bytes'
            USING ERRCODE = '22023';
    END IF;
    -- A JSON null is the same as an absent field.
    IF coalesce(jsonb_typeof(body -> 'user'), 'null') <> 'null' THEN
        IF jsonb_typeof(body -> 'user') <> 'string' THEN
            RAISE EXCEPTION 'signalbox_publish: "user" must be a string' USING ERRCODE = '22023';
        END IF;
        v_targets := v_targets + 1;
    END IF;
    IF coalesce(jsonb_typeof(body -> 'users'), 'null') <> 'null' THEN
        IF jsonb_typeof(body -> 'users') <> 'array' OR EXISTS (
            SELECT 1 FROM jsonb_array_elements(body -> 'users') AS u WHERE jsonb_typeof(u) <> 'string'
        ) THEN
            RAISE EXCEPTION 'signalbox_publish: "users" must be an array of strings'
                USING ERRCODE = '22023';
        END IF;
        v_targets := v_targets + 1;
    END IF;
    IF coalesce(jsonb_typeof(body -> 'group'), 'null') <> 'null' THEN
        IF jsonb_typeof(body -> 'group') <> 'string' THEN
            RAISE EXCEPTION 'signalbox_publish: "group" must be a string' USING ERRCODE = '22023';
        END IF;
        v_targets := v_targets + 1;
    END IF;
    IF body ? 'everyone' THEN
        IF jsonb_typeof(body -> 'everyone') <> 'boolean' THEN
            RAISE EXCEPTION 'signalbox_publish: "everyone" must be true or false'
                USING ERRCODE = '22023';
        END IF;
        IF (body -> 'everyone')::boolean THEN
            v_targets := v_targets + 1;
        END IF;
    END IF;
    IF v_targets <> 1 THEN
        RAISE EXCEPTION 'signalbox_publish: name exactly one target: user, users, group or everyone'
            USING ERRCODE = '22023';
    END IF;

    IF coalesce(jsonb_typeof(body -> 'user'), 'null') <> 'null' THEN
        v_recipients := jsonb_build_array(body -> 'user');
    ELSIF coalesce(jsonb_typeof(body -> 'users'), 'null') <> 'null' THEN
        SELECT jsonb_agg(u ORDER BY u) INTO v_recipients
            FROM (SELECT DISTINCT u FROM jsonb_array_elements_text(body -> 'users') AS u) AS d;
    ELSIF coalesce(jsonb_typeof(body -> 'group'), 'null') <> 'null' THEN
        SELECT jsonb_agg(m.user_name ORDER BY m.user_name) INTO v_recipients
            FROM group_members AS m WHERE m.group_name = body ->> 'group';
        IF v_recipients IS NULL THEN
            RAISE EXCEPTION 'signalbox_publish: group ''%'' has no members', body ->> 'group'
                USING ERRCODE = '22023';
        END IF;
    ELSE
        SELECT jsonb_agg(u.name ORDER BY u.name) INTO v_recipients FROM users AS u;
    END IF;
    IF v_recipients IS NULL OR jsonb_array_length(v_recipients) = 0 THEN
        RAISE EXCEPTION 'signalbox_publish: no recipients' USING ERRCODE = '22023';
    END IF;
    SELECT string_agg(r, ', ' ORDER BY r) INTO v_unknown
        FROM jsonb_array_elements_text(v_recipients) AS r
        WHERE NOT EXISTS (SELECT 1 FROM users AS u WHERE u.name = r);
    IF v_unknown IS NOT NULL THEN
        RAISE EXCEPTION 'signalbox_publish: unknown user(s): %', v_unknown USING ERRCODE = '22023';
    END IF;

    INSERT INTO publish_requests (body, recipients) VALUES (body, v_recipients)
        RETURNING id INTO v_id;
    -- Delivered to the listening nodes only when (and if) the caller's transaction commits.
    PERFORM pg_notify('signalbox_publish', v_id::text);
    RETURN v_id;
END;
$$;

-- One recipient: signalbox_publish('alice', 'Your order shipped').
CREATE FUNCTION signalbox_publish(recipient TEXT, message TEXT) RETURNS UUID
LANGUAGE sql VOLATILE SECURITY DEFINER AS $$
    SELECT signalbox_publish(jsonb_build_object('user', recipient, 'message', message));
$$;

-- SECURITY DEFINER: the functions run with the privileges of their owner (signalbox's role), so
-- an application role needs only EXECUTE on them (and USAGE on this schema), no rights on
-- signalbox's tables. Nobody but the owner may call them until granted. Their search_path is
-- pinned to this schema (then pg_temp) so that a caller cannot substitute tables.
REVOKE ALL ON FUNCTION signalbox_publish(JSONB) FROM PUBLIC;
REVOKE ALL ON FUNCTION signalbox_publish(TEXT, TEXT) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION signalbox_publish(JSONB) SET search_path = %I, pg_temp',
        current_schema());
    EXECUTE format('ALTER FUNCTION signalbox_publish(TEXT, TEXT) SET search_path = %I, pg_temp',
        current_schema());
END;
$$;
