// Loads the TypeScript worker through tsx when Bastion runs from source (tests, `npm run dev`):
// worker threads do not inherit the parent's --import hooks on Node 20. The compiled service
// (dist/) loads password-worker.js directly and never uses this file.
import { register } from 'tsx/esm/api';

register();
const { default: run } = await import('./password-worker.ts');
export default run;
