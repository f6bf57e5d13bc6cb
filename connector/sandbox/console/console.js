// The sandbox console: reads /_sandbox/state and a conversation's timeline, again whenever the live
// stream (/_sandbox/live, server-sent events) says something changed; acts through
// POST /_sandbox/agents/{id}/{action}. No framework, no build step.

const $ = (id) => document.getElementById(id);

const FAULTS = {
  default: [
    ["latency_ms", "Latency (ms)"], ["latency_jitter_ms", "Jitter (ms)"],
    ["rate_429", "429 rate"], ["rate_429_retry_after", "429 + Retry-After rate"], ["retry_after_s", "Retry-After (s)"],
    ["rate_500", "500 rate"], ["rate_503", "503 rate"],
    ["rate_timeout", "No answer rate"], ["timeout_s", "No answer for (s)"],
    ["rate_drop", "Dropped connection rate"], ["rate_drop_after", "Done, then dropped rate"],
  ],
  delivery: [
    ["latency_ms", "Latency before each attempt (ms)"],
    ["rate_fail", "Failed attempt rate (retried)"],
    ["rate_duplicate", "Sent twice rate"],
  ],
};
const CARD_TYPES = [
  "application/vnd.microsoft.card.adaptive", "application/8x8.quick.replies", "Interactive", "Location",
  "Template", "Suggestions", "Buttons", "Carousel",
];
const SAMPLE_CARD = {
  type: "AdaptiveCard", version: "1.6",
  body: [{ type: "TextBlock", text: "Is there anything else I can do?" }],
  actions: [{ type: "Action.Submit", title: "Yes", data: { answer: "yes" } }, { type: "Action.Submit", title: "No", data: { answer: "no" } }],
};

const view = { state: null, selected: null, playing: "", timeline: null };

// --- talking to the sandbox ----------------------------------------------------------------------

async function call(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error((data && data.message) || `${response.status} ${response.statusText}`);
  return data;
}

// Run `task` one at a time; a request made while it runs runs it once more afterwards.
function serial(task) {
  let running = null;
  let again = false;
  return async function run() {
    if (running) { again = true; return running; }
    running = (async () => {
      do { again = false; try { await task(); } catch (error) { notify(error.message, true); } } while (again);
      running = null;
    })();
    return running;
  };
}

const refreshState = serial(async () => { view.state = await call("GET", "/_sandbox/state"); renderState(); });
const refreshTimeline = serial(async () => {
  if (!view.selected) return;
  try {
    view.timeline = await call("GET", `/_sandbox/conversations/${encodeURIComponent(view.selected)}/timeline`);
  } catch (error) {
    view.timeline = null; // evicted or reset
    view.selected = null;
  }
  renderConversation();
});

function connect() {
  const source = new EventSource("/_sandbox/live");
  source.onopen = () => { live(true); refreshState(); refreshTimeline(); };
  source.onerror = () => live(false); // the browser reconnects by itself
  source.onmessage = (message) => {
    const change = JSON.parse(message.data);
    refreshState();
    if (view.selected && (change.everything || change.conversations.includes(view.selected))) refreshTimeline();
  };
}

async function act(action, body = {}, agentId = view.playing) {
  if (!agentId) { notify("Choose the agent you play first (take one over).", true); return false; }
  try {
    await call("POST", `/_sandbox/agents/${encodeURIComponent(agentId)}/${action}`, body);
    return true;
  } catch (error) {
    notify(error.message, true);
    return false;
  }
}

// --- rendering -------------------------------------------------------------------------------------

function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else element.setAttribute(name, value === true ? "" : value);
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
  return element;
}

// Make a container's children `nodes`, replacing only those that differ (a button being clicked is
// not swapped for its twin, an opened payload stays open) and keeping the keyboard focus.
function render(container, nodes) {
  const active = document.activeElement;
  const key = container.contains(active) ? active.dataset.key : undefined;
  nodes.forEach((node, index) => {
    const current = container.children[index];
    if (!current) {
      container.append(node);
      return;
    }
    const opened = current.querySelectorAll("details");
    node.querySelectorAll("details").forEach((details, n) => { details.open = Boolean(opened[n]?.open); });
    if (!current.isEqualNode(node)) current.replaceWith(node);
  });
  while (container.children.length > nodes.length) container.lastElementChild.remove();
  if (key && !container.contains(document.activeElement)) container.querySelector(`[data-key="${CSS.escape(key)}"]`)?.focus();
}

function live(connected) {
  $("live").textContent = connected ? "Live" : "Reconnecting…";
  $("live").classList.toggle("offline", !connected);
}

function notify(message, error = false) {
  $("notice").textContent = message;
  $("notice").classList.toggle("error", error);
}

function agentName(id) {
  return view.state?.agents.find((agent) => agent.id === id)?.name ?? id;
}

function played() {
  return view.state?.agents.find((agent) => agent.id === view.playing && !agent.scripted) ?? null;
}

function renderState() {
  const state = view.state;
  if (!view.playing || !state.agents.some((agent) => agent.id === view.playing && !agent.scripted)) {
    view.playing = state.agents.find((agent) => !agent.scripted)?.id ?? "";
  }
  render($("playing"), [
    h("option", { value: "" }, "nobody: take an agent over"),
    ...state.agents.filter((agent) => !agent.scripted).map((agent) => h("option", { value: agent.id, selected: agent.id === view.playing }, agent.name)),
  ]);
  $("playing").value = view.playing;

  render($("agents"), state.agents.map((agent) => h("tr", { dataset: { agentId: agent.id } },
    h("th", { scope: "row" }, agent.name),
    h("td", {}, agent.joined ? `busy: ${customerOf(agent.conversationId)}` : agent.busy ? "accepting…" : "free"),
    h("td", {}, agent.scripted ? "script" : "you"),
    h("td", {}, agent.scripted
      ? h("button", { type: "button", dataset: { key: `control-${agent.id}` }, onclick: () => takeOver(agent.id) }, "Take over")
      : h("button", { type: "button", dataset: { key: `control-${agent.id}` }, onclick: () => handBack(agent.id) }, "Hand back")),
  )));

  const free = played() && !played().busy;
  render($("queues"), state.queues.map((queue) => h("li", { dataset: { queueId: queue.id } },
    h("span", { class: "queue-name" }, `Queue ${queue.id}`),
    h("span", { class: "count" }, queue.waiting.length ? ` ${queue.waiting.length} waiting` : " nobody waiting"),
    queue.waiting.length ? h("ol", {}, queue.waiting.map((id) => h("li", {},
      h("button", { type: "button", class: "link", dataset: { key: `open-q-${id}` }, onclick: () => select(id) }, customerOf(id)),
      " ",
      h("button", { type: "button", disabled: !free, dataset: { key: `accept-${id}` }, onclick: () => accept(id) }, "Accept"),
    ))) : null,
  )));
  render($("queue-ids"), state.queues.map((queue) => h("option", { value: queue.id })));

  $("conversation-count").textContent = `(${state.conversationCount})`;
  render($("conversations"), state.conversations.map((c) => h("tr", { dataset: { conversationId: c.id }, "aria-current": c.id === view.selected ? "true" : false },
    h("th", { scope: "row" }, h("button", { type: "button", class: "link", dataset: { key: `open-${c.id}` }, onclick: () => select(c.id) }, c.customer),
      c.ref ? h("span", { class: "ref" }, ` ${c.ref}`) : null),
    h("td", {}, h("span", { class: `status status-${c.status.toLowerCase()}` }, c.status)),
    h("td", {}, c.generation === "chat-api-v2" ? "v2" : "gateway"),
    h("td", {}, c.agentName ?? ""),
    h("td", { class: "number" }, String(c.interaction)),
  )));
  renderControls();
}

function customerOf(conversationId) {
  const conversation = view.state?.conversations.find((c) => c.id === conversationId);
  return conversation ? `${conversation.customer}${conversation.ref ? ` (${conversation.ref})` : ""}` : conversationId;
}

function renderConversation() {
  const timeline = view.timeline;
  if (!timeline) {
    $("conversation-title").textContent = "No conversation selected";
    $("conversation-summary").textContent = "Pick a conversation from the list.";
    render($("timeline"), []);
    renderControls();
    return;
  }
  const c = timeline.conversation;
  $("conversation-title").textContent = `${c.customer}${c.ref ? ` (${c.ref})` : ""}`;
  $("conversation-summary").textContent = [
    c.status, c.generation, `queue ${c.queueId}`, `interaction ${c.interaction}`,
    c.agentName ? `agent ${c.agentName}` : "no agent", `id ${c.id}`,
  ].join(" · ");
  renderControls();
  const list = $("timeline");
  const follow = list.dataset.conversation !== c.id || list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.dataset.conversation = c.id;
  render(list, timeline.timeline.map(entry));
  if (follow) list.scrollTop = list.scrollHeight; // a new conversation, or the reader was at the end
}

function entry(item) {
  const time = new Date(item.time).toLocaleTimeString([], { hour12: false });
  if (item.kind === "message") {
    return h("li", { class: `message from-${item.authorType}` },
      h("p", { class: "meta" }, `${item.author} · ${time}`),
      item.text ? h("p", { class: "text" }, item.text) : null,
      item.attachments.map((a) => h("p", {}, "Attachment: ", h("a", { href: a.preSignedUrl }, a.fileName ?? a.id))),
      item.cards.map((card) => h("details", {}, h("summary", {}, `Card: ${card.contentType}`), h("pre", {}, JSON.stringify(card.content, null, 2)))),
    );
  }
  const answers = item.answers.join(" → ");
  const outcome = item.outcome === "pending" ? "waiting to be sent" : item.outcome;
  return h("li", { class: `webhook outcome-${item.outcome}`, dataset: { eventType: item.eventType } },
    h("details", {},
      h("summary", { class: "meta" }, h("span", { class: "event-type" }, item.eventType), ` · ${time} · webhook ${outcome}`,
        answers ? ` (${item.attempts} attempt${item.attempts === 1 ? "" : "s"}: ${answers})` : ""),
      h("pre", {}, JSON.stringify(item.event, null, 2))),
  );
}

function renderControls() {
  const c = view.timeline?.conversation;
  const me = played();
  const mine = Boolean(c && me && me.joined && me.conversationId === c.id);
  $("agent-controls").hidden = !mine;
  $("gateway-controls").hidden = !mine || c.generation !== "chat-gateway-v1";
  const waiting = Boolean(c && view.state?.queues.some((queue) => queue.waiting.includes(c.id)));
  $("accept").hidden = !waiting;
  $("accept").disabled = !(me && !me.busy);
  $("accept").textContent = me ? `Accept as ${me.name}` : "Accept (take an agent over first)";
}

// --- actions ---------------------------------------------------------------------------------------

function select(conversationId) {
  view.selected = conversationId;
  refreshTimeline();
  refreshState();
}

async function takeOver(agentId) {
  if (await act("take-over", {}, agentId)) {
    view.playing = agentId;
    notify(`You play ${agentName(agentId)} now; its script stopped.`);
  }
  await refreshState();
}

async function handBack(agentId) {
  if (await act("hand-back", {}, agentId)) notify(`${agentName(agentId)} follows its script again.`);
  await refreshState();
}

async function accept(conversationId) {
  if (await act("accept", { conversationId })) {
    notify(`${agentName(view.playing)} joined.`);
    select(conversationId);
    $("text").focus();
  }
}

function onSubmit(id, handler) {
  $(id).addEventListener("submit", async (event) => {
    event.preventDefault();
    await handler(event.target);
  });
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result.split(",", 2)[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function setUpAgentControls() {
  $("accept").addEventListener("click", () => accept(view.selected));
  onSubmit("send", async () => {
    const text = $("text").value.trim();
    if (text && await act("message", { text })) { $("text").value = ""; notify("Sent."); }
  });
  onSubmit("attach", async () => {
    const file = $("file").files[0];
    if (!file) { notify("Choose a file first.", true); return; }
    const attachment = { fileName: file.name, contentType: file.type || "application/octet-stream", data: await readFile(file) };
    if (await act("message", { attachment })) { $("file").value = ""; notify(`Sent ${file.name}.`); }
  });
  render($("card-type"), CARD_TYPES.map((type) => h("option", { value: type }, type)));
  $("card-content").value = JSON.stringify(SAMPLE_CARD, null, 2);
  onSubmit("card", async () => {
    let content;
    try { content = JSON.parse($("card-content").value); } catch (error) { notify(`Card content is not JSON: ${error.message}`, true); return; }
    if (await act("message", { card: { contentType: $("card-type").value, content } })) notify("Card sent.");
  });
  $("typing-on").addEventListener("click", async () => { if (await act("typing", { typing: true })) notify("Typing shown."); });
  $("typing-off").addEventListener("click", async () => { if (await act("typing", { typing: false })) notify("Typing stopped."); });
  $("read").addEventListener("click", async () => { if (await act("read")) notify("Read receipt sent."); });
  onSubmit("transfer", async () => {
    if (await act("transfer", { queueId: $("queue").value.trim() })) { $("queue").value = ""; notify("Transferred."); }
  });
  $("leave").addEventListener("click", async () => { if (await act("leave")) notify("You left the interaction."); });
  $("playing").addEventListener("change", () => { view.playing = $("playing").value; renderState(); });
}

// --- faults ----------------------------------------------------------------------------------------

function setUpFaults() {
  for (const [rule, fields] of Object.entries(FAULTS)) {
    $(`faults-${rule}`).append(...fields.map(([name, label]) => h("div", { class: "field" },
      h("label", { for: `fault-${rule}-${name}` }, label),
      h("input", { id: `fault-${rule}-${name}`, name: `${rule}.${name}`, type: "number", min: "0", step: "any", inputmode: "decimal" }),
    )));
  }
  onSubmit("faults", async () => {
    let operations;
    try { operations = JSON.parse($("faults-operations").value || "{}"); } catch (error) { notify(`Rules by operation are not JSON: ${error.message}`, true); return; }
    const config = { default: {}, delivery: {}, operations };
    for (const [rule, fields] of Object.entries(FAULTS)) {
      for (const [name] of fields) config[rule][name] = Number($(`fault-${rule}-${name}`).value || 0);
    }
    await applyFaults(config);
  });
  $("faults-clear").addEventListener("click", () => applyFaults({}));
}

async function applyFaults(config) {
  try {
    showFaults(await call("PUT", "/_sandbox/faults", config));
    notify("Faults applied.");
  } catch (error) {
    notify(error.message, true);
  }
}

function showFaults(config) {
  for (const [rule, fields] of Object.entries(FAULTS)) {
    for (const [name] of fields) $(`fault-${rule}-${name}`).value = config[rule][name];
  }
  $("faults-operations").value = Object.keys(config.operations).length ? JSON.stringify(config.operations, null, 2) : "";
}

setUpAgentControls();
setUpFaults();
call("GET", "/_sandbox/faults").then(showFaults, (error) => notify(error.message, true));
connect();
