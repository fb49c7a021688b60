/** `vhdcrypt fleet worker|submit|status|cancel|retry|dashboard`: image jobs on a BullMQ queue in Redis. */
import { readFile, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { VhdcryptError } from '../errors.js';
import { ENCRYPTION_FORMATS, KEY_SIZES, SECTOR_SIZES } from '../volume/index.js';
import type { FleetStatus, SubmitInput } from '../fleet/index.js';

/** A manifest bigger than this is refused before it is read (a million jobs of a few hundred bytes fit). */
const MAX_MANIFEST_BYTES = 256 << 20;

function positiveInt(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive whole number');
  return n;
}

function nonNegativeInt(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n)) throw new InvalidArgumentError('expected a whole number');
  return n;
}

function collect(v: string, prev: string[] | undefined): string[] {
  return [...(prev ?? []), v];
}

interface RedisFlags {
  redis?: string;
  queue?: string;
}

function redisUrl(f: RedisFlags): string {
  const url = f.redis ?? process.env['VHDCRYPT_REDIS'];
  if (!url) throw new VhdcryptError('CLI_USAGE', 'fleet: give --redis URL (or set VHDCRYPT_REDIS): redis://host:port/db, rediss://..., unix:///path/redis.sock');
  return url;
}

function withRedis(cmd: Command): Command {
  return cmd
    .option('--redis <url>', 'Redis: redis://host:port/db, rediss://host:port/db (TLS), unix:///path/redis.sock (default $VHDCRYPT_REDIS)')
    .option('--queue <name>', 'queue name', 'vhdcrypt');
}

async function fleetModule() {
  return import('../fleet/index.js');
}

const mb = (b: number) => `${(b / 1e6).toFixed(1)}`;

/** The status as a table: jobs by state, then the running jobs and the latest failures. */
function statusText(s: FleetStatus): string {
  const lines = [`queue ${s.queue}: ${Object.entries(s.counts).map(([k, n]) => `${k} ${n}`).join(', ')}`];
  lines.push(`throughput ${mb(s.bytesPerSecond)} MB/s, ${mb(s.bytesRemaining)} MB left, ETA ${s.etaSeconds === null ? '-' : `${Math.ceil(s.etaSeconds)} s`}`);
  if (s.running.length) {
    lines.push('', 'RUNNING  job  progress  MB/s  worker  destination');
    for (const r of s.running) {
      const pct = r.bytesTotal ? Math.floor((100 * r.bytesDone) / r.bytesTotal) : 0;
      lines.push(`  ${r.id}  ${pct}% (${mb(r.bytesDone)}/${mb(r.bytesTotal)} MB)  ${mb(r.rate)}  ${r.worker ?? '-'}  ${r.destination}`);
    }
  }
  if (s.failed.length) {
    lines.push('', 'FAILED  job  code  message');
    for (const f of s.failed.slice(0, 20)) lines.push(`  ${f.id}  ${f.code}  ${f.message}`);
  }
  return lines.join('\n') + '\n';
}

/** The jobs of a JSONL manifest: one { operation, source, destination, options, id?, priority? } per line. */
async function readManifest(path: string): Promise<SubmitInput[]> {
  const { FleetError } = await fleetModule();
  const size = (await stat(path)).size;
  if (size > MAX_MANIFEST_BYTES) throw new FleetError('FLEET_BAD_MANIFEST', `${path}: ${size} bytes; a manifest holds at most ${MAX_MANIFEST_BYTES} (split it)`);
  const out: SubmitInput[] = [];
  const lines = (await readFile(path, 'utf8')).split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    let j: unknown;
    try {
      j = JSON.parse(line);
    } catch {
      throw new FleetError('FLEET_BAD_MANIFEST', `${path} line ${i + 1}: not JSON`);
    }
    if (typeof j !== 'object' || j === null || Array.isArray(j)) throw new FleetError('FLEET_BAD_MANIFEST', `${path} line ${i + 1}: expected an object { operation, source, destination, options }`);
    out.push(j as SubmitInput);
  }
  if (out.length === 0) throw new FleetError('FLEET_BAD_MANIFEST', `${path}: no jobs`);
  return out;
}

export function registerFleet(program: Command): void {
  const fleet = program.command('fleet').description('encrypt or decrypt many images on many machines through a BullMQ queue in Redis');

  withRedis(fleet.command('worker'))
    .description('take jobs from the queue and run them; SIGTERM: no new jobs, running ones finish within --grace or go back to the queue')
    .option('--concurrency <n>', 'jobs at once', positiveInt, 1)
    .option('--threads <n>', 'engine worker threads per job (default: one per core)', positiveInt)
    .option('--limit <max/ms>', 'queue-wide rate limit: at most MAX jobs started per MS milliseconds across all workers, e.g. 10/1000')
    .option('--lock-duration <ms>', "a job's lock; a dead worker's jobs move on after it", positiveInt, 30000)
    .option('--stalled-interval <ms>', 'how often to look for stalled jobs', positiveInt, 30000)
    .option('--grace <seconds>', 'on SIGTERM, how long running jobs may take to finish before they are handed back', nonNegativeInt, 20)
    .action(async (f: RedisFlags & { concurrency: number; threads?: number; limit?: string; lockDuration: number; stalledInterval: number; grace: number }) => {
      const { startFleetWorker } = await fleetModule();
      let limiter: { max: number; durationMs: number } | undefined;
      if (f.limit !== undefined) {
        const m = /^(\d+)\/(\d+)$/.exec(f.limit);
        if (!m || Number(m[1]) < 1 || Number(m[2]) < 1) throw new VhdcryptError('CLI_USAGE', `--limit expected MAX/MS such as 10/1000, got ${JSON.stringify(f.limit)}`);
        limiter = { max: Number(m[1]), durationMs: Number(m[2]) };
      }
      const url = redisUrl(f);
      const w = startFleetWorker({
        connection: url, queue: f.queue, concurrency: f.concurrency, threads: f.threads, limiter,
        lockDurationMs: f.lockDuration, stalledIntervalMs: f.stalledInterval,
        log: (line) => process.stderr.write(`vhdcrypt fleet: ${line}\n`),
      });
      const stopped = new Promise<void>((resolveStop) => {
        const onSignal = (sig: NodeJS.Signals) => {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
          // A second signal exits at once: journals are replaced atomically and name only fsynced batches.
          const again = () => process.exit(130);
          process.on('SIGINT', again);
          process.on('SIGTERM', again);
          process.stderr.write(`vhdcrypt fleet: ${sig}: no new jobs; running ones have ${f.grace} s to finish, then go back to the queue\n`);
          w.stop(f.grace * 1000).then(resolveStop, resolveStop);
        };
        process.on('SIGINT', onSignal);
        process.on('SIGTERM', onSignal);
      });
      await w.ready();
      process.stderr.write(`vhdcrypt fleet: worker ${w.name} taking jobs from queue ${f.queue} (concurrency ${f.concurrency})\n`);
      await stopped;
      process.stderr.write('vhdcrypt fleet: worker stopped\n');
    });

  withRedis(fleet.command('submit'))
    .description('put jobs on the queue: SRC DST (one image) or --manifest FILE (JSONL, one job per line)')
    .argument('[src]', 'source image every worker can reach (absolute, or relative to here)')
    .argument('[dst]', 'destination every worker can reach')
    .option('--manifest <file>', 'JSONL: {"operation":"encrypt","source":...,"destination":...,"options":{...}} per line; paths relative to the file')
    .option('--decrypt', 'a decrypt job (default: encrypt)')
    .option('--id <id>', 'job id (default: the destination name and a digest of its path)')
    .option('--priority <n>', '1 (first) to 2097152', positiveInt)
    .option('--attempts <n>', 'attempts for transient failures', positiveInt, 5)
    .option('--backoff <ms>', 'first retry delay, doubled each attempt', nonNegativeInt, 2000)
    .addOption(new Option('--format <format>', 'encryption format').choices(ENCRYPTION_FORMATS))
    .option('--vault <uri>', "vault URI the workers use (default: each worker's own)")
    .option('--kek <name>', 'key-encryption key in the vault')
    .addOption(new Option('--passphrase-file <file>', 'keyslot passphrase file every worker reads (its path goes in the job, never its content)').conflicts('keyFile'))
    .addOption(new Option('--key-file <file>', 'key file every worker reads (its path goes in the job)').conflicts('passphraseFile'))
    .addOption(new Option('--key-size <bits>', 'AES-XTS key bits').choices(KEY_SIZES.map(String)))
    .addOption(new Option('--sector-size <bytes>', 'crypto sector size').choices(SECTOR_SIZES.map(String)))
    .addOption(new Option('--out-format <format>', 'output container').choices(['vhd-fixed', 'vhd-dynamic', 'raw']))
    .option('--no-sparse', 'write every block (encrypt)')
    .option('--secret <id>', 'decrypt: vault secret id (plain volumes without a VHD UUID)')
    .option('--parent-dir <dir>', 'differencing sources: a directory parent locators may lead into (repeatable)', collect)
    .option('--allow-absolute-parents', 'differencing sources: follow parent locators wherever they lead')
    .option('--json', 'print the jobs as JSON')
    .action(async (src: string | undefined, dst: string | undefined, f: RedisFlags & Record<string, unknown>) => {
      const { createFleet } = await fleetModule();
      let inputs: SubmitInput[];
      let cwd = process.cwd();
      if (f['manifest'] !== undefined) {
        if (src !== undefined) throw new VhdcryptError('CLI_USAGE', 'fleet submit: give SRC DST or --manifest, not both');
        inputs = await readManifest(String(f['manifest']));
        cwd = dirname(resolve(String(f['manifest'])));
      } else {
        if (src === undefined || dst === undefined) throw new VhdcryptError('CLI_USAGE', 'fleet submit: give SRC DST, or --manifest FILE');
        const operation = f['decrypt'] === true ? 'decrypt' : 'encrypt';
        const o: Record<string, unknown> = {};
        const put = (k: string, v: unknown) => {
          if (v !== undefined) o[k] = v;
        };
        put('vault', f['vault']);
        put('keyFile', f['keyFile'] !== undefined ? resolve(String(f['keyFile'])) : undefined);
        put('passphraseFile', f['passphraseFile'] !== undefined ? resolve(String(f['passphraseFile'])) : undefined);
        put('outFormat', f['outFormat']);
        put('parentDirs', (f['parentDir'] as string[] | undefined)?.map((d) => resolve(d)));
        if (f['allowAbsoluteParents'] === true) o['allowAbsoluteParents'] = true;
        if (operation === 'encrypt') {
          put('format', f['format']);
          put('kek', f['kek']);
          put('keySize', f['keySize'] !== undefined ? Number(f['keySize']) : undefined);
          put('sectorSize', f['sectorSize'] !== undefined ? Number(f['sectorSize']) : undefined);
          if (f['sparse'] === false) o['noSparse'] = true;
        } else {
          put('secretId', f['secret']);
          put('plainKeyBits', f['keySize'] !== undefined ? Number(f['keySize']) : undefined);
          put('plainSectorSize', f['sectorSize'] !== undefined ? Number(f['sectorSize']) : undefined);
        }
        inputs = [{ operation, source: src, destination: dst, options: o, ...(f['id'] !== undefined ? { id: String(f['id']) } : {}), ...(f['priority'] !== undefined ? { priority: Number(f['priority']) } : {}) }];
      }
      const fl = await createFleet({ connection: redisUrl(f), queue: f.queue });
      try {
        const r = await fl.submit(inputs, { attempts: Number(f['attempts']), backoffMs: Number(f['backoff']), cwd });
        if (f['json'] === true) process.stdout.write(JSON.stringify({ queue: fl.queueName, jobs: r }, null, 2) + '\n');
        else for (const j of r) process.stdout.write(`${j.id}: ${j.added ? 'queued' : `already there (${j.state})`}\n`);
      } finally {
        await fl.close();
      }
    });

  withRedis(fleet.command('status'))
    .description('jobs by state, running jobs with progress, bytes/s, ETA and failures with their codes')
    .option('--watch', 'print again every second until interrupted')
    .option('--json', 'print JSON')
    .action(async (f: RedisFlags & { watch?: boolean; json?: boolean }) => {
      const { createFleet } = await fleetModule();
      const fl = await createFleet({ connection: redisUrl(f), queue: f.queue });
      try {
        const once = async () => {
          const s = await fl.status();
          process.stdout.write(f.json ? JSON.stringify(s) + '\n' : statusText(s));
        };
        await once();
        if (!f.watch) return;
        await new Promise<void>((done) => {
          const timer = setInterval(() => {
            if (!f.json) process.stdout.write('\n');
            once().catch(() => {});
          }, 1000);
          const stop = () => {
            clearInterval(timer);
            done();
          };
          process.once('SIGINT', stop);
          process.once('SIGTERM', stop);
        });
      } finally {
        await fl.close();
      }
    });

  withRedis(fleet.command('cancel'))
    .description('remove a waiting job, or stop a running one (its temp file goes; the job fails with FLEET_CANCELLED)')
    .argument('<id>', 'job id')
    .action(async (id: string, f: RedisFlags) => {
      const { createFleet } = await fleetModule();
      const fl = await createFleet({ connection: redisUrl(f), queue: f.queue });
      try {
        const r = await fl.cancel(id);
        process.stdout.write(r === 'removed' ? `${id}: removed from the queue\n` : `${id}: cancelling (its worker stops it within a second)\n`);
      } finally {
        await fl.close();
      }
    });

  withRedis(fleet.command('retry'))
    .description('run a failed job again')
    .argument('<id>', 'job id')
    .action(async (id: string, f: RedisFlags) => {
      const { createFleet } = await fleetModule();
      const fl = await createFleet({ connection: redisUrl(f), queue: f.queue });
      try {
        await fl.retry(id);
        process.stdout.write(`${id}: queued again\n`);
      } finally {
        await fl.close();
      }
    });

  withRedis(fleet.command('dashboard'))
    .description('a read-only web page of the queue, live (loopback only)')
    .option('--listen <host:port>', 'loopback address and port (port 0: any free one)', '127.0.0.1:7070')
    .action(async (f: RedisFlags & { listen: string }) => {
      const { startDashboard } = await fleetModule();
      const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(f.listen);
      if (!m) throw new VhdcryptError('CLI_USAGE', `--listen expected HOST:PORT such as 127.0.0.1:7070, got ${JSON.stringify(f.listen)}`);
      const d = await startDashboard({ connection: redisUrl(f), queue: f.queue, host: m[1] ?? m[2]!, port: Number(m[3]) });
      process.stdout.write(`dashboard: ${d.url}\n`);
      await new Promise<void>((done) => {
        process.once('SIGINT', () => done());
        process.once('SIGTERM', () => done());
      });
      await d.close();
    });
}
