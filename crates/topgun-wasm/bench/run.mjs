// Runs the browser bench: bundles src/ with esbuild (the `topgun-wasm`
// import resolved to the wasm-bindgen package, as an app's bundler would),
// serves it on 127.0.0.1, runs it in headless Chromium and writes the
// medians and ratios as JSON. `cargo xtask bench browser` builds the
// package and calls this with:
//   node run.mjs --pkg <dir> --out <file> [--runs 5] [--warmup 1]
// and, with `--baseline <dir>` (another build's package; the xtask passes
// $TOPGUN_BENCH_BASELINE), runs that build in the same page too and
// reports each scenario's ratio to it.
import { build } from "esbuild";
import { chromium } from "playwright-core";
import { createServer } from "node:http";
import { readFile, writeFile, mkdir } from "node:fs/promises";
import { dirname, extname, join, resolve } from "node:path";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith("--")) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
const pkg = resolve(args.pkg ?? "../../../target/web/pkg");
const out = resolve(args.out ?? "../../../target/bench/browser.json");
const runs = Number(args.runs ?? 5);
const warmup = Number(args.warmup ?? 1);
const baseline = args.baseline ? resolve(args.baseline) : null;
const here = dirname(new URL(import.meta.url).pathname);

await build({
  entryPoints: [join(here, "src/main.js")],
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  alias: {
    "topgun-wasm": join(pkg, "topgun_wasm.js"),
    // Without a baseline the import is the package itself, never opened.
    "topgun-wasm-baseline": join(baseline ?? pkg, "topgun_wasm.js"),
  },
  outfile: join(here, "dist/bundle.js"),
  logLevel: "warning",
});

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm" };
const server = createServer(async (req, res) => {
  const path = new URL(req.url, "http://x").pathname;
  const file =
    path === "/" ? join(here, "index.html")
    : path === "/bundle.js" ? join(here, "dist/bundle.js")
    : path.startsWith("/pkg/") ? join(pkg, path.slice(5))
    : path.startsWith("/baseline/") && baseline ? join(baseline, path.slice(10))
    : null;
  try {
    if (!file) throw new Error("not found");
    const body = await readFile(file);
    res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream" });
    res.end(body);
  } catch {
    res.writeHead(404).end();
  }
});
await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
const systems = ["raw-idb", "raw-idb-oplog", "dexie", "topgun", "topgun-cold", ...(baseline ? ["topgun-baseline"] : [])];
const url = `http://127.0.0.1:${server.address().port}/?runs=${runs}&warmup=${warmup}&systems=${systems.join(",")}`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    // `gc()` for the page: each timed section starts with a clean heap
    // (src/main.js, `timed`).
    "--js-flags=--expose-gc"],
});
let result;
try {
  const page = await browser.newPage();
  page.on("pageerror", (error) => console.error(`page error: ${error.message}`));
  await page.goto(url);
  await page.waitForFunction(() => window.benchResult, null, { timeout: 30 * 60_000, polling: 500 });
  result = await page.evaluate(() => window.benchResult);
} finally {
  await browser.close();
  server.close();
}
if (result.error) {
  console.error(`bench failed: ${result.error}`);
  process.exit(1);
}

const { medians } = result;
const metrics = Object.keys(medians["raw-idb"]);
const ratio = (a, b) => Object.fromEntries(metrics.map((m) => [m, +(medians[a][m] / medians[b][m]).toFixed(2)]));
// The median of each run's own ratio: in a run the systems take turns
// scenario by scenario (and chunk by chunk in the serial ones), so a slow
// spell of the machine moves both sides of it.
const middle = (values) => {
  const sorted = [...values].sort((x, y) => x - y);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};
const paired = (a, b) =>
  Object.fromEntries(
    metrics.map((m) => {
      const [xs, ys] = [result.samples[a][m], result.samples[b][m]];
      return [m, +middle(xs.map((x, run) => x / ys[run])).toFixed(2)];
    }),
  );
const report = {
  bench: "browser",
  date: new Date().toISOString(),
  browser: result.userAgent,
  runs: result.runs,
  warmup: result.warmup,
  ...(baseline && { baseline }),
  medians_ms: medians,
  ratios: {
    topgun_vs_raw_idb: ratio("topgun", "raw-idb"),
    topgun_vs_raw_idb_oplog: ratio("topgun", "raw-idb-oplog"),
    raw_idb_oplog_vs_raw_idb: ratio("raw-idb-oplog", "raw-idb"),
    topgun_vs_dexie: ratio("topgun", "dexie"),
    topgun_cold_vs_raw_idb: ratio("topgun-cold", "raw-idb"),
    topgun_cold_vs_dexie: ratio("topgun-cold", "dexie"),
    dexie_vs_raw_idb: ratio("dexie", "raw-idb"),
    ...(baseline && { topgun_vs_baseline: ratio("topgun", "topgun-baseline") }),
  },
  // Per metric, the median over runs of that run's ratio.
  paired_ratios: {
    topgun_vs_raw_idb: paired("topgun", "raw-idb"),
    topgun_vs_raw_idb_oplog: paired("topgun", "raw-idb-oplog"),
    raw_idb_oplog_vs_raw_idb: paired("raw-idb-oplog", "raw-idb"),
    topgun_vs_dexie: paired("topgun", "dexie"),
    topgun_cold_vs_raw_idb: paired("topgun-cold", "raw-idb"),
    topgun_cold_vs_dexie: paired("topgun-cold", "dexie"),
    ...(baseline && { topgun_vs_baseline: paired("topgun", "topgun-baseline") }),
  },
  samples_ms: result.samples,
  // Reading 10,000 stored values back: bytes vs structured clone (src/format.js).
  storage_format_ms: result.storageFormat,
};
await mkdir(dirname(out), { recursive: true });
await writeFile(out, JSON.stringify(report, null, 2));

const pad = (s, n) => String(s).padEnd(n);
console.log(
  `${pad("metric (median ms)", 22)}${pad("raw-idb", 10)}${pad("raw+log", 10)}${pad("dexie", 10)}` +
    `${pad("topgun", 10)}${pad("tg/raw", 8)}${pad("tg/raw+log", 12)}${pad("tg/dexie", 10)}` +
    `${pad("cold", 10)}${pad("cold/raw", 10)}` +
    `${pad("cold/dexie", 12)}paired tg/raw, tg/dexie`,
);
for (const m of metrics) {
  const against = baseline
    ? `  baseline ${medians["topgun-baseline"][m].toFixed(1)}, tg/baseline ${report.ratios.topgun_vs_baseline[m]}` +
      ` (paired ${report.paired_ratios.topgun_vs_baseline[m]})`
    : "";
  console.log(
    pad(m, 22) + pad(medians["raw-idb"][m].toFixed(1), 10) + pad(medians["raw-idb-oplog"][m].toFixed(1), 10) +
      pad(medians.dexie[m].toFixed(1), 10) + pad(medians.topgun[m].toFixed(1), 10) +
      pad(report.ratios.topgun_vs_raw_idb[m], 8) + pad(report.ratios.topgun_vs_raw_idb_oplog[m], 12) +
      pad(report.ratios.topgun_vs_dexie[m], 10) + pad(medians["topgun-cold"][m].toFixed(1), 10) +
      pad(report.ratios.topgun_cold_vs_raw_idb[m], 10) + pad(report.ratios.topgun_cold_vs_dexie[m], 12) +
      `${report.paired_ratios.topgun_vs_raw_idb[m]}, ${report.paired_ratios.topgun_vs_dexie[m]}${against}`,
  );
}
const f = result.storageFormat;
console.log(
  `storage format, 10,000 values read back and handed to wasm: bytes ${f["bytes-total"].toFixed(1)} ms ` +
    `(read ${f["read-bytes"].toFixed(1)}), structured clone ${f["clone-total"].toFixed(1)} ms (read ${f["read-clone"].toFixed(1)})`,
);
console.log(`written to ${out}`);
