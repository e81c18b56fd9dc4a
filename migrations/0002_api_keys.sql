-- API keys shared by every instance (used when [postgres] is configured; see docs/security.md).
-- Only the SHA-256 of a key is stored. A name is unique among active (unrevoked) keys.
CREATE TABLE IF NOT EXISTS hub_api_keys (
    sha256      text PRIMARY KEY,
    name        text NOT NULL,
    role        text NOT NULL CHECK (role IN ('read', 'ingest', 'admin')),
    tenant      text,
    created_us  bigint NOT NULL,
    expires_us  bigint,
    revoked_us  bigint
);

CREATE UNIQUE INDEX IF NOT EXISTS hub_api_keys_active_name ON hub_api_keys (name) WHERE revoked_us IS NULL;
