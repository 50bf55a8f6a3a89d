// ksent's page: plain JavaScript over the server's own JSON API (POST /predict, GET /v1/models/<name>).
// No library and no build step: the page is a form, a list and an SVG chart; everything comes from ksent serve.
"use strict";

const $ = (id) => document.getElementById(id);
let modelLoaded;            // loadModel()'s promise: the server's limits, which the requests keep within
let textColumns = [];       // the text column(s) the served model's corpus declares: a CSV's reviews by default

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

const svgNS = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(svgNS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function showMessage(box, text, kind = "error") {
  box.textContent = text;
  box.classList.toggle("info", kind === "info");
  box.hidden = !text;
}

// An answer of the API as JSON; a non-2xx answer becomes an Error carrying the server's message.
async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    throw new Error(`the server did not answer (${error.message}); is ksent serve still running?`);
  }
  let payload = null;
  try { payload = await response.json(); } catch (error) { /* not JSON: status below */ }
  if (!response.ok) {
    throw new Error(payload && payload.error ? payload.error : `the server answered ${response.status}`);
  }
  return payload;
}

// --- the model panel ------------------------------------------------------------------------------

const fmt = (x, digits = 4) => (typeof x === "number" ? x.toFixed(digits) : "–");

async function loadModel() {
  const { model: name } = await api("health");
  const status = await api(`v1/models/${encodeURIComponent(name)}`);
  const limits = status.limits;
  const info = status.metadata || {};
  const metrics = info.metrics || {};
  const training = info.training || {};
  const rows = [
    ["Name", name], ["Corpus", info.corpus], ["Tokenization", info.tokenization],
    ["Runtime", info.runtime],
    ["Test accuracy", metrics.accuracy !== undefined
      ? `${fmt(metrics.accuracy)} on ${(metrics.n_test || 0).toLocaleString("en")} reviews` : "not evaluated"],
  ];
  if (metrics.balanced_accuracy !== undefined) {
    rows.push(["Balanced accuracy", `${fmt(metrics.balanced_accuracy)} (recall: 부정 ${fmt(metrics.recall_negative)}, ` +
      `긍정 ${fmt(metrics.recall_positive)})`]);
  }
  rows.push(["Validation accuracy", fmt(metrics.val_accuracy ?? metrics.best_val_accuracy ?? training.best_val_accuracy)]);
  rows.push(["Threshold", `긍정 when P(긍정) ≥ ${info.threshold ?? 0.5} (chosen on the validation split)`]);
  if (info.members) rows.push(["Members", info.members.join(", ")]);
  if (info.adapted_from) {
    rows.push(["Adapted from", `${info.adapted_from.name} (trained on ${info.adapted_from.corpus}), fine-tuned on ` +
      `${info.corpus}`]);
  }
  rows.push(["Limits", `${limits.max_texts} reviews per request, explanations for up to ${limits.max_explain}`]);
  $("model").replaceChildren(...rows.flatMap(([key, value]) => [el("dt", {}, key), el("dd", {}, String(value ?? "–"))]));
  textColumns = info.text_columns || [];
  const cm = metrics.confusion_matrix;
  if (cm) {
    for (const key of ["tn", "fp", "fn", "tp"]) $(`cm-${key}`).textContent = cm[key].toLocaleString("en");
    $("confusion").hidden = false;
  }
  return limits;
}

// --- one review's result --------------------------------------------------------------------------

// Background of a token: red towards 부정, green towards 긍정, alpha by |effect_logit| / the review's largest.
function tokenColour(effectLogit, scale) {
  const strength = scale > 0 ? Math.min(1, Math.abs(effectLogit) / scale) : 0;
  const alpha = (0.08 + 0.77 * strength).toFixed(3);
  return effectLogit >= 0 ? `rgba(31, 122, 77, ${alpha})` : `rgba(179, 38, 30, ${alpha})`;
}

function tokenList(tokens) {
  const scale = Math.max(0, ...tokens.map((t) => Math.abs(t.effect_logit)));
  const list = el("div", { class: "tokens", role: "list", "aria-label": "tokens and their effect" });
  for (const t of tokens) {
    const numbers = `effect ${t.effect >= 0 ? "+" : ""}${t.effect.toFixed(4)} ` +
      `(log-odds ${t.effect_logit >= 0 ? "+" : ""}${t.effect_logit.toFixed(2)}), ` +
      `without it ${t.without.toFixed(4)}, after reading it ${t.prefix.toFixed(4)}${t.oov ? ", unknown token" : ""}`;
    const strong = Math.abs(t.effect_logit) > 0.55 * scale;
    list.append(el("span", {
      class: `token${t.oov ? " oov" : ""}`, role: "listitem", tabindex: "0", title: numbers,
      "aria-label": `${t.token}: ${numbers}`, "data-effect-logit": String(t.effect_logit),
      style: `background: ${tokenColour(t.effect_logit, scale)}; color: ${strong ? "#fff" : "inherit"}`,
    }, t.token));
  }
  return list;
}

// "Probability while reading": P(positive) before the first token and after each one, as an SVG line.
function readingChart(explanation) {
  const points = [explanation.start, ...explanation.tokens.map((t) => t.prefix)];
  const width = 520, height = 120, left = 30, right = 8, top = 8, bottom = 22;
  const x = (i) => left + (points.length > 1 ? (i * (width - left - right)) / (points.length - 1) : 0);
  const y = (p) => top + (1 - p) * (height - top - bottom);
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": "probability of 긍정 while reading: " + points.map((p) => p.toFixed(2)).join(", ") });
  chart.append(svg("title", {}, "P(긍정) while reading the review, token by token"));
  for (const p of [0, 0.5, 1]) {
    chart.append(svg("line", { x1: left, x2: width - right, y1: y(p), y2: y(p), stroke: "#d8dde6",
      "stroke-dasharray": p === 0.5 ? "4 3" : "" }));
    chart.append(svg("text", { x: left - 4, y: y(p) + 3, "text-anchor": "end" }, p.toFixed(1)));
  }
  chart.append(svg("polyline", { points: points.map((p, i) => `${x(i)},${y(p)}`).join(" "), fill: "none",
    stroke: "#2957a4", "stroke-width": 2 }));
  points.forEach((p, i) => {
    const dot = svg("circle", { cx: x(i), cy: y(p), r: 3, fill: p >= 0.5 ? "#1f7a4d" : "#b3261e" });
    dot.append(svg("title", {}, i === 0 ? `start: ${p.toFixed(4)}`
                                        : `${explanation.tokens[i - 1].token}: ${p.toFixed(4)}`));
    chart.append(dot);
  });
  chart.append(svg("text", { x: left, y: height - 6 }, "start"));
  chart.append(svg("text", { x: width - right, y: height - 6, "text-anchor": "end" },
    `${explanation.tokens.length} tokens read`));
  return chart;
}

// An explanation: a bundle's tokens and chart, or an ensemble's members / a router's experts, each in turn.
// `said`: the review's own caption already says that no token is known (so an empty part says nothing more).
function explanationView(explanation, said = false) {
  if (explanation.experts || explanation.members) {
    const parts = explanation.experts || explanation.members;
    return el("div", {}, ...parts.map((part) => el("div", { class: "member" },
      el("p", { class: "member-title" }, explanation.experts
        ? `${part.domain} expert ${part.name} (gate weight ${part.weight.toFixed(2)}): P(긍정) ${part.probability.toFixed(4)}`
        : `member ${part.name} (weight ${part.weight.toFixed(2)}): P(긍정) ${part.probability.toFixed(4)}`),
      explanationView(part, said))));
  }
  if (!explanation.tokens.length) {
    return said ? el("div") : el("p", { class: "chart-caption" }, "No tokens: the model's answer to an empty review.");
  }
  const parts = [tokenList(explanation.tokens), readingChart(explanation),
    el("p", { class: "chart-caption" }, "P(긍정) while reading, token by token (dashed: 0.5).")];
  if (explanation.truncated_tokens) {
    parts.push(el("p", { class: "chart-caption" }, `${explanation.truncated_tokens} tokens beyond the model's length were not read.`));
  }
  return el("div", { class: "explanation" }, ...parts);
}

function resultView(record) {
  const positive = record.sentiment === "positive";
  const percent = (record.probability * 100).toFixed(1);
  const head = el("div", { class: "result-head" },
    el("span", { class: `verdict ${positive ? "positive" : "negative"}`, "data-sentiment": record.sentiment },
      positive ? "긍정" : "부정"),
    el("span", { class: "bar", role: "meter", "aria-valuemin": "0", "aria-valuemax": "1",
      "aria-valuenow": String(record.probability), "aria-label": "probability of 긍정" },
      el("span", { style: `width: ${percent}%` })),
    el("span", { class: "probability" }, `P(긍정) ${record.probability.toFixed(4)}`));
  const item = el("li", { class: "result" }, head, el("p", { class: "text" }, record.text || "(empty line)"));
  if (record.unknown) {
    item.append(el("p", { class: "chart-caption unknown" }, record.empty
      ? "Nothing to read after cleaning: the model's answer to an empty review."
      : "No token the model knows: its answer says nothing about this review."));
  }
  if (record.explanation) item.append(explanationView(record.explanation, record.unknown));
  return item;
}

// --- the form -------------------------------------------------------------------------------------

async function classify(event) {
  event.preventDefault();
  const box = $("message");
  const texts = $("reviews").value.split(/\r?\n/).map((line) => line.trim()).filter((line) => line);
  const clearResults = () => { $("results").replaceChildren(); $("legend").hidden = true; };
  if (!texts.length) {
    clearResults();           // no stale results under a message about other input
    showMessage(box, "Type at least one review (one per line).");
    $("reviews").focus();
    return;
  }
  const button = $("classify");
  button.disabled = true;
  showMessage(box, "");
  try {
    const limits = await modelLoaded;
    let explain = $("explain").checked;
    let note = "";
    if (explain && texts.length > limits.max_explain) {
      explain = false;
      note = `Explanations are given for up to ${limits.max_explain} reviews at a time; ` +
             `these ${texts.length} are classified without them.`;
    }
    const answer = await api("predict", { texts, explain });
    $("results").replaceChildren(...answer.predictions.map(resultView));
    $("legend").hidden = !explain;
    if (note) showMessage(box, note, "info");
  } catch (error) {
    clearResults();
    showMessage(box, `Could not classify: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

// --- files ----------------------------------------------------------------------------------------

// RFC 4180 CSV: quoted fields may hold commas, quotes ("") and line breaks. A quote that opens a field and does
// not close (before the end, or within MAX_ROW_LINES lines) is refused naming its line, as ksent's readers refuse
// it: a stray quote would otherwise swallow every row after it.
const MAX_ROW_LINES = 500;
function parseCsv(text) {
  const rows = [];
  let row = [], field = "", quoted = false, line = 1, openedOn = 0;
  const runaway = (until) => new Error(`line ${openedOn.toLocaleString("en")}: a quoted field opens here and does ` +
    `not close ${until} - a stray quote? Fix that row (a quote inside a quoted field is written twice, "")`);
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') { field += '"'; i++; } else quoted = false;
      } else {
        field += c;
        if (c === "\n" && ++line - openedOn > MAX_ROW_LINES) throw runaway(`within ${MAX_ROW_LINES} lines`);
      }
    } else if (c === '"') { quoted = true; openedOn = line; }
    else if (c === ",") { row.push(field); field = ""; }
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      row.push(field); rows.push(row); row = []; field = ""; line++;
    } else field += c;
  }
  if (quoted) throw runaway("before the end of the file");
  if (field !== "" || row.length) { row.push(field); rows.push(row); }
  return rows;
}

// The column of a CSV header that holds the reviews: the one chosen in the column picker, else the text column
// the served model's corpus declares, else the only column; -1 when the user must choose (never silently
// the first).
function textColumn(header) {
  const picker = $("column");
  if (!picker.hidden && picker.value !== "") return Number(picker.value);
  const names = header.map((h) => h.trim());
  for (const wanted of textColumns) {
    const at = names.indexOf(wanted);
    if (at >= 0) return at;
  }
  for (const wanted of textColumns) {
    const at = names.findIndex((h) => h.toLowerCase() === wanted.toLowerCase());
    if (at >= 0) return at;
  }
  return names.length === 1 ? 0 : -1;
}

// Offer the header's columns to choose from, none chosen.
function askForColumn(header) {
  const picker = $("column");
  picker.replaceChildren(el("option", { value: "" }, "choose the column…"),
    ...header.map((h, i) => el("option", { value: String(i) }, h)));
  picker.hidden = false;
  $("column-label").hidden = false;
  picker.focus();
}

// The reviews of a file: a CSV's text column (see textColumn), or a text file's lines; `column` null when the
// user must first choose the CSV's text column.
function reviewsOf(name, content) {
  content = content.replace(/^\ufeff/, "");
  if (/\.csv$/i.test(name)) {
    const rows = parseCsv(content);
    if (!rows.length) return { texts: [], column: null };
    const column = textColumn(rows[0]);
    if (column < 0) return { texts: null, header: rows[0] };
    return { texts: rows.slice(1).map((r) => r[column] ?? ""), column: rows[0][column] };
  }
  const lines = content.split(/\r?\n/);
  if (lines.length && lines[lines.length - 1] === "") lines.pop();
  return { texts: lines, column: null };
}

// Requests of at most max_texts texts and (with room for the JSON around them) max_body_bytes bytes.
function chunks(texts, limits) {
  const encoder = new TextEncoder();
  const limit = limits.max_body_bytes - 64;
  const out = [];
  let current = [], bytes = 16;
  for (const text of texts) {
    const size = encoder.encode(JSON.stringify(text)).length + 1;
    if (current.length && (current.length >= limits.max_texts || bytes + size > limit)) {
      out.push(current); current = []; bytes = 16;
    }
    if (bytes + size > limit) throw new Error(`a review of ${size.toLocaleString("en")} bytes is larger than the ` +
                                              `server accepts (${limits.max_body_bytes.toLocaleString("en")})`);
    current.push(text); bytes += size;
  }
  if (current.length) out.push(current);
  return out;
}

// A CSV cell; a text that a spreadsheet would run as a formula (=, +, -, @, or a tab or CR first) gets a leading
// ' (OWASP's rule for CSV injection), which spreadsheets show but do not run.
function csvField(value) {
  let text = String(value);
  if (typeof value === "string" && /^[=+\-@\t\r]/.test(text)) text = "'" + text;
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

// The position of the first byte that is not valid UTF-8 (null if there is none): { line, offset }.
function invalidUtf8At(bytes) {
  let line = 1;
  for (let i = 0; i < bytes.length;) {
    const b = bytes[i];
    const need = b < 0x80 ? 0 : b >= 0xc2 && b < 0xe0 ? 1 : b >= 0xe0 && b < 0xf0 ? 2 : b >= 0xf0 && b < 0xf5 ? 3 : -1;
    if (need < 0) return { line, offset: i };
    for (let k = 1; k <= need; k++) {
      if (i + k >= bytes.length || (bytes[i + k] & 0xc0) !== 0x80) return { line, offset: i };
    }
    if (b === 0x0a) line++;
    i += need + 1;
  }
  return null;
}

// A file's text, refused (as `ksent predict --file` refuses it) when it is not UTF-8.
async function utf8Text(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (error) {
    const at = invalidUtf8At(bytes) || { line: "?", offset: "?" };
    throw new Error(`${file.name} is not UTF-8 text (line ${at.line}, byte ${at.offset}; Korean text saved as ` +
      "CP949/EUC-KR looks like this): convert it, e.g. iconv -f CP949 -t UTF-8, or save it as UTF-8");
  }
}

async function classifyFile() {
  const box = $("file-message");
  const link = $("download");
  const file = $("file").files[0];
  link.hidden = true;
  if (!file) {
    showMessage(box, "Choose a .txt or .csv file first.");
    return;
  }
  const button = $("classify-file");
  button.disabled = true;
  try {
    await modelLoaded;                          // the declared text column comes with the model
    const { texts, column, header } = reviewsOf(file.name, await utf8Text(file));
    if (texts === null) {
      askForColumn(header);
      const declared = textColumns.length ? ` (the model's corpus names it “${textColumns.join("”, “")}”)` : "";
      showMessage(box, `Which column of ${file.name} holds the reviews${declared}? Choose it above, then ` +
        "classify the file again.", "info");
      return;
    }
    if (!texts.length) throw new Error(`${file.name} holds no reviews`);
    const records = [];
    const parts = chunks(texts, await modelLoaded);
    for (const [i, part] of parts.entries()) {
      showMessage(box, `Classifying ${file.name}: request ${i + 1} of ${parts.length}…`, "info");
      records.push(...(await api("predict", { texts: part, explain: false })).predictions);
    }
    const lines = ["text,label,sentiment,probability,empty,unknown",
      ...records.map((r) => [r.text, r.label, r.sentiment, r.probability, r.empty, r.unknown].map(csvField).join(","))];
    const positives = records.filter((r) => r.label === 1).length;
    if (link.href) URL.revokeObjectURL(link.href);
    // UTF-8 with a byte-order mark, so that spreadsheet programs show the Korean text
    link.href = URL.createObjectURL(new Blob(["\ufeff" + lines.join("\r\n") + "\r\n"], { type: "text/csv" }));
    link.download = `${file.name.replace(/\.[^.]*$/, "")}-ksent.csv`;
    link.hidden = false;
    showMessage(box, `${records.length.toLocaleString("en")} reviews classified` +
      `${column !== null ? ` (column “${column}”)` : ""}: ${positives.toLocaleString("en")} 긍정, ` +
      `${(records.length - positives).toLocaleString("en")} 부정.`, "info");
  } catch (error) {
    showMessage(box, `Could not classify the file: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("review-form").addEventListener("submit", classify);
  $("reviews").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("review-form").requestSubmit();
  });
  $("classify-file").addEventListener("click", classifyFile);
  $("file").addEventListener("change", () => {        // a new file: its own columns
    $("column").hidden = true;
    $("column-label").hidden = true;
    $("column").replaceChildren();
  });
  modelLoaded = loadModel();
  modelLoaded.catch((error) => {
    $("model").replaceChildren(el("dt", {}, "Error"), el("dd", {}, error.message));
  });
});
