// The browser side of mi_cluster.plotting.check: loads each SVG of window.FIGURES (file
// URLs) in turn, as the reader sees it, and writes what is wrong with each as JSON into
// <pre id="result">. All of it synchronous (the page's load is the end of the check); one
// SVG at a time, its embedded font renamed, so no figure borrows another's glyphs.
"use strict";

const SHRINK = 1.5; // px taken off each side of a text box: glyph boxes touch in a paragraph
const SLACK = 1; // px a text may pass the canvas edge (anti-aliasing)

function visible(el) {
  for (let e = el; e && e.tagName !== "svg"; e = e.parentElement) {
    const s = getComputedStyle(e);
    if (s.display === "none" || s.visibility === "hidden" || Number(s.opacity) === 0) {
      return false;
    }
    if (e.classList && (e.classList.contains("hoverlayer") || e.classList.contains("modebar"))) {
      return false;
    }
  }
  return true;
}

function corners(svg, el) {
  const b = el.getBBox();
  const m = svg.getScreenCTM().inverse().multiply(el.getScreenCTM());
  const pts = [
    [b.x, b.y],
    [b.x + b.width, b.y],
    [b.x + b.width, b.y + b.height],
    [b.x, b.y + b.height],
  ];
  const shrunk = pts.map(([x, y]) => [
    x + (x === b.x ? SHRINK : -SHRINK),
    y + (y === b.y ? SHRINK : -SHRINK),
  ]);
  const map = ([x, y]) => [m.a * x + m.c * y + m.e, m.b * x + m.d * y + m.f];
  return { full: pts.map(map), core: shrunk.map(map), small: b.width < 2 * SHRINK };
}

function project(poly, [ax, ay]) {
  const d = poly.map(([x, y]) => x * ax + y * ay);
  return [Math.min(...d), Math.max(...d)];
}

function intersect(p, q) {
  // separating axes of two convex quadrilaterals
  for (const poly of [p, q]) {
    for (let i = 0; i < poly.length; i++) {
      const [x1, y1] = poly[i];
      const [x2, y2] = poly[(i + 1) % poly.length];
      const axis = [y1 - y2, x2 - x1];
      const [a0, a1] = project(p, axis);
      const [b0, b1] = project(q, axis);
      if (a1 <= b0 || b1 <= a0) return false;
    }
  }
  return true;
}

function label(el) {
  const t = el.textContent.trim();
  return t.length > 40 ? t.slice(0, 37) + "..." : t;
}

const NUMBER = /^[−\-+]?(\d+([.,]\d+)*|\.\d+)(e[−\-+]?\d+)?\s*[%kMGTmµμnpf]?$/;

function axisProblems(svg) {
  const out = [];
  const ticks = {};
  for (const g of svg.querySelectorAll("g[class$='tick']")) {
    const m = /^([xy]\d*)tick$/.exec(g.getAttribute("class"));
    if (!m || !visible(g)) continue;
    const t = g.textContent.trim();
    if (t) (ticks[m[1]] = ticks[m[1]] || []).push(t);
  }
  for (const [axis, texts] of Object.entries(ticks)) {
    if (!texts.every((t) => NUMBER.test(t))) continue;
    const title = svg.querySelector(`.g-${axis}title`);
    if (!title || !title.textContent.trim()) {
      out.push(`axis ${axis} carries numbers (${texts.slice(0, 3).join(", ")}) but has no title`);
    }
  }
  return out;
}

// Texts that belong outside every plot area: tick labels, axis and figure titles, colour bars.
const FRAME_TEXT = "g[class$='tick'] text, [class^='g-'][class$='title'] text, .colorbar text";

function plotAreas(svg) {
  const out = [];
  for (const plot of svg.querySelectorAll(".cartesianlayer [clip-path]")) {
    const ref = /url\(['"]?#([^'")]+plot)['"]?\)/.exec(plot.getAttribute("clip-path"));
    const clip = ref && svg.querySelector(`[id="${ref[1]}"] rect`);
    if (!clip) continue;
    const m = svg.getScreenCTM().inverse().multiply(plot.getScreenCTM());
    const w = Number(clip.getAttribute("width"));
    const h = Number(clip.getAttribute("height"));
    out.push([[m.e, m.f], [m.e + w, m.f], [m.e + w, m.f + h], [m.e, m.f + h]]);
  }
  return out;
}

function check(svg) {
  const W = svg.viewBox.baseVal.width || svg.width.baseVal.value;
  const H = svg.viewBox.baseVal.height || svg.height.baseVal.value;
  const problems = [];
  const boxes = [];
  for (const el of svg.querySelectorAll("text")) {
    if (!el.textContent.trim() || !visible(el)) continue;
    if (el.closest(".slider-container, .updatemenu-container")) continue;
    const box = corners(svg, el);
    const xs = box.full.map((p) => p[0]);
    const ys = box.full.map((p) => p[1]);
    const over = Math.max(-Math.min(...xs), -Math.min(...ys), Math.max(...xs) - W, Math.max(...ys) - H);
    if (over > SLACK) {
      problems.push(`text "${label(el)}" leaves the canvas by ${over.toFixed(0)} px`);
    }
    if (!box.small) boxes.push([el, box.core]);
  }
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      if (intersect(boxes[i][1], boxes[j][1])) {
        problems.push(`texts "${label(boxes[i][0])}" and "${label(boxes[j][0])}" overlap`);
      }
    }
  }
  const areas = plotAreas(svg);
  for (const el of svg.querySelectorAll(FRAME_TEXT)) {
    if (!el.textContent.trim() || !visible(el)) continue;
    const box = corners(svg, el);
    if (!box.small && areas.some((a) => intersect(a, box.core))) {
      problems.push(`text "${label(el)}" lies over a plot area`);
    }
  }
  const heatmaps = svg.querySelectorAll(".hm").length;
  const bars = svg.querySelectorAll(".colorbar");
  if (heatmaps && !bars.length) problems.push(`${heatmaps} heatmap(s) and no colour bar`);
  for (const bar of bars) {
    const title = bar.querySelector(".cbtitle");
    if (!title || !title.textContent.trim()) problems.push("a colour bar without a title");
  }
  for (const c of svg.querySelectorAll(".slider-container, .updatemenu-container")) {
    if (c.children.length) problems.push("animation controls (slider or buttons) in a still image");
  }
  return problems.concat(axisProblems(svg));
}

function load(url) {
  const request = new XMLHttpRequest();
  request.open("GET", url, false); // synchronous: the page is done when its load ends
  request.send();
  return request.responseText;
}

function embedFonts(text, family) {
  // Each embedded @font-face becomes a FontFace made from its bytes (ready at once, no
  // waiting on the event loop), under a family name of this figure's own.
  const rule = /@font-face\{[^}]*font-weight:(\w+);src:url\(data:font\/ttf;base64,([^)]+)\)[^}]*\}/g;
  for (const [, weight, data] of text.matchAll(rule)) {
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    const face = new FontFace(family, bytes, { weight });
    document.fonts.add(face);
  }
  return text.split("Source Sans Pro").join(family);
}

function main() {
  const result = {};
  const stage = document.getElementById("stage");
  for (let k = 0; k < window.FIGURES.length; k++) {
    const url = window.FIGURES[k];
    try {
      stage.innerHTML = embedFonts(load(url), `checked-font-${k}`);
      result[url] = check(stage.querySelector("svg"));
    } catch (err) {
      result[url] = [`could not be checked: ${err}`];
    }
    stage.innerHTML = "";
  }
  document.getElementById("result").textContent = JSON.stringify(result);
}

main();
