// Bounds how many CPU-heavy jobs (password hashing) run at once, so a flood of logins cannot take
// every core from the event loop. Waiters beyond `maxQueue` are refused instead of piling up.
import { DomainError } from './errors.js';

export class Semaphore {
  #available: number;
  readonly #waiters: Array<() => void> = [];

  constructor(
    permits: number,
    private readonly maxQueue: number,
  ) {
    this.#available = permits;
  }

  async run<T>(job: () => Promise<T>): Promise<T> {
    if (this.#available > 0) {
      this.#available--;
    } else {
      if (this.#waiters.length >= this.maxQueue) {
        throw new DomainError('SERVICE_BUSY', 'The service is busy, retry shortly', { retryAfterSeconds: 1 });
      }
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
    try {
      return await job();
    } finally {
      const next = this.#waiters.shift();
      if (next) next();
      else this.#available++;
    }
  }
}
