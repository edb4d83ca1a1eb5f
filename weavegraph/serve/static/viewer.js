// The run viewer (served as /static/viewer.js: the page has no inline script,
// so its Content-Security-Policy can forbid inline code).
"use strict";

const STREAM_END_SCOPE = "__weavegraph_stream_end__";
const INTERRUPT_SCOPE = "session.interrupt";
const NODE_START_SCOPE = "node.start";
const NODE_END_SCOPE = "node.end";
const NODE_RETRY_SCOPE = "node.retry";
const NODE_ERROR_SCOPE = "node.error";
const STEP_END_SCOPE = "step.end";
// Every stream mode: the run's events, each step's partials by node
// ("updates") and the state after each step ("values"). Asking for all of them
// keeps the event numbers free of gaps, so a gap is always a lost event.
const MODES = "?modes=events,updates,values";
const MAX_LISTED_UPDATES = 200;
const MAX_LISTED_EVENTS = 2000;
const SVG_NS = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);

/** Build an HTML element: el("li", {class: "x"}, "text", child, ...). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  node.append(...children);
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  node.append(...children);
  return node;
}

function setAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
}

// ===================================================================== SSE parsing

/**
 * An incremental Server-Sent Events parser: feed it decoded text in any pieces;
 * it calls onFrame({id, event, data}) for each complete frame. `id` is the frame's
 * own id line (null when it has none); comment lines (": keep-alive") are skipped.
 */
class SSEParser {
  constructor(onFrame) {
    this.onFrame = onFrame;
    this.buffer = "";
    this.clearFrame();
  }

  clearFrame() {
    this.data = [];
    this.event = "";
    this.id = null;
  }

  push(text, final = false) {
    this.buffer += text;
    let pos = 0;
    while (pos < this.buffer.length) {
      let end = pos;
      while (end < this.buffer.length && this.buffer[end] !== "\n" && this.buffer[end] !== "\r") end++;
      if (end === this.buffer.length) break;                      // no line ending yet
      if (this.buffer[end] === "\r" && end + 1 === this.buffer.length && !final) break;  // maybe \r\n
      const line = this.buffer.slice(pos, end);
      pos = end + (this.buffer[end] === "\r" && this.buffer[end + 1] === "\n" ? 2 : 1);
      this.line(line);
    }
    this.buffer = this.buffer.slice(pos);
  }

  line(line) {
    if (line === "") {
      if (this.data.length) {
        this.onFrame({ id: this.id, event: this.event || "message", data: this.data.join("\n") });
      }
      this.clearFrame();
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id" && !value.includes("\0")) this.id = value;
  }
}

// ====================================================================== graph view

const view = {
  graphs: [],
  graph: null,            // the /graph answer being shown
  nodeElements: new Map(),
};

async function loadGraph(name) {
  const query = name ? "?graph=" + encodeURIComponent(name) : "";
  const response = await fetch("/graph" + query, { headers: { Accept: "application/json" } });
  const info = await response.json();
  if (!response.ok) throw new Error(info.error || "HTTP " + response.status);
  view.graph = info;
  view.graphs = info.graphs || [info.graph];
  const select = $("graph-select");
  select.replaceChildren(...view.graphs.map((g) => el("option", { value: g }, g)));
  select.value = info.graph;
  $("graph-picker").hidden = view.graphs.length < 2;
  $("graph-name").textContent = info.graph;
  $("graph-hash").textContent = info.graph_hash ? "#" + info.graph_hash.slice(0, 10) : "";
  $("mermaid").textContent = info.mermaid || "";
  drawGraph(info);
}

/** Edges to draw: unconditional ones, then declared router targets not already drawn. */
function graphEdges(info) {
  const edges = [];
  const seen = new Set();
  for (const [from, to] of info.edges || []) {
    const key = from + "\u0000" + to;
    if (seen.has(key)) continue;
    seen.add(key);
    edges.push({ from, to, conditional: false });
  }
  for (const route of info.conditional || []) {
    for (const to of route.targets || []) {
      const key = route.source + "\u0000" + to;
      if (seen.has(key)) continue;
      seen.add(key);
      edges.push({ from: route.source, to, conditional: true });
    }
  }
  return edges;
}

/**
 * Assign each node a layer (longest path from START, loops broken at their back
 * edges), END alone in the last layer. An edge spanning several layers passes
 * through a waypoint in each layer between, so it never runs through a box; a
 * few sweeps then order every layer to cut crossings.
 */
function layout(names, edges) {
  const succ = new Map(names.map((n) => [n, []]));
  for (const e of edges) succ.get(e.from).push(e.to);

  // Depth-first search from START (then from anything left) finds the back edges
  // and, reversed, a topological order of what remains.
  const state = new Map();            // 1: on the stack, 2: finished
  const postorder = [];
  const back = new Set();
  for (const root of ["START", ...names.filter((n) => n !== "START")]) {
    if (!succ.has(root) || state.has(root)) continue;
    const stack = [[root, 0]];
    state.set(root, 1);
    while (stack.length) {
      const top = stack[stack.length - 1];
      const next = succ.get(top[0])[top[1]++];
      if (next === undefined) {
        stack.pop();
        state.set(top[0], 2);
        postorder.push(top[0]);
      } else if (state.get(next) === 1) {
        back.add(top[0] + "\u0000" + next);
      } else if (!state.has(next)) {
        state.set(next, 1);
        stack.push([next, 0]);
      }
    }
  }

  const layer = new Map(names.map((n) => [n, 0]));
  for (const node of postorder.reverse()) {
    for (const next of succ.get(node)) {
      if (node !== next && !back.has(node + "\u0000" + next)) {
        layer.set(next, Math.max(layer.get(next), layer.get(node) + 1));
      }
    }
  }
  if (layer.has("END")) {
    let deepest = 0;
    for (const [n, l] of layer) if (n !== "END") deepest = Math.max(deepest, l);
    layer.set("END", deepest + 1);
  }

  const layers = [];
  for (const n of names) (layers[layer.get(n)] ||= []).push(n);
  for (let i = 0; i < layers.length; i++) layers[i] ||= [];

  // Waypoints, and the links between neighbouring layers used for ordering.
  const up = new Map(), down = new Map();
  const link = (a, b) => {
    (down.get(a) || down.set(a, []).get(a)).push(b);
    (up.get(b) || up.set(b, []).get(b)).push(a);
  };
  const via = new Map();              // edge -> its waypoint ids, top to bottom
  let waypoints = 0;
  for (const e of edges) {
    if (layer.get(e.to) <= layer.get(e.from)) continue;
    const points = [];
    for (let l = layer.get(e.from) + 1; l < layer.get(e.to); l++) {
      const id = "\u0001" + waypoints++;
      layer.set(id, l);
      layers[l].push(id);
      points.push(id);
    }
    [e.from, ...points, e.to].reduce((a, b) => (link(a, b), b));
    via.set(e, points);
  }

  // Barycentre sweeps, down then up.
  const position = new Map();
  const index = (row) => row.forEach((n, i) => position.set(n, i));
  const order = (row, neighbours) => {
    const keyed = row.map((n, i) => {
      const near = neighbours.get(n) || [];
      const mean = near.reduce((s, m) => s + position.get(m), 0) / near.length;
      return [n, near.length ? mean : i];
    });
    keyed.sort((a, b) => a[1] - b[1]);
    return keyed.map(([n]) => n);
  };
  layers.forEach(index);
  for (let sweep = 0; sweep < 4; sweep++) {
    for (let i = 1; i < layers.length; i++) index(layers[i] = order(layers[i], up));
    for (let i = layers.length - 2; i >= 0; i--) index(layers[i] = order(layers[i], down));
  }
  return { layer, layers, via, up, down };
}

const isWaypoint = (id) => id.startsWith("\u0001");

// A node's place in the graph, as the map keys below spell it: its names from
// the top graph down (["research", "search"] for a subgraph's child node).
const KEY_SEP = "\u0000";
const keyOf = (names) => names.join(KEY_SEP);

const NODE_H = 34, GAP_X = 26, GAP_Y = 60;
const HEADER = 28;                    // a subgraph node's title bar, above its child graph
const OUTER_PAD = 24, INNER_PAD = 10; // around the whole picture; around a child graph

function drawGraph(info) {
  view.nodeElements.clear();
  const level = drawLevel(info, [], OUTER_PAD, 160);
  const nested = view.nodeElements.size - level.count;
  const picture = svg("svg", {
    viewBox: `0 0 ${level.width} ${level.height}`,
    width: level.width,
    height: level.height,
    role: "img",
    "aria-label": `Graph ${info.graph}: ${level.count} nodes, ${level.edges} edges`
      + (nested ? `, and ${nested} nodes inside its subgraphs` : ""),
  },
    svg("defs", {},
      svg("marker", {
        id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
        markerWidth: 7, markerHeight: 7, orient: "auto",
      }, svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" })),
    ),
    level.group,
  );
  $("graph").replaceChildren(picture);
  applyNodeClasses();
}

/**
 * Lay out and draw one graph level (`prefix`: the names of the subgraph nodes
 * it is inside, none for the top graph). A subgraph node is a box holding its
 * child graph's own drawing, any depth down. Returns the level's SVG group,
 * its size and how many nodes and edges it drew.
 */
function drawLevel(info, prefix, PAD, minWidth) {
  const names = [...(info.nodes || [])];
  const edges = graphEdges(info);
  for (const e of edges) {            // tolerate an edge naming a node the list lacks
    for (const n of [e.from, e.to]) if (!names.includes(n)) names.push(n);
  }
  const { layer, layers, via, up, down } = layout(names, edges);

  // Each subgraph node's child graph, drawn first: its size sets the node's.
  const subgraphs = info.subgraphs || {};
  const inner = new Map();
  for (const n of names) {
    if (Object.hasOwn(subgraphs, n) && subgraphs[n]) {
      inner.set(n, drawLevel(subgraphs[n], [...prefix, n], INNER_PAD, 0));
    }
  }
  const labelWidth = (n) =>
    Math.max(n === "START" || n === "END" ? 70 : 84, Math.round(n.length * 7.9 + 30));
  const width = (n) => isWaypoint(n) ? 8
    : inner.has(n) ? Math.max(labelWidth(n), inner.get(n).width) : labelWidth(n);
  const height = (n) => inner.has(n) ? HEADER + inner.get(n).height : NODE_H;

  // Horizontal centres: rows start centred, then each node moves towards the mean
  // of its neighbours in the row above (then below), keeping its row's order.
  const cx = new Map();
  const rowWidth = (row) => row.reduce((s, n) => s + width(n), 0) + GAP_X * Math.max(0, row.length - 1);
  for (const row of layers) {
    let x = -rowWidth(row) / 2;
    for (const n of row) {
      cx.set(n, x + width(n) / 2);
      x += width(n) + GAP_X;
    }
  }
  const settle = (row, neighbours) => {
    const wanted = row.map((n) => {
      const near = neighbours.get(n) || [];
      return near.length ? near.reduce((s, m) => s + cx.get(m), 0) / near.length : cx.get(n);
    });
    const placed = [];
    row.forEach((n, i) => {
      const min = i ? placed[i - 1] + (width(row[i - 1]) + width(n)) / 2 + GAP_X : -Infinity;
      placed.push(Math.max(wanted[i], min));
    });
    const drift = row.reduce((s, n, i) => s + placed[i] - wanted[i], 0) / Math.max(1, row.length);
    row.forEach((n, i) => cx.set(n, placed[i] - drift));
  };
  for (let pass = 0; pass < 3; pass++) {
    for (let i = 1; i < layers.length; i++) settle(layers[i], up);
    for (let i = layers.length - 2; i >= 0; i--) settle(layers[i], down);
  }
  let left = Infinity, far = -Infinity;
  for (const [n, c] of cx) {
    left = Math.min(left, c - width(n) / 2);
    far = Math.max(far, c + width(n) / 2);
  }
  if (!cx.size) left = far = 0;
  const shift = PAD - left + Math.max(0, (minWidth - (far - left)) / 2);
  // Rows are as tall as their tallest box; a waypoint spans its whole row, so
  // the edge through it passes beside every box of that row.
  const rowHeight = layers.map((row) =>
    Math.max(NODE_H, ...row.filter((n) => !isWaypoint(n)).map(height)));
  const box = new Map();
  let top = PAD;
  layers.forEach((row, i) => {
    for (const n of row) {
      const w = width(n), x = cx.get(n) - w / 2 + shift;
      const h = isWaypoint(n) ? rowHeight[i] : height(n);
      const y = top + (rowHeight[i] - h) / 2;
      box.set(n, { x, y, w, h, cx: x + w / 2, cy: y + h / 2, top, bottom: top + rowHeight[i] });
    }
    top += rowHeight[i] + GAP_Y;
  });
  const innerWidth = Math.max(minWidth, far - left);

  // Spread the ends of several edges leaving or entering one node along its side.
  const outs = new Map(), ins = new Map();
  const hops = new Map();             // edge -> [first hop after from, last hop before to]
  for (const [e, points] of via) {
    hops.set(e, [points[0] ?? e.to, points[points.length - 1] ?? e.from]);
    (outs.get(e.from) || outs.set(e.from, []).get(e.from)).push(e);
    (ins.get(e.to) || ins.set(e.to, []).get(e.to)).push(e);
  }
  const spread = (list, e, b, end) => {
    const hop = (edge) => box.get(hops.get(edge)[end]).cx;
    const sorted = [...list].sort((p, q) => hop(p) - hop(q));
    const i = sorted.indexOf(e), k = sorted.length;
    return b.cx + (k < 2 ? 0 : (i - (k - 1) / 2) * Math.min(16, (b.w - 24) / (k - 1)));
  };

  let right = PAD + innerWidth;
  let loops = 0;
  const paths = edges.map((e) => {
    const a = box.get(e.from), b = box.get(e.to);
    let d;
    if (e.from === e.to) {
      const x = a.x + a.w, y = a.cy;
      d = `M ${x} ${y - 7} C ${x + 34} ${y - 26}, ${x + 34} ${y + 26}, ${x + 2} ${y + 8}`;
      right = Math.max(right, x + 34);
    } else if (via.has(e)) {
      // Straight down to the bottom of the source's row, curves only in the
      // gaps between rows, straight down again from the top of the target's
      // row: an edge never cuts a box of a taller row.
      let px = spread(outs.get(e.from), e, a, 0), py = a.y + a.h;
      d = `M ${px} ${py}`;
      if (a.bottom > py) {
        d += ` L ${px} ${a.bottom}`;
        py = a.bottom;
      }
      const curveTo = (x, y) => {
        const bend = Math.max(18, (y - py) / 2);
        d += ` C ${px} ${py + bend}, ${x} ${y - bend}, ${x} ${y}`;
        px = x;
        py = y;
      };
      for (const id of via.get(e)) {
        const w = box.get(id);
        curveTo(w.cx, w.y);
        d += ` L ${w.cx} ${w.y + w.h}`;
        py = w.y + w.h;
      }
      const x = spread(ins.get(e.to), e, b, 1), end = Math.min(b.top, b.y - 2);
      curveTo(x, end);
      if (end < b.y - 2) d += ` L ${x} ${b.y - 2}`;
    } else {
      // A loop back up: around the right of every box it passes.
      loops++;
      let edge = Math.max(a.x + a.w, b.x + b.w);
      for (let l = layer.get(e.to); l <= layer.get(e.from); l++) {
        for (const n of layers[l]) edge = Math.max(edge, box.get(n).x + box.get(n).w);
      }
      const out = edge + 22 + 12 * loops;
      right = Math.max(right, out);
      const r = Math.max(0, Math.min(12, (a.cy - b.cy) / 2));
      d = `M ${a.x + a.w} ${a.cy} L ${out - r} ${a.cy} Q ${out} ${a.cy}, ${out} ${a.cy - r}`
        + ` L ${out} ${b.cy + r} Q ${out} ${b.cy}, ${out - r} ${b.cy} L ${b.x + b.w + 2} ${b.cy}`;
    }
    return svg("path", {
      d,
      class: "edge" + (e.conditional ? " conditional" : ""),
      "marker-end": "url(#arrow)",
      dataset: { from: e.from, to: e.to },
    }, svg("title", {}, `${e.from} → ${e.to}${e.conditional ? " (conditional)" : ""}`));
  });

  const clusters = [];
  const nodes = names.map((n) => {
    const b = box.get(n);
    const terminal = n === "START" || n === "END";
    const path = [...prefix, n];
    const shown = path.join(" › ");
    const child = inner.get(n);
    const g = svg("g", {
      class: "node" + (terminal ? " terminal" : "") + (child ? " subgraph" : ""),
      transform: `translate(${b.x} ${b.y})`,
      dataset: { node: n, path: path.join("/"), depth: String(prefix.length) },
    },
      svg("title", {}, terminal ? shown : `${child ? "subgraph node" : "node"} ${shown}`),
      svg("rect", { width: b.w, height: b.h, rx: terminal ? b.h / 2 : 8 }),
      svg("text", { x: b.w / 2, y: child ? HEADER / 2 : b.h / 2 }, n),
    );
    if (child) {
      clusters.push(svg("g", { class: "cluster", transform: `translate(${b.x} ${b.y + HEADER})` }, child.group));
    }
    view.nodeElements.set(keyOf(path), { g, width: b.w, terminal, badge: null });
    return g;
  });

  return {
    group: svg("g", { class: "level", dataset: { path: prefix.join("/") } },
      svg("g", { class: "edges" }, ...paths),
      svg("g", { class: "nodes" }, ...nodes),
      ...clusters),
    width: right + PAD,
    height: top - GAP_Y + PAD,
    count: names.length,
    edges: edges.length,
  };
}

/**
 * Where an event of `node` happened: its path as the events spell it (sent
 * tasks as name[i], from metadata.path, else the node and metadata.task), and
 * the drawn node each step of it names (task indices apart).
 */
function locate(meta, node) {
  const own = Number.isInteger(meta.task) ? meta.task : null;
  const raw = Array.isArray(meta.path) && meta.path.length && meta.path.every((s) => typeof s === "string")
    ? meta.path
    : [own === null ? node : `${node}[${own}]`];
  const names = [], tasks = [];
  let level = view.graph;
  for (const part of raw) {
    const known = (level && level.nodes) || [];
    let name = part, task = null;
    const sent = /^(.*)\[(\d+)\]$/.exec(part);
    if (!known.includes(part) && sent && known.includes(sent[1])) {
      name = sent[1];
      task = Number(sent[2]);
    }
    names.push(name);
    tasks.push(task);
    const below = level && level.subgraphs;
    level = below && Object.hasOwn(below, name) ? below[name] : null;
  }
  if (own !== null) tasks[tasks.length - 1] = own;
  return { raw, names, tasks, nested: raw.length > 1 };
}

/** Re-apply the current run's highlight (after the graph is redrawn). */
function applyNodeClasses() {
  const active = new Map();           // drawn node key -> {tasks: [...], retrying}
  for (const item of run.running.values()) {
    const entry = active.get(item.key) || active.set(item.key, { tasks: [], retrying: false }).get(item.key);
    if (item.task !== null) entry.tasks.push(item.task);
    if (item.retrying) entry.retrying = true;
  }
  for (const [key, node] of view.nodeElements) {
    const g = node.g;
    const on = active.get(key);
    g.classList.toggle("done", run.done.has(key) && !on);
    g.classList.toggle("running", Boolean(on));
    g.classList.toggle("retrying", Boolean(on && on.retrying));
    g.classList.toggle("failed", run.failed.has(key));
    g.classList.toggle("waiting", run.waiting.has(key));
    showTasks(node, on ? on.tasks.sort((a, b) => a - b) : []);
  }
}

/** The badge of a node running as sent tasks: how many run now, and which. */
function showTasks(node, tasks) {
  node.g.dataset.tasks = String(tasks.length);
  if (!tasks.length) {
    if (node.badge) node.badge.group.setAttribute("visibility", "hidden");
    return;
  }
  if (!node.badge) {
    const text = svg("text", { y: 0 });
    const rect = svg("rect", { y: -9, height: 18, rx: 9 });
    const title = svg("title");
    const group = svg("g", { class: "tasks" }, title, rect, text);
    node.g.append(group);
    node.badge = { group, rect, text, title };
  }
  const { group, rect, text, title } = node.badge;
  const label = `×${tasks.length}`;
  const w = Math.round(label.length * 6.6 + 12);
  group.setAttribute("visibility", "visible");
  // On the top right corner, clear of the edges that end at the top centre.
  group.setAttribute("transform", `translate(${node.width - w / 2 + 4} 0)`);
  rect.setAttribute("x", String(-w / 2));
  rect.setAttribute("width", String(w));
  text.textContent = label;
  title.textContent = `${tasks.length} sent task${tasks.length === 1 ? "" : "s"} running: ${tasks.join(", ")}`;
}

// ======================================================================= run state

let run = newRun();
const review = { session: null, interrupts: [], paused: false };
const past = { session: null, steps: [], asked: 0 };

function newRun() {
  return {
    startedAt: performance.now(),
    sessionId: null,
    lastId: 0,
    announcedDrops: 0,    // "dropped" frames not yet matched by a gap in ids
    drops: 0,
    events: 0,
    counts: {},
    lastStep: null,
    // The highlight follows the runtime's lifecycle events: node.start adds a
    // running task, node.retry keeps it (retrying), node.end and node.error
    // remove it. Tasks are keyed by their path as the events spell it
    // ("research\0work[2]"); each names the drawn node it runs (`key`), its
    // sent-task index (or null) and whether it waits for another attempt. A
    // subgraph's child task marks the subgraph node's own task running too,
    // until the subgraph node's node.end.
    running: new Map(),
    failed: new Set(),    // drawn nodes whose last attempt failed for good
    done: new Set(),      // drawn nodes that have run
    waiting: new Set(),   // drawn nodes paused on an interrupt
    updates: 0,           // "updates" items received (one per step)
    values: null,         // the newest "values" item's state
    ran: new Map(),       // node -> {steps: Set, events: n}, in order of first sight
    streams: new Map(),   // node + stream id -> {node, streamId, text, final, error, element}
    children: new Map(),  // a child graph's session id -> where (see locate) one of its nodes ran
    end: null,
    close: null,          // closes this run's connection (the Stop button)
    closeOnEnd: null,     // stops EventSource from reconnecting once the run ended
  };
}

function resetView() {
  if (run.close) run.close();
  run = newRun();
  hideInterrupts();
  $("events").replaceChildren();
  $("updates").replaceChildren();
  $("step-state").replaceChildren(el("p", { class: "muted" }, "Shown after each step."));
  $("llm-output").replaceChildren(el("p", { class: "muted" }, "No model output yet."));
  $("final-state").replaceChildren(el("p", { class: "muted" }, "Shown when the run ends."));
  $("drops").textContent = "0";
  $("drops-box").classList.remove("nonzero");
  $("event-count").textContent = "";
  applyNodeClasses();
  setStatus("running", "connecting…");
  setBusy(true);
  document.body.dataset.state = "running";
  return run;
}

function setStatus(kind, text) {
  const status = $("status");
  status.className = kind;
  status.textContent = text;
}

function setBusy(busy) {
  $("answer").disabled = busy || !review.paused;
  $("start").disabled = busy;
  $("attach").disabled = busy;
  $("stop").disabled = !busy;
  $("graph-select").disabled = busy;
}

function updateProgress() {
  const seconds = ((performance.now() - run.startedAt) / 1000).toFixed(2);
  const step = run.lastStep === null ? "" : ` · step ${run.lastStep}`;
  $("progress").textContent = `${run.events} events${step} · ${seconds} s`;
  $("event-count").textContent = String(run.events);
}

function countDrops(n) {
  if (n <= 0) return;
  run.drops += n;
  $("drops").textContent = String(run.drops);
  $("drops-box").classList.add("nonzero");
}

/** One SSE frame of the current run (from fetch or from EventSource). */
function handleFrame(current, frame) {
  if (current !== run || run.end) return;
  let data;
  try {
    data = JSON.parse(frame.data);
  } catch (err) {
    listEvent({ type: "client", message: `unreadable frame (${err.message}): ${frame.data.slice(0, 200)}` });
    return;
  }

  if (frame.event === "dropped") {
    const n = Number(data.dropped) || 0;
    countDrops(n);
    run.announcedDrops += n;
    listEvent({
      type: "dropped",
      message: `${n} events dropped: the server's bounded log no longer held them for this page (${data.total} on this connection)`,
    });
    return;
  }

  if (frame.id !== null && frame.id !== "") {
    const id = Number(frame.id);
    if (Number.isInteger(id)) {
      if (id <= run.lastId) return;               // already shown (a reconnect repeat)
      const gap = id - run.lastId - 1;
      const unexplained = gap - run.announcedDrops;
      if (unexplained > 0) {
        countDrops(unexplained);
        listEvent({ type: "gap", message: `${unexplained} events missing before #${id}` });
      }
      run.announcedDrops = 0;
      run.lastId = id;
    }
  }

  const meta = data.metadata || {};
  const type = data.type || frame.event;
  run.events++;
  run.counts[type] = (run.counts[type] || 0) + 1;
  // Runtime events name their node in `node`; a node's own events in `node_id`.
  const node = meta.node_id || (type === "diagnostic" && typeof meta.node === "string" ? meta.node : null);
  const where = node ? locate(meta, node) : null;
  // A subgraph's events carry their path and the child's own session and step
  // numbers: they never stand for the run's.
  const nested = Array.isArray(meta.path) && meta.path.length > 1
    || Boolean(run.sessionId && meta.session_id && meta.session_id !== run.sessionId);
  if (meta.session_id && !run.sessionId && !nested) learnSession(meta.session_id);

  if (type === "diagnostic" && data.scope === STREAM_END_SCOPE) {
    const end = readEnd(data);
    listEvent({ id: frame.id, type, scope: "stream end", message: data.message, end: true, ok: end.status === "completed" || end.status === "interrupted" });
    finish(end);
    return;
  }

  // A child graph's own events (its step.end) name no node: the list shows
  // them under the subgraph node whose child session they come from.
  let listed = where;
  if (where && where.nested && meta.session_id) run.children.set(meta.session_id, where);
  else if (!where && nested && run.children.has(meta.session_id)) {
    const child = run.children.get(meta.session_id);
    listed = {
      raw: child.raw.slice(0, -1), names: child.names.slice(0, -1),
      tasks: child.tasks.slice(0, -1), nested: child.raw.length > 2,
    };
  }
  listEvent({ id: frame.id, type, scope: data.scope, node, where: listed, message: data.message });
  if (!nested && Number.isInteger(meta.step) && (type === "node" || type === "updates" || type === "values" || data.scope === STEP_END_SCOPE)) {
    run.lastStep = Math.max(run.lastStep ?? 0, meta.step);
  }
  if (type === "updates") showUpdates(meta.step, meta.updates || {});
  else if (type === "values") showValues(meta.step, meta.state || {});
  else if (type === "diagnostic" && where) lifecycle(data.scope, where, meta.step);
  if ((type === "node" || type === "llm") && where) noteNode(where.names.join(" › "), meta.step, true);
  if (type === "llm") appendModelOutput(where ? where.raw.join(" › ") : null, meta, data);
  updateProgress();
}

/** A lifecycle event of the task at `where` (see locate): what the highlight shows. */
function lifecycle(scope, where, step) {
  const key = keyOf(where.names);
  if (scope === NODE_START_SCOPE) {
    noteNode(where.names.join(" › "), step, false);
    startTask(where, false);
  } else if (scope === NODE_RETRY_SCOPE) {
    startTask(where, true);      // still running: it waits for its next attempt
  } else if (scope === NODE_END_SCOPE) {
    stopTask(where, true);
  } else if (scope === NODE_ERROR_SCOPE) {
    run.failed.add(key);
    stopTask(where, false);
  } else if (scope === INTERRUPT_SCOPE) {
    noteNode(where.names.join(" › "), step, false);
    stopTask(where, false);
    run.waiting.add(key);
    applyNodeClasses();
  }
}

let lastSessionId = null;

/** Remember the run's session id: Attach uses it when the field is empty. */
function learnSession(id) {
  run.sessionId = id;
  lastSessionId = id;
  $("session-id").placeholder = "last run: " + id;
}

/** Remember that `node` ran at `step`; `own`: one of its own events. */
function noteNode(node, step, own) {
  if (!run.ran.has(node)) run.ran.set(node, { steps: new Set(), events: 0 });
  const entry = run.ran.get(node);
  if (own) entry.events++;
  if (Number.isInteger(step)) entry.steps.add(step);
}

/**
 * The task at `where` runs (an attempt started, or it waits to retry,
 * `retrying`); so does every subgraph node it is inside, and each level it
 * runs in has left its START.
 */
function startTask(where, retrying) {
  for (let depth = 1; depth <= where.raw.length; depth++) {
    const names = where.names.slice(0, depth);
    run.done.add(keyOf([...names.slice(0, -1), "START"]));
    const id = keyOf(where.raw.slice(0, depth));
    const task = run.running.get(id)
      || run.running.set(id, { key: keyOf(names), task: where.tasks[depth - 1], retrying: false }).get(id);
    if (depth === where.raw.length) {
      if (retrying) task.retrying = true;   // until the task ends
      run.failed.delete(task.key);
      run.waiting.delete(task.key);
    }
  }
  applyNodeClasses();
}

/**
 * The task at `where` stopped running, and with it anything still marked
 * running inside it (a subgraph node's child tasks); `finished`: it returned
 * (it has run, and a subgraph node's child graph reached its END).
 */
function stopTask(where, finished) {
  const id = keyOf(where.raw);
  for (const other of [...run.running.keys()]) {
    if (other === id || other.startsWith(id + KEY_SEP)) run.running.delete(other);
  }
  if (finished) {
    run.done.add(keyOf(where.names));
    if (view.nodeElements.has(keyOf([...where.names, "END"]))) run.done.add(keyOf([...where.names, "END"]));
  }
  applyNodeClasses();
}

/** One partial's JSON form, as short lines: what the node changed. */
function describePartial(partial) {
  const lines = [];
  for (const m of partial.messages || []) {
    const calls = (m.tool_calls || []).map((c) => `${c.name}(${JSON.stringify(c.arguments)})`);
    lines.push(`${m.role}: ${m.content}${calls.length ? " → " + calls.join(", ") : ""}`);
  }
  if (partial.extra) lines.push("extra: " + JSON.stringify(partial.extra));
  if ((partial.errors || []).length) lines.push(`errors: ${partial.errors.length}`);
  if (partial.frontier) lines.push(`${partial.frontier.kind} → ${partial.frontier.targets.join(", ")}`);
  return lines.length ? lines : ["no change"];
}

/** An "updates" item: every node's partial of `step`, keyed by node name. */
function showUpdates(step, updates) {
  run.updates++;
  const nodes = Object.entries(updates).map(([node, partial]) => {
    noteNode(locate({}, node).names.join(" › "), step, false);  // a sent task's key: name[i]
    return el("div", { class: "update", dataset: { node } },
      el("code", {}, node),
      el("ul", {}, ...describePartial(partial || {}).map((line) => el("li", {}, line))));
  });
  const list = $("updates");
  list.append(el("li", { dataset: { step: String(step) } },
    el("span", { class: "update-step" }, `step ${step}`),
    nodes.length ? el("div", { class: "update-nodes" }, ...nodes) : el("span", { class: "muted" }, "nothing ran")));
  while (list.childElementCount > MAX_LISTED_UPDATES) list.firstElementChild.remove();
  list.scrollTop = list.scrollHeight;
}

/** A "values" item: the whole state after `step`. */
function showValues(step, state) {
  run.values = state;
  const messages = (state.messages || []).map((m) =>
    el("li", {}, el("strong", {}, m.role + ": "), m.content));
  $("step-state").replaceChildren(el("dl", { dataset: { step: String(step) } },
    el("dt", {}, "After step"), el("dd", {}, String(step)),
    el("dt", {}, "Messages"), el("dd", {}, messages.length ? el("ol", {}, ...messages) : el("span", { class: "muted" }, "none")),
    el("dt", {}, "Extra"), el("dd", {}, el("pre", {}, JSON.stringify(state.extra || {}, null, 2)))));
}

function appendModelOutput(node, meta, data) {
  const key = (node || "?") + "\u0000" + (meta.stream_id ?? "");
  let stream = run.streams.get(key);
  if (!stream) {
    const text = el("p", { class: "stream-text" });
    const element = el("div", { class: "stream" },
      el("div", { class: "stream-head" }, `${node || "?"}${meta.stream_id ? " · " + meta.stream_id : ""}`),
      text);
    if (run.streams.size === 0) $("llm-output").replaceChildren();
    $("llm-output").append(element);
    stream = { node, streamId: meta.stream_id ?? null, text: "", final: false, error: false, element, textNode: text };
    run.streams.set(key, stream);
  }
  const isError = data.scope === "llm.error";
  if (isError) {
    stream.error = true;
    stream.element.classList.add("error");
    stream.textNode.append(el("strong", {}, (stream.text ? "\n" : "") + "error: " + data.message));
  } else {
    stream.text += data.message;
    stream.textNode.append(data.message);
  }
  if (meta.is_final || isError) {
    stream.final = true;
    stream.element.classList.add("final");
  }
}

/**
 * List one event; `where` (see locate) names its node by its path, sent tasks
 * as name[i]: "research › work[2]".
 */
function listEvent({ id = null, type, scope = "", node = null, where = null, message = "", end = false, ok = true }) {
  const list = $("events");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 24;
  const shown = where ? where.raw.join(" › ") : node || "";
  const task = where ? where.tasks[where.tasks.length - 1] : null;
  const dataset = { type, scope, node: node || "" };
  if (where) dataset.path = where.raw.join("/");
  if (task !== null && task !== undefined) dataset.task = String(task);
  const item = el("li", { dataset, class: end ? "stream-end" : null },
    el("span", { class: "ev-id" }, id ? "#" + id : ""),
    el("span", { class: "badge" }, type),
    el("span", { class: "ev-scope", title: scope }, scope),
    el("span", { class: "ev-node" + (where && where.nested ? " nested" : ""), title: shown + (task !== null && task !== undefined ? ` (sent task ${task})` : "") }, shown),
    el("span", { class: "ev-message" }, message),
  );
  if (id) item.dataset.id = id;
  if (end && !ok) item.classList.add("bad");
  list.append(item);
  while (list.childElementCount > MAX_LISTED_EVENTS) list.firstElementChild.remove();
  if (atBottom) list.scrollTop = list.scrollHeight;
}

/**
 * The stream-end event's facts, from its structured metadata (never from the
 * message text, which a session id or an error message could imitate).
 */
function readEnd(data) {
  const meta = data.metadata || {};
  const text = (value) => (typeof value === "string" && value ? value : null);
  return {
    message: data.message,
    session: text(meta.session_id),
    status: text(meta.status) || "unknown",
    step: Number.isInteger(meta.step) ? meta.step : null,
    error: text(meta.error),
  };
}

function finish(end) {
  run.end = end;
  if (end.session && end.session !== run.sessionId) learnSession(end.session);
  if (Number.isFinite(end.step)) run.lastStep = end.step;
  // Nothing runs after the end (a node cut short by a cancellation sent no
  // node.end: it is no longer highlighted, and not marked as run either).
  run.running.clear();
  if (end.status === "completed") run.done.add("END");
  applyNodeClasses();
  for (const stream of run.streams.values()) {
    stream.final = true;
    stream.element.classList.add("final");
  }
  if (run.closeOnEnd) run.closeOnEnd();
  run.close = null;
  updateProgress();
  setStatus(end.status, end.error ? `${end.status}: ${end.error}` : end.status);
  showFinalState(end);
  setBusy(false);
  const current = run;
  loadFinalState(end).finally(() => {
    if (current === run) document.body.dataset.state = "done";
  });
}

/** Ask the server for the state the run ended with, and show it. */
async function loadFinalState(end) {
  const session = end.session || run.sessionId;
  if (!session) return;
  const current = run;
  let info;
  try {
    const response = await fetch(`/runs/${encodeURIComponent(session)}/state`);
    if (!response.ok) return;
    info = await response.json();
  } catch (err) {
    return;
  }
  if (current !== run || !info.state) return;
  if ((info.interrupts || []).length || info.status === "interrupted") {
    showInterrupts(session, info.interrupts || [], info.next || []);
  }
  await loadHistory(session);
  if (current !== run) return;
  const state = info.state;
  const messages = (state.messages || []).map((m) =>
    el("li", {}, el("strong", {}, m.role + ": "), m.content));
  const versions = state.versions || {};
  const rows = [
    ["Messages", messages.length ? el("ol", { id: "final-messages" }, ...messages) : el("span", { class: "muted" }, "none")],
    ["Extra", el("pre", { id: "final-extra" }, JSON.stringify(state.extra || {}, null, 2))],
    ["Errors", String((state.errors || []).length)],
    ["Versions", `messages ${versions.messages} · extra ${versions.extra} · errors ${versions.errors}`],
  ];
  const list = $("final-state").querySelector("dl");
  if (!list) return;
  for (const [term, value] of rows) {
    list.append(el("dt", {}, term), el("dd", {}, value));
  }
}

/** The connection ended (or failed) without the stream-end event. */
function lost(current, reason) {
  if (current !== run || run.end) return;
  run.running.clear();
  applyNodeClasses();
  run.close = null;
  listEvent({ type: "client", message: reason });
  setStatus("disconnected", reason);
  setBusy(false);
  document.body.dataset.state = "closed";
}

function showFinalState(end) {
  const ran = [...run.ran].map(([node, info]) => {
    const steps = [...info.steps].sort((a, b) => a - b);
    const where = steps.length ? `step${steps.length > 1 ? "s" : ""} ${steps.join(", ")} · ` : "";
    return el("li", { dataset: { node } },
      el("code", {}, node),
      el("span", { class: "muted" }, ` — ${where}${info.events} event${info.events === 1 ? "" : "s"}`));
  });
  const outputs = [...run.streams.values()].map((s) =>
    el("div", { class: "stream final" + (s.error ? " error" : "") },
      el("div", { class: "stream-head" }, `${s.node || "?"}${s.streamId ? " · " + s.streamId : ""}`),
      el("pre", {}, s.text || (s.error ? "(failed)" : "(empty)"))));
  const counts = Object.entries(run.counts).map(([type, n]) => `${n} ${type}`).join(", ");
  const rows = [
    ["Session", el("code", {}, end.session || run.sessionId || "?")],
    ["Status", el("strong", {}, end.status)],
    ["Last step", String(end.step ?? run.lastStep ?? "?")],
    ["Nodes that ran", ran.length ? el("ol", {}, ...ran) : el("span", { class: "muted" }, "none seen in events")],
    ["Model output", outputs.length ? el("div", { id: "final-llm" }, ...outputs) : el("span", { class: "muted" }, "none")],
    ["Step updates", String(run.updates)],
    ["Events", `${run.events} (${counts || "none"})`],
    ["Missed events", String(run.drops)],
    ["Sentinel", el("code", {}, end.message)],
  ];
  if (end.error) rows.splice(2, 0, ["Error", el("code", {}, end.error)]);
  $("final-state").replaceChildren(el("dl", {},
    ...rows.flatMap(([term, value]) => [el("dt", {}, term), el("dd", {}, value)])));
}

// ====================================================================== connections

function readExtra() {
  const text = $("extra").value.trim();
  if (!text) return undefined;
  const value = JSON.parse(text);
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new Error("extra state must be a JSON object");
  }
  return value;
}

/** POST /runs and read the streamed answer frame by frame. */
async function startRun() {
  const body = {};
  const message = $("message").value;
  body.messages = message.trim() ? [{ role: "user", content: message }] : [];
  try {
    const extra = readExtra();
    if (extra) body.extra = extra;
  } catch (err) {
    setStatus("error", "extra: " + err.message);
    return;
  }
  const sessionId = $("session-id").value.trim();
  if (sessionId) body.session_id = sessionId;
  if (view.graph) body.graph = view.graph.graph;

  const current = resetView();
  if (sessionId) learnSession(sessionId);
  await streamRun(current, "/runs" + MODES, body, "run");
}

/**
 * POST `body` to `path` (a run or a resume) and read the streamed answer frame
 * by frame into `current`.
 */
async function streamRun(current, path, body, what) {
  const controller = new AbortController();
  current.close = () => controller.abort();

  let response;
  try {
    response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
  } catch (err) {
    lost(current, controller.signal.aborted ? "stopped" : `could not start the ${what}: ` + err.message);
    return;
  }
  if (!response.ok) {
    const info = await response.json().catch(() => ({}));
    lost(current, `the server refused the ${what} (HTTP ${response.status}): ${info.error || response.statusText}`);
    setStatus("failed", `refused: ${info.error || response.status}`);
    return;
  }
  if (current === run) setStatus("running", what === "run" ? "running" : "resumed");

  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const parser = new SSEParser((frame) => handleFrame(current, frame));
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.push(decoder.decode(value, { stream: true }));
    }
    parser.push(decoder.decode(), true);
    lost(current, "the connection closed before the run's end");
  } catch (err) {
    lost(current, controller.signal.aborted ? "stopped: this page closed the connection" : "connection lost: " + err.message);
  }
}

// ================================================================ human review

/**
 * Show the interrupts `session` is paused on, each with a field for its answer;
 * with none (a breakpoint), say which nodes run next and offer to resume.
 */
function showInterrupts(session, interrupts, next = []) {
  review.session = session;
  review.interrupts = interrupts;
  review.paused = true;
  $("review-session").textContent = session;
  $("answer").textContent = interrupts.length ? "Answer and resume" : "Resume";
  const items = interrupts.map((interrupt, i) => {
    const answer = el("textarea", {
      id: "answer-" + i, class: "answer", rows: 2, spellcheck: "false",
      dataset: { interrupt: interrupt.id },
      placeholder: "your answer (text, or JSON when ticked)",
    });
    const asJson = el("input", { type: "checkbox", class: "as-json", id: "as-json-" + i });
    return el("div", { class: "interrupt", dataset: { id: interrupt.id, node: interrupt.node } },
      el("div", { class: "interrupt-head" },
        el("code", {}, interrupt.node), " asks ",
        el("span", { class: "muted mono" }, "(" + interrupt.id + ")")),
      el("pre", { class: "payload" }, showValue(interrupt.payload)),
      el("label", { for: "answer-" + i }, "Answer"),
      answer,
      el("label", { class: "inline", for: "as-json-" + i }, asJson, "send as JSON"));
  });
  if (!items.length) {
    items.push(el("p", { class: "breakpoint" }, "Paused at a breakpoint; next: ",
      el("code", {}, next.join(", ") || "nothing")));
  }
  $("interrupts").replaceChildren(...items);
  $("review-panel").hidden = false;
  $("answer").disabled = false;
}

function hideInterrupts() {
  review.session = null;
  review.interrupts = [];
  review.paused = false;
  $("interrupts").replaceChildren();
  $("review-panel").hidden = true;
}

/** A payload as text: strings as they are, anything else as indented JSON. */
function showValue(value) {
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

/** Answer the pending interrupts, then follow the continuation like a run. */
async function answerInterrupts() {
  const session = review.session;
  if (!session || !review.paused) return;
  const answers = {};
  try {
    review.interrupts.forEach((interrupt, i) => {
      const text = $("answer-" + i).value;
      answers[interrupt.id] = $("as-json-" + i).checked ? JSON.parse(text) : text;
    });
  } catch (err) {
    setStatus("failed", "answer: not valid JSON (" + err.message + ")");
    return;
  }
  const ids = Object.keys(answers);
  const body = ids.length === 0 ? {} : ids.length === 1 ? { value: answers[ids[0]] } : { values: answers };
  if (view.graph) body.graph = view.graph.graph;
  hideInterrupts();
  const current = resetView();
  learnSession(session);
  await streamRun(current, "/runs/" + encodeURIComponent(session) + "/resume" + MODES, body, "resume");
}

// =============================================================== stored steps

/** Offer the session's stored steps on the slider (newest on the right). */
async function loadHistory(session) {
  let info;
  try {
    const response = await fetch(`/runs/${encodeURIComponent(session)}/history?limit=100`);
    if (!response.ok) {
      $("history-panel").hidden = true;
      return;
    }
    info = await response.json();
  } catch (err) {
    return;
  }
  const steps = (info.steps || []).map((s) => s.step).reverse();
  past.session = session;
  past.steps = steps;
  const slider = $("step-slider");
  slider.min = "0";
  slider.max = String(Math.max(0, steps.length - 1));
  slider.value = slider.max;
  slider.disabled = steps.length < 2;
  $("history-label").textContent = `${info.total} stored`;
  $("step-range").textContent = steps.length
    ? `(${steps[0]} to ${steps[steps.length - 1]}${info.has_next ? ", newest 100" : ""})` : "";
  $("history-panel").hidden = steps.length === 0;
  if (steps.length) await showStep(steps[steps.length - 1]);
}

/** Read the session's state after `step` and show it under the slider. */
async function showStep(step) {
  const session = past.session;
  const asked = ++past.asked;
  $("step-number").textContent = String(step);
  let info;
  try {
    const response = await fetch(`/runs/${encodeURIComponent(session)}/state?step=${step}`);
    info = await response.json();
    if (!response.ok) throw new Error(info.error || "HTTP " + response.status);
  } catch (err) {
    if (asked === past.asked) {
      $("step-view").replaceChildren(el("p", { class: "muted" }, "Could not read the step: " + err.message));
    }
    return;
  }
  if (asked !== past.asked || session !== past.session) return;  // a newer choice won
  const state = info.state || {};
  const messages = (state.messages || []).map((m) =>
    el("li", {}, el("strong", {}, m.role + ": "), m.content));
  const rows = [
    ["Step", el("strong", {}, String(info.step))],
    ["Status", String(info.status)],
    ["Next", (info.next || []).length ? info.next.join(", ") : el("span", { class: "muted" }, "nothing: complete")],
    ["Messages", messages.length ? el("ol", { class: "step-messages" }, ...messages) : el("span", { class: "muted" }, "none")],
    ["Extra", el("pre", { class: "step-extra" }, JSON.stringify(state.extra || {}, null, 2))],
  ];
  if ((info.interrupts || []).length) {
    rows.push(["Waiting on", info.interrupts.map((i) => i.node).join(", ")]);
  }
  if (info.forked_from) {
    rows.push(["Forked from", `${info.forked_from.session_id} at step ${info.forked_from.step}`]);
  }
  $("step-view").replaceChildren(el("dl", { dataset: { step: String(info.step) } },
    ...rows.flatMap(([term, value]) => [el("dt", {}, term), el("dd", {}, value)])));
  document.body.dataset.step = String(info.step);
}

/** Watch an existing session through EventSource (the browser resumes with Last-Event-ID). */
async function attach() {
  const sessionId = $("session-id").value.trim() || lastSessionId;
  if (!sessionId) {
    setStatus("failed", "enter the session id to attach to");
    $("session-id").focus();
    return;
  }
  setBusy(true);
  document.body.dataset.state = "running";
  // Show the session's own graph when the server knows which it is.
  try {
    const runs = await (await fetch("/runs")).json();
    const known = (runs.runs || []).find((r) => r.session_id === sessionId);
    if (known && known.graph && view.graph && known.graph !== view.graph.graph && view.graphs.includes(known.graph)) {
      await loadGraph(known.graph);
    }
  } catch (err) {
    // Listing runs is only a convenience; attaching works without it.
  }

  const current = resetView();
  learnSession(sessionId);
  const source = new EventSource("/runs/" + encodeURIComponent(sessionId) + "/events" + MODES);
  current.close = () => source.close();
  current.closeOnEnd = current.close;
  const onFrame = (event) => handleFrame(current, {
    id: event.type === "dropped" ? null : event.lastEventId,
    event: event.type,
    data: event.data,
  });
  for (const type of ["node", "diagnostic", "llm", "updates", "values", "dropped", "message"]) {
    source.addEventListener(type, onFrame);
  }
  source.onopen = () => { if (current === run && !run.end) setStatus("running", "attached"); };
  source.onerror = () => {
    if (current !== run || run.end) return;
    if (source.readyState === EventSource.CLOSED) {
      lost(current, `could not attach to ${sessionId} (unknown session?)`);
      source.close();
    } else {
      setStatus("running", "reconnecting…");
    }
  };
}

function stop() {
  if (!run.close || run.end) return;
  const closing = run.close;
  closing();
  lost(run, "stopped: this page closed the connection");
}

// ========================================================================= wiring

$("run-form").addEventListener("submit", (event) => {
  event.preventDefault();
  startRun();
});
$("message").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    if (!$("start").disabled) startRun();
  }
});
$("attach").addEventListener("click", attach);
$("review-form").addEventListener("submit", (event) => {
  event.preventDefault();
  answerInterrupts();
});
$("step-slider").addEventListener("input", (event) => {
  const step = past.steps[Number(event.target.value)];
  if (step !== undefined) showStep(step);
});
$("stop").addEventListener("click", stop);
$("graph-select").addEventListener("change", (event) => {
  loadGraph(event.target.value).catch(showGraphError);
});

function showGraphError(err) {
  $("graph").replaceChildren(el("p", { class: "placeholder" }, "Could not load the graph: " + err.message));
}

setBusy(false);
loadGraph(new URLSearchParams(location.search).get("graph"))
  .then(() => { document.body.dataset.state = "ready"; })
  .catch((err) => {
    showGraphError(err);
    document.body.dataset.state = "ready";
  });
