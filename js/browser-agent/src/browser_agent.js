// The browser agent: this page works one role's queue over NATS WebSocket, as a TaskDesk
// (agentlab/org/desk.py) does from Python, with the same wire steps and messages:
//
//   take      CONSUMER.MSG.NEXT on the role's durable consumer (AGENT_TASKS/<role>), one task;
//             a task that is not a valid Task is given back (nak): after max_deliver
//             attempts the dead-letter office makes it a dead letter
//   hold      +WPI every third of the consumer's ack wait, for up to `hold` seconds
//   complete  the TaskCompleted record is published to $KV.TASK_LEDGER.<org>.<task id>
//             (Nats-Msg-Id <org>.<task id>.completed) BEFORE the ack; the server republishes
//             it on <root>.org.<org>.tasks.completed, so the completion goes out once, if and
//             only if it is recorded; a second record of the task is refused (10077), and
//             then the task is acked and that first record stands, as an agent does. (A
//             TaskDesk also reads the ledger before it shows a task; this login may not read
//             the ledger, whose stream has no per-key read API, so it learns it here.)
//   give back nak with the agents' back-off (0.5 s, 1 s, 2 s ... 30 s)
//
// The login is not widget state: the kernel sends it in a custom message when this view
// asks, so it is never saved with the notebook.

import { wsconnect } from "@nats-io/nats-core";
import { jetstream } from "@nats-io/jetstream";

const TASK_ID = /^[-/_=A-Za-z0-9]+$/; // agentlab/org/models.py TASK_ID_PATTERN
const TOKEN = /^[^ \t\n\r\f.*>]+$/; // TOKEN_PATTERN
const ALREADY_RECORDED = 10077; // the ledger refuses a second record of a key
const LOOPBACK = new Set(["localhost", "127.0.0.1", "[::1]", "::1"]);

export function retryDelayMs(deliveries) {
  return Math.min(30_000, 500 * 2 ** (deliveries - 1)); // workloop.retry_delay
}

export function taskProblem(task) {
  if (task === null || typeof task !== "object" || Array.isArray(task)) return "not a JSON object";
  if (typeof task.id !== "string" || !TASK_ID.test(task.id)) return "its id cannot key the ledger";
  for (const field of ["org", "role", "requested_by"]) {
    if (typeof task[field] !== "string" || !TOKEN.test(task[field])) {
      return `${field} is not one subject token`;
    }
  }
  if (task.org === "system") return "org 'system' is reserved";
  if (typeof task.title !== "string" || !task.title) return "it has no title";
  if (task.details !== undefined && (task.details === null || typeof task.details !== "object")) {
    return "details is not an object";
  }
  return null;
}

function withSlash(path) {
  return path.endsWith("/") ? path : `${path}/`;
}

// The notebook server's base URL: the page's own config (JupyterLab, Notebook 7, Voila
// write it into the page), else the hub's prefix the kernel saw, else "/".
function baseUrl(model) {
  const config = typeof document === "undefined" ? null :
    document.getElementById("jupyter-config-data");
  if (config) {
    try {
      const base = JSON.parse(config.textContent || "{}").baseUrl;
      if (base) return withSlash(base);
    } catch (_) {
      // not JSON: fall through
    }
  }
  return withSlash(model.get("proxy_prefix") || "/");
}

// direct: the browser and the kernel share a machine (a local JupyterLab), so it reaches the
// server's loopback listener itself. proxy: through the notebook server's origin
// (jupyter-server-proxy's <base_url>/proxy/<port>/), as on Binder and JupyterHub, where the
// page's host is not the kernel's. auto: proxy when the kernel saw a hub, or the page is not
// served from loopback.
export function serverUrl(model, location = window.location) {
  const port = model.get("websocket_port");
  const mode = model.get("connect");
  const proxied = mode === "proxy" ||
    (mode === "auto" && (!!model.get("proxy_prefix") || !LOOPBACK.has(location.hostname)));
  if (!proxied) return { url: `ws://127.0.0.1:${port}`, via: "direct" };
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return { url: `${scheme}//${location.host}${baseUrl(model)}proxy/${port}/`, via: "proxy" };
}

function resultOf(text) {
  const trimmed = text.trim();
  if (trimmed.startsWith("{")) {
    try {
      const value = JSON.parse(trimmed);
      if (value && typeof value === "object" && !Array.isArray(value)) return value;
    } catch (_) {
      // plain text that starts with a brace
    }
  }
  return { answer: trimmed };
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

class Desk {
  constructor(model, view) {
    this.model = model;
    this.view = view;
    this.nc = null;
    this.consumer = null;
    this.held = null; // {task, msg, takenAt, holdUntil, timer}
    this.ackWaitMs = 30_000;
    this.maxDeliver = 3;
    this.closed = false;
  }

  get role() { return this.model.get("role"); }
  get org() { return this.model.get("org"); }
  get worker() { return this.model.get("worker"); }

  async connect(login) {
    const { url, via } = serverUrl(this.model);
    this.view.state("connecting", `connecting (${via}) to ${url}`);
    this.nc = await wsconnect({
      servers: url, user: login.user, pass: login.password,
      name: `browser/${this.role}`, inboxPrefix: login.inbox_prefix,
      maxReconnectAttempts: -1, reconnectTimeWait: 1000,
    });
    if (this.closed) {
      await this.nc.close();
      return;
    }
    this.watch();
    const js = jetstream(this.nc);
    this.consumer = await js.consumers.get(this.model.get("stream"), this.role);
    const config = (await this.consumer.info(true)).config;
    this.ackWaitMs = Math.max(1_000, (config.ack_wait || 30e9) / 1e6);
    this.maxDeliver = config.max_deliver > 0 ? config.max_deliver : 3;
    this.js = js;
    this.view.state("connected", `connected (${via}) as ${this.role}/${this.worker}`);
    this.view.root.dataset.via = via;
    this.view.root.dataset.url = url;
    this.model.set("connected_via", via);
    this.model.save_changes();
  }

  async watch() {
    const nc = this.nc;
    (async () => {
      for await (const status of nc.status()) {
        if (status.type === "disconnect") this.view.state("reconnecting", "connection lost; reconnecting");
        if (status.type === "reconnect") this.view.state("connected", "connected again");
      }
    })().catch(() => {});
    const error = await nc.closed();
    if (!this.closed) {
      this.view.state("closed", `connection closed${error ? `: ${error.message}` : ""}`);
    }
  }

  async take(waitMs) {
    const deadline = Date.now() + waitMs;
    while (Date.now() < deadline) {
      const msg = await this.consumer.next({ expires: Math.max(1_000, deadline - Date.now()) });
      if (msg === null) continue;
      const task = await this.accept(msg);
      if (task !== null) {
        const now = Date.now();
        this.held = { task, msg, takenAt: now, holdUntil: now + this.model.get("hold") * 1000 };
        this.keepAlive();
        return this.held;
      }
    }
    return null;
  }

  // The task to show, or null when this delivery is settled here (as TaskDesk._accept).
  async accept(msg) {
    let task;
    try {
      task = msg.json();
    } catch (_) {
      task = undefined;
    }
    const problem = taskProblem(task);
    const deliveries = msg.info.deliveryCount;
    if (problem !== null) {
      msg.nak(retryDelayMs(deliveries));
      this.view.log(`stream message ${msg.seq} is not a valid Task (${problem}): given back ` +
        `(delivery ${deliveries} of ${this.maxDeliver}; then a dead letter)`);
      return null;
    }
    if (task.org !== this.org) {
      msg.nak(retryDelayMs(deliveries));
      this.view.log(`task ${task.id} is org ${task.org}'s; this desk records for ${this.org} only`);
      return null;
    }
    return task;
  }

  keepAlive() {
    const held = this.held;
    const tick = () => {
      if (this.held !== held) return;
      if (Date.now() >= held.holdUntil) {
        this.held = null; // let it go: redelivered after its ack wait
        this.view.released(held, "its hold ran out; it goes back to the queue");
        return;
      }
      held.msg.working();
      held.timer = setTimeout(tick, Math.max(200, this.ackWaitMs / 3));
    };
    held.timer = setTimeout(tick, Math.max(200, this.ackWaitMs / 3));
  }

  async complete(result) {
    const held = this.held;
    if (held === null) throw new Error("no task is held");
    const { task, msg } = held;
    const record = {
      task_id: task.id, org: task.org, role: this.role, instance: this.worker,
      title: task.title, result, deliveries: msg.info.deliveryCount,
      duration_ms: Date.now() - held.takenAt, completed_at: new Date().toISOString(),
      correlation_id: task.correlation_id || task.id,
    };
    const bucket = this.model.get("ledger_bucket");
    let recorded;
    try {
      const ack = await this.js.publish(`$KV.${bucket}.${task.org}.${task.id}`,
        JSON.stringify(record), { msgID: `${task.org}.${task.id}.completed` });
      recorded = !ack.duplicate;
    } catch (error) {
      if (error && error.code === ALREADY_RECORDED) recorded = false;
      else throw error; // not recorded: the task stays held, to complete again
    }
    clearTimeout(held.timer);
    this.held = null;
    await msg.ackAck();
    return { record, recorded };
  }

  giveBack() {
    const held = this.held;
    if (held === null) return null;
    clearTimeout(held.timer);
    this.held = null;
    const n = held.msg.info.deliveryCount;
    const delay = retryDelayMs(n);
    held.msg.nak(delay);
    return n < this.maxDeliver
      ? `back in the queue: delivery ${n + 1} of ${this.maxDeliver} in ${delay / 1000} s`
      : `that was delivery ${n} of ${this.maxDeliver}: the dead-letter office makes it a dead letter`;
  }

  async close() {
    this.closed = true;
    if (this.held) clearTimeout(this.held.timer); // unacked: back after its ack wait
    if (this.nc) await this.nc.close();
  }
}

class View {
  constructor(model, el) {
    this.model = model;
    this.root = element("div", "al-browser-agent");
    this.root.dataset.role = model.get("role");
    this.root.dataset.connect = model.get("connect");
    const head = element("div", "al-ba-head");
    head.append(element("b", "al-ba-who", `${model.get("role")}/${model.get("worker")}`));
    this.status = element("span", "al-ba-status", "waiting for the kernel");
    head.append(" ", this.status);
    this.task = element("div", "al-ba-task");
    this.task.hidden = true;
    this.answer = element("textarea", "al-ba-result");
    this.answer.placeholder = "Your answer: text, or a JSON object";
    this.answer.rows = 3;
    const buttons = element("div", "al-ba-buttons");
    this.takeButton = element("button", "al-ba-take", "Take next task");
    this.completeButton = element("button", "al-ba-complete", "Complete");
    this.giveBackButton = element("button", "al-ba-giveback", "Give back");
    buttons.append(this.takeButton, this.completeButton, this.giveBackButton);
    this.history = element("ol", "al-ba-log");
    this.root.append(head, this.task, this.answer, buttons, this.history);
    el.append(this.root);
    this.buttons(false, false);
  }

  buttons(canTake, holding) {
    this.takeButton.disabled = !canTake;
    this.completeButton.disabled = !holding;
    this.giveBackButton.disabled = !holding;
    this.answer.disabled = !holding;
  }

  state(state, text) {
    this.root.dataset.state = state;
    this.status.textContent = text;
    this.model.set("status", state);
    this.model.save_changes();
  }

  log(text) {
    const line = element("li", "", text);
    this.history.prepend(line);
    while (this.history.children.length > 20) this.history.lastChild.remove();
  }

  show(held) {
    const { task, msg } = held;
    this.task.replaceChildren();
    this.task.dataset.taskId = task.id;
    this.task.append(element("div", "al-ba-title", task.title));
    const n = msg.info.deliveryCount;
    this.task.append(element("div", "al-ba-meta",
      `from ${task.requested_by} · task ${task.id} · delivery ${n}` +
      (n > 1 ? " (a redelivery)" : "")));
    if (task.details && Object.keys(task.details).length) {
      this.task.append(element("pre", "al-ba-details", JSON.stringify(task.details, null, 2)));
    }
    this.task.hidden = false;
    this.answer.value = "";
  }

  released(held, why) {
    this.task.hidden = true;
    delete this.task.dataset.taskId;
    this.log(`${held.task.title}: ${why}`);
    this.buttons(true, false);
  }
}

function render({ model, el }) {
  const view = new View(model, el);
  const desk = new Desk(model, view);
  const failed = (what) => (error) => {
    view.log(`${what}: ${error && error.message ? error.message : error}`);
  };

  view.takeButton.addEventListener("click", async () => {
    view.buttons(false, false);
    view.state("taking", `waiting for a ${desk.role} task`);
    try {
      const held = await desk.take(model.get("wait") * 1000);
      if (held === null) {
        view.state("connected", `no ${desk.role} task came within ${model.get("wait")} s`);
        view.buttons(true, false);
        return;
      }
      view.show(held);
      view.state("holding", `holding task ${held.task.id}`);
      view.buttons(false, true);
      view.answer.focus();
    } catch (error) {
      failed("take")(error);
      view.state("connected", "could not take a task");
      view.buttons(true, false);
    }
  });

  view.completeButton.addEventListener("click", async () => {
    const held = desk.held;
    if (held === null) return;
    view.buttons(false, false);
    try {
      const { record, recorded } = await desk.complete(resultOf(view.answer.value));
      view.task.hidden = true;
      delete view.task.dataset.taskId;
      view.log(recorded
        ? `${record.title}: recorded in the ledger, announced on tasks.completed, acked`
        : `${record.title}: it was recorded before (that record stands); acked`);
      view.root.dataset.lastCompleted = record.task_id;
      view.state("connected", `completed task ${record.task_id}`);
      model.set("completed", [...model.get("completed"), record.task_id]);
      model.save_changes();
      view.buttons(true, false);
    } catch (error) {
      failed("complete")(error);
      view.buttons(false, desk.held !== null);
    }
  });

  view.giveBackButton.addEventListener("click", () => {
    const held = desk.held;
    const outcome = desk.giveBack();
    if (outcome !== null) view.released(held, outcome);
    view.state("connected", "gave the task back");
  });

  // The login arrives by a custom message, asked for by this view: never widget state.
  const onMessage = (message) => {
    if (!message || message.type !== "login") return;
    if (message.error) {
      view.state("refused", message.error);
      return;
    }
    desk.connect(message).then(() => view.buttons(true, false), (error) => {
      view.state("refused", `could not connect: ${error && error.message ? error.message : error}`);
    });
  };
  model.on("msg:custom", onMessage);
  model.send({ type: "login" });
  return () => {
    model.off("msg:custom", onMessage);
    desk.close();
  };
}

export default { render };
