// The closures component's public surface: closing a user as a saga.
export { createClosuresService, type Closure, type ClosurePauses, type ClosuresService } from './closures.service.js';
export { closuresRoutes } from './http.js';
