// Type-checked by `cargo xtask ci` (tsc --strict) against the `.d.ts` that
// wasm-bindgen generates: the JS API as an app written in TypeScript uses it.
// Never run; only compiled.
import init, {
  TopGunClient,
  type ChangeEvent,
  type ConnectionState,
  type JsonValue,
  type LiveQueryEvent,
  type QueryPage,
  type QuotaEvent,
  type TopGunError,
} from "topgun-wasm";

interface Todo {
  [field: string]: JsonValue;
  title: string;
  done: boolean;
}

export async function app(): Promise<void> {
  await init();
  const client = await TopGunClient.open({
    serverUrl: "ws://localhost:8080/ws",
    tokenProvider: async () => "token",
    databaseName: "todos",
    workingSet: 1000,
    preload: true,
    maps: ["todos"],
    quotaBytes: 50 << 20,
    quotaWarningPercent: 90,
  });
  const state: ConnectionState = client.state;
  client.onStateChange((next: ConnectionState) => console.log(state, next));
  client.onRoleChange((role) => console.log(role === "leader"));
  client.onQuotaEvent((event: QuotaEvent) => {
    if (event.type === "pruned") console.log(event.records, event.bytesAfter);
  });
  const todos = client.getMap("todos");
  const todo: Todo = { title: "milk", done: false };
  await todos.put("t1", todo);
  await todos.putMany([["t2", { title: "bread", done: true }], ["t3", null]]);
  const some: (JsonValue | undefined)[] = await todos.getMany(["t1", "t2", "t9"]);
  const value: JsonValue | undefined = await todos.get("t1");
  const page: QueryPage = await todos.query({
    where: { done: false },
    sort: [{ field: "title", direction: "asc" }],
    limit: 10,
  });
  for (const { key, value } of page.results) console.log(key, value);
  const open: number = await todos.count({ predicate: { op: "eq", attribute: "done", value: false } });
  const all: [string, JsonValue][] = await todos.entries();
  const listener = todos.subscribe((event: ChangeEvent | TopGunError) => {
    if ("code" in event) console.log(event.code, event.message);
    else console.log(event.key, event.newValue, event.origin);
  });
  const live = await todos.liveQuery({ where: { done: true } }, (event: LiveQueryEvent | TopGunError) => {
    if (!("code" in event)) console.log(event.type, event.key);
  });
  const { usage, quota } = await TopGunClient.estimate();
  console.log(value, some, open, all.length, usage / quota, await client.pendingOps(), client.nodeId);
  listener.stop();
  live.stop();
  await client.close();
}
