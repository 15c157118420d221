// A real SMTP server (the `smtp-server` package) on a loopback port that keeps every message it
// accepts, parsed with mailparser, for the suites that follow mail end to end.
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { simpleParser } from 'mailparser';
import { SMTPServer } from 'smtp-server';

export interface Mail {
  readonly to: readonly string[];
  readonly from: string;
  readonly subject: string;
  readonly text: string;
}

export type SmtpSink = Awaited<ReturnType<typeof startSmtp>>;

/** An SMTP server that keeps every message it accepts. */
export async function startSmtp() {
  const mails: Mail[] = [];
  const waiters = new Set<() => void>();
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    onData(stream, session, callback) {
      simpleParser(stream).then(
        (parsed) => {
          mails.push({
            to: session.envelope.rcptTo.map((recipient) => recipient.address),
            from: parsed.from?.value.map((sender) => `${sender.name} <${sender.address ?? ''}>`).join(', ') ?? '',
            subject: parsed.subject ?? '',
            text: parsed.text ?? '',
          });
          for (const wake of waiters) wake();
          callback();
        },
        (error: Error) => callback(error),
      );
    },
  });
  server.listen(0, '127.0.0.1');
  await once(server.server, 'listening');
  const { port } = server.server.address() as AddressInfo;
  const mailsTo = (address: string) => mails.filter((mail) => mail.to.includes(address));
  return {
    url: `smtp://127.0.0.1:${port}`,
    /** Every mail accepted so far, in order. */
    mails: mails as readonly Mail[],
    mailsTo,
    /** The `count`-th mail to `address` (1-based), waiting up to `withinMs` for it. */
    async mailTo(address: string, count = 1, withinMs = 5_000): Promise<Mail> {
      const deadline = Date.now() + withinMs;
      for (;;) {
        const found = mailsTo(address);
        if (found.length >= count) return found[count - 1] as Mail;
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`no mail #${count} to ${address} within ${withinMs} ms (got ${found.length})`);
        await new Promise<void>((resolve) => {
          const wake = () => {
            waiters.delete(wake);
            clearTimeout(timer);
            resolve();
          };
          const timer = setTimeout(wake, left);
          waiters.add(wake);
        });
      }
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
