// The search page of `biomedica serve`: a query box, filters, a grid of hits, a sample view.
// Every caption, title and metadata value is hostile text: the page is built with text nodes
// and attributes only (never innerHTML with data), and only http(s) or same-server URLs are
// ever put in a link or an image.
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const K_CHOICES = ["10", "20", "50", "100"];
  const EXCERPT_CHARS = 220;
  const ALT_CHARS = 160;
  const LONG_VALUE_CHARS = 280;

  const form = $("search");
  const q = $("q");
  const k = $("k");
  const license = $("license");
  const yearFrom = $("year_from");
  const yearTo = $("year_to");
  const labelsBox = $("labels");
  const where = $("where");
  const composed = $("composed");
  const statusLine = $("status");
  const errorBox = $("error");
  const grid = $("grid");
  const imageInput = $("image");
  const imageGo = $("image-go");
  const imagePreview = $("image-preview");
  const view = $("view");

  let facets = null;
  let sequence = 0; // answers to anything but the latest request are dropped
  let inFlight = null;
  let lastFocus = null;
  let previewUrl = null;

  // ---- small builders ------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "className") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clip(text, limit) {
    const s = String(text || "").replace(/\s+/g, " ").trim();
    if (s.length <= limit) return s;
    const cut = s.slice(0, limit - 1);
    const space = cut.lastIndexOf(" ");
    return (space > limit * 0.7 ? cut.slice(0, space) : cut) + "…";
  }

  // A URL the page may load or link: http(s) anywhere, or a path on this server. Anything
  // else (javascript:, data:, a protocol-relative //host) is refused.
  function safeUrl(value) {
    if (typeof value !== "string" || !value) return null;
    let url;
    try {
      url = new URL(value, document.baseURI);
    } catch (err) {
      return null;
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") return null;
    if (value.startsWith("//") && url.origin !== location.origin) return null;
    return url.href;
  }

  // Text with the query's words marked, as nodes (never markup).
  function marked(text, words) {
    const frag = document.createDocumentFragment();
    const usable = words.filter((w) => w.length > 1);
    if (!usable.length) {
      frag.append(text);
      return frag;
    }
    const escaped = usable.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    const pattern = new RegExp("(" + escaped.join("|") + ")", "gi");
    let last = 0;
    for (const m of text.matchAll(pattern)) {
      if (m.index > last) frag.append(text.slice(last, m.index));
      frag.append(el("mark", { text: m[0] }));
      last = m.index + m[0].length;
    }
    if (last < text.length) frag.append(text.slice(last));
    return frag;
  }

  function queryWords(text) {
    return String(text || "").toLowerCase().match(/[\p{L}\p{N}]+/gu) || [];
  }

  // ---- the filter language ------------------------------------------------------------
  // A string literal of transforms/shard/row_filter.py (Python syntax): JSON's escapes are
  // all valid Python escapes, so any text becomes one literal and never code.
  function literal(text) {
    return JSON.stringify(String(text));
  }

  function year(input) {
    const text = input.value.trim();
    if (!text) return null;
    const n = Number(text);
    return Number.isInteger(n) ? n : NaN;
  }

  function chosenLabels() {
    return [...labelsBox.querySelectorAll("input[type=checkbox]:checked")].map((c) => c.value);
  }

  // The `where` text of the filters, or "" when none is set; throws on a year that is no
  // whole number (the user is told, nothing is sent).
  function composeWhere() {
    const parts = [];
    if (license.value) parts.push("article_license_group == " + literal(license.value));
    const from = year(yearFrom);
    const to = year(yearTo);
    for (const [value, input] of [[from, yearFrom], [to, yearTo]]) {
      input.setAttribute("aria-invalid", Number.isNaN(value) ? "true" : "false");
    }
    if (Number.isNaN(from) || Number.isNaN(to)) throw new Error("A year must be a whole number.");
    if (from !== null) parts.push("article_year >= " + from);
    if (to !== null) parts.push("article_year <= " + to);
    const labels = chosenLabels();
    if (labels.length) {
      parts.push("any_of(image_primary_label, [" + labels.map(literal).join(", ") + "])");
    }
    const advanced = where.value.trim();
    if (advanced) parts.push(parts.length ? "(" + advanced + ")" : advanced);
    return parts.join(" and ");
  }

  function showComposed() {
    try {
      composed.textContent = composeWhere() || "(none)";
    } catch (err) {
      composed.textContent = err.message;
    }
  }

  // ---- URL state: ?q=&k=&license=&from=&to=&label=...&where= --------------------------

  function stateFromControls() {
    const params = new URLSearchParams();
    if (q.value.trim()) params.set("q", q.value.trim());
    if (k.value !== "20") params.set("k", k.value);
    if (license.value) params.set("license", license.value);
    if (yearFrom.value.trim()) params.set("from", yearFrom.value.trim());
    if (yearTo.value.trim()) params.set("to", yearTo.value.trim());
    for (const label of chosenLabels()) params.append("label", label);
    if (where.value.trim()) params.set("where", where.value.trim());
    return params;
  }

  function ensureOption(select, value) {
    if (![...select.options].some((o) => o.value === value)) {
      select.append(el("option", { value: value, text: value }));
    }
  }

  function controlsFromState(params) {
    q.value = params.get("q") || "";
    k.value = K_CHOICES.includes(params.get("k")) ? params.get("k") : "20";
    const group = params.get("license") || "";
    if (group) ensureOption(license, group);
    license.value = group;
    yearFrom.value = params.get("from") || "";
    yearTo.value = params.get("to") || "";
    const wanted = new Set(params.getAll("label"));
    for (const label of wanted) addLabel(label, null);
    for (const box of labelsBox.querySelectorAll("input[type=checkbox]")) {
      box.checked = wanted.has(box.value);
    }
    where.value = params.get("where") || "";
    if (where.value) $("advanced").open = true;
    showComposed();
  }

  function hasSearch(params) {
    return ["q", "license", "from", "to", "label", "where"].some((name) => params.has(name));
  }

  // ---- facets: the filter choices and the model notices -------------------------------

  function addLabel(label, count) {
    if (labelsBox.querySelector("p.hint")) labelsBox.textContent = "";
    const existing = [...labelsBox.querySelectorAll("input")].find((i) => i.value === label);
    if (existing) {
      // A label first seen in the URL gets its count once the facets arrive.
      const text = existing.nextElementSibling;
      if (count !== null && !text.querySelector(".n")) text.append(el("span", { className: "n", text: " " + count }));
      return existing;
    }
    const id = "label-" + labelsBox.children.length;
    const box = el("input", { type: "checkbox", id: id, value: label, form: "search" });
    box.addEventListener("change", () => search(true));
    labelsBox.append(
      el(
        "div",
        { className: "label-choice" },
        box,
        el("label", { for: id }, label, count === null ? null : el("span", { className: "n", text: " " + count }))
      )
    );
    return box;
  }

  function notice(kind, text) {
    $("notices").append(el("p", { className: "notice " + kind, role: kind === "loud" ? "alert" : null, text: text }));
  }

  function showFacets(data) {
    facets = data;
    const samples = Number(data.samples) || 0;
    const model = typeof data.model === "string" ? data.model : "unknown model";
    $("dataset").textContent = samples.toLocaleString("en") + " samples · model " + model;
    $("notices").textContent = "";
    if (data.random_weights) {
      notice(
        "loud",
        "RANDOM WEIGHTS: the embedding model " + model + " was never trained. Semantic and " +
          "image-search rankings are noise; keyword search and filters are unaffected."
      );
    }
    if (!data.semantic) {
      notice(
        "quiet",
        "Semantic search off: the " + model + " model has no text tower; text queries match " +
          "keywords only. Image search still works."
      );
    }
    const current = license.value;
    const groups = Object.entries(data.license_groups || {}).sort((a, b) => b[1] - a[1]);
    for (const [group, count] of groups) {
      ensureOption(license, group);
      const option = [...license.options].find((o) => o.value === group);
      option.textContent = group + " (" + Number(count).toLocaleString("en") + ")";
    }
    license.value = current;
    const years = Object.keys(data.years || {}).map(Number).filter(Number.isInteger).sort((a, b) => a - b);
    if (years.length) {
      for (const input of [yearFrom, yearTo]) {
        input.min = years[0];
        input.max = years[years.length - 1];
      }
      yearFrom.placeholder = String(years[0]);
      yearTo.placeholder = String(years[years.length - 1]);
    }
    const labels = Object.entries(data.labels || {}).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
    for (const [label, count] of labels) addLabel(label, Number(count).toLocaleString("en"));
  }

  // ---- talking to the API --------------------------------------------------------------

  // The API's JSON error message, or a line about what else went wrong.
  async function failure(response) {
    let message = "";
    let code = "";
    try {
      const body = await response.json();
      if (body && body.error) {
        message = String(body.error.message || "");
        code = String(body.error.code || "");
      }
    } catch (err) {
      // not JSON: a proxy's page, say
    }
    const error = new Error(message || "The server answered " + response.status + " " + response.statusText);
    error.code = code;
    error.status = response.status;
    return error;
  }

  async function getJson(url, options) {
    const response = await fetch(url, Object.assign({ headers: { Accept: "application/json" } }, options || {}));
    if (!response.ok) throw await failure(response);
    return response.json();
  }

  function showError(err) {
    errorBox.textContent = "";
    errorBox.append(el("strong", { text: "Error: " }), el("span", { className: "message", text: err.message || String(err) }));
    if (err.code) errorBox.append(" ", el("span", { className: "code", text: "(" + err.code + ")" }));
    errorBox.hidden = false;
  }

  function clearError() {
    errorBox.hidden = true;
    errorBox.textContent = "";
  }

  // main#results carries the state of the last search (searching, done, failed, idle) and a
  // count of finished ones: what a person's screen reader hears as status, a test waits on.
  const results = $("results");
  let finished = 0;
  results.dataset.state = "idle";
  results.dataset.searches = "0";

  function settle(state) {
    results.dataset.state = state;
    if (state !== "searching") results.dataset.searches = String(++finished);
  }

  function begin(what) {
    sequence += 1;
    settle("searching");
    if (inFlight) inFlight.abort();
    inFlight = new AbortController();
    clearError();
    grid.setAttribute("aria-busy", "true");
    statusLine.textContent = what;
    return { id: sequence, signal: inFlight.signal };
  }

  async function runRequest(url, options, words, label) {
    const request = begin("Searching…");
    try {
      const data = await getJson(url, Object.assign({ signal: request.signal }, options));
      if (request.id !== sequence) return;
      showHits(data, words, label);
      settle("done");
    } catch (err) {
      if (request.id !== sequence || err.name === "AbortError") return;
      grid.textContent = "";
      statusLine.textContent = "The search failed.";
      showError(err);
      settle("failed");
    } finally {
      if (request.id === sequence) grid.removeAttribute("aria-busy");
    }
  }

  function searchParams(filter) {
    const params = new URLSearchParams();
    params.set("k", k.value);
    if (filter) params.set("where", filter);
    return params;
  }

  function search(push) {
    let filter;
    try {
      filter = composeWhere();
    } catch (err) {
      clearError();
      showError(err);
      settle("failed");
      return;
    }
    composed.textContent = filter || "(none)";
    const text = q.value.trim();
    const state = stateFromControls();
    const address = state.toString() ? "?" + state.toString() : location.pathname;
    if (push && location.search !== (state.toString() ? "?" + state.toString() : "")) {
      history.pushState(null, "", address);
    }
    document.title = text ? text + " · BIOMEDICA search" : "BIOMEDICA search";
    if (!text && !filter) {
      sequence += 1;
      grid.textContent = "";
      clearError();
      statusLine.textContent = "Type words and press Enter, or choose a filter.";
      settle("idle");
      return;
    }
    const params = searchParams(filter);
    params.set("q", text);
    runRequest("search?" + params.toString(), {}, queryWords(text), null);
  }

  function searchByImage() {
    const file = imageInput.files && imageInput.files[0];
    if (!file) return;
    let filter;
    try {
      filter = composeWhere();
    } catch (err) {
      showError(err);
      settle("failed");
      return;
    }
    const body = new FormData();
    body.append("file", file, file.name);
    runRequest(
      "search/image?" + searchParams(filter).toString(),
      { method: "POST", body: body },
      [],
      file.name
    );
  }

  // ---- the grid ------------------------------------------------------------------------

  function groupBadge(group) {
    const text = String(group || "unknown");
    return el("span", { className: "badge group", "data-group": text, text: text });
  }

  function labelChips(labels) {
    const primary = labels && Array.isArray(labels.primary) ? labels.primary : [];
    if (!primary.length) return null;
    return el("ul", { className: "chips", "aria-label": "Labels" }, ...primary.map((l) => el("li", { text: String(l) })));
  }

  function thumbnail(hit, eager) {
    const src = safeUrl(hit.image_url);
    const alt = clip(hit.caption, ALT_CHARS) || "figure " + hit.key;
    const img = el("img", {
      alt: alt,
      width: 240,
      height: 180,
      loading: eager ? "eager" : "lazy",
      decoding: "async",
    });
    img.addEventListener("error", () => img.closest(".thumb").classList.add("broken"));
    if (src) img.src = src;
    return img;
  }

  function card(hit, index, words) {
    const open = el(
      "button",
      { type: "button", className: "thumb", "aria-label": "Open " + (hit.key || "sample") + ": " + clip(hit.caption, 80) },
      thumbnail(hit, index < 8),
      el("span", { className: "broken-note", text: "image unavailable" })
    );
    open.addEventListener("click", () => openView(hit, open));
    const meta = [hit.article_journal, hit.article_year].filter((v) => v !== null && v !== undefined && v !== "");
    const item = el(
      "li",
      { className: "hit", "data-key": String(hit.key || "") },
      open,
      el("p", { className: "caption" }, marked(clip(hit.caption, EXCERPT_CHARS), words)),
      el(
        "p",
        { className: "badges" },
        el("span", { className: "badge license", text: String(hit.article_license || "no license") }),
        " ",
        groupBadge(hit.article_license_group)
      ),
      el("p", { className: "journal", text: meta.join(" · ") }),
      labelChips(hit.labels),
      el(
        "p",
        { className: "score" },
        el("span", { className: "key", text: String(hit.key || "") }),
        " ",
        (Array.isArray(hit.sources) ? hit.sources.join("+") : "") +
          (typeof hit.score === "number" ? " " + hit.score.toFixed(4) : "")
      )
    );
    // The whole card opens the view; the button is what the keyboard reaches.
    item.addEventListener("click", (event) => {
      if (event.target.closest("button, a")) return;
      openView(hit, open);
    });
    return item;
  }

  function showHits(data, words, imageName) {
    const hits = Array.isArray(data.hits) ? data.hits : [];
    grid.textContent = "";
    grid.append(...hits.map((hit, i) => card(hit, i, words)));
    const parts = [];
    const what = imageName ? "figures like " + imageName : data.query ? "“" + data.query + "”" : "the filter";
    parts.push(hits.length + (hits.length === 1 ? " hit for " : " hits for ") + what);
    if (typeof data.total_matching === "number") {
      parts.push(data.total_matching.toLocaleString("en") + " samples match the filter");
    }
    if (!imageName) parts.push(data.semantic ? "keyword + semantic" : "keyword");
    if (typeof data.took_ms === "number") parts.push(data.took_ms.toFixed(1) + " ms");
    statusLine.textContent = parts.join(" · ");
  }

  // ---- the sample view -----------------------------------------------------------------

  function fact(name, ...values) {
    return [el("dt", { text: name }), el("dd", {}, ...values)];
  }

  function valueNode(value) {
    if (value === null || value === undefined || value === "") return el("span", { className: "none", text: "—" });
    let text;
    if (Array.isArray(value)) {
      if (!value.length) return el("span", { className: "none", text: "[]" });
      text = value.every((v) => typeof v !== "object" || v === null)
        ? value.map((v) => String(v)).join(", ")
        : JSON.stringify(value, null, 1);
    } else if (typeof value === "object") {
      text = JSON.stringify(value, null, 1);
    } else {
      text = String(value);
    }
    if (text.length <= LONG_VALUE_CHARS) return el("span", { className: "value", text: text });
    // Long values (the article's text, its abstract) fold away behind their opening.
    return el(
      "details",
      { className: "long" },
      el("summary", { text: clip(text, 120) + " (" + text.length.toLocaleString("en") + " characters)" }),
      el("div", { className: "value", text: text })
    );
  }

  async function loadMetadata(hit) {
    const status = $("view-meta-status");
    const body = $("view-meta").tBodies[0];
    body.textContent = "";
    const url = safeUrl(hit.sample_url);
    if (!url) {
      status.textContent = "No metadata link for this sample.";
      return;
    }
    status.textContent = "Loading…";
    try {
      const sample = await getJson(url);
      if (view.dataset.key !== String(hit.key)) return;
      const rows = Object.keys(sample || {}).sort().map((name) =>
        el("tr", {}, el("th", { scope: "row", text: name }), el("td", {}, valueNode(sample[name])))
      );
      body.append(...rows);
      status.textContent = rows.length + " fields from ";
      status.append(el("a", { href: url, target: "_blank", rel: "noopener", text: "the sample's JSON" }));
    } catch (err) {
      if (view.dataset.key !== String(hit.key)) return;
      status.textContent = "";
      status.append(el("span", { className: "error-text", text: "Metadata failed: " + err.message }));
    }
  }

  function openView(hit, from) {
    lastFocus = from || document.activeElement;
    view.dataset.key = String(hit.key || "");
    $("view-key").textContent = [hit.key, hit.pmcid].filter(Boolean).join(" · ");
    const title = $("view-title");
    title.textContent = "";
    const pmc = safeUrl(hit.pmc_url);
    const titleText = String(hit.article_title || hit.pmcid || hit.key || "untitled");
    if (pmc) {
      title.append(el("a", { className: "pmc", href: pmc, target: "_blank", rel: "noopener noreferrer", text: titleText }));
    } else {
      title.textContent = titleText;
    }
    const image = $("view-image");
    image.removeAttribute("src");
    image.alt = clip(hit.caption, ALT_CHARS) || "figure " + hit.key;
    const src = safeUrl(hit.image_url);
    if (src) image.src = src;
    $("view-caption").textContent = String(hit.caption || "");
    const facts = $("view-facts");
    facts.textContent = "";
    const labels = hit.labels || {};
    const parts = [
      fact("License", el("span", { className: "badge license", text: String(hit.article_license || "none") }), " ", groupBadge(hit.article_license_group)),
      fact("Journal", [hit.article_journal, hit.article_year].filter((v) => v !== null && v !== undefined && v !== "").join(" · ") || "—"),
      fact("Primary labels", labelChips(labels) || el("span", { className: "none", text: "—" })),
      fact("Secondary labels", Array.isArray(labels.secondary) && labels.secondary.length ? labels.secondary.join(", ") : "—"),
      fact("Cluster", labels.cluster_id === null || labels.cluster_id === undefined ? "—" : String(labels.cluster_id)),
    ];
    if (pmc) {
      parts.push(fact("PMC", el("a", { className: "pmc-link", href: pmc, target: "_blank", rel: "noopener noreferrer", text: pmc })));
    }
    if (src) {
      parts.push(fact("Image", el("a", { href: src, target: "_blank", rel: "noopener", text: "full size" })));
    }
    for (const pair of parts) facts.append(...pair);
    if (!view.open) view.showModal();
    $("view-close").focus();
    loadMetadata(hit);
  }

  function closeView() {
    if (view.open) view.close();
  }

  view.addEventListener("close", () => {
    view.dataset.key = "";
    if (lastFocus && document.contains(lastFocus)) lastFocus.focus();
  });
  // A click on the backdrop (outside the dialog's box) closes it too.
  view.addEventListener("click", (event) => {
    if (event.target !== view) return;
    const box = view.getBoundingClientRect();
    const inside = event.clientX >= box.left && event.clientX <= box.right &&
      event.clientY >= box.top && event.clientY <= box.bottom;
    if (!inside) closeView();
  });
  $("view-close").addEventListener("click", closeView);

  // ---- wiring --------------------------------------------------------------------------

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    search(true);
  });
  where.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      search(true);
    }
  });
  for (const control of [license, yearFrom, yearTo, where]) {
    control.addEventListener("input", showComposed);
  }
  license.addEventListener("change", () => search(true));
  $("clear").addEventListener("click", () => {
    license.value = "";
    yearFrom.value = "";
    yearTo.value = "";
    where.value = "";
    for (const box of labelsBox.querySelectorAll("input[type=checkbox]")) box.checked = false;
    showComposed();
    search(true);
  });
  imageInput.addEventListener("change", () => {
    const file = imageInput.files && imageInput.files[0];
    imageGo.disabled = !file;
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = null;
    imagePreview.hidden = true;
    if (!file) return;
    previewUrl = URL.createObjectURL(file);
    imagePreview.src = previewUrl;
    imagePreview.alt = "the image searched for: " + file.name;
    imagePreview.hidden = false;
    searchByImage();
  });
  imageGo.addEventListener("click", searchByImage);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && view.open) {
      event.preventDefault();
      closeView();
    } else if (event.key === "/" && !view.open && !/^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName)) {
      event.preventDefault();
      q.focus();
    }
  });
  window.addEventListener("popstate", () => {
    closeView();
    const params = new URLSearchParams(location.search);
    controlsFromState(params);
    search(false);
  });

  // The filters stick below the top bar, whose height changes with its notices and width.
  const topbar = document.querySelector(".topbar");
  const measure = () => document.documentElement.style.setProperty("--topbar", topbar.offsetHeight + "px");
  if (window.ResizeObserver) new ResizeObserver(measure).observe(topbar);
  measure();

  async function start() {
    const params = new URLSearchParams(location.search);
    controlsFromState(params);
    try {
      showFacets(await getJson("facets"));
      controlsFromState(params); // again: the facets' options are there now
    } catch (err) {
      showError(new Error("Filters unavailable: " + err.message));
    }
    if (hasSearch(params)) search(false);
    else q.focus();
  }

  start();
})();
