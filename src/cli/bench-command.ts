/** `vhdcrypt bench`: crypto throughput per backend and kernel, and an end-to-end encrypt of a temporary image. */
import { writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { renderBarChart } from '../bench/bar-chart.js';
import { packageVersion } from '../version.js';

export function registerBench(program: Command): void {
  program
    .command('bench')
    .description('measure AES-XTS throughput of every backend and kernel, and an end-to-end image encryption')
    .option('--json', 'print one JSON document instead of a table')
    .option('--svg <file>', 'also write a bar chart of the results')
    .option('--size <MiB>', 'size of the temporary image for the end-to-end run', '256')
    .option('--vault <uri>', 'vault for the end-to-end run (default: the embedded vault)')
    .option('--threads <n>', 'worker threads for the end-to-end run (default: one per core)')
    .option('--log', 'with --svg: a log axis (native and js differ by orders of magnitude)')
    .option('--quick', 'shorter sampling')
    .action(async (opts: { json?: boolean; svg?: string; log?: boolean; size: string; vault?: string; threads?: string; quick?: boolean }) => {
      // Loaded when the command runs, so other commands do not pay for tinybench at start-up.
      const { measureOpensslSpeed, measureXtsThroughput } = await import('../bench/xts-throughput.js');
      const { runEndToEndBench } = await import('../bench/end-to-end.js');
      const rows = await measureXtsThroughput({ timeMs: opts.quick ? 200 : 500, skipJs: opts.quick });
      const openssl = await measureOpensslSpeed(64, opts.quick ? 1 : 2);
      const e2e = await runEndToEndBench({
        sizeMiB: Number(opts.size),
        vault: opts.vault,
        threads: opts.threads === undefined ? undefined : Number(opts.threads),
      });
      if (opts.json) {
        process.stdout.write(JSON.stringify({ vhdcryptVersion: packageVersion(), node: process.version, xts: rows, openssl, endToEnd: e2e }, null, 2) + '\n');
      } else {
        process.stdout.write(`vhdcrypt ${packageVersion()}, Node ${process.version}\n`);
        process.stdout.write('AES-256-XTS, one thread, 1 MiB batches (median MB/s)\n');
        for (const r of rows) process.stdout.write(`  ${r.name.padEnd(28)} ${String(r.sectorSize).padStart(5)}-byte sectors ${r.mbPerSecond.toFixed(0).padStart(8)} MB/s\n`);
        if (openssl) process.stdout.write(`  ${openssl.name.padEnd(48)} ${openssl.mbPerSecond.toFixed(0).padStart(8)} MB/s\n`);
        process.stdout.write(`end to end: ${e2e.description}, ${e2e.backend}/${e2e.kernel}, ${e2e.threads} threads\n`);
        process.stdout.write(`  encrypt ${e2e.mbPerSecond.toFixed(0)} MB/s (${e2e.seconds.toFixed(2)} s), decrypt ${e2e.decryptMbPerSecond.toFixed(0)} MB/s (${e2e.decryptSeconds.toFixed(2)} s), round trip ${e2e.verified ? 'identical' : 'DIFFERENT'}\n`);
      }
      if (opts.svg) {
        const { benchChart } = await import('../bench/bench-chart.js');
        await writeFile(opts.svg, renderBarChart(benchChart(rows, openssl, e2e, { log: opts.log === true, version: packageVersion() })));
      }
      if (!e2e.verified) process.exitCode = 1;
    });
}
