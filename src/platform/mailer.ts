// Outgoing mail. With SMTP_URL, messages go out over SMTP (nodemailer); without it, a development
// transport logs the link a message carries at info level instead, so a local setup can follow the
// flows. Sending is fire-and-forget for the caller: it starts after the current turn of the event
// loop (the request's response is produced first), a failure is logged as a warning and never
// reaches the request, and close() waits for every send still in flight.
import { createTransport } from 'nodemailer';
import type { Logger } from './logger.js';

export interface MailMessage {
  readonly to: string;
  readonly subject: string;
  /** The text part; carries `link`. */
  readonly text: string;
  /** The one link the message is about (holds a single-use token). Logged only by the development transport. */
  readonly link: string;
}

export interface Mailer {
  /** True when messages really leave (SMTP_URL set). */
  readonly delivers: boolean;
  /** Queues the message; never throws or rejects. */
  send(message: MailMessage): void;
  /** Resolves when every message queued so far has been sent or has failed. */
  idle(): Promise<void>;
  /** Waits for sends in flight, then closes the SMTP connection. */
  close(): Promise<void>;
}

export interface MailerOptions {
  /** smtp:// or smtps:// URL, credentials included if any; undefined: the development transport. */
  readonly smtpUrl: string | undefined;
  readonly from: string;
  readonly logger: Logger;
}

/** Bounds so a dead mail server cannot hold a send (and shutdown) for nodemailer's default minutes. */
const SMTP_TIMEOUTS = { connectionTimeout: 10_000, greetingTimeout: 10_000, socketTimeout: 30_000 } as const;

export function createMailer(options: MailerOptions): Mailer {
  const { logger } = options;
  const pending = new Set<Promise<void>>();
  const transport = options.smtpUrl
    ? createTransport({ url: options.smtpUrl, ...SMTP_TIMEOUTS }, { from: options.from })
    : undefined;

  const deliver = async (message: MailMessage): Promise<void> => {
    if (!transport) {
      logger.info({ to: message.to, subject: message.subject, link: message.link }, 'mail: SMTP_URL unset, not sent; its link');
      return;
    }
    // Never the text or the link here: both carry the token.
    await transport.sendMail({ to: message.to, subject: message.subject, text: message.text });
  };

  const track = (work: Promise<void>) => {
    pending.add(work);
    void work.finally(() => pending.delete(work));
  };

  const idle = async () => {
    while (pending.size > 0) await Promise.allSettled([...pending]);
  };

  return {
    delivers: transport !== undefined,
    send(message) {
      track(
        new Promise<void>((resolve) => setImmediate(resolve))
          .then(() => deliver(message))
          .catch((error: unknown) => {
            const { name, code } = error as { name?: unknown; code?: unknown };
            logger.warn(
              { subject: message.subject, error: { name, code, message: error instanceof Error ? error.message : String(error) } },
              'mail: sending failed',
            );
          }),
      );
    },
    idle,
    async close() {
      await idle();
      transport?.close();
    },
  };
}
