-- Application services (pocketserver/appservice/). Events are matched against each
-- service's namespaces in stream order from a persisted position, and queued per
-- service by event ID (the event itself stays in ``events``). A transaction being
-- sent keeps its ID and its last queue row until the service accepts it, so a
-- retry, even after a restart, sends the same transaction with the same ID.
CREATE TABLE appservice_stream (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    stream_ordering INTEGER NOT NULL      -- every event up to here has been matched
);

CREATE TABLE appservice_queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    appservice_id TEXT NOT NULL,
    event_id TEXT NOT NULL
);
CREATE INDEX appservice_queue_by_service ON appservice_queue(appservice_id, seq);

CREATE TABLE appservice_txns (
    appservice_id TEXT PRIMARY KEY,
    next_txn_id INTEGER NOT NULL,          -- the ID of the transaction being or next sent
    upto_seq INTEGER                       -- last queue row of the one being sent, or NULL
) WITHOUT ROWID;

-- Published room lists of application services' networks
-- (PUT /directory/list/appservice/{networkId}/{roomId}), apart from the main one.
CREATE TABLE appservice_room_list (
    appservice_id TEXT NOT NULL,
    network_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (appservice_id, network_id, room_id)
) WITHOUT ROWID;
CREATE INDEX appservice_room_list_room ON appservice_room_list(room_id);
