// Generates the guest-side TypeScript declarations of a WIT world, as
// `jco guest-types <wit> -n <world> -o <out>` does.
//
// Why not that command: jco 1.35.0 runs its WIT reader (a component) on
// @bytecodealliance/preview2-shim 0.26, which starts with no preopened directories, and
// jco 1.35.0 does not give it any, so every path fails with "failed to read path for WIT
// ... (os error 44)". This script gives that same shim instance the root directory, then
// calls the same function the command does.
//
// Usage: node tools/guest-types.mjs <wit-dir> <world> <out-dir>
import { createRequire } from 'node:module';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [witDir, world, outDir] = process.argv.slice(2);
if (!witDir || !world || !outDir) {
    console.error('usage: node tools/guest-types.mjs <wit-dir> <world> <out-dir>');
    process.exit(2);
}
const transpile = import.meta.resolve('@bytecodealliance/jco-transpile');
const shim = createRequire(transpile).resolve('@bytecodealliance/preview2-shim/filesystem');
const { _setPreopens } = await import(pathToFileURL(shim).href);
_setPreopens({ '/': '/' });
const { generateGuestTypes } = await import(transpile);
const files = await generateGuestTypes(resolve(witDir), {
    worldName: world,
    outDir: resolve(outDir) + '/',
});
for (const [path, contents] of Object.entries(files)) {
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, contents);
    console.error(`guest-types: wrote ${path}`);
}
