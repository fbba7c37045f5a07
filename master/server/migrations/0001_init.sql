-- Bramble's store, after kine: one append-only log whose primary key is the global revision, and
-- an index of the current state pointing into it. Values are serde_json of
-- `bramble_wire::objects::Object` (readable with `sqlite3 bramble.db 'select value from log'`).

-- Every write, in revision order. A delete appends a row with `deleted = 1` carrying the object's
-- last state. Compaction removes old rows that no `current` row points at.
CREATE TABLE log (
    revision      INTEGER PRIMARY KEY,   -- global, monotonic, never reused
    kind          TEXT    NOT NULL,      -- Kind::as_str(): 'pod', 'node', 'namespace'
    namespace     TEXT    NOT NULL,      -- '' for cluster-scoped kinds
    name          TEXT    NOT NULL,
    deleted       INTEGER NOT NULL,      -- 0 = put, 1 = delete
    prev_revision INTEGER NOT NULL,      -- the revision this write replaced (0 on create)
    value         TEXT    NOT NULL       -- JSON of the object, meta.revision = revision
);

-- The latest live revision of every object; deleted objects have no row.
CREATE TABLE current (
    kind      TEXT    NOT NULL,
    namespace TEXT    NOT NULL,
    name      TEXT    NOT NULL,
    revision  INTEGER NOT NULL,
    PRIMARY KEY (kind, namespace, name)
) WITHOUT ROWID;

-- Compaction asks "does a current row point at this log row?".
CREATE INDEX current_revision ON current (revision);

-- Small counters. `compacted`: log rows at or below it may be gone, so a watch must start at or
-- after it.
CREATE TABLE meta (
    key   TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO meta (key, value) VALUES ('compacted', 0);
