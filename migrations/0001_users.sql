-- Users: identity, role and credentials. Deleting a user is a soft delete (deleted_at), so that
-- ledger rows that name the user stay valid, while the email is freed for a new registration.
create table users (
  id uuid primary key,
  email text not null,
  name text not null,
  role text not null check (role in ('user', 'admin')),
  password_hash text not null,
  -- Bumped by logout-all, password change and delete: access tokens carry the value they were
  -- issued under, and stop working once it moves on.
  token_version integer not null default 0,
  created_at timestamptz not null,
  updated_at timestamptz not null,
  deleted_at timestamptz
);
create unique index users_email_live_key on users (lower(email)) where deleted_at is null;
create index users_created_at_idx on users (created_at desc, id desc) where deleted_at is null;
create index users_admins_idx on users (role) where deleted_at is null and role = 'admin';
