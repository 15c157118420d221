// Build step after tsc: copies the non-TypeScript files that src/ loads at run time (the components'
// SQL routine files) to the same place under dist/src/.
import { cpSync, readdirSync } from 'node:fs';
import path from 'node:path';

for (const file of readdirSync('src', { recursive: true, encoding: 'utf8' })) {
  if (file.endsWith('.sql')) cpSync(path.join('src', file), path.join('dist', 'src', file));
}
