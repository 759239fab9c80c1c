// The report's behaviour: draws the graph views from the embedded data (laid out in
// Python), switches stages, links graph <-> text <-> arena <-> profile. No network.
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const G = D.graph;
const NS = "http://www.w3.org/2000/svg";
const DX = 112, DY = 34, NW = 100, NH = 22, LH = 16, PAD = 6;  // a slot is DX wide, a layer DY tall
const ROLE_NAMES = ["input", "forward", "adjoint", "recompute", "update", "tangent"];
const stored = new Set(G.stored), copies = new Set(G.copies), originals = new Set(G.recomputed);
const svg = document.getElementById("graph");
const pre = document.getElementById("text");
const mark = document.getElementById("mark");
const textWrap = document.getElementById("textwrap");
const tip = document.getElementById("tip");
let view = null, items = [], stage = 0, selected = null, box = null;
let item_of = new Map();  // node id -> the item of the current view that holds it

function el(name, attrs, parent) {
  const e = document.createElementNS(NS, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}

// An item's top-left corner: layers run top to bottom, slots (and bands) left to right.
function at(it) { return [it[1] * DX + 10, it[0] * DY + 10]; }

function render(name) {
  view = G.views[name];
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const world = el("g", {id: "world"}, svg);
  for (const b of view.boxes) {
    const g = el("g", {class: "kbox"}, world);
    el("rect", {x: b[1] * DX + 2, y: b[0] * DY + 3, width: (b[3] - b[1]) * DX + NW + 16,
                height: (b[2] - b[0]) * DY + NH + 14, rx: 6}, g);
    el("text", {x: b[3] * DX + NW + 12, y: b[2] * DY + NH + 14, "text-anchor": "end"}, g).textContent = b[4];
  }
  const edges = el("g", {class: "edges"}, world);
  items = view.items.map((it, k) => ({data: it, k: k, ins: [], outs: []}));
  for (const [a, b] of view.edges) {
    const [x1, y1] = at(view.items[a]), [x2, y2] = at(view.items[b]);
    const sx = x1 + NW / 2, sy = y1 + NH / 2, tx = x2 + NW / 2, ty = y2 + NH / 2, my = (sy + ty) / 2;
    const path = el("path", {class: "edge", d: `M${sx},${sy} C${sx},${my} ${tx},${my} ${tx},${ty}`}, edges);
    items[a].outs.push([b, path]);
    items[b].ins.push([a, path]);
  }
  const nodes = el("g", {class: "nodes"}, world);
  for (const item of items) {
    const [x, y] = at(item.data), members = item.data[4];
    const cls = ["node", "role" + item.data[2]];
    if (members.some((i) => stored.has(i))) cls.push("stored");
    if (members.some((i) => copies.has(i))) cls.push("copy");
    if (members.some((i) => originals.has(i))) cls.push("orig");
    const g = el("g", {class: cls.join(" "), transform: `translate(${x},${y})`, "data-item": item.k}, nodes);
    el("rect", {width: NW, height: NH, rx: 4}, g);
    const label = item.data[3] + (members.length > 1 ? ` ·${members.length}` : "");
    el("text", {x: 5, y: 15}, g).textContent = label.length > 15 ? label.slice(0, 14) + "…" : label;
    item.g = g;
  }
  item_of = new Map();
  for (const item of items) for (const i of item.data[4]) item_of.set(i, item);
  for (const b of document.querySelectorAll("#views button")) b.classList.toggle("on", b.dataset.view === name);
  fit();
  if (selected !== null) selectNode(selected);
}

function fit() {
  let w = 0, h = 0;
  for (const it of view.items) { const [x, y] = at(it); w = Math.max(w, x + NW + 10); h = Math.max(h, y + NH + 10); }
  const r = svg.getBoundingClientRect();
  let scale = Math.min(r.width / w, r.height / h, 1.2);
  if (scale < 0.5) scale = Math.min(Math.max(r.width / w, 0.7), 1);  // too big to read whole: its top, readable
  box = {x: 0, y: 0, w: r.width / scale, h: r.height / scale};
  setBox();
}
function setBox() { svg.setAttribute("viewBox", `${box.x} ${box.y} ${box.w} ${box.h}`); }

svg.addEventListener("wheel", (e) => {
  e.preventDefault();
  const r = svg.getBoundingClientRect(), f = e.deltaY > 0 ? 1.15 : 1 / 1.15;
  const px = box.x + (e.clientX - r.left) / r.width * box.w, py = box.y + (e.clientY - r.top) / r.height * box.h;
  box = {x: px - (px - box.x) * f, y: py - (py - box.y) * f, w: box.w * f, h: box.h * f};
  setBox();
}, {passive: false});
let drag = null;
svg.addEventListener("mousedown", (e) => { drag = {x: e.clientX, y: e.clientY, box: {...box}}; });
window.addEventListener("mouseup", () => { drag = null; });
window.addEventListener("mousemove", (e) => {
  if (!drag) return;
  const r = svg.getBoundingClientRect();
  box.x = drag.box.x - (e.clientX - drag.x) / r.width * box.w;
  box.y = drag.box.y - (e.clientY - drag.y) / r.height * box.h;
  setBox();
});

function describe(item) {
  const members = item.data[4];
  if (members.length === 1) {
    const i = members[0], n = G.nodes[i];
    const kernel = n[5] >= 0 ? `kernel ${n[5]} (${G.kernels[n[5]][0]})` : "no kernel";
    const marks = [stored.has(i) && "stored for the backward pass", copies.has(i) && "recomputed copy",
                   originals.has(i) && "recomputed in the backward pass"].filter(Boolean);
    return `%${i} = ${n[0]}${n[2] ? " " + n[2] : ""}\n${n[1]}\n${n[3] || "no location"}\n${ROLE_NAMES[n[4]]}, ${kernel}` +
           (marks.length ? "\n" + marks.join(", ") : "");
  }
  const count = (f) => {
    const c = {};
    for (const i of members) c[f(G.nodes[i])] = (c[f(G.nodes[i])] || 0) + 1;
    return Object.entries(c).sort((a, b) => b[1] - a[1]).slice(0, 6).map(([k, v]) => `${k} ×${v}`).join(", ");
  };
  return `${item.data[3]}: ${members.length} nodes (%${members[0]} … %${members[members.length - 1]})\n` +
         `ops: ${count((n) => n[0])}\nroles: ${count((n) => ROLE_NAMES[n[4]])}\nat: ${count((n) => n[6] || "?")}`;
}
svg.addEventListener("mouseover", (e) => {
  const g = e.target.closest("g.node");
  if (!g) return;
  tip.textContent = describe(items[+g.dataset.item]);
  tip.style.display = "block";
  tip.style.left = Math.min(e.clientX + 14, window.innerWidth - 380) + "px";
  tip.style.top = (e.clientY + 14) + "px";
});
svg.addEventListener("mouseout", (e) => { if (e.target.closest("g.node")) tip.style.display = "none"; });
svg.addEventListener("click", (e) => {
  const g = e.target.closest("g.node");
  if (g) selectItem(items[+g.dataset.item]);
});

function clearMarks() {
  for (const c of ["sel", "operand", "user", "hot", "kern"])
    for (const e of document.querySelectorAll("." + c)) e.classList.remove(c);
}

function reveal(item) {
  // Pan (keeping the zoom) so an item selected from the text, the arena or the profile is in view.
  const [x, y] = at(item.data);
  if (x < box.x || x + NW > box.x + box.w) box.x = Math.max(0, x + NW / 2 - box.w / 2);
  if (y < box.y || y + NH > box.y + box.h) box.y = Math.max(0, y - box.h / 3);
  setBox();
}

function selectItem(item) {
  clearMarks();
  reveal(item);
  item.g.classList.add("sel");
  for (const [a, path] of item.ins) { items[a].g.classList.add("operand"); path.classList.add("hot"); }
  for (const [b, path] of item.outs) { items[b].g.classList.add("user"); path.classList.add("hot"); }
  const members = item.data[4];
  selected = members[0];
  const wanted = new Set(members);
  for (const r of document.querySelectorAll("[data-node]")) if (wanted.has(+r.dataset.node)) r.classList.add("sel");
  const kernels = new Set(members.map((i) => G.nodes[i][5]));
  for (const r of document.querySelectorAll(".bar[data-kernel]")) if (kernels.has(+r.dataset.kernel)) r.classList.add("sel");
  document.getElementById("selected").textContent = describe(item).split("\n").slice(0, 3).join("   ");
  linkText();
}

function selectNode(i) {
  const item = item_of.get(i);
  if (item) selectItem(item);
}

function selectKernel(k) {
  const members = new Set(G.kernels[k][1]);
  const first = items.find((it) => it.data[4].some((i) => members.has(i)));
  if (first) selectItem(first);
  for (const it of items) if (it.data[4].some((i) => members.has(i))) it.g.classList.add("kern");
  const schedule = D.stages.findIndex((s) => s.kernels[k] !== undefined);  // the first naming kernels
  if (schedule >= 0) showStage(schedule);
  markLine(D.stages[stage].kernels[k]);
}

function linkText() {
  if (selected === null) return;
  const s = D.stages[stage], n = G.nodes[selected];
  let line = s.nodes[selected];
  if (line === undefined && n[5] >= 0) line = s.kernels[n[5]];
  markLine(line);
}

function markLine(line) {
  if (line === undefined) { mark.style.display = "none"; return; }
  mark.style.display = "block";
  mark.style.top = (PAD + line * LH) + "px";
  textWrap.scrollTop = Math.max(0, PAD + line * LH - textWrap.clientHeight / 3);
}

function showStage(k) {
  stage = k;
  pre.textContent = D.stages[k].text;
  for (const b of document.querySelectorAll("#stages button")) b.classList.toggle("on", +b.dataset.stage === k);
  mark.style.display = "none";
  textWrap.scrollTop = 0;
  linkText();
}

pre.addEventListener("click", (e) => {
  const r = pre.getBoundingClientRect();
  const line = Math.floor((e.clientY - r.top - PAD) / LH), s = D.stages[stage];
  for (const id in s.nodes) if (s.nodes[id] === line) { selectNode(+id); return; }
  for (const k in s.kernels) if (s.kernels[k] === line) { selectKernel(+k); return; }
});

const stageBar = document.getElementById("stages");
D.stages.forEach((s, k) => {
  const b = document.createElement("button");
  b.textContent = s.name;
  b.dataset.stage = k;
  b.title = Object.keys(s.nodes).length ? "lines link to the graph's nodes" : "";
  b.addEventListener("click", () => showStage(k));
  stageBar.appendChild(b);
});
for (const name of Object.keys(G.views)) {
  const b = document.createElement("button");
  b.textContent = name;
  b.dataset.view = name;
  b.addEventListener("click", () => render(name));
  document.getElementById("views").appendChild(b);
}
document.getElementById("fit").addEventListener("click", fit);
for (const r of document.querySelectorAll("[data-node]"))
  r.addEventListener("click", () => selectNode(+r.dataset.node));
for (const r of document.querySelectorAll(".bar[data-kernel]"))
  r.addEventListener("click", () => selectKernel(+r.dataset.kernel));

render(G.nodes.length > D.collapse_above && G.views.kernels ? "kernels" : "nodes");
showStage(D.first_stage);
window.ffReportReady = performance.now();
