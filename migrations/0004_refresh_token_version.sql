-- Each refresh token carries the users.token_version it was issued under. A password change, logout-all or
-- deletion moves the version on, so a token of an older version is refused wherever it is redeemed, even one
-- a concurrent revoke missed. Tokens still live were issued under the current version (every version bump
-- also revoked the user's tokens), so they take it and keep working.
alter table refresh_tokens add column token_version integer;
update refresh_tokens set token_version = users.token_version from users where users.id = refresh_tokens.user_id;
alter table refresh_tokens alter column token_version set not null;
