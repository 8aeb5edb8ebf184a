// How a stored value is read back: as bytes (what IndexedDbStore keeps: one
// Uint8Array body per record, copied into wasm memory and decoded there)
// or as a structured-clone object (IndexedDB rebuilds the object tree, and
// handing it to wasm means serialising it again, as the JS API's
// `JSON.stringify` does). The same documents, one object store each, one
// `getAll` of every record, then the hand-over to wasm.
import { done, request } from "./systems.js";

const encoder = new TextEncoder();

async function timed(fn) {
  const start = performance.now();
  const result = await fn();
  return [performance.now() - start, result];
}

/** One run: milliseconds for each format's write, read and hand-over. */
export async function storageFormat(docs) {
  const name = `bench-format-${Date.now()}`;
  const open = indexedDB.open(name, 1);
  open.onupgradeneeded = () => {
    open.result.createObjectStore("bytes", { keyPath: "key" });
    open.result.createObjectStore("clone", { keyPath: "key" });
  };
  const db = await request(open);
  const m = {};
  // The body stands in for a MessagePack body: the document's bytes.
  const bodies = docs.map((doc) => encoder.encode(JSON.stringify(doc)));
  [m["write-bytes"]] = await timed(() => {
    const tx = db.transaction("bytes", "readwrite");
    docs.forEach((doc, i) => tx.objectStore("bytes").put({ key: doc.id, body: bodies[i] }));
    return done(tx);
  });
  [m["write-clone"]] = await timed(() => {
    const tx = db.transaction("clone", "readwrite");
    for (const doc of docs) tx.objectStore("clone").put({ key: doc.id, value: doc });
    return done(tx);
  });
  let rows;
  [m["read-bytes"], rows] = await timed(() => request(db.transaction("bytes").objectStore("bytes").getAll()));
  // Into wasm: one copy of each body.
  [m["hand-over-bytes"]] = await timed(() => {
    let total = 0;
    for (const row of rows) total += row.body.slice().length;
    return total;
  });
  [m["read-clone"], rows] = await timed(() => request(db.transaction("clone").objectStore("clone").getAll()));
  // Into wasm: serialised again.
  [m["hand-over-clone"]] = await timed(() => {
    let total = 0;
    for (const row of rows) total += JSON.stringify(row.value).length;
    return total;
  });
  db.close();
  await request(indexedDB.deleteDatabase(name));
  m["bytes-total"] = m["read-bytes"] + m["hand-over-bytes"];
  m["clone-total"] = m["read-clone"] + m["hand-over-clone"];
  return m;
}
