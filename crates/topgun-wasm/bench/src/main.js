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
const BIG = Number(params.big ?? 10000);
const systems = (params.systems ?? Object.keys(SYSTEMS).join(",")).split(",");

let seed = 1;
function random() {
  // xorshift32: the same documents for every system of a run.
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 4294967296;
}

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

async function timed(fn) {
  await idle();
  const start = performance.now();
  const result = await fn();
  return [performance.now() - start, result];
}

function check(condition, what) {
  if (!condition) throw new Error(`wrong answer: ${what}`);
}

/** One run of every scenario for `make()`; returns metric → ms. */
async function runSystem(make, run, docs, serial, sustained, big) {
  const system = make();
  const name = `bench-${system.id}-${run}-${Date.now()}`;
  const bigName = `${name}-big`;
  const m = {};

  [m["first-insert"]] = await timed(async () => {
    await system.open(name);
    await system.insertOne(makeDoc(999999));
  });
  await pause();

  const batchTimes = [];
  for (let b = 0; b < BATCHES; b++) {
    const batch = docs.slice((b * DOCS) / BATCHES, ((b + 1) * DOCS) / BATCHES);
    const [ms] = await timed(() => system.bulkInsert(batch));
    batchTimes.push(ms);
  }
  m["bulk-insert-500"] = batchTimes.reduce((a, b) => a + b, 0) / batchTimes.length;
  await system.close();
  await system.open(name);
  await pause();

  const ids = docs.map((d) => d.id);
  let found;
  [m["find-by-ids-3000"], found] = await timed(() => system.findByIds(ids));
  check(found.length === DOCS && found.every(Boolean), "find by ids");
  await pause();

  [m["serial-inserts-50"]] = await timed(async () => {
    for (const doc of serial) await system.insertOne(doc);
  });
  await system.close();
  await system.open(name);
  await pause();

  [m["serial-finds-50"]] = await timed(async () => {
    for (const doc of serial) check(Boolean(await system.findById(doc.id)), "serial find");
  });
  await pause();

  let rows;
  [m["query-sorted-3050"], rows] = await timed(() => system.querySorted());
  check(rows.length === DOCS + SERIAL + 1, `sorted query returned ${rows.length}`);
  await system.close();
  await system.open(name);
  await pause();

  [m["parallel-queries-4"], rows] = await timed(() => Promise.all([0, 1, 2, 3].map((k) => system.queryEq(k))));
  check(rows.reduce((n, r) => n + r.length, 0) === DOCS + SERIAL + 1, "parallel queries");
  await pause();

  let counts = [];
  [m["counts-4"]] = await timed(async () => {
    for (const k of [0, 1, 2, 3]) counts.push(await system.countEq(k));
  });
  check(counts.reduce((a, b) => a + b, 0) === DOCS + SERIAL + 1, "counts");
  await pause();

  [m[`serial-inserts-${SUSTAINED}`]] = await timed(async () => {
    for (const doc of sustained) await system.insertOne(doc);
  });
  await system.close();
  await system.destroy(name);
  await pause();

  await system.open(bigName);
  [m["bulk-insert-10000"]] = await timed(() => system.bulkInsert(big));
  await system.close();
  await system.open(bigName);
  await pause();
  [m["read-all-10000"], rows] = await timed(() => system.readAll());
  check(rows.length === BIG, `read all returned ${rows.length}`);
  await system.close();
  await system.destroy(bigName);
  return m;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

async function main() {
  const samples = {};
  for (let run = 0; run < WARMUP + RUNS; run++) {
    seed = 1 + run;
    const docs = Array.from({ length: DOCS }, (_, i) => makeDoc(i));
    const serial = Array.from({ length: SERIAL }, (_, i) => makeDoc(DOCS + i));
    const sustained = Array.from({ length: SUSTAINED }, (_, i) => makeDoc(200000 + i));
    const big = Array.from({ length: BIG }, (_, i) => makeDoc(100000 + i));
    // Rotate the order of systems from run to run.
    const order = systems.map((_, i) => systems[(i + run) % systems.length]);
    for (const id of order) {
      const m = await runSystem(SYSTEMS[id], run, docs, serial, sustained, big);
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
    seed = 1 + run;
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
