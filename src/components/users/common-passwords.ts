// Passwords too common to accept (register, admin create, change, reset): a bundled list, loaded on
// the first check and kept for the life of the process. The list (common-passwords.txt) is the
// ranked password dictionary of @zxcvbn-ts/language-common 4.1.3 (drawn from SecLists' xato-net
// 10-million-passwords), all 49,233 entries lower-cased and kept only where they pass the length
// rule (8-128): a shorter or longer one is refused before this check is ever reached. 17,950 lines.
// Copyright (c) 2012-2016 Dan Wheeler and Dropbox, Inc.; (c) 2021 @zxcvbn-ts; MIT licence.
import { readFile } from 'node:fs/promises';
import { validationFailed, type DomainError } from '../../platform/errors.js';

const LIST_URL = new URL('./common-passwords.txt', import.meta.url);

let loading: Promise<ReadonlySet<string>> | undefined;

/** The list as a Set, read once; concurrent first callers share the one read. */
function commonPasswords(): Promise<ReadonlySet<string>> {
  loading ??= readFile(LIST_URL, 'utf8').then(
    (text) => new Set(text.split('\n').filter((line) => line !== '')),
    (error: unknown) => {
      loading = undefined; // a failed read is retried by the next check, not cached
      throw error;
    },
  );
  return loading;
}

/** True if `password` is on the list, compared case-insensitively (the list is lower case). */
export async function isCommonPassword(password: string): Promise<boolean> {
  return (await commonPasswords()).has(password.toLowerCase());
}

/** The contract's refusal: path "password" whatever the field is called in the request. */
export const commonPasswordRefused = (): DomainError =>
  validationFailed(
    [{ path: 'password', message: 'is one of the most commonly used passwords; choose a less guessable one' }],
    'The password is too common',
  );

/** Refuses a new password that is on the list (VALIDATION_FAILED, path "password"). */
export async function refuseCommonPassword(password: string): Promise<void> {
  if (await isCommonPassword(password)) throw commonPasswordRefused();
}
