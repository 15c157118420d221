// A broker's availability as the logs tell it: one warning when it goes away and one line when it is
// back, however many publishes fail in between; nothing once the publisher is closed.
import type { Logger } from '../../../platform/logger.js';

export class Availability {
  private unavailable = false;
  /** Set by close(): later failures are the shutdown's, not an outage. */
  closed = false;

  constructor(
    private readonly logger: Logger,
    private readonly broker: string,
    private readonly fields: Readonly<Record<string, unknown>>,
  ) {}

  down(error: unknown): void {
    if (this.unavailable || this.closed) return;
    this.unavailable = true;
    this.logger.warn({ err: error, ...this.fields }, `${this.broker}: unavailable; events wait in the outbox until it returns`);
  }

  up(): void {
    if (!this.unavailable) return;
    this.unavailable = false;
    this.logger.info(this.fields, `${this.broker}: available again; publishing`);
  }
}
