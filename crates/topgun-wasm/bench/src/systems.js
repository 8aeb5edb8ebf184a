// The systems measured, one object each with the same async methods:
// open(name), insertOne(doc), bulkInsert(docs), findByIds(ids),
// findById(id), querySorted(), queryEq(var2), countEq(var2), readAll(),
// close(), destroy(name). Documents have `id`, `var1` (string), `var2`
// (integer), `deep` and `list`.
import Dexie from "dexie";
import init, { TopGunClient } from "topgun-wasm";
// Another build of the package, to compare with (run.mjs --baseline).
import initBaseline, { TopGunClient as BaselineClient } from "topgun-wasm-baseline";

export function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

export function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

function deleteDatabase(name) {
  return request(indexedDB.deleteDatabase(name));
}

/**
 * Plain IndexedDB: one object store keyed by `id`, native indexes. With
 * `oplog`, each write also adds an entry per document to an
 * `operation_log` store (auto-increment key, `synced` index) in the same
 * transaction, as TopGun's schema has every client log its writes: the
 * least an op-logging client can do, with no library code around it.
 */
export function rawIdb({ oplog = false } = {}) {
  let db;
  const store = (mode) => db.transaction("docs", mode).objectStore("docs");
  const scope = oplog ? ["docs", "operation_log"] : "docs";
  // A read-write transaction over the scope, and a function writing one
  // document in it (its stores looked up once).
  const begin = () => {
    const tx = db.transaction(scope, "readwrite");
    const docs = tx.objectStore("docs");
    const log = oplog ? tx.objectStore("operation_log") : null;
    const write = (doc) => {
      docs.put(doc);
      log?.add({
        mapName: "docs",
        key: doc.id,
        opType: "PUT",
        record: { value: doc, timestamp: { millis: Date.now(), counter: 0, nodeId: "bench" } },
        synced: 0,
      });
    };
    return [tx, write];
  };
  return {
    id: oplog ? "raw-idb-oplog" : "raw-idb",
    async open(name) {
      const req = indexedDB.open(name, 1);
      req.onupgradeneeded = () => {
        const docs = req.result.createObjectStore("docs", { keyPath: "id" });
        docs.createIndex("var1", "var1");
        docs.createIndex("var2", "var2");
        docs.createIndex("var2_var1", ["var2", "var1"]);
        if (oplog) {
          const log = req.result.createObjectStore("operation_log", { keyPath: "id", autoIncrement: true });
          log.createIndex("synced", "synced");
        }
      };
      db = await request(req);
    },
    async insertOne(doc) {
      const [tx, write] = begin();
      write(doc);
      await done(tx);
    },
    async bulkInsert(docs) {
      const [tx, write] = begin();
      for (const doc of docs) write(doc);
      await done(tx);
    },
    async findByIds(ids) {
      const os = store("readonly");
      return Promise.all(ids.map((id) => request(os.get(id))));
    },
    findById: (id) => request(store("readonly").get(id)),
    querySorted: () => request(store("readonly").index("var2_var1").getAll()),
    queryEq: (k) => request(store("readonly").index("var2").getAll(k)),
    countEq: (k) => request(store("readonly").index("var2").count(k)),
    readAll: () => request(store("readonly").getAll()),
    async close() {
      db.close();
    },
    destroy: deleteDatabase,
  };
}

/** Dexie.js with the same schema. */
export function dexie() {
  let db;
  return {
    id: "dexie",
    async open(name) {
      db = new Dexie(name);
      db.version(1).stores({ docs: "id, var1, var2, [var2+var1]" });
      await db.open();
    },
    insertOne: (doc) => db.docs.put(doc),
    bulkInsert: (docs) => db.docs.bulkPut(docs),
    findByIds: (ids) => db.docs.bulkGet(ids),
    findById: (id) => db.docs.get(id),
    querySorted: () => db.docs.orderBy("[var2+var1]").toArray(),
    queryEq: (k) => db.docs.where("var2").equals(k).toArray(),
    countEq: (k) => db.docs.where("var2").equals(k).count(),
    readAll: () => db.docs.toArray(),
    async close() {
      db.close();
    },
    destroy: (name) => Dexie.delete(name),
  };
}

const initialised = new Map();

/**
 * TopGun's JS API: one map, writes recorded in the op log too. `init` and
 * `Client` are one build's package, its wasm at `wasmPath`; `options` go
 * to `TopGunClient.open`.
 */
function topgunBuild(id, init, Client, wasmPath, options = {}) {
  let client;
  let docs;
  return {
    id,
    async open(name) {
      if (!initialised.has(id)) initialised.set(id, init({ module_or_path: wasmPath }));
      await initialised.get(id);
      client = await Client.open({ databaseName: name, ...options });
      docs = client.getMap("docs");
    },
    insertOne: (doc) => docs.put(doc.id, doc),
    bulkInsert: (batch) => docs.putMany(batch.map((doc) => [doc.id, doc])),
    findByIds: (ids) => docs.getMany(ids),
    findById: (id) => docs.get(id),
    async querySorted() {
      const page = await docs.query({
        sort: [
          { field: "var2", direction: "asc" },
          { field: "var1", direction: "asc" },
        ],
      });
      return page.results;
    },
    async queryEq(k) {
      return (await docs.query({ where: { var2: k } })).results;
    },
    countEq: (k) => docs.count({ where: { var2: k } }),
    readAll: () => docs.entries(),
    async close() {
      await client.close();
      client.free();
    },
    destroy: deleteDatabase,
  };
}

export const SYSTEMS = {
  "raw-idb": () => rawIdb(),
  "raw-idb-oplog": () => rawIdb({ oplog: true }),
  dexie,
  topgun: () => topgunBuild("topgun", init, TopGunClient, "/pkg/topgun_wasm_bg.wasm"),
  // Without the preload `getMap` starts: every read scenario starts cold.
  "topgun-cold": () =>
    topgunBuild("topgun-cold", init, TopGunClient, "/pkg/topgun_wasm_bg.wasm", { preload: false }),
  "topgun-baseline": () =>
    topgunBuild("topgun-baseline", initBaseline, BaselineClient, "/baseline/topgun_wasm_bg.wasm"),
};
