-- The game chain, applied after main. A player cannot be in two sessions of one world at
-- overlapping times: the exclusion constraint needs btree_gist (for the = on bigint/text).
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE game_sessions (
    id bigserial PRIMARY KEY,
    world_id bigint NOT NULL REFERENCES worlds (id) ON DELETE CASCADE,
    player text NOT NULL,
    during tstzrange NOT NULL,
    EXCLUDE USING gist (world_id WITH =, player WITH =, during WITH &&)
);
