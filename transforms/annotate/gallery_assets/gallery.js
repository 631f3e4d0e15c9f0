// The annotator's gallery: contact sheets of clusters and controls to label them.
// Data comes from the JSON block the page embeds; every piece of it is hostile text, so the
// page is built with text nodes and attributes only (never innerHTML).
(function () {
  "use strict";

  const DATA = JSON.parse(document.getElementById("gallery-data").textContent);
  const CLUSTERS = Array.isArray(DATA.cluster_list) ? DATA.cluster_list : [];
  const BY_ID = new Map(CLUSTERS.map((c) => [String(c.cluster_id), c]));
  const IDS = CLUSTERS.map((c) => String(c.cluster_id)).sort((a, b) => Number(a) - Number(b));
  const TAXONOMY = DATA.taxonomy && typeof DATA.taxonomy === "object" ? DATA.taxonomy : {};
  const GLOBALS = Object.keys(TAXONOMY);
  const PARENT = new Map();
  for (const g of GLOBALS) for (const l of TAXONOMY[g] || []) if (!PARENT.has(l)) PARENT.set(l, g);
  const PANEL_TYPES = DATA.panel_types || ["single", "multiple"];
  const PANEL_SUBTYPES = DATA.panel_subtypes || ["single panel"];
  // Labels belong to cluster ids of one clustering model: keep each model's work apart.
  const STORAGE_KEY = "biomedica-gallery:v1:" +
    [DATA.cluster_model, DATA.embedding_model, DATA.clusters, DATA.pca_dims].join(":");
  // Thumbnails are written beside the page by annotate; nothing else may be loaded.
  const THUMB = /^thumbs\/[A-Za-z0-9_-][A-Za-z0-9._-]*$/;
  const PAGE_SIZES = [10, 25, 50, 100];

  // ---- labels: the expert's from the summary, overlaid by this browser's edits ----------

  function blank() {
    return { panel_type: "", panel_subtype: "", global_class: [], local_class: [] };
  }

  function strings(value) {
    return Array.isArray(value) ? value.filter((v) => typeof v === "string") : [];
  }

  // A label in BIOMEDICA's shape, or null when `value` is not one.
  function normalise(value) {
    if (!value || typeof value !== "object" || Array.isArray(value)) return null;
    return {
      panel_type: typeof value.panel_type === "string" ? value.panel_type : "",
      panel_subtype: typeof value.panel_subtype === "string" ? value.panel_subtype : "",
      global_class: strings(value.global_class),
      local_class: strings(value.local_class),
    };
  }

  function isEmpty(label) {
    return !label || (!label.panel_type && !label.panel_subtype &&
      !label.global_class.length && !label.local_class.length);
  }

  // Saved only when complete: a panel type, a subtype and at least one global concept.
  function state(label) {
    if (isEmpty(label)) return "unlabelled";
    if (label.panel_type && label.panel_subtype && label.global_class.length) return "labelled";
    return "incomplete";
  }

  let edits = {};
  let storageNote = "";

  function loadEdits() {
    try {
      const raw = window.localStorage.getItem(STORAGE_KEY);
      if (!raw) return;
      const stored = JSON.parse(raw);
      if (!stored || typeof stored.edits !== "object") return;
      for (const [id, value] of Object.entries(stored.edits)) {
        if (BY_ID.has(id)) edits[id] = value === null ? null : normalise(value);
      }
    } catch (err) {
      storageNote = "Labels of an earlier visit could not be read: " + err;
    }
  }

  function keepEdits() {
    try {
      window.localStorage.setItem(STORAGE_KEY, JSON.stringify({ version: 1, edits: edits }));
    } catch (err) {
      say("This browser does not keep labels (" + err + "): save them to a file.");
    }
  }

  function current(id) {
    if (Object.prototype.hasOwnProperty.call(edits, id)) return edits[id];
    return normalise(BY_ID.get(id).expert);
  }

  function setLabel(id, label) {
    edits[id] = label === null ? null : normalise(label);
    keepEdits();
    const sheet = SHEETS.get(id);
    if (sheet) sync(sheet);
    updateCounts();
  }

  function copyOf(id) {
    const label = current(id);
    return label ? normalise(label) : blank();
  }

  // cluster_labels.json: every complete label, keys in numeric order.
  function labelsFile() {
    const out = {};
    for (const id of IDS) {
      const label = current(id);
      if (state(label) === "labelled") {
        out[id] = {
          panel_type: label.panel_type,
          panel_subtype: label.panel_subtype,
          global_class: label.global_class.slice(),
          local_class: label.local_class.slice(),
        };
      }
    }
    return out;
  }

  // ---- small DOM helpers ------------------------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function option(value, text, selected) {
    const node = el("option", { value: value }, text);
    node.selected = Boolean(selected);
    return node;
  }

  function describe(label) {
    if (isEmpty(label)) return "none";
    const parts = [label.panel_type || "no panel type", label.panel_subtype || "no subtype"];
    const concepts = (label.global_class.join(", ") || "no global concept") +
      (label.local_class.length ? " › " + label.local_class.join(", ") : "");
    return parts.join(" · ") + " — " + concepts;
  }

  function score(value) {
    return typeof value === "number" && isFinite(value) ? value.toFixed(2) : "–";
  }

  let statusTimer = null;
  function say(message) {
    const node = document.getElementById("status");
    node.textContent = message;
    clearTimeout(statusTimer);
    statusTimer = setTimeout(() => { node.textContent = ""; }, 8000);
  }

  // ---- the top bar --------------------------------------------------------------------------

  const view = { status: "all", concept: "", sort: "id", size: 25, page: 0, ids: IDS.slice() };

  function suggestedGlobals(cluster) {
    const found = new Set();
    for (const s of Array.isArray(cluster.suggested) ? cluster.suggested : []) {
      for (const g of strings(s && s.global_class)) found.add(g);
    }
    return found;
  }

  function conceptOptions() {
    const counts = new Map();
    let none = 0;
    for (const c of CLUSTERS) {
      const found = suggestedGlobals(c);
      if (!found.size) none += 1;
      for (const g of found) counts.set(g, (counts.get(g) || 0) + 1);
    }
    const names = GLOBALS.filter((g) => counts.has(g))
      .concat([...counts.keys()].filter((g) => !GLOBALS.includes(g)).sort());
    const opts = [option("", "any", true)];
    for (const g of names) opts.push(option("g:" + g, g + " (" + counts.get(g) + ")"));
    if (none) opts.push(option("none", "no suggestion (" + none + ")"));
    return opts;
  }

  function control(labelText, input) {
    return el("label", { class: "tool" }, el("span", { text: labelText }), input);
  }

  function topBar() {
    const status = el("select", { id: "filter-status", onchange: (e) => refilter({ status: e.target.value }) },
      option("all", "all clusters", true), option("unlabelled", "unlabelled"),
      option("incomplete", "incomplete"), option("labelled", "labelled"));
    const concept = el("select", { id: "filter-concept", onchange: (e) => refilter({ concept: e.target.value }) },
      ...conceptOptions());
    const sort = el("select", { id: "sort", onchange: (e) => refilter({ sort: e.target.value }) },
      option("id", "cluster id", true), option("size", "size, largest first"));
    const size = el("select", { id: "page-size", onchange: (e) => refilter({ size: Number(e.target.value) }) },
      ...PAGE_SIZES.map((n) => option(String(n), String(n), n === view.size)));
    const goto = el("input", { id: "goto", type: "number", min: "0", inputmode: "numeric", class: "goto",
      onkeydown: (e) => { if (e.key === "Enter") jump(e.target.value); } });
    const load = el("input", { id: "load", type: "file", accept: ".json,application/json",
      onchange: (e) => { if (e.target.files[0]) readLabels(e.target.files[0]); e.target.value = ""; } });
    const meta = [CLUSTERS.length + " clusters",
      DATA.embedding_model ? "embeddings: " + DATA.embedding_model : null,
      DATA.cluster_model ? "model: " + DATA.cluster_model : null,
      DATA.pca_dims ? "PCA " + DATA.pca_dims + " dims" : null].filter(Boolean).join(" · ");
    return el("header", { class: "topbar" },
      el("a", { class: "skip", href: "#sheets" }, "Skip to clusters"),
      el("div", { class: "title" },
        el("h1", { text: "Cluster gallery" }),
        el("span", { class: "meta", text: meta }),
        DATA.random_weights ? el("strong", { class: "warn",
          text: "Embeddings from randomly initialised weights: clusters carry no meaning." }) : null),
      el("div", { class: "toolbar", role: "toolbar", "aria-label": "Filter and files" },
        control("Show", status), control("Suggested concept", concept), control("Sort by", sort),
        control("Per page", size),
        el("span", { class: "tool" }, el("label", { for: "goto", text: "Go to cluster" }), goto,
          el("button", { type: "button", onclick: () => jump(goto.value) }, "Go")),
        el("span", { id: "count", class: "count", "aria-live": "polite" }),
        el("span", { class: "files" },
          el("button", { id: "save", type: "button", class: "primary", onclick: save },
            "Save cluster_labels.json"),
          el("label", { class: "load", for: "load" }, "Load labels…"), load)),
      el("div", { id: "status", class: "status", role: "status", "aria-live": "polite" }));
  }

  function pager(where) {
    return el("nav", { class: "pager", "aria-label": "Pages (" + where + ")" },
      el("button", { type: "button", class: "prev", onclick: () => turn(-1) }, "‹ Previous"),
      el("span", { class: "where" }),
      el("button", { type: "button", class: "next", onclick: () => turn(1) }, "Next ›"));
  }

  function updateCounts() {
    let done = 0;
    let partial = 0;
    for (const id of IDS) {
      const s = state(current(id));
      if (s === "labelled") done += 1;
      else if (s === "incomplete") partial += 1;
    }
    document.getElementById("count").textContent = "Labelled " + done + " of " + IDS.length +
      (partial ? " · " + partial + " incomplete (not saved until complete)" : "");
  }

  function updatePager() {
    const pages = Math.max(1, Math.ceil(view.ids.length / view.size));
    const first = view.page * view.size;
    const last = Math.min(view.ids.length, first + view.size);
    const text = view.ids.length
      ? "Page " + (view.page + 1) + " of " + pages + " · clusters " + (first + 1) + "–" + last +
        " of " + view.ids.length + " shown"
      : "No cluster matches the filter";
    for (const nav of document.querySelectorAll(".pager")) {
      nav.querySelector(".where").textContent = text;
      nav.querySelector(".prev").disabled = view.page === 0;
      nav.querySelector(".next").disabled = view.page >= pages - 1;
    }
  }

  // The filter is applied when it changes, not on every edit, so a sheet being labelled
  // does not vanish under the annotator's hands.
  function refilter(change) {
    Object.assign(view, change || {}, { page: 0 });
    let ids = IDS.filter((id) => {
      if (view.status !== "all" && state(current(id)) !== view.status) return false;
      if (!view.concept) return true;
      const found = suggestedGlobals(BY_ID.get(id));
      return view.concept === "none" ? found.size === 0 : found.has(view.concept.slice(2));
    });
    if (view.sort === "size") {
      ids = ids.slice().sort((a, b) => (Number(BY_ID.get(b).size) || 0) - (Number(BY_ID.get(a).size) || 0) ||
        Number(a) - Number(b));
    }
    view.ids = ids;
    render();
  }

  function turn(step) {
    const pages = Math.max(1, Math.ceil(view.ids.length / view.size));
    view.page = Math.min(pages - 1, Math.max(0, view.page + step));
    render();
    document.getElementById("sheets").scrollIntoView();
  }

  function jump(value) {
    const id = String(parseInt(value, 10));
    if (!BY_ID.has(id)) { say("No cluster " + value + "."); return; }
    if (!view.ids.includes(id)) {
      document.getElementById("filter-status").value = "all";
      document.getElementById("filter-concept").value = "";
      Object.assign(view, { status: "all", concept: "" });
      refilter();
    }
    view.page = Math.floor(view.ids.indexOf(id) / view.size);
    render();
    const sheet = SHEETS.get(id);
    sheet.root.scrollIntoView();
    sheet.panelType.focus();
  }

  // ---- contact sheets ----------------------------------------------------------------------

  const SHEETS = new Map();

  function render() {
    SHEETS.clear();
    const main = document.getElementById("sheets");
    const slice = view.ids.slice(view.page * view.size, (view.page + 1) * view.size);
    main.replaceChildren(...slice.map((id) => sheet(id)));
    if (!IDS.length) main.append(el("p", { class: "empty", text: "This summary holds no cluster." }));
    updatePager();
  }

  function member(m) {
    const key = typeof m.key === "string" ? m.key : "";
    const caption = typeof m.caption === "string" ? m.caption : "";
    const terms = strings(m.terms).join(", ");
    const src = typeof m.thumbnail === "string" && THUMB.test(m.thumbnail) ? m.thumbnail : null;
    const picture = src
      ? el("img", { src: src, alt: key, loading: "lazy", decoding: "async", width: "104", height: "104",
        onerror: (e) => e.target.closest("figure").classList.add("missing") })
      : el("div", { class: "nothumb", text: "no thumbnail" });
    const distance = typeof m.distance === "number" ? "distance " + m.distance.toFixed(3) + "\n" : "";
    return el("figure", { class: "member", title: key + "\n" + distance + caption },
      picture,
      el("figcaption", {},
        el("span", { class: "key", text: key }),
        terms ? el("span", { class: "mterms", text: terms }) : null,
        caption ? el("span", { class: "caption", text: caption }) : null));
  }

  function info(cluster, id, sheetRef) {
    const top = Array.isArray(cluster.top_terms) ? cluster.top_terms : [];
    const suggested = (Array.isArray(cluster.suggested) ? cluster.suggested : []).filter((s) => s);
    const applied = cluster.applied && typeof cluster.applied === "object" ? cluster.applied : null;
    const termList = top.length
      ? el("ul", { class: "chips" }, ...top.slice(0, 12).map((t) =>
        el("li", {}, String(t.term), el("span", { class: "n", text: " " + (t.count ?? "") }))))
      : el("p", { class: "none", text: "none" });
    const suggestions = suggested.length
      ? el("ol", { class: "suggestions" }, ...suggested.map((s, i) => el("li", {},
        el("span", { class: "source", text: String(s.source || "?") + " " + score(s.score) }),
        " ", el("span", { text: describe(normalise(s)) }), " ",
        el("button", { type: "button", class: "small",
          "aria-label": "Use suggestion " + (i + 1) + " for cluster " + id,
          onclick: () => accept(id, i) }, "Use"))))
      : el("p", { class: "none", text: "none" });
    const expert = normalise(cluster.expert);
    sheetRef.applied = el("p", { class: "applied" },
      applied && applied.source
        ? el("span", { class: "source", text: applied.source + " " + score(applied.score) })
        : null,
      " " + (applied && applied.source ? describe(normalise(applied)) : "none"));
    return el("aside", { class: "info" },
      el("h3", { text: "Top caption terms" }), termList,
      el("h3", { text: "Suggested labels" }), suggestions,
      el("h3", { text: "Expert label (from the labels file)" }),
      el("p", { class: expert ? "expert" : "none", text: expert ? describe(expert) : "none" }),
      el("h3", { text: "Applied label (this run)" }), sheetRef.applied);
  }

  function sheet(id) {
    const cluster = BY_ID.get(id);
    const ref = { id: id };
    const members = Array.isArray(cluster.nearest) ? cluster.nearest : [];
    const hid = "cluster-" + id + "-title";
    ref.badge = el("span", { class: "badge" });
    ref.panelType = el("select", { id: "pt-" + id, class: "panel-type",
      onchange: (e) => edit(id, (l) => { l.panel_type = e.target.value; }) });
    ref.panelSubtype = el("select", { id: "ps-" + id, class: "panel-subtype",
      onchange: (e) => edit(id, (l) => { l.panel_subtype = e.target.value; }) });
    ref.chosen = el("span", { class: "chosen" });
    // Built on the summary's click (keyboard too), before the details opens, so the next
    // Tab already finds the checkboxes; the toggle covers an open set by script.
    const openConcepts = () => { buildConcepts(ref); syncConcepts(ref); };
    ref.concepts = el("details", { class: "concepts",
      ontoggle: () => { if (ref.concepts.open) openConcepts(); } },
      el("summary", { onclick: openConcepts }, el("span", { text: "Concepts " }), ref.chosen));
    const hasSuggestion = Array.isArray(cluster.suggested) && cluster.suggested.some((s) => s);
    ref.root = el("section", { class: "sheet", id: "cluster-" + id, "aria-labelledby": hid,
      "data-cluster": id },
      el("header", {},
        el("h2", { id: hid, text: "Cluster " + id }),
        el("span", { class: "size", text: (cluster.size ?? "?") + " members" + (members.length
          ? " · " + members.length + " nearest shown" : "") }),
        ref.badge),
      el("div", { class: "body" },
        members.length
          ? el("div", { class: "members" }, ...members.filter((m) => m).map(member))
          : el("p", { class: "members none", text: "No member to show." }),
        info(cluster, id, ref)),
      el("div", { class: "controls", role: "group", "aria-label": "Label of cluster " + id },
        el("label", { for: "pt-" + id }, "Panel type"), ref.panelType,
        el("label", { for: "ps-" + id }, "Panel subtype"), ref.panelSubtype,
        el("button", { type: "button", class: "accept", disabled: !hasSuggestion,
          onclick: () => accept(id, 0) }, "Accept suggestion"),
        el("button", { type: "button", class: "clear", onclick: () => clear(id) }, "Clear")),
      ref.concepts);
    SHEETS.set(id, ref);
    sync(ref);
    return ref.root;
  }

  function fillSelect(select, values, chosen, what) {
    const opts = [option("", "— " + what + " —", !chosen)];
    for (const v of values) opts.push(option(v, v, v === chosen));
    if (chosen && !values.includes(chosen)) opts.push(option(chosen, chosen + " (not in the list)", true));
    select.replaceChildren(...opts);
    select.value = chosen || "";
  }

  function sync(ref) {
    const label = current(ref.id) || blank();
    const s = state(label);
    ref.root.dataset.state = s;
    ref.badge.textContent = s;
    ref.badge.className = "badge " + s;
    fillSelect(ref.panelType, PANEL_TYPES, label.panel_type, "choose");
    fillSelect(ref.panelSubtype, PANEL_SUBTYPES, label.panel_subtype, "choose");
    const concepts = label.global_class.length || label.local_class.length
      ? "(" + (label.global_class.length + label.local_class.length) + "): " +
        label.global_class.join(", ") + (label.local_class.length ? " › " + label.local_class.join(", ") : "")
      : "(none chosen)";
    ref.chosen.textContent = concepts;
    if (ref.boxes) syncConcepts(ref);
  }

  // The concept picker is built when first opened: 16 global and ~120 local checkboxes per
  // sheet would otherwise make a page of 100 sheets slow to draw.
  function buildConcepts(ref) {
    if (ref.boxes) return;
    ref.boxes = { global: new Map(), local: new Map() };
    const id = ref.id;
    const groups = GLOBALS.map((g, gi) => {
      const gid = "g-" + id + "-" + gi;
      const gbox = el("input", { type: "checkbox", id: gid, class: "global",
        onchange: (e) => toggleGlobal(id, g, e.target.checked) });
      ref.boxes.global.set(g, gbox);
      const locals = (TAXONOMY[g] || []).slice().sort((a, b) => a.localeCompare(b));
      return el("fieldset", { class: "group", "data-global": g },
        el("legend", {}, gbox, el("label", { for: gid, text: g })),
        ...locals.map((l, li) => {
          const lid = gid + "-" + li;
          const lbox = el("input", { type: "checkbox", id: lid, class: "local",
            onchange: (e) => toggleLocal(id, l, e.target.checked) });
          ref.boxes.local.set(l, lbox);
          return el("span", { class: "concept", "data-name": l.toLowerCase() }, lbox,
            el("label", { for: lid, text: l }));
        }));
    });
    const find = el("input", { type: "search", id: "find-" + id, class: "find",
      placeholder: "e.g. blot, MRI, bar",
      oninput: (e) => findConcept(ref, e.target.value) });
    ref.concepts.append(
      el("div", { class: "find-row" }, el("label", { for: "find-" + id }, "Find a concept"), find,
        el("span", { class: "hint", text: "Ticking a local concept ticks its global concept too." })),
      el("div", { class: "groups" }, ...groups));
  }

  function findConcept(ref, text) {
    const needle = text.trim().toLowerCase();
    for (const group of ref.concepts.querySelectorAll(".group")) {
      let any = !needle || group.dataset.global.toLowerCase().includes(needle);
      const groupHit = any;
      for (const c of group.querySelectorAll(".concept")) {
        const hit = !needle || groupHit || c.dataset.name.includes(needle);
        c.hidden = !hit;
        any = any || hit;
      }
      group.hidden = !any;
    }
  }

  function syncConcepts(ref) {
    const label = current(ref.id) || blank();
    for (const [g, box] of ref.boxes.global) box.checked = label.global_class.includes(g);
    for (const [l, box] of ref.boxes.local) box.checked = label.local_class.includes(l);
  }

  // ---- editing -----------------------------------------------------------------------------

  function edit(id, change) {
    const label = copyOf(id);
    change(label);
    setLabel(id, isEmpty(label) ? null : label);
  }

  function toggleGlobal(id, g, on) {
    edit(id, (l) => {
      if (on && !l.global_class.includes(g)) l.global_class.push(g);
      if (!on) {
        // A local concept without its global parent would be a label BIOMEDICA never has.
        l.global_class = l.global_class.filter((x) => x !== g);
        l.local_class = l.local_class.filter((x) => PARENT.get(x) !== g);
      }
    });
  }

  function toggleLocal(id, name, on) {
    edit(id, (l) => {
      if (on) {
        if (!l.local_class.includes(name)) l.local_class.push(name);
        const parent = PARENT.get(name);
        if (parent && !l.global_class.includes(parent)) l.global_class.push(parent);
      } else {
        l.local_class = l.local_class.filter((x) => x !== name);
      }
    });
  }

  function accept(id, index) {
    const suggestion = normalise((BY_ID.get(id).suggested || [])[index]);
    if (!suggestion) return;
    const label = copyOf(id);
    if (suggestion.panel_type) label.panel_type = suggestion.panel_type;
    if (suggestion.panel_subtype) label.panel_subtype = suggestion.panel_subtype;
    label.global_class = suggestion.global_class.slice();
    label.local_class = suggestion.local_class.slice();
    for (const l of label.local_class) {
      const parent = PARENT.get(l);
      if (parent && !label.global_class.includes(parent)) label.global_class.push(parent);
    }
    setLabel(id, label);
    say("Cluster " + id + ": suggestion " + (index + 1) + " copied into the controls.");
  }

  function clear(id) {
    setLabel(id, null);
    say("Cluster " + id + ": label cleared.");
  }

  // ---- files -------------------------------------------------------------------------------

  function save() {
    const labels = labelsFile();
    const text = JSON.stringify(labels, null, 1) + "\n";
    const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
    const link = el("a", { href: url, download: "cluster_labels.json", hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    say("Saved " + Object.keys(labels).length + " cluster labels to cluster_labels.json.");
  }

  function readLabels(file) {
    const reader = new FileReader();
    reader.onerror = () => say("Could not read " + file.name + ".");
    reader.onload = () => {
      let parsed;
      try {
        parsed = JSON.parse(reader.result);
      } catch (err) {
        say(file.name + " is not JSON: " + err.message);
        return;
      }
      if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
        say(file.name + " is not a cluster_labels.json object.");
        return;
      }
      let taken = 0;
      let unknown = 0;
      let invalid = 0;
      for (const [key, value] of Object.entries(parsed)) {
        const id = String(parseInt(key, 10));
        const label = normalise(value);
        if (!BY_ID.has(id) || id !== key.trim()) unknown += 1;
        else if (!label) invalid += 1;
        else { edits[id] = label; taken += 1; }
      }
      keepEdits();
      updateCounts();
      refilter({});
      say("Loaded " + taken + " labels from " + file.name +
        (unknown ? "; " + unknown + " for clusters not in this gallery left out" : "") +
        (invalid ? "; " + invalid + " malformed left out" : "") + ".");
    };
    reader.readAsText(file);
  }

  // ---- start -------------------------------------------------------------------------------

  loadEdits();
  document.title = "Cluster gallery" + (DATA.embedding_model ? " · " + DATA.embedding_model : "");
  document.getElementById("app").replaceChildren(
    topBar(), pager("top"), el("main", { id: "sheets", tabindex: "-1" }), pager("bottom"));
  updateCounts();
  refilter({});
  if (storageNote) say(storageNote);
  // Whatever scrolls a sheet or a control into view keeps it clear of the sticky top bar.
  const bar = document.querySelector(".topbar");
  const pad = () => {
    document.documentElement.style.scrollPaddingTop = bar.offsetHeight + 8 + "px";
  };
  pad();
  window.addEventListener("resize", pad);
})();
