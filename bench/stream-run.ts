/**
 * One whole-process stream run for bench/engine.bench.ts, the way a backup tool pipes an image:
 * node dist/bench/stream-run.js encrypt|decrypt|pass SRC [DST] [--chunk BYTES]  (DST defaults to /dev/null)
 * fs.createReadStream(SRC) -> createEncryptStream/createDecryptStream -> fs.createWriteStream(DST), passphrase
 * "benchpass" with PBKDF2 1000 iterations; prints {"seconds": the pipeline's own time} as JSON. `pass` puts a
 * PassThrough in the middle instead: the floor of this pipeline (Node's own streams, no crypto) on this machine.
 * --chunk sets the read stream's highWaterMark (Node's default: 64 KiB reads), as a caller reading larger pieces would.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { PassThrough } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createDecryptStream, createEncryptStream } from '../src/engine/index.js';

const args = process.argv.slice(2);
const at = args.indexOf('--chunk');
const chunk = at >= 0 ? Number(args.splice(at, 2)[1]) : undefined;
const [mode, src, dst] = args;
if ((mode !== 'encrypt' && mode !== 'decrypt' && mode !== 'pass') || src === undefined || (chunk !== undefined && !(Number.isInteger(chunk) && chunk > 0))) {
  process.stderr.write('usage: stream-run.js encrypt|decrypt|pass SRC [DST] [--chunk BYTES]\n');
  process.exit(2);
}
const t0 = performance.now();
const crypt =
  mode === 'encrypt'
    ? createEncryptStream({ passphrase: 'benchpass', kdf: { type: 'pbkdf2', hash: 'sha256', iterations: 1000 } })
    : mode === 'decrypt'
      ? createDecryptStream({ passphrase: 'benchpass' })
      : new PassThrough();
await pipeline(createReadStream(src, chunk !== undefined ? { highWaterMark: chunk } : {}), crypt, createWriteStream(dst ?? '/dev/null'));
process.stdout.write(JSON.stringify({ seconds: (performance.now() - t0) / 1000 }, null, 2) + '\n');
