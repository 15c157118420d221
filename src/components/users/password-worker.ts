// Runs in a piscina worker thread whose OS priority is lowered (nice): password hashing then takes
// the CPU only when the event loop does not need it, so a login flood cannot slow other requests.
// The synchronous argon2/bcrypt calls run on this thread itself, which is the thread being niced.
import { hashSync as argon2Hash, verifySync as argon2Verify, type Options } from '@node-rs/argon2';
import { verifySync as bcryptVerify } from '@node-rs/bcrypt';

export type PasswordJob =
  | { readonly op: 'argon2-hash'; readonly password: string; readonly options: Options }
  | { readonly op: 'argon2-verify'; readonly hash: string; readonly password: string }
  | { readonly op: 'bcrypt-verify'; readonly hash: string; readonly password: string };

export default function run(job: PasswordJob): string | boolean {
  switch (job.op) {
    case 'argon2-hash':
      return argon2Hash(job.password, job.options);
    case 'argon2-verify':
      return argon2Verify(job.hash, job.password);
    case 'bcrypt-verify':
      return bcryptVerify(job.password, job.hash);
  }
}
