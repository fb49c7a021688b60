/**
 * Import rules of src/ (`npm run lint:imports`): layers point one way. Type-only imports count (a type is
 * knowledge too). Tests are not cruised: they may reach into any layer.
 *
 *   root modules (src/*.ts but index.ts): errors, error codes, the addon loader, the package root: the floor
 *   binary (the struct DSL for on-disk layouts), crypto: root modules only
 *   image: binary and root modules only
 *   luks: binary, crypto and root modules only; vault: crypto and root modules only
 *   volume: crypto, image, luks, vault and root modules only
 *   vault-server: vault, crypto and root modules only; imported by the cli alone
 *   engine/pool (the worker pool and its batches) imports neither the file jobs nor the streams; the file jobs do
 *   not import the streams
 *   cli: imported by nobody (bin/ runs its build from dist/)
 *   src/index.ts, the public entry: imported by nobody
 *   and no cycle between the top-level folders of src/, whatever their order.
 */
const ROOT = 'src/(?!index\\.ts$)[^/]+\\.ts$';

/** A folder of src/ whose files may import only their own folder, the root modules and `allowed` folders. */
function onlyImports(folder, allowed, why) {
  const own = [folder, ...allowed].join('|');
  return {
    name: `${folder}-imports-only-${allowed.length ? `${allowed.join('-')}-and-` : ''}root`,
    comment: why,
    severity: 'error',
    from: { path: `^src/${folder}/` },
    to: { path: '^src/', pathNot: `^(src/(${own})/|${ROOT})` },
  };
}

module.exports = {
  forbidden: [
    {
      name: 'no-folder-cycles',
      comment: 'A folder of src/ never imports a folder that imports it back (directly or through others): shared knowledge moves down.',
      severity: 'error',
      scope: 'folder',
      from: { path: '^src/[^/]+' },
      to: { path: '^src/[^/]+', circular: true },
    },
    {
      name: 'root-modules-import-no-folder',
      comment: 'The root modules are the floor every folder stands on; src/index.ts alone assembles the folders.',
      severity: 'error',
      from: { path: `^${ROOT}` },
      to: { path: '^src/[^/]+/' },
    },
    onlyImports('crypto', [], 'AES-XTS stands on nothing but the root modules.'),
    onlyImports('binary', [], 'The struct DSL for on-disk layouts stands on nothing but the root modules.'),
    onlyImports('image', ['binary'], 'Disk images stand on their layouts and the root modules; kinds above register with it (source-registry.ts).'),
    onlyImports('luks', ['binary', 'crypto'], 'LUKS headers and keyslots need their layouts and the cipher.'),
    onlyImports('vault', ['crypto'], 'The vault needs only the cipher.'),
    onlyImports('volume', ['binary', 'crypto', 'image', 'luks', 'vault'], 'A volume is its image, its LUKS header and its vault secret; jobs and servers stand on it, not under it.'),
    onlyImports('vault-server', ['vault', 'crypto'], 'The vault server speaks Key Vault over the vault; it needs nothing above it.'),
    {
      name: 'only-the-cli-imports-the-vault-server',
      comment: 'The vault server is a top: the command line starts it, no part stands on it.',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/(cli|vault-server)/' },
      to: { path: '^src/vault-server/' },
    },
    {
      name: 'engine-pool-stands-under-the-jobs',
      comment: 'The worker pool and its batches serve the file jobs and the streams alike, so it imports neither.',
      severity: 'error',
      from: { path: '^src/engine/pool/' },
      to: { path: '^src/engine/(file-jobs|streams)/' },
    },
    {
      name: 'file-jobs-do-not-import-streams',
      comment: 'The streams are built from the file jobs\' options and the pool, never the other way round.',
      severity: 'error',
      from: { path: '^src/engine/file-jobs/' },
      to: { path: '^src/engine/streams/' },
    },
    {
      name: 'nothing-imports-cli',
      comment: 'The command line is the top: only its own files (and bin/, through dist/) load it.',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/cli/' },
      to: { path: '^src/cli/' },
    },
    {
      name: 'nothing-imports-the-entry',
      comment: 'src/index.ts is the public entry; a part that imported it would import every other part.',
      severity: 'error',
      from: {},
      to: { path: '^src/index\\.ts$' },
    },
    {
      name: 'no-unresolvable',
      comment: 'An import the cruiser cannot resolve would slip past every rule above.',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    doNotFollow: { path: 'node_modules' },
  },
};
