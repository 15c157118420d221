// Runs ONE gRPC unary load in its own process (as bench/load-runner.ts does for autocannon, which
// cannot speak HTTP/2) and prints a LoadSummary as JSON on stdout.
// Usage: node --import tsx bench/grpc-load.ts '<json GrpcLoadSpec>'
//
// Lean on purpose, so that the client is not what limits the server: raw node:http2 (nghttp2 in C++),
// `sessions` h2c connections with `streamsPerSession` calls in flight on each (a new call as soon as
// one ends, as autocannon keeps one request in flight per connection), the request framed once
// (5-byte gRPC prefix + the protobuf bytes given in the spec) and the answer's body discarded
// unparsed: a call counts as OK when its grpc-status (trailers, or headers of a trailers-only
// answer) is 0. With `uniqueKeyField`, each call's message gets that string field appended with a
// value unique to the call (an idempotency key): a few bytes copied, no protobuf library.
import http2 from 'node:http2';
import type { LoadSummary } from './load-runner.js';

export interface GrpcLoadSpec {
  /** The h2c origin, e.g. http://127.0.0.1:50051. */
  readonly origin: string;
  /** /package.Service/Method, e.g. /bastion.v1.UserService/GetMe. */
  readonly path: string;
  readonly sessions: number;
  readonly streamsPerSession: number;
  readonly durationSeconds: number;
  /** Request metadata (e.g. authorization). */
  readonly metadata?: Record<string, string>;
  /** The request message, protobuf binary as base64 (empty: the empty message). */
  readonly messageBase64?: string;
  /** Append this field number as a string field, unique per call (the idempotency key). */
  readonly uniqueKeyField?: number;
}

const spec = JSON.parse(process.argv[2] ?? '{}') as GrpcLoadSpec;

const varint = (value: number): number[] => {
  const bytes: number[] = [];
  let rest = value;
  while (rest > 0x7f) {
    bytes.push((rest & 0x7f) | 0x80);
    rest >>>= 7;
  }
  bytes.push(rest);
  return bytes;
};

const message = Buffer.from(spec.messageBase64 ?? '', 'base64');
/** 5-byte gRPC message prefix: not compressed, big-endian length. */
const framed = (body: Buffer): Buffer => {
  const frame = Buffer.allocUnsafe(5 + body.length);
  frame[0] = 0;
  frame.writeUInt32BE(body.length, 1);
  body.copy(frame, 5);
  return frame;
};
const fixedFrame = framed(message);
const keyPrefix = `bench-${process.pid.toString(36)}-${Date.now().toString(36)}-`;
let keyCounter = 0;
const keyTag = spec.uniqueKeyField === undefined ? [] : varint((spec.uniqueKeyField << 3) | 2);
const frameForCall = (): Buffer => {
  if (spec.uniqueKeyField === undefined) return fixedFrame;
  const key = Buffer.from(`${keyPrefix}${(keyCounter++).toString(36)}`, 'latin1');
  return framed(Buffer.concat([message, Buffer.from([...keyTag, ...varint(key.length)]), key]));
};

const headers: http2.OutgoingHttpHeaders = {
  ':method': 'POST',
  ':path': spec.path,
  'content-type': 'application/grpc+proto',
  te: 'trailers',
  ...spec.metadata,
};

let ok = 0;
let notOk = 0;
let errors = 0;
let latencies = new Float64Array(1 << 16);
let recorded = 0;
const record = (ms: number) => {
  if (recorded === latencies.length) {
    const grown = new Float64Array(latencies.length * 2);
    grown.set(latencies);
    latencies = grown;
  }
  latencies[recorded++] = ms;
};

let running = true;
const sessions: http2.ClientHttp2Session[] = [];

function call(session: http2.ClientHttp2Session): void {
  if (!running || session.closed || session.destroyed) return;
  const started = performance.now();
  let status: string | undefined;
  const stream = session.request(headers);
  stream.on('response', (responseHeaders) => {
    const inHeaders = responseHeaders['grpc-status'];
    if (typeof inHeaders === 'string') status = inHeaders;
  });
  stream.on('trailers', (trailers) => {
    const inTrailers = trailers['grpc-status'];
    if (typeof inTrailers === 'string') status = inTrailers;
  });
  stream.on('data', () => undefined);
  let failed = false;
  stream.on('error', () => (failed = true));
  stream.on('close', () => {
    if (!running) return;
    record(performance.now() - started);
    if (failed || stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR) errors++;
    else if (status === '0') ok++;
    else notOk++;
    call(session);
  });
  stream.end(frameForCall());
}

const connect = (): Promise<http2.ClientHttp2Session> =>
  new Promise((resolve, reject) => {
    const session = http2.connect(spec.origin);
    session.once('connect', () => resolve(session));
    session.once('error', reject);
  });

for (let index = 0; index < spec.sessions; index++) {
  const session = await connect();
  session.on('error', () => errors++);
  sessions.push(session);
}

const cpuAtStart = process.cpuUsage();
const startedAt = performance.now();
for (const session of sessions) for (let stream = 0; stream < spec.streamsPerSession; stream++) call(session);
await new Promise((resolve) => setTimeout(resolve, spec.durationSeconds * 1000));
running = false;
const elapsedSeconds = (performance.now() - startedAt) / 1000;
for (const session of sessions) session.destroy();

const sorted = latencies.subarray(0, recorded).sort();
const percentile = (p: number): number => (recorded === 0 ? Number.NaN : (sorted[Math.min(recorded - 1, Math.floor((p / 100) * recorded))] ?? Number.NaN));
const cpu = process.cpuUsage(cpuAtStart);
const summary: LoadSummary = {
  requestsPerSecond: recorded / elapsedSeconds,
  p50Ms: percentile(50),
  p99Ms: percentile(99),
  total: recorded,
  ok2xx: ok,
  non2xx: notOk,
  errors,
  timeouts: 0,
  durationSeconds: elapsedSeconds,
  clientCpuSeconds: (cpu.user + cpu.system) / 1e6,
};
process.stdout.write(`${JSON.stringify(summary)}\n`);
