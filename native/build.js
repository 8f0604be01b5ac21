// Builds the netns addon with node-gyp at `npm ci` time.
// Debian's Node ships its headers in /usr/include/node; pointing node-gyp there
// avoids a download of the headers, which this project's machines cannot do.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const args = ['rebuild', '--directory', __dirname];
if (!process.env.npm_config_nodedir && fs.existsSync('/usr/include/node/node_api.h')) args.push('--nodedir=/usr');
const gyp = path.join(__dirname, '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
const r = spawnSync(process.execPath, [gyp, ...args], { stdio: 'inherit' });
process.exit(r.status === null ? 1 : r.status);
