#!/usr/bin/env node
// Entry point: `serve` (default), `migrate`, `create-admin`, `keys rotate`.
import { runCli } from './transports/cli.js';

const code = await runCli(process.argv.slice(2));
// Exit explicitly: a cluster worker's IPC channel (or a stray handle) must not keep a process alive
// after its command finished. Before that, wait until what was written to stdout and stderr has been
// handed to the OS: on a pipe those writes can be asynchronous, and process.exit() drops what is queued
// (a usage error printed to a busy pipe was lost that way).
await Promise.all([process.stdout, process.stderr].map((stream) => new Promise<void>((resolve) => stream.write('', () => resolve()))));
process.exit(code);
