-- Cluster membership (the control plane of online membership changes).
-- Every change bumps cluster_state.version in the same transaction and
-- NOTIFYs ydht_membership, so every users-service instance wakes its watchers.

CREATE TABLE cluster_members (
    id                TEXT        PRIMARY KEY,
    url               TEXT        NOT NULL,
    state             TEXT        NOT NULL CHECK (state IN ('joining', 'active', 'leaving', 'down')),
    seq               BIGINT      NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    -- The node's last rebalancing report, for membership version progress_version.
    progress_version  BIGINT,
    arcs_total        BIGINT      NOT NULL DEFAULT 0,
    arcs_done         BIGINT      NOT NULL DEFAULT 0,
    keys_moved        BIGINT      NOT NULL DEFAULT 0,
    done              BOOLEAN     NOT NULL DEFAULT FALSE
);
CREATE UNIQUE INDEX cluster_members_url_key ON cluster_members (url);

CREATE TABLE cluster_state (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT  NOT NULL
);
INSERT INTO cluster_state (id, version) VALUES (1, 0);
