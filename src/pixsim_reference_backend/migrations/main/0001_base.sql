-- The extensions the schema uses, created by the first migration as upstream's is.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS vector;

-- Which host this database belongs to: the backend records its SERVER_ID on its first
-- start and refuses a database recorded for another host. A tool that clones a host
-- rewrites host_id here.
-- IF NOT EXISTS: databases made before migrations existed already hold these two tables.
CREATE TABLE IF NOT EXISTS pixsim_host_identity (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    host_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS worlds (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    meta jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz DEFAULT now()
);
ALTER TABLE worlds ADD COLUMN IF NOT EXISTS embedding vector(3);
CREATE INDEX IF NOT EXISTS worlds_name_trgm ON worlds USING gin (name gin_trgm_ops);
