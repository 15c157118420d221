#!/usr/bin/env node
// Entry point: `serve` (default), `migrate`, `create-admin`, `keys rotate`.
import { runCli } from './transports/cli.js';

// Exit explicitly: a cluster worker's IPC channel (or a stray handle) must not keep a process alive
// after its command finished; logs were flushed by the command.
process.exit(await runCli(process.argv.slice(2)));
