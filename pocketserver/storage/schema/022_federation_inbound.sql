-- Inbound federation transactions (server-server-api.md "Transactions").
--
-- Each transaction's answer is kept for a day, keyed by (origin, txn_id), so a retried
-- transaction gets the same answer and nothing is applied twice. Its PDUs are staged
-- here in the same write transaction as the answer, before the answer is sent: an
-- acknowledged PDU survives a crash and is processed afterwards, room by room in the
-- order received (as Synapse's federation_inbound_events_staging).
CREATE TABLE federation_received_txns (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    response TEXT NOT NULL,
    received_ts INTEGER NOT NULL,
    PRIMARY KEY (origin, txn_id)
) WITHOUT ROWID;
CREATE INDEX federation_received_txns_ts ON federation_received_txns(received_ts);

CREATE TABLE federation_staged_pdus (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    origin TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    pdu TEXT NOT NULL,
    received_ts INTEGER NOT NULL
);
CREATE INDEX federation_staged_pdus_room ON federation_staged_pdus(room_id, seq);
