// The scenarios (those of RxDB's performance test, on our own code), run
// for every system in one page, several times; the driver (run.mjs) reads
// `window.benchResult`.
import { storageFormat } from "./format.js";
import { SYSTEMS } from "./systems.js";

const params = Object.fromEntries(new URLSearchParams(location.search));
const RUNS = Number(params.runs ?? 5);
const WARMUP = Number(params.warmup ?? 1);
const DOCS = Number(params.docs ?? 3000);
const BATCHES = 6;
const SERIAL = 50;
// Serial inserts on one connection, past what a fresh one writes in the
// scenarios above: long enough to include the work a store does every so
// many writes (TopGun folds its counters deltas every 256 transactions).
const SUSTAINED = 600;
// Writes per turn in the serial scenarios (see `runAll`); 256 and 512 fall
// inside a chunk, so every fold of the 600 is timed.
const SUSTAINED_CHUNK = 50;
const BIG = Number(params.big ?? 10000);
const systems = (params.systems ?? Object.keys(SYSTEMS).join(",")).split(",");

/** Numbers in [0, 1) from xorshift32, started at `state` (not 0). */
function xorshift(state) {
  let x = state;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
}
// The same documents for every system of a run (`main` restarts it).
let random = xorshift(1);

function word(length) {
  let text = "";
  for (let i = 0; i < length; i++) text += String.fromCharCode(97 + Math.floor(random() * 26));
  return text;
}

function makeDoc(i) {
  return {
    id: `doc-${String(i).padStart(6, "0")}-${word(6)}`,
    var1: word(12),
    var2: Math.floor(random() * 4),
    deep: { deep1: word(8), deep2: word(12) },
    list: [word(5), word(5), word(5)],
  };
}

const idle = () => new Promise((resolve) => requestIdleCallback(() => resolve()));
const pause = () => new Promise((resolve) => setTimeout(resolve, 50));

// Each timed section starts after a full garbage collection (where the
// page has `gc`, as run.mjs gives it), so that one system's garbage is not
// collected in the next one's time.
async function timed(fn) {
  globalThis.gc?.();
  await idle();
  const start = performance.now();
  const result = await fn();
  return [performance.now() - start, result];
}

function check(condition, what) {
  if (!condition) throw new Error(`wrong answer: ${what}`);
}

/**
 * One run of every scenario for every system in `ids`, scenario by
 * scenario: each scenario runs for every system in turn before the next
 * one starts, and the serial scenarios interleave their writes in chunks
 * (every system writes a chunk, then the next chunk), each system's chunk
 * times adding up. A slow spell of this shared machine lasts seconds and
 * can triple a scenario's time; run system after system, a spell fell on
 * one system's whole scenario. Returns system id → metric → ms.
 */
async function runAll(ids, run, docs, serial, sustained, big) {
  const stamp = Date.now();
  const all = ids.map((id) => {
    const system = SYSTEMS[id]();
    const name = `bench-${system.id}-${run}-${stamp}`;
    return { system, name, bigName: `${name}-big`, m: {} };
  });
  // Every scenario takes the systems in its own order (shuffled from
  // the run's order; the same every bench), so that no system always
  // runs right after the same other one.
  let turn = run * 1000;
  const each = async (fn) => {
    for (const s of shuffled(all, ++turn)) await fn(s);
  };
  // A system closed and opened again, then left alone for a moment (what
  // it starts on open runs before the next scenario is timed).
  const reopen = async (s, name) => {
    await s.system.close();
    await s.system.open(name);
    await pause();
  };
  const serialTurns = async (metric, items, chunk) => {
    for (const s of all) s.m[metric] = 0;
    for (let at = 0; at < items.length; at += chunk) {
      const part = items.slice(at, at + chunk);
      await each(async (s) => {
        const [ms] = await timed(async () => {
          for (const doc of part) await s.system.insertOne(doc);
        });
        s.m[metric] += ms;
      });
    }
  };

  await each(async (s) => {
    [s.m["first-insert"]] = await timed(async () => {
      await s.system.open(s.name);
      await s.system.insertOne(makeDoc(999999));
    });
  });
  await pause();

  for (const s of all) s.m["bulk-insert-500"] = 0;
  for (let b = 0; b < BATCHES; b++) {
    const batch = docs.slice((b * DOCS) / BATCHES, ((b + 1) * DOCS) / BATCHES);
    await each(async (s) => {
      const [ms] = await timed(() => s.system.bulkInsert(batch));
      s.m["bulk-insert-500"] += ms / BATCHES;
    });
  }

  const ids3000 = docs.map((d) => d.id);
  await each(async (s) => {
    await reopen(s, s.name);
    let found;
    [s.m["find-by-ids-3000"], found] = await timed(() => s.system.findByIds(ids3000));
    check(found.length === DOCS && found.every(Boolean), "find by ids");
  });
  await pause();

  await serialTurns("serial-inserts-50", serial, 10);

  await each(async (s) => {
    await reopen(s, s.name);
    [s.m["serial-finds-50"]] = await timed(async () => {
      for (const doc of serial) check(Boolean(await s.system.findById(doc.id)), "serial find");
    });
  });
  await pause();

  await each(async (s) => {
    let rows;
    [s.m["query-sorted-3050"], rows] = await timed(() => s.system.querySorted());
    check(rows.length === DOCS + SERIAL + 1, `sorted query returned ${rows.length}`);
  });

  await each(async (s) => {
    await reopen(s, s.name);
    let rows;
    [s.m["parallel-queries-4"], rows] = await timed(() => Promise.all([0, 1, 2, 3].map((k) => s.system.queryEq(k))));
    check(rows.reduce((n, r) => n + r.length, 0) === DOCS + SERIAL + 1, "parallel queries");
  });
  await pause();

  await each(async (s) => {
    const counts = [];
    [s.m["counts-4"]] = await timed(async () => {
      for (const k of [0, 1, 2, 3]) counts.push(await s.system.countEq(k));
    });
    check(counts.reduce((a, b) => a + b, 0) === DOCS + SERIAL + 1, "counts");
  });
  await pause();

  await serialTurns(`serial-inserts-${SUSTAINED}`, sustained, SUSTAINED_CHUNK);
  await each(async (s) => {
    await s.system.close();
    await s.system.destroy(s.name);
  });
  await pause();

  await each(async (s) => {
    await s.system.open(s.bigName);
    [s.m["bulk-insert-10000"]] = await timed(() => s.system.bulkInsert(big));
    await reopen(s, s.bigName);
    let rows;
    [s.m["read-all-10000"], rows] = await timed(() => s.system.readAll());
    check(rows.length === BIG, `read all returned ${rows.length}`);
    await s.system.close();
    await s.system.destroy(s.bigName);
  });
  return Object.fromEntries(all.map((s) => [s.system.id, s.m]));
}

/** `items` in an order picked by `seed` (Fisher–Yates). */
function shuffled(items, seed) {
  const next = xorshift((seed * 2654435761) >>> 0 || 1);
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

async function main() {
  const samples = {};
  for (let run = 0; run < WARMUP + RUNS; run++) {
    random = xorshift(1 + run);
    const docs = Array.from({ length: DOCS }, (_, i) => makeDoc(i));
    const serial = Array.from({ length: SERIAL }, (_, i) => makeDoc(DOCS + i));
    const sustained = Array.from({ length: SUSTAINED }, (_, i) => makeDoc(200000 + i));
    const big = Array.from({ length: BIG }, (_, i) => makeDoc(100000 + i));
    const measured = await runAll(systems, run, docs, serial, sustained, big);
    for (const [id, m] of Object.entries(measured)) {
      document.getElementById("log").textContent += `run ${run} ${id} ${JSON.stringify(m)}\n`;
      if (run < WARMUP) continue;
      for (const [metric, ms] of Object.entries(m)) {
        ((samples[id] ??= {})[metric] ??= []).push(ms);
      }
    }
  }
  const medians = {};
  for (const [id, metrics] of Object.entries(samples)) {
    medians[id] = Object.fromEntries(Object.entries(metrics).map(([k, v]) => [k, median(v)]));
  }
  // The storage format question, on the big scenario's documents.
  const format = {};
  for (let run = 0; run < WARMUP + RUNS; run++) {
    random = xorshift(1 + run);
    const big = Array.from({ length: BIG }, (_, i) => makeDoc(100000 + i));
    const m = await storageFormat(big);
    if (run < WARMUP) continue;
    for (const [metric, ms] of Object.entries(m)) (format[metric] ??= []).push(ms);
  }
  const storageFormatMedians = Object.fromEntries(Object.entries(format).map(([k, v]) => [k, median(v)]));
  return {
    runs: RUNS,
    warmup: WARMUP,
    medians,
    samples,
    storageFormat: storageFormatMedians,
    userAgent: navigator.userAgent,
  };
}

main().then(
  (result) => (window.benchResult = result),
  (error) => (window.benchResult = { error: String(error.stack ?? error) }),
);
