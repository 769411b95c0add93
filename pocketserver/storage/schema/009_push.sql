-- Push rules and notification counts (client-server API "Push Notifications").
--
-- Push rules are stored as each user's CHANGES to the server-default rule set, never
-- as a copy of the defaults: their own rules (with their order within a kind), and
-- enabled/actions changes to server-default rules.

CREATE TABLE push_rules (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    priority INTEGER NOT NULL,      -- 0 is the most important user rule of the kind
    rule_json TEXT NOT NULL,        -- actions and, by kind, conditions or pattern
    enabled INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (user_id, kind, rule_id)
) WITHOUT ROWID;

CREATE TABLE push_rule_default_changes (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,          -- a server-default rule (starts with '.')
    enabled INTEGER,                -- NULL: as the default says
    actions_json TEXT,              -- NULL: as the default says
    PRIMARY KEY (user_id, kind, rule_id)
) WITHOUT ROWID;

-- When a user's rules last changed: a counter, and the room event stream position then
-- (m.push_rules is sent in /sync to tokens that are not past that position).
CREATE TABLE push_rules_changes (
    user_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    events_position INTEGER NOT NULL
) WITHOUT ROWID;

-- Unread notification counters: one row per user, room and thread ('main' is the main
-- timeline), never a row per event per member.
CREATE TABLE push_counts (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    notification_count INTEGER NOT NULL DEFAULT 0,
    highlight_count INTEGER NOT NULL DEFAULT 0,
    last_stream INTEGER NOT NULL DEFAULT 0,   -- the newest notification counted
    read_stream INTEGER NOT NULL DEFAULT 0,   -- read up to here (receipt or own event)
    PRIMARY KEY (user_id, room_id, thread_id)
) WITHOUT ROWID;

-- The last few notifications of each user (bounded per user), for GET /notifications.
CREATE TABLE push_notifications (
    user_id TEXT NOT NULL,
    stream_ordering INTEGER NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    actions_json TEXT NOT NULL,
    highlight INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    read INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, stream_ordering)
) WITHOUT ROWID;
CREATE INDEX push_notifications_room ON push_notifications(user_id, room_id, thread_id);
