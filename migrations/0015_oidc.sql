-- OpenID Connect login.

-- Logins in flight: one row per redirect to a provider, found again by the hash of its `state` (the
-- value itself only travels through the browser). The callback spends a flow with the one statement
-- that sets used_at while it is unused and unexpired, so a replayed callback finds nothing. The PKCE
-- verifier and nonce are stored as is: neither is of use without the provider's one-time code.
create table oidc_flows (
  state_hash bytea primary key,
  provider text not null,
  code_verifier text not null,
  nonce text not null,
  redirect_uri text not null,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  used_at timestamptz
);
create index oidc_flows_expires_at_idx on oidc_flows (expires_at);

-- Which user a provider's subject logs in as. One user per (provider, subject); the rows of a deleted
-- user are removed with the deletion, so the subject can start afresh, as the email can.
create table user_identities (
  provider text not null,
  subject text not null,
  user_id uuid not null references users (id),
  -- The address the provider gave when the identity was created or linked (for support, not for login).
  email text,
  created_at timestamptz not null default now(),
  primary key (provider, subject)
);
create index user_identities_user_idx on user_identities (user_id);
