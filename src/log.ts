// JSON logs with pino on stdout: the plain daemon's supervisor and, for the
// managed plugin, dockerd's log (tagged plugin=<id>) both collect stdout.
import pino, { Logger } from 'pino';

export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { name: 'weft' },
    timestamp: pino.stdTimeFunctions.isoTime,
    // Never log credentials, whatever object ends up in a log call.
    redact: { paths: ['etcdPassword', '*.etcdPassword', 'password', '*.password', 'auth.password'], censor: '***' },
  });
}
