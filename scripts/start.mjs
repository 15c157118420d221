#!/usr/bin/env node
// `npm start`: runs the compiled service and never compiles. `npm ci` / `npm install` build dist/
// once (npm's `prepare`), so any number of instances can start at once from one checkout without
// racing on half-written output, and a start costs no build.
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const entry = path.join(root, 'dist/src/main.js');

/** Newest modification time (ms) of the TypeScript sources the build compiles. */
function newestSourceMs(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestSourceMs(full));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts')) newest = Math.max(newest, statSync(full).mtimeMs);
  }
  return newest;
}

let builtAtMs;
try {
  builtAtMs = statSync(entry).mtimeMs;
} catch {
  process.stderr.write('dist/src/main.js is missing: run `npm run build` (npm ci and npm install run it)\n');
  process.exit(1);
}
if (newestSourceMs(path.join(root, 'src')) > builtAtMs) {
  process.stderr.write('warning: src/ changed since the last build; run `npm run build` to start the current code\n');
}
await import(pathToFileURL(entry).href);
