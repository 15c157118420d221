// Build step after tsc: copies the non-TypeScript files that src/ loads at run time (the components'
// SQL routine files) to the same place under dist/src/.
import { cpSync, readdirSync } from 'node:fs';
import path from 'node:path';

for (const file of readdirSync('src', { recursive: true, encoding: 'utf8' })) {
  // common-passwords.txt: the users component's list of refused passwords.
  if (file.endsWith('.sql') || file.endsWith('common-passwords.txt')) cpSync(path.join('src', file), path.join('dist', 'src', file));
}
