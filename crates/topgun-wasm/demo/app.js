// The shared todo list: one TopGun map, rendered from local storage and
// re-rendered on every change (local, another tab's, or the server's).
import init, { TopGunClient } from "./pkg/topgun_wasm.js";

const $ = (id) => document.getElementById(id);

function newKey() {
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

async function start() {
  await init();
  const client = await TopGunClient.open({
    serverUrl: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`,
    databaseName: "topgun-todos",
    maps: ["todos"],
  });
  const todos = client.getMap("todos");

  const showState = (state) => {
    $("state").textContent = state;
    $("state").className = `badge ${state}`;
  };
  const showRole = (role) => ($("role").textContent = role);
  const showPending = async () => {
    $("pending").textContent = `${await client.pendingOps()} pending`;
  };

  async function render() {
    const entries = await todos.entries();
    entries.sort(([, a], [, b]) => a.createdAt - b.createdAt);
    const list = $("todos");
    list.replaceChildren(
      ...entries.map(([key, todo]) => {
        const item = document.createElement("li");
        item.dataset.key = key;
        item.className = todo.done ? "done" : "";
        const box = document.createElement("input");
        box.type = "checkbox";
        box.checked = todo.done;
        box.addEventListener("change", () =>
          todos.put(key, { ...todo, done: box.checked }).catch(showError));
        const text = document.createElement("span");
        text.className = "text";
        text.textContent = todo.title;
        const remove = document.createElement("button");
        remove.textContent = "×";
        remove.title = "Delete";
        remove.addEventListener("click", () => todos.remove(key).catch(showError));
        item.append(box, text, remove);
        return item;
      }),
    );
    list.dataset.count = String(entries.length);
    await showPending();
  }

  function showError(error) {
    $("error").textContent = `${error.code ?? "ERROR"}: ${error.message}`;
  }

  $("add").addEventListener("submit", (event) => {
    event.preventDefault();
    const title = $("title").value.trim();
    if (!title) return;
    $("title").value = "";
    todos.put(newKey(), { title, done: false, createdAt: Date.now() }).catch(showError);
  });

  showState(client.state);
  showRole(client.role);
  client.onStateChange((state) => {
    showState(state);
    showPending();
  });
  client.onRoleChange(showRole);
  todos.subscribe(() => render().catch(showError));
  await render();
  document.body.dataset.ready = "true";
  // For the end-to-end tests and the console.
  window.topgun = { client, todos };
}

start().catch((error) => {
  $("error").textContent = `${error.code ?? "ERROR"}: ${error.message}`;
});
