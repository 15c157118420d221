#!/usr/bin/env node
// Entry point: `serve` (default), `migrate`, `create-admin`, `keys rotate`.
import { runCli } from './transports/cli.js';

process.exitCode = await runCli(process.argv.slice(2));
