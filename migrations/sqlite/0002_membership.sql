-- Cluster membership (the control plane of online membership changes).
-- Every change bumps cluster_state.version in the same transaction.

CREATE TABLE cluster_members (
    id                TEXT    PRIMARY KEY,
    url               TEXT    NOT NULL,
    state             TEXT    NOT NULL CHECK (state IN ('joining', 'active', 'leaving', 'down')),
    seq               INTEGER NOT NULL,
    created_at        TEXT    NOT NULL,
    updated_at        TEXT    NOT NULL,
    -- The node's last rebalancing report, for membership version progress_version.
    progress_version  INTEGER,
    arcs_total        INTEGER NOT NULL DEFAULT 0,
    arcs_done         INTEGER NOT NULL DEFAULT 0,
    keys_moved        INTEGER NOT NULL DEFAULT 0,
    done              INTEGER NOT NULL DEFAULT 0 CHECK (done IN (0, 1))
);
CREATE UNIQUE INDEX cluster_members_url_key ON cluster_members (url);

CREATE TABLE cluster_state (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO cluster_state (id, version) VALUES (1, 0);
