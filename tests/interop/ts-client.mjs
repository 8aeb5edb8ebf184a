// Drives TopGun's own TypeScript client (@topgunbuild/client) against a
// TopGun-for-Rust server, with our Rust CLI as the second client.
//
//   node ts-client.mjs WS_URL TOPGUN_BIN [JWT_SECRET]
//
// WS_URL: the server, e.g. ws://127.0.0.1:8080/ws. TOPGUN_BIN: our `topgun`
// binary; the script runs it as the other client (`--server WS_URL put`),
// with a fresh temporary data directory. JWT_SECRET: when the server runs
// with `--jwt-secret`, the same secret; both clients then authenticate with
// an HS256 token minted here (`sub` = "ts-interop").
//
// Prints one JSON object on stdout and exits 0 when every check passed, 1
// otherwise (the object then says which step failed). It also counts the
// message types each way on the wire (`wire.in`, `wire.out`). Progress and
// the client's own log go to stderr.
import { execFile } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { unpack } from 'msgpackr';
import WebSocket from 'ws';
import { TopGunClient } from '@topgunbuild/client';

const [url, topgunBin, jwtSecret] = process.argv.slice(2);
if (!url || !topgunBin) {
  console.error('usage: node ts-client.mjs WS_URL TOPGUN_BIN [JWT_SECRET]');
  process.exit(2);
}

/** Message types seen on the wire, counted per direction. */
const wire = { in: {}, out: {}, undecodable: 0 };
function countFrame(direction, data) {
  try {
    const type = unpack(Buffer.from(data))?.type ?? '(no type)';
    wire[direction][type] = (wire[direction][type] ?? 0) + 1;
  } catch {
    wire.undecodable += 1;
  }
}

// Node 20 has no global WebSocket; the client calls `new WebSocket(url)`.
// The subclass only counts frames; the client sees a plain `ws` socket.
globalThis.WebSocket = class TappedWebSocket extends WebSocket {
  constructor(...args) {
    super(...args);
    this.on('message', (data) => countFrame('in', data));
  }
  send(data, ...rest) {
    countFrame('out', data);
    return super.send(data, ...rest);
  }
};

/** An HS256 JWT with `sub`, as `topgun serve --jwt-secret` checks it. */
function mintJwt(secret, sub) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, iat: now, exp: now + 600 })}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}
const token = jwtSecret ? mintJwt(jwtSecret, 'ts-interop') : undefined;

const MAP = 'interop';
const STEP_TIMEOUT_MS = 8000;
const log = (...args) => console.error('[ts-client]', ...args);
const run = promisify(execFile);
const cliDir = mkdtempSync(join(tmpdir(), 'topgun-ts-interop-cli-'));

/** Our Rust CLI as a second client of the same server. */
async function cli(...args) {
  const full = ['--data', cliDir, '--server', url];
  if (token) full.push('--token', token);
  full.push('--timeout', '8', ...args);
  const { stdout } = await run(topgunBin, full);
  return stdout.trim();
}

/** Polls `check` until it returns a truthy value or the step times out. */
async function waitFor(what, check, timeoutMs = STEP_TIMEOUT_MS) {
  const start = Date.now();
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * The smallest storage adapter that satisfies the client's IStorageAdapter
 * (see IStorageAdapter.d.ts in the package): a KV store, a meta store and an
 * op log, all in memory. The package ships only an IndexedDB adapter.
 */
class MemoryStorage {
  kv = new Map();
  meta = new Map();
  ops = new Map();
  nextOpId = 1;
  async initialize() {}
  async close() {}
  async waitForReady() {}
  async get(key) {
    return this.kv.get(key);
  }
  async put(key, value) {
    this.kv.set(key, value);
  }
  async remove(key) {
    this.kv.delete(key);
  }
  async getMeta(key) {
    return this.meta.get(key);
  }
  async setMeta(key, value) {
    this.meta.set(key, value);
  }
  async batchPut(entries) {
    for (const [k, v] of entries) this.kv.set(k, v);
  }
  async appendOpLog(entry) {
    const id = this.nextOpId++;
    this.ops.set(id, { ...entry, id });
    return id;
  }
  async getPendingOps() {
    return [...this.ops.values()].filter((op) => !op.synced);
  }
  async markOpsSynced(lastId) {
    for (const id of [...this.ops.keys()]) if (id <= lastId) this.ops.delete(id);
  }
  async deleteOp(id) {
    this.ops.delete(id);
  }
  async commitWrite(mutations, op) {
    for (const m of mutations) {
      const store = m.store === 'meta' ? this.meta : this.kv;
      if (m.type === 'put') store.set(m.key, m.value);
      else store.delete(m.key);
    }
    return this.appendOpLog(op);
  }
  async getAllKeys() {
    return [...this.kv.keys()];
  }
  async getAllMetaKeys() {
    return [...this.meta.keys()];
  }
}

const result = { ok: false, steps: {} };
const started = Date.now();
let client;

try {
  // 1. Our Rust CLI writes a record before the TS client exists: the TS
  //    client can only get it through SYNC_INIT and the Merkle walk.
  await cli('put', MAP, 'from_rust', JSON.stringify({ by: 'rust', n: 1 }));
  log('rust wrote from_rust');

  // 2. The TS client connects; getMap before the connection is up, so its
  //    SYNC_INIT covers the map.
  const storage = new MemoryStorage();
  client = new TopGunClient({ serverUrl: url, storage, nodeId: `ts-interop-${process.pid}` });
  if (token) client.setAuthToken(token);
  await client.start();
  const map = client.getMap(MAP);
  const states = [];
  client.onConnectionStateChange((e) => states.push(e.to));

  // A live query on the whole map: QUERY_SUB → QUERY_RESP, QUERY_UPDATE.
  const query = client.query(MAP, {});
  let queryRows = [];
  query.subscribe((rows) => {
    queryRows = rows;
  });

  await waitFor('connection state CONNECTED', () => client.getConnectionState() === 'CONNECTED');
  result.steps.connected = { states };

  // 3. The Merkle pull brings the Rust client's record down.
  const pulled = await waitFor('from_rust pulled', () => map.get('from_rust'));
  result.steps.pull = { from_rust: pulled };
  log('pulled from_rust', pulled);

  // 4. Writes from the TS client: put, overwrite, remove; each confirmed by
  //    the server's OP_ACK.
  map.set('ts_put', { by: 'ts', n: 1 });
  map.set('ts_over', { by: 'ts', n: 1 });
  map.set('ts_over', { by: 'ts', n: 2 });
  map.set('ts_removed', { by: 'ts', n: 1 });
  map.remove('ts_removed');
  const confirmations = {};
  for (const key of ['ts_put', 'ts_over', 'ts_removed']) {
    confirmations[key] = await client.confirmWrite(MAP, key, STEP_TIMEOUT_MS);
  }
  await waitFor('no pending ops', () => client.getPendingOpsCount() === 0);
  result.steps.writes = { confirmations, pendingOps: client.getPendingOpsCount() };
  log('writes confirmed', confirmations);

  // 5. Our CLI, a different client, reads what the TS client wrote.
  const readBack = {};
  for (const key of ['ts_put', 'ts_over']) readBack[key] = JSON.parse(await cli('get', MAP, key));
  try {
    await cli('get', MAP, 'ts_removed');
    readBack.ts_removed = 'PRESENT';
  } catch (e) {
    readBack.ts_removed = e.code === 1 ? 'absent' : `cli error ${e.code}: ${e.stderr}`;
  }
  result.steps.cliReadsTsWrites = readBack;

  // 6. A live change by the CLI while the TS client is connected reaches the
  //    TS map (SERVER_EVENT) and its live query (QUERY_UPDATE).
  await cli('put', MAP, 'live_from_rust', JSON.stringify({ by: 'rust', live: true }));
  const live = await waitFor('live_from_rust in the map', () => map.get('live_from_rust'));
  await waitFor('live_from_rust in the live query', () =>
    queryRows.some((r) => r._key === 'live_from_rust' || r.key === 'live_from_rust' || r.live === true),
  );
  // A live removal by the CLI, too.
  await cli('remove', MAP, 'from_rust');
  await waitFor('from_rust removed in the map', () => map.get('from_rust') === undefined);
  const tombstone = map.getRecord('from_rust');
  result.steps.live = {
    live_from_rust: live,
    queryKeys: queryRows.map((r) => r._key ?? r.key ?? null),
    from_rust_after_remove: tombstone ? { value: tombstone.value } : null,
  };

  result.final = Object.fromEntries([...map.entries()]);
  result.ok = true;
} catch (err) {
  result.error = String(err && err.stack ? err.stack : err);
} finally {
  result.elapsedMs = Date.now() - started;
  result.wire = wire;
  try {
    await client?.close();
  } catch (err) {
    log('close failed', err);
  }
  rmSync(cliDir, { recursive: true, force: true });
  process.stdout.write(`${JSON.stringify(result)}\n`);
  // The client may leave timers (pings, reconnects) behind.
  process.exit(result.ok ? 0 : 1);
}
