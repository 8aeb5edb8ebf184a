// End-to-end: the demo todo list (crates/topgun-wasm/demo) in a real
// headless Chromium against a real `topgun serve --web`, driven with
// Playwright. `cargo xtask ci` builds the demo, starts the server and runs
// this with TOPGUN_E2E_URL (the page), TOPGUN_E2E_OUT (where the
// screenshot goes) and CHROMIUM (the browser binary).
//
// Two browser contexts are two profiles (separate IndexedDB, locks and
// channels); two pages of one context are two tabs of one profile.
// Every wait is on a condition of the page (Playwright polls it), never a
// fixed sleep; each has a deadline.
import { chromium } from "playwright-core";
import { join } from "node:path";

const url = process.env.TOPGUN_E2E_URL;
const out = process.env.TOPGUN_E2E_OUT ?? ".";
const WAIT = { timeout: 30_000 };

if (!url) {
  console.error("TOPGUN_E2E_URL is not set");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
  ],
});

const steps = [];
function step(name) {
  steps.push(name);
  console.log(`e2e: ${name}`);
}

async function open(context) {
  const page = await context.newPage();
  page.on("pageerror", (error) => console.error(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error" || message.type() === "warning") {
      console.error(`page console ${message.type()}: ${message.text()}`);
    }
  });
  await page.goto(url);
  await page.waitForSelector("body[data-ready=true]", WAIT);
  return page;
}

async function add(page, title) {
  await page.fill("#title", title);
  await page.press("#title", "Enter");
}

/** The list a page shows: "title" or "title ✓" per item, in order. */
function shown(page) {
  return page.$$eval("#todos li", (items) =>
    items.map((li) => li.querySelector(".text").textContent + (li.classList.contains("done") ? " ✓" : "")));
}

async function until(page, what, predicate, arg) {
  try {
    await page.waitForFunction(predicate, arg, WAIT);
  } catch (error) {
    throw new Error(`${what}: ${error.message}; the page shows ${JSON.stringify(await shown(page))}`);
  }
}

/** Waits until the page lists exactly `titles` (sorted, "✓" for done). */
function showsExactly(page, titles) {
  const want = [...titles].sort();
  return until(
    page,
    `waiting for ${JSON.stringify(want)}`,
    (want) => {
      const got = [...document.querySelectorAll("#todos li")]
        .map((li) => li.querySelector(".text").textContent + (li.classList.contains("done") ? " ✓" : ""))
        .sort();
      return JSON.stringify(got) === JSON.stringify(want);
    },
    want,
  );
}

const state = (page, value) =>
  until(page, `waiting for state ${value}`, (value) => document.getElementById("state").textContent === value, value);
const role = (page) => page.evaluate(() => window.topgun.client.role);

let failed = false;
try {
  const alice = await browser.newContext();
  const bob = await browser.newContext();
  const a1 = await open(alice);
  const a2 = await open(alice);
  const b1 = await open(bob);
  step("three pages open: two tabs of one profile, one tab of another");

  for (const page of [a1, a2, b1]) await state(page, "ONLINE");
  const roles = [await role(a1), await role(a2), await role(b1)];
  if (roles.filter((r) => r === "leader").length !== 2 || roles[2] !== "leader") {
    throw new Error(`expected one leader per profile, got ${roles}`);
  }
  step(`every page ONLINE; roles ${roles.join(", ")}`);

  await add(a1, "milk");
  await add(a2, "bread");
  await add(b1, "eggs");
  for (const page of [a1, a2, b1]) await showsExactly(page, ["milk", "bread", "eggs"]);
  step("items added in each tab reach every tab of both profiles");

  await bob.setOffline(true);
  await state(b1, "OFFLINE");
  await b1.locator("#todos li", { hasText: "milk" }).locator("input[type=checkbox]").check();
  await add(b1, "jam");
  await add(a1, "tea");
  await showsExactly(b1, ["milk ✓", "bread", "eggs", "jam"]);
  await showsExactly(a2, ["milk", "bread", "eggs", "tea"]);
  step("profile bob offline (network emulation): its edits stay local, alice's edits stay away");

  await bob.setOffline(false);
  const all = ["milk ✓", "bread", "eggs", "jam", "tea"];
  for (const page of [a1, a2, b1]) await showsExactly(page, all);
  step("bob back online: all views converge");

  await b1.reload();
  await b1.waitForSelector("body[data-ready=true]", WAIT);
  await showsExactly(b1, all);
  step("a reload shows the same list (from IndexedDB)");

  const [leader, follower] = (await role(a1)) === "leader" ? [a1, a2] : [a2, a1];
  await alice.setOffline(true);
  await state(leader, "OFFLINE");
  await add(leader, "cake");
  await showsExactly(leader, [...all, "cake"]);
  const pending = await leader.evaluate(() => window.topgun.client.pendingOps());
  if (pending < 1) throw new Error(`the leader's offline write should be pending, got ${pending}`);
  await leader.close();
  await until(follower, "waiting for the follower to lead", () => window.topgun.client.role === "leader");
  await alice.setOffline(false);
  const withCake = [...all, "cake"];
  await showsExactly(b1, withCake);
  await showsExactly(follower, withCake);
  await until(follower, "waiting for nothing pending", async () => (await window.topgun.client.pendingOps()) === 0);
  const count = await b1.$$eval("#todos li", (items) => items.filter((li) => li.textContent.includes("cake")).length);
  if (count !== 1) throw new Error(`cake arrived ${count} times`);
  step("the leader tab closed with a pending write: the other tab took over and the write arrived once");

  // A hung (or frozen) leader keeps its lock: the other tab takes over
  // within 2 s, and the old one steps down when it runs again.
  const a3 = await open(alice);
  await state(a3, "ONLINE");
  const hung = follower;
  if ((await role(a3)) !== "follower") throw new Error("a new tab should follow");
  // The leader's page stops running for 4 s (a busy loop, as a hung tab).
  await hung.evaluate(() => setTimeout(() => { const end = Date.now() + 4000; while (Date.now() < end); }, 0));
  const hungAt = Date.now();
  await until(a3, "waiting for the other tab to take over from the hung leader", () => window.topgun.client.role === "leader");
  const takeover = Date.now() - hungAt;
  if (takeover > 2500) throw new Error(`takeover took ${takeover} ms`);
  await add(a3, "pie");
  const withPie = [...withCake, "pie"];
  await showsExactly(b1, withPie);
  await until(hung, "waiting for the old leader to step down", () => window.topgun.client.role === "follower");
  await showsExactly(hung, withPie);
  step(`a hung leader tab: the other tab took over in ${takeover} ms; the old one stepped down when it ran again`);

  // A follower out of view (a background tab, whose timers the browser
  // throttles) does not take over from a silent leader: the leader hangs
  // 3 s, longer than a tab in view waits, and keeps the lead.
  await hung.evaluate(() => {
    Object.defineProperty(document, "visibilityState", { value: "hidden", configurable: true });
    window.roles = [];
    window.topgun.client.onRoleChange((r) => window.roles.push(r));
  });
  await a3.evaluate(() => new Promise((done) => setTimeout(() => {
    const end = Date.now() + 3000;
    while (Date.now() < end);
    done();
  }, 0)));
  await add(a3, "jam");
  await showsExactly(hung, [...withPie, "jam"]);
  const hiddenRoles = await hung.evaluate(() => window.roles);
  if (hiddenRoles.length !== 0 || (await role(hung)) !== "follower") {
    throw new Error(`the hidden tab took the lead: ${JSON.stringify(hiddenRoles)}`);
  }
  if ((await role(a3)) !== "leader") throw new Error("the hung leader lost the lead to a hidden tab");
  step("a hidden follower left a hung leader alone");

  const screenshot = join(out, "converged.png");
  await b1.screenshot({ path: screenshot, fullPage: true });
  step(`screenshot of the converged page: ${screenshot}`);
} catch (error) {
  failed = true;
  console.error(`e2e FAILED after ${steps.length} steps: ${error.stack ?? error}`);
} finally {
  await browser.close();
}
console.log(JSON.stringify({ passed: !failed, steps }));
process.exit(failed ? 1 : 0);
