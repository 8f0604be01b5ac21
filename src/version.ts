// The version users see in `weft version`, logs and host records.
// eslint-disable-next-line @typescript-eslint/no-var-requires
export const VERSION: string = (require('../package.json') as { version: string }).version;

/** The Node.js runtime weft runs on (`weft status`, `weft version`, logs). */
export const RUNTIME = `node ${process.versions.node}`;

/** The oldest Node.js major weft supports (package.json "engines"). */
export const MIN_NODE_MAJOR = 24;

/** A warning when the runtime is older than supported, undefined otherwise. */
export function runtimeWarning(version = process.versions.node): string | undefined {
  const major = Number(version.split('.')[0]);
  if (major >= MIN_NODE_MAJOR) return undefined;
  return `weft runs on Node.js ${MIN_NODE_MAJOR} LTS; this is Node.js ${version} (end of life): start it with the runtime that "npm ci" installs (npm start, or node_modules/.bin/node dist/cli.js)`;
}
