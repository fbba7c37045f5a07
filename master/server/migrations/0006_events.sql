-- Events (`bramble get events`, `describe`): written by the store's writer thread inside write
-- batches, bounded by count and age there (never at idle), kept across master restarts.
-- Keyed by the UID of the object they are about: a re-created object of the same name starts
-- its own events, and repeats fold into `count`.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace   TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    object_name TEXT    NOT NULL,
    object_uid  TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    message     TEXT    NOT NULL,
    count       INTEGER NOT NULL,
    first_ms    INTEGER NOT NULL,
    last_ms     INTEGER NOT NULL
);
CREATE INDEX events_object ON events (object_uid, kind, namespace, object_name, reason);
CREATE INDEX events_last ON events (last_ms);
