-- Sessions (devices): each login, a refresh-token family, is a session the user can list and revoke.
-- id is the family's id, which access tokens carry as `sid`: a revoked session's access tokens stop.
create table sessions (
  id uuid primary key,
  user_id uuid not null references users (id),
  -- Millisecond precision: the list's keyset cursor carries it.
  created_at timestamptz not null default date_trunc('milliseconds', now()),
  user_agent text,
  ip text,
  revoked_at timestamptz
);
create index sessions_user_live_idx on sessions (user_id, created_at desc) where revoked_at is null;

-- Families from before sessions existed become sessions (device unknown); a revoked family, a revoked session.
insert into sessions (id, user_id, created_at, revoked_at)
select family_id, min(user_id::text)::uuid, date_trunc('milliseconds', min(created_at)),
       case when bool_and(revoked_at is not null) then max(revoked_at) end
from refresh_tokens
group by family_id;

alter table refresh_tokens add constraint refresh_tokens_session_fk foreign key (family_id) references sessions (id);
