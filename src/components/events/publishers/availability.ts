// A broker's availability as the logs tell it: one warning when it goes away and one line when it is
// back, however many publishes fail in between; nothing once the publisher is closed.
import type { Logger } from '../../../platform/logger.js';
import { withinDeadline } from './deadline.js';

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

  /**
   * One batch's publish, as every publisher runs it: refused once closed, bounded by `timeoutMs`,
   * told as up on success; on failure `recover` (drop a connection that may be stuck) runs first,
   * then the outage is told and the error goes back to the relay.
   */
  async publish(work: () => Promise<void>, timeoutMs: number, recover?: (error: unknown) => void): Promise<void> {
    if (this.closed) throw new Error(`${this.broker}: publisher closed`);
    try {
      await withinDeadline(work(), this.broker, timeoutMs);
      this.up();
    } catch (error) {
      recover?.(error);
      this.down(error);
      throw error;
    }
  }
}
