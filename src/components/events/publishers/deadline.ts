// The bound every publisher puts on one publish: whatever the broker client is waiting for (a
// connection, an ack, a reply), the caller hears back within its timeout.

export class PublishTimeoutError extends Error {
  readonly code = 'PUBLISH_TIMEOUT';

  constructor(publisher: string, timeoutMs: number) {
    super(`${publisher}: the broker did not confirm the batch within ${timeoutMs} ms`);
    this.name = 'PublishTimeoutError';
  }
}

/** Settles as `work` does, or rejects with PublishTimeoutError after `timeoutMs`; the timer never outlives it. */
export async function withinDeadline<T>(work: Promise<T>, publisher: string, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new PublishTimeoutError(publisher, timeoutMs)), timeoutMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
