// A real webhook receiver for the webhooks suites: a node:http server that verifies every request
// with the Standard Webhooks reference implementation (`standardwebhooks`' Webhook.verify) and
// answers the status the test sets.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Webhook } from 'standardwebhooks';

export interface ReceivedRequest {
  readonly webhookId: string | undefined;
  readonly contentType: string | undefined;
  readonly body: string;
  /** The event, when the signature verified under the receiver's secret; undefined otherwise. */
  readonly event: { id: string; type: string; subject: string; data: Record<string, unknown> } | undefined;
  readonly verifyError: string | undefined;
  /** The status the receiver answered. */
  readonly status: number;
  readonly at: number;
}

export interface Receiver {
  /** http://127.0.0.1:<port> */
  readonly url: string;
  readonly port: number;
  readonly requests: ReceivedRequest[];
  /** The endpoint secret to verify with (whsec_…), known once the endpoint is registered. */
  secret: string | undefined;
  /** The status to answer from now on. */
  status: number;
  /** Event ids of the requests answered 2xx, in arrival order. */
  deliveredIds(): string[];
  close(): Promise<void>;
}

export async function startReceiver(): Promise<Receiver> {
  const requests: ReceivedRequest[] = [];
  const receiver: Omit<Receiver, 'url' | 'port'> & { url: string; port: number } = {
    url: '',
    port: 0,
    requests,
    secret: undefined,
    status: 200,
    deliveredIds: () => requests.filter((request) => request.status < 300 && request.event).map((request) => request.event?.id ?? ''),
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      let event: ReceivedRequest['event'];
      let verifyError: string | undefined;
      try {
        if (!receiver.secret) throw new Error('no secret yet');
        const headers: Record<string, string> = {};
        for (const [name, value] of Object.entries(request.headers)) if (typeof value === 'string') headers[name] = value;
        event = new Webhook(receiver.secret).verify(body, headers) as ReceivedRequest['event'];
      } catch (error) {
        verifyError = (error as Error).message;
      }
      const status = event ? receiver.status : 400;
      requests.push({
        webhookId: request.headers['webhook-id'] as string | undefined,
        contentType: request.headers['content-type'],
        body,
        event,
        verifyError,
        status,
        at: Date.now(),
      });
      response.writeHead(status, { 'content-type': 'text/plain' }).end(status < 300 ? 'ok' : 'no');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  receiver.port = port;
  receiver.url = `http://127.0.0.1:${port}`;
  return receiver;
}

/** Polls `condition` every 20 ms until it holds; fails with `what` after `timeoutMs`. */
export async function waitFor(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}
