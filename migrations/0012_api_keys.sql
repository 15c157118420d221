-- API keys (src/components/api-keys): long-lived bearer secrets a user creates for scripts and
-- integrations, each limited to scopes. Only the secret's SHA-256 is stored; `prefix` (its first
-- characters) lets a user tell their keys apart in a list.
create table api_keys (
  id uuid primary key,
  owner_id uuid not null references users (id),
  name text not null,
  prefix text not null,
  secret_hash bytea not null,
  scopes text[] not null,
  -- Millisecond precision: the list's keyset cursor carries it.
  created_at timestamptz not null default date_trunc('milliseconds', now()),
  expires_at timestamptz,
  -- Written in batches (at most every 30 s per instance), never per request.
  last_used_at timestamptz,
  -- Revoked keys stay (audit trail: what a key id was), never authenticate and are not listed.
  revoked_at timestamptz
);
-- Every authentication of a key not in cache looks it up by its hash.
create unique index api_keys_secret_hash_idx on api_keys (secret_hash);
create index api_keys_owner_live_idx on api_keys (owner_id, created_at desc, id desc) where revoked_at is null;
