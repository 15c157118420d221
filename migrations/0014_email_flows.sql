-- Email verification and password reset.
alter table users add column email_verified boolean not null default false;

-- Single-use tokens sent by mail, stored only as SHA-256 hashes. A token is spent by the one
-- statement that sets used_at while it is unused and unexpired, so two redemptions cannot both win.
create table email_tokens (
  id uuid primary key,
  user_id uuid not null references users (id),
  purpose text not null check (purpose in ('verify', 'reset')),
  -- The address the mail went to: a verification holds only while the user still has it.
  email text not null,
  token_hash bytea not null unique,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  used_at timestamptz
);
-- A user's tokens of a purpose: the hourly cap on reset mails counts them, a reset spends them.
create index email_tokens_user_idx on email_tokens (user_id, purpose, created_at);
create index email_tokens_expires_idx on email_tokens (expires_at);
