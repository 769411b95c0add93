-- The auth-chain index: a chain cover of the auth DAG of state events, so an event's
-- auth chain, and the auth difference of state resolution, are answered from small
-- integer rows instead of a walk that loads every event (issue #11).
--
-- Every state event sits at (chain_id, sequence_number) on one chain. A chain is a
-- sequence of events with one (type, state_key), each citing the one before it among
-- its auth events, so an event reaches every event below it on its chain. Any other
-- auth edge is a link: the event at (origin chain, origin seq) reaches the event at
-- (target chain, target seq), and so does every event above the origin on its chain.
-- The auth chain of an event is then: for each chain, every event up to the highest
-- sequence number reachable through links. Message events are never auth events and
-- are not indexed (their chain is that of their auth events).
CREATE TABLE event_auth_chains (
    event_id TEXT PRIMARY KEY,
    chain_id INTEGER NOT NULL,
    sequence_number INTEGER NOT NULL
) WITHOUT ROWID;
CREATE UNIQUE INDEX event_auth_chains_position ON event_auth_chains(chain_id, sequence_number);

CREATE TABLE event_auth_chain_links (
    origin_chain_id INTEGER NOT NULL,
    origin_sequence_number INTEGER NOT NULL,
    target_chain_id INTEGER NOT NULL,
    target_sequence_number INTEGER NOT NULL,
    PRIMARY KEY (origin_chain_id, target_chain_id, origin_sequence_number, target_sequence_number)
) WITHOUT ROWID;

-- State events not indexed yet: one of their auth events is not stored or not indexed
-- (it is indexed when they are), or they were stored before this migration. Events
-- here are indexed lazily in bounded batches (storage/auth_chains.index_pending, run
-- by the room writer's background task); until then a question about them takes the
-- old walk over event_auth.
CREATE TABLE event_auth_chain_pending (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    blocked INTEGER NOT NULL DEFAULT 0  -- 1: waits for an auth event to be indexed
) WITHOUT ROWID;
CREATE INDEX event_auth_chain_pending_ready ON event_auth_chain_pending(blocked);

INSERT INTO event_auth_chain_pending (event_id, room_id)
    SELECT event_id, room_id FROM events WHERE state_key IS NOT NULL;
