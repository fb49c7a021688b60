/** `vhdcrypt bench`: crypto throughput per backend and kernel, and an end-to-end encrypt of a temporary image. */
import { writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { renderBarChart } from './bench-chart.js';
import { measureOpensslSpeed, measureXtsThroughput } from './xts-throughput.js';
import { runEndToEndBench } from './bench-end-to-end.js';

export function registerBench(program: Command): void {
  program
    .command('bench')
    .description('measure AES-XTS throughput of every backend and kernel, and an end-to-end image encryption')
    .option('--json', 'print one JSON document instead of a table')
    .option('--svg <file>', 'also write a bar chart of the results')
    .option('--size <MiB>', 'size of the temporary image for the end-to-end run', '256')
    .option('--quick', 'shorter sampling')
    .action(async (opts: { json?: boolean; svg?: string; size: string; quick?: boolean }) => {
      const rows = await measureXtsThroughput({ timeMs: opts.quick ? 200 : 500 });
      const openssl = await measureOpensslSpeed(64, opts.quick ? 1 : 2);
      const e2e = await runEndToEndBench({ sizeMiB: Number(opts.size) });
      if (opts.json) {
        process.stdout.write(JSON.stringify({ xts: rows, openssl, endToEnd: e2e }, null, 2) + '\n');
      } else {
        process.stdout.write('AES-256-XTS, one thread, 1 MiB batches (median MB/s)\n');
        for (const r of rows) process.stdout.write(`  ${r.name.padEnd(28)} ${String(r.sectorSize).padStart(5)}-byte sectors ${r.mbPerSecond.toFixed(0).padStart(8)} MB/s\n`);
        if (openssl) process.stdout.write(`  ${openssl.name.padEnd(48)} ${openssl.mbPerSecond.toFixed(0).padStart(8)} MB/s\n`);
        if (e2e) process.stdout.write(`end to end: ${e2e.description}: ${e2e.mbPerSecond.toFixed(0)} MB/s (${e2e.seconds.toFixed(2)} s)\n`);
        else process.stdout.write('end to end: not available in this build\n');
      }
      if (opts.svg) {
        const bars = rows.map((r) => ({ label: `${r.name} (${r.sectorSize} B sectors)`, value: r.mbPerSecond }));
        if (openssl) bars.push({ label: 'openssl speed aes-256-xts', value: openssl.mbPerSecond });
        if (e2e) bars.push({ label: `end to end: ${e2e.description}`, value: e2e.mbPerSecond });
        await writeFile(opts.svg, renderBarChart('vhdcrypt bench: AES-256-XTS throughput', 'MB/s', bars));
      }
    });
}
