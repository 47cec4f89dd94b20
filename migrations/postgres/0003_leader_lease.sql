-- High availability: the leader lease. One row; `token` grows by one with every change of
-- holder, and every write of the leader is fenced on (holder, token, expiry).
CREATE TABLE leader_lease (
    name TEXT PRIMARY KEY NOT NULL,
    holder TEXT NOT NULL,
    token BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
