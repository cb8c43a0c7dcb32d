-- The replay on connect asks which of the users connecting have undelivered notifications;
-- this index holds only those rows.
CREATE INDEX notifications_undelivered ON notifications (recipient) WHERE delivered_at IS NULL;
