-- Crisis map (SQLite): everything the geo index shows (incidents, responders, resources,
-- shelters, hazards), incident verification votes, geofences and situation reports.
-- `geometry` (GeoJSON text) is the source of truth for shape; `lat`/`lon` repeat it for
-- point objects so plain SQL can filter them. The geo index is rebuilt from these rows.
CREATE TABLE crisis_objects (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    object_type  TEXT NOT NULL,
    severity     INTEGER,
    status       TEXT,
    lat          REAL,
    lon          REAL,
    geometry     TEXT NOT NULL,
    details      TEXT NOT NULL DEFAULT '{}',
    owner_id     TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX crisis_objects_kind ON crisis_objects(kind, status);
CREATE INDEX crisis_objects_owner ON crisis_objects(owner_id);
-- One volunteer profile per user.
CREATE UNIQUE INDEX crisis_volunteer_user ON crisis_objects(owner_id) WHERE kind = 'responder';

CREATE TABLE crisis_votes (
    incident_id  TEXT NOT NULL REFERENCES crisis_objects(id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL,
    vote         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (incident_id, user_id)
);

CREATE TABLE crisis_geofences (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    spec        TEXT NOT NULL,
    created_by  TEXT,
    created_at  INTEGER NOT NULL
);

CREATE TABLE crisis_reports (
    id           TEXT PRIMARY KEY,
    incident_id  TEXT REFERENCES crisis_objects(id) ON DELETE SET NULL,
    author_id    TEXT,
    summary      TEXT NOT NULL,
    details      TEXT NOT NULL DEFAULT '{}',
    lat          REAL,
    lon          REAL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX crisis_reports_incident ON crisis_reports(incident_id, created_at);
