// The plugin API server: Fastify configured for Docker's plugin protocol.
//  - Docker sends no Content-Type, and empty bodies for argument-less calls:
//    every body is parsed as JSON whatever the header says, empty = {}.
//  - Every error is answered as {"Err": m} (NetworkDriver) plus {"Error": m}
//    (IpamDriver reads that field); never an empty body, which Docker takes as
//    a JSON EOF error.
//  - Bodies have a size limit; malformed input gets a 400 naming the field.

import Fastify, { FastifyError, FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { errors, WeftError } from '../errors';
import { Backend, registerRoutes } from './routes';

export interface ServerOptions {
  bodyLimit: number;
  logger: Logger;
  /** Called with each call's method, outcome and duration (metrics). */
  onCall?: (method: string, outcome: string, ms: number) => void;
}

export function buildServer(backend: Backend, opts: ServerOptions): FastifyInstance {
  const app = Fastify({
    logger: false,
    bodyLimit: opts.bodyLimit,
    // Docker may send several calls at once and keeps connections alive.
    keepAliveTimeout: 60_000,
    ajv: { customOptions: { coerceTypes: false, allErrors: false, removeAdditional: false } },
  });
  const log = opts.logger;

  // Fastify's own JSON parser (secure-json-parse), with its guard against
  // prototype poisoning: a body with a "__proto__" key, or "constructor"
  // holding "prototype", is refused, since it could reach the driver's records.
  const secureJson = app.getDefaultJsonParser('error', 'error');
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string' }, (req, body, done) => {
    const text = (body as string).trim();
    if (text === '') return done(null, {});
    secureJson(req, text, (err, parsed) => {
      if (!err) return done(null, parsed);
      let plain = false;
      try {
        JSON.parse(text);
        plain = true;
      } catch {
        // not JSON at all
      }
      done(errors.badRequest(methodOf(req.url), plain
        ? 'the body has a "__proto__" key or a "constructor" with a "prototype" key (prototype poisoning): weft refuses such bodies; send plain JSON without those keys'
        : 'the body is not valid JSON'), undefined);
    });
  });

  // A body whose top level is not an object (e.g. `[]` or `5`) passes JSON
  // parsing; reject it before the schema so the message is plain.
  app.addHook('preValidation', async (req) => {
    if (req.body === undefined || req.body === null) req.body = {};
    if (typeof req.body !== 'object' || Array.isArray(req.body)) {
      throw errors.badRequest(methodOf(req.url), 'the body must be a JSON object');
    }
  });

  app.addHook('onResponse', async (req, reply) => {
    const ms = reply.elapsedTime;
    const outcome = reply.statusCode === 200 ? 'ok' : 'error';
    opts.onCall?.(methodOf(req.url), outcome, ms);
    log.debug({ call: methodOf(req.url), status: reply.statusCode, ms: Math.round(ms * 100) / 100 }, 'plugin call');
  });

  app.setErrorHandler((err: FastifyError | WeftError | Error, req, reply) => {
    const method = methodOf(req.url);
    let e: WeftError;
    if (err instanceof WeftError) e = err;
    else if ((err as FastifyError).validation) e = errors.badRequest(method, (err as FastifyError).message.replace(/^body\/?/, '') || 'invalid body');
    else if ((err as FastifyError).code === 'FST_ERR_CTP_BODY_TOO_LARGE') e = errors.bodyTooLarge(opts.bodyLimit);
    else if ((err as FastifyError).code === 'FST_ERR_CTP_INVALID_CONTENT_LENGTH') e = errors.badRequest(method, 'Content-Length does not match the body');
    else if (typeof (err as FastifyError).statusCode === 'number' && (err as FastifyError).statusCode! < 500) e = errors.badRequest(method, err.message);
    else if ((err as { code?: string }).code === 'WEFT_STORE_UNAVAILABLE') e = errors.store(method, err);
    else e = errors.internal(err);
    if (e.statusCode >= 500) log.error({ call: method, code: e.code, err }, e.message);
    else log.warn({ call: method, code: e.code }, e.message);
    void reply.code(e.statusCode).send({ Err: e.message, Error: e.message });
  });

  app.setNotFoundHandler((req, reply) => {
    const e = errors.unknownMethod(req.url.slice(0, 128));
    void reply.code(404).send({ Err: e.message, Error: e.message });
  });

  registerRoutes(app, backend);
  return app;
}

function methodOf(url: string): string {
  return url.replace(/^\//, '').split('?')[0].slice(0, 64);
}
