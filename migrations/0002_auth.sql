-- Signing keys for access tokens (Ed25519 JWKs). The newest unretired key signs; retired keys keep
-- verifying until every token they signed has expired.
create table signing_keys (
  kid text primary key,
  algorithm text not null,
  public_jwk jsonb not null,
  private_jwk jsonb not null,
  created_at timestamptz not null default now(),
  retired_at timestamptz
);

-- Server-side secrets (e.g. the key that derives a refresh token's successor).
create table auth_secrets (
  name text primary key,
  secret bytea not null,
  created_at timestamptz not null default now()
);

-- Refresh tokens, stored only as SHA-256 hashes. A login starts a family; each rotation spends one
-- token and inserts its single successor (parent_id is unique: two successors are impossible).
create table refresh_tokens (
  id uuid primary key,
  family_id uuid not null,
  user_id uuid not null references users (id),
  token_hash bytea not null,
  parent_id uuid references refresh_tokens (id),
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  rotated_at timestamptz,
  revoked_at timestamptz
);
create unique index refresh_tokens_hash_key on refresh_tokens (token_hash);
create unique index refresh_tokens_parent_key on refresh_tokens (parent_id);
create index refresh_tokens_family_idx on refresh_tokens (family_id);
create index refresh_tokens_user_live_idx on refresh_tokens (user_id) where revoked_at is null;
create index refresh_tokens_expires_idx on refresh_tokens (expires_at);
