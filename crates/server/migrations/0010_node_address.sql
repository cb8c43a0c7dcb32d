-- Where each node can be reached by the others (`cluster.advertise_url`): a request for a
-- connection held by another node (Server-Sent Events, long polling) is forwarded there.
ALTER TABLE nodes ADD COLUMN address TEXT;
