// A backup tool's use of the streams API: `node stream-backup.mjs backup disk.vhd disk.enc.vhd` encrypts a VHD in
// one pass (the key sealed in the vault), `node stream-backup.mjs restore disk.enc.vhd disk.vhd` decrypts it back.
// Either side of the pipe can be a file, a socket or an upload; the output gets its final name only when complete.
import { createReadStream, createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { createDecryptStream, createEncryptStream } from 'vhdcrypt';

const [command, source, destination] = process.argv.slice(2);
const controller = new AbortController();
process.once('SIGINT', () => controller.abort());

const options = {
  inputFormat: 'vhd', // what the input stream carries: 'vhd' (fixed or dynamic) or 'raw'
  signal: controller.signal, // abort: the pipeline rejects with ENGINE_ABORTED
  onProgress: ({ bytesDone, bytesTotal }) => process.stderr.write(`\r${bytesDone} of ${bytesTotal} bytes`),
};
const crypt =
  command === 'backup'
    ? createEncryptStream({ ...options, sourceName: source }) // LUKS2, key sealed in the embedded vault
    : createDecryptStream(options); // opens through the image's vault token (or pass passphraseFile, keyFile, ...)

const partial = `${destination}.partial`;
try {
  await pipeline(createReadStream(source), crypt, createWriteStream(partial, { mode: 0o600 }));
} catch (e) {
  await rm(partial, { force: true }); // incomplete output; an encrypt stream has also discarded its vault secret
  console.error(`\n${e.code ?? 'ERROR'}: ${e.message}`);
  process.exit(1);
}
await rename(partial, destination);
const r = crypt.result; // set once the output has ended
console.error(`\n${destination}: ${r.operation} of ${r.bytesProcessed} bytes, ${r.format} in a ${r.container} container`);
if (r.secretId) console.error(`opened by vault secret ${r.secretId}`);
