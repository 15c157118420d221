-- Multi-factor authentication (TOTP, RFC 6238). One enrolment per user: pending until a code confirms
-- it; a new enrolment replaces a pending one, never a confirmed one.
create table mfa_totp (
  user_id uuid primary key references users (id),
  -- Names this secret: a confirmation confirms the secret its code was checked against, not one that
  -- replaced it meanwhile.
  enrolment_id uuid not null,
  -- The base32 secret, sealed under KEY_ENCRYPTION_SECRET when it is set (it must be recovered to
  -- check codes, so it is encrypted, not hashed).
  secret bytea not null,
  created_at timestamptz not null default now(),
  confirmed_at timestamptz,
  -- The newest time step a code was accepted for: a code of that step or an earlier one is refused
  -- (no replay within a code's window).
  last_step integer,
  -- Wrong codes in the current window (per user, across challenges: logging in again gives a new
  -- challenge, not new guesses).
  failures integer not null default 0,
  failures_window_ends_at timestamptz
);

-- Recovery codes: shown once at confirmation, stored as SHA-256 hashes, each usable once.
create table mfa_recovery_codes (
  id uuid primary key,
  user_id uuid not null references users (id),
  code_hash bytea not null,
  created_at timestamptz not null default now(),
  used_at timestamptz
);
create unique index mfa_recovery_codes_user_hash_key on mfa_recovery_codes (user_id, code_hash);

-- A login's second step: the password was right, a code is due. The token is stored hashed, single use.
create table mfa_challenges (
  id uuid primary key,
  user_id uuid not null references users (id),
  token_hash bytea not null,
  -- users.token_version the password was checked under: the session starts under it.
  token_version integer not null,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  attempts integer not null default 0,
  spent_at timestamptz
);
create unique index mfa_challenges_token_hash_key on mfa_challenges (token_hash);
create index mfa_challenges_user_idx on mfa_challenges (user_id, expires_at);
