// groundqa web page: ask a question, read the cited passages, open each citation in its source.
// Deep links (?doc=SOURCE&start=N&end=M, code-point offsets into the indexed text, half-open)
// open a document with that span marked. Plain JavaScript, no dependencies. Text from the server
// or from the page's URL is only ever inserted as text nodes.
"use strict";

(function () {
  const KEY_STORAGE = "groundqa.apiKey";
  // The API's limit (AskRequest.question), in code points as the server counts. The input has
  // no maxlength: the browser would cut a longer (pasted) question without a word.
  const MAX_QUESTION = 2000;
  const DEFAULT_PLACEHOLDER = "Ask a question about the indexed documents";

  const $ = (id) => document.getElementById(id);
  const form = $("ask-form");
  const questionInput = $("question");
  const askButton = $("ask-button");
  const statusBox = $("status");
  const results = $("results");
  const answerBox = $("answer");
  const passageList = $("passages");
  const docView = $("doc-view");
  const docTitle = $("doc-title");
  const docMeta = $("doc-meta");
  const docText = $("doc-text");
  const docClose = $("doc-close");
  const buildIdBox = $("build-id");
  const modelInfo = $("model-info");
  const keySettings = $("key-settings");
  const keyInput = $("api-key");
  const keyClear = $("api-key-clear");
  const collectionSelect = $("collection");
  const collectionHelp = $("collection-help");
  const generateRow = $("generate-row");
  const generateBox = $("generate");

  let askSeq = 0;
  let docSeq = 0;
  let collectionSeq = 0;
  let capabilitySeq = 0;
  let placeholderSeq = 0;
  let currentBuild = null;
  let lastTrigger = null;
  let pendingLink = null; // a deep link waiting for an API key
  const documents = new Map(); // document path -> Promise of {source, title, sha256, text}

  // ------------------------------------------------------------------ small helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "className") node.className = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) {
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function setStatus(message, kind) {
    statusBox.textContent = message;
    statusBox.className = "status" + (kind ? " status-" + kind : "");
  }

  function storedKey() {
    try {
      return sessionStorage.getItem(KEY_STORAGE) || "";
    } catch (_) {
      return "";
    }
  }

  function storeKey(value) {
    try {
      if (value) sessionStorage.setItem(KEY_STORAGE, value);
      else sessionStorage.removeItem(KEY_STORAGE);
    } catch (_) {
      // Storage may be disabled; the key then lives only in the input.
    }
  }

  function authHeaders() {
    const key = keyInput.value.trim();
    return key ? { Authorization: "Bearer " + key } : {};
  }

  // API paths are resolved against the page, so the app also works behind a path prefix.
  function apiUrl(path) {
    return new URL(path.replace(/^\//, ""), document.baseURI).toString();
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function errorMessage(body, status) {
    const detail = body && body.detail !== undefined ? body.detail : body && body.error;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail.map((d) => (d.loc ? d.loc.filter((p) => p !== "body").join(".") + ": " : "") + d.msg).join("; ");
    }
    if (detail && typeof detail.message === "string") return detail.message;
    return "the server answered " + status;
  }

  async function api(path, options) {
    let response;
    try {
      response = await fetch(apiUrl(path), options);
    } catch (_) {
      throw new ApiError(0, "cannot reach the server; check that groundqa is running");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) throw new ApiError(response.status, errorMessage(body, response.status));
    return body;
  }

  // Citation offsets count Unicode code points (Python str indices); JavaScript strings index
  // UTF-16 units. Map each wanted code-point offset to its UTF-16 index in one pass.
  function unitIndices(text, offsets) {
    const wanted = Array.from(new Set(offsets)).sort((a, b) => a - b);
    const out = new Map();
    let point = 0;
    let unit = 0;
    for (const target of wanted) {
      while (point < target && unit < text.length) {
        unit += text.codePointAt(unit) > 0xffff ? 2 : 1;
        point += 1;
      }
      out.set(target, Math.min(unit, text.length));
    }
    return out;
  }

  // Append text to parent with the given code-point spans wrapped in <mark>; returns the marks.
  function appendMarked(parent, text, spans, markAttrs) {
    const sorted = spans
      .filter((s) => s.end > s.start)
      .sort((a, b) => a.start - b.start);
    const units = unitIndices(text, sorted.flatMap((s) => [s.start, s.end]));
    const marks = [];
    let at = 0;
    for (const span of sorted) {
      const start = units.get(span.start);
      const end = units.get(span.end);
      if (start < at) continue; // overlapping spans: keep the first
      if (start > at) parent.append(document.createTextNode(text.slice(at, start)));
      const mark = el("mark", markAttrs || {}, text.slice(start, end));
      parent.append(mark);
      marks.push(mark);
      at = end;
    }
    if (at < text.length) parent.append(document.createTextNode(text.slice(at)));
    return marks;
  }

  function lineRange(citation) {
    return citation.line_start === citation.line_end
      ? "line " + citation.line_start
      : "lines " + citation.line_start + "\u2013" + citation.line_end;
  }

  // Slide, sheet and rows, or pages: where a person looks in a deck, a sheet or a PDF.
  function pageRange(citation) {
    if (citation.slide != null) return "slide " + citation.slide;
    if (citation.row_start != null) {
      const last = citation.row_end == null ? citation.row_start : citation.row_end;
      const rows = last === citation.row_start
        ? "row " + last : "rows " + citation.row_start + "\u2013" + last;
      return citation.sheet ? citation.sheet + ", " + rows : rows;
    }
    if (citation.page_start == null) return "";
    return citation.page_start === citation.page_end || citation.page_end == null
      ? "page " + citation.page_start
      : "pages " + citation.page_start + "\u2013" + citation.page_end;
  }

  // Where a passage sits in its source: pages (PDF) and lines.
  function location(citation) {
    const pages = pageRange(citation);
    return (pages ? pages + ", " : "") + lineRange(citation);
  }

  function charRange(start, end) {
    return "characters " + start + "\u2013" + end;
  }

  // Length of text in code points, counted as unitIndices counts them.
  function pointLength(text) {
    let points = 0;
    for (let unit = 0; unit < text.length; unit += text.codePointAt(unit) > 0xffff ? 2 : 1) points += 1;
    return points;
  }

  // The lines a code-point span covers, numbered as the index numbers a chunk's lines.
  function spanLines(text, start, end) {
    const units = unitIndices(text, [start, end - 1]);
    const lineAt = (unit) => {
      let line = 1;
      for (let i = text.indexOf("\n"); i !== -1 && i < unit; i = text.indexOf("\n", i + 1)) line += 1;
      return line;
    };
    return { line_start: lineAt(units.get(start)), line_end: lineAt(units.get(end - 1)) };
  }

  function showBuild(index) {
    if (!index) return;
    if (currentBuild !== index.build_id) documents.clear();
    currentBuild = index.build_id;
    buildIdBox.textContent = index.build_id;
    modelInfo.textContent = index.model ? " \u00b7 model " + index.model : "";
  }

  function askForKey(message) {
    keySettings.open = true;
    keyInput.focus();
    setStatus(message, "error");
  }

  // ------------------------------------------------------------------ asking

  // Append text to parent with its "[n]" markers as links to passage n (ranks: the passages
  // shown); everything else stays text.
  function appendCited(parent, text, ranks) {
    const parts = text.split(/\[(\d+)\]/);
    parts.forEach((part, i) => {
      if (i % 2 === 0) {
        if (part) parent.append(document.createTextNode(part));
        return;
      }
      const rank = Number(part);
      if (!ranks.has(rank)) {
        parent.append(document.createTextNode("[" + part + "]"));
        return;
      }
      const link = el("a", {
        className: "cite", href: "#passage-" + rank, "aria-label": "Passage " + rank,
      }, "[" + rank + "]");
      link.addEventListener("click", (event) => {
        event.preventDefault();
        const target = $("passage-" + rank);
        target.scrollIntoView({ block: "nearest", behavior: "smooth" });
        target.focus({ preventScroll: true });
      });
      parent.append(link);
    });
  }

  function renderAnswer(data) {
    const answer = data.answer;
    const generation = data.generation;
    answerBox.classList.remove("generated", "has-unverified");
    if (generation && !generation.fallback) {
      renderGenerated(data);
      return;
    }
    const paragraph = el("p", { className: "answer-text" });
    appendCited(paragraph, answer.text, new Set(data.passages.map((p) => p.rank)));
    answerBox.replaceChildren(paragraph);
    answerBox.classList.toggle("abstained", !answer.grounded);
    if (generation) {
      // The LLM failed: the server answered with the quoted (extractive) answer instead.
      answerBox.prepend(el("p", { className: "note fallback-note", role: "note" },
        "The language model could not answer, so this is the quoted answer. " +
        "The server said: " + generation.fallback));
    }
    if (!answer.grounded) {
      answerBox.append(el("p", { className: "note" },
        "The sources do not answer this closely enough; the nearest passages are below."));
    }
  }

  // A generated answer, sentence by sentence: each says whether the sources back it, and a
  // supported sentence opens its evidence span in the document view.
  function renderGenerated(data) {
    const generation = data.generation;
    const ranks = new Set(data.passages.map((p) => p.rank));
    const shownSentences = generation.sentences.filter((s) => !s.dropped);
    // answer.text[start:end] (code points) is the sentence as the LLM wrote it, [n] included.
    const answerText = data.answer.text;
    const units = unitIndices(answerText, shownSentences.flatMap((s) => [s.start, s.end]));
    const list = el("ol", { className: "generated-sentences answer-text", "aria-label": "Generated answer, sentence by sentence" });
    shownSentences.forEach((sentence, i) => {
      const number = i + 1;
      const item = el("li", {
        className: "generated-sentence " + (sentence.supported ? "supported" : "unverified"),
        "data-verdict": sentence.supported ? "supported" : "unverified",
      });
      item.append(el("span", { className: "verdict verdict-" + (sentence.supported ? "supported" : "unverified") },
        sentence.supported ? "\u2713 Supported" : "\u26a0 Unverified"));
      const text = el("span", { className: "sentence-text" });
      const written = sentence.end > sentence.start
        ? answerText.slice(units.get(sentence.start), units.get(sentence.end)) : "";
      appendCited(text, written.trim() || sentence.text, ranks);
      item.append(text);
      const evidence = sentence.evidence;
      if (sentence.supported && evidence) {
        const open = el("button", {
          type: "button", className: "secondary evidence",
          "aria-label": "Show the evidence for sentence " + number + " in " + evidence.source +
            ", " + charRange(evidence.char_start, evidence.char_end),
        }, "Show evidence");
        open.addEventListener("click", () => openLink({
          source: evidence.source, start: String(evidence.char_start), end: String(evidence.char_end),
        }, open, "Sentence " + number + " of the answer is supported by"));
        item.append(open);
      } else if (!sentence.supported) {
        item.append(el("span", { className: "reason" },
          "Not backed by the cited sources" + (sentence.reason ? ": " + sentence.reason : ".")));
      }
      list.append(item);
    });
    const summary = el("p", { className: "generated-summary note" },
      "Composed by the LLM" + (generation.model ? " (" + generation.model + ")" : "") + ": " + generation.supported + " of " +
      generation.sentences.length + " sentence" + (generation.sentences.length === 1 ? "" : "s") +
      " supported by the sources, " + generation.flagged + " unverified" +
      (generation.dropped ? ", " + generation.dropped + " left out as unsupported" : "") + ".");
    answerBox.replaceChildren(summary, list);
    if (!shownSentences.length) {
      answerBox.append(el("p", { className: "note" }, "No sentence of the LLM's answer could be shown."));
    }
    answerBox.classList.remove("abstained");
    answerBox.classList.add("generated");
    answerBox.classList.toggle("has-unverified", generation.flagged > 0);
  }

  function renderPassages(data) {
    passageList.replaceChildren();
    for (const passage of data.passages) {
      const c = passage.citation;
      const open = el("button", {
        type: "button", className: "citation", title: c.title || c.source,
        "aria-label": "Open " + c.source + ", " + location(c) + ", in the document view",
      }, c.source, el("span", { className: "lines" }, " \u00b7 " + location(c)));
      open.addEventListener("click", () => openDocument(passage, open));
      const head = el("div", { className: "passage-head" },
        el("span", { className: "rank", "aria-hidden": "true" }, "[" + passage.rank + "]"),
        open,
        el("span", { className: "score" }, "score " + passage.score.toFixed(4)));
      if (c.section) {
        head.insertBefore(el("span", { className: "section" }, c.section), head.lastChild);
      }
      const text = el("blockquote", { className: "passage-text", cite: c.url });
      const spans = passage.highlights.map((h) => ({
        start: h.char_start - c.char_start, end: h.char_end - c.char_start,
      }));
      appendMarked(text, passage.text, spans);
      const item = el("li", {
        className: "passage", id: "passage-" + passage.rank, tabindex: "-1",
        "aria-label": "Passage " + passage.rank + ", " + c.source + ", " + location(c),
        "data-rank": String(passage.rank),
      }, head, text);
      passageList.append(item);
    }
  }

  // A new question starts from a clean page: no answer, passages or open source of the last
  // one (the source panel would describe passage [1] of an answer no longer shown).
  function clearAnswer() {
    results.hidden = true;
    answerBox.replaceChildren();
    passageList.replaceChildren();
    docSeq++; // a document still loading for the old answer must not open
    docView.removeAttribute("aria-busy");
    docView.hidden = true;
    docText.replaceChildren();
    docMeta.textContent = "";
    lastTrigger = null;
    const url = new URL(window.location.href);
    if (url.searchParams.has("doc")) {
      for (const name of ["doc", "start", "end"]) url.searchParams.delete(name);
      replaceUrl(url.toString());
    }
  }

  // Why the question cannot be asked, or "" when it can.
  function questionProblem(question) {
    if (!question) return "Type a question first.";
    const length = pointLength(question);
    if (length > MAX_QUESTION) {
      return "This question is " + length + " characters long; questions may have at most " +
        MAX_QUESTION + ". Shorten it and ask again.";
    }
    return "";
  }

  async function ask(question) {
    const seq = ++askSeq;
    clearAnswer();
    const problem = questionProblem(question);
    if (problem) {
      setStatus(problem, "error");
      questionInput.focus();
      return;
    }
    askButton.disabled = true;
    results.setAttribute("aria-busy", "true");
    const generate = !generateRow.hidden && generateBox.checked;
    setStatus(generate ? "Searching the sources and composing an answer\u2026" : "Searching the sources\u2026",
      "loading");
    const body = { question: question };
    if (collectionSelect.value) body.collections = [collectionSelect.value];
    if (generate) body.answer_mode = "generated";
    try {
      const data = await api("/v1/ask", {
        method: "POST",
        headers: { "Content-Type": "application/json", ...authHeaders() },
        body: JSON.stringify(body),
      });
      if (seq !== askSeq) return;
      showBuild(data.index);
      renderAnswer(data);
      renderPassages(data);
      results.hidden = false;
      const n = data.passages.length;
      const took = ": " + n + " passage" + (n === 1 ? "" : "s") + " in " + Math.round(data.took_ms) + " ms.";
      const gen = data.generation;
      if (gen && !gen.fallback) {
        setStatus("Composed answer ready, " + gen.supported + " supported and " + gen.flagged +
          " unverified sentence" + (gen.flagged === 1 ? "" : "s") + took, "");
      } else {
        setStatus((gen ? "The LLM could not answer; quoted answer shown" :
          data.answer.grounded ? "Answer ready" : "No grounded answer") + took, "");
      }
    } catch (error) {
      if (seq !== askSeq) return;
      if (error.status === 401) askForKey("This server needs an API key: enter it above and ask again.");
      else setStatus("Could not answer: " + error.message, "error");
    } finally {
      if (seq === askSeq) {
        askButton.disabled = false;
        results.removeAttribute("aria-busy");
      }
    }
  }

  // ------------------------------------------------------------------ the document view

  function fetchDocument(path) {
    if (!documents.has(path)) {
      const pending = api(path, { headers: authHeaders() });
      pending.catch(() => documents.delete(path));
      documents.set(path, pending);
    }
    return documents.get(path);
  }

  // Show doc in the document view with span (code points, or null) marked as the cited span and
  // the highlights (offsets within the span) marked inside it; the view takes the focus.
  function renderDocument(doc, meta, span, highlights) {
    docTitle.textContent = doc.source;
    docMeta.replaceChildren(document.createTextNode(meta),
      doc.title && doc.title !== doc.source ? el("span", { className: "doc-name" }, doc.title) : "");
    docText.replaceChildren();
    const [mark] = appendMarked(docText, doc.text, span ? [span] : [],
      { id: "cited-span", className: "cited" });
    if (mark) {
      // Within the cited span, the sentences that answer the question stand out.
      const cited = mark.textContent;
      mark.replaceChildren();
      appendMarked(mark, cited, highlights, { className: "answer-sentence" });
    }
    docView.hidden = false;
    docView.focus({ preventScroll: true });
    if (mark) mark.scrollIntoView({ block: "center" });
    else docText.scrollTop = 0;
  }

  // The page's own URL for a span of a source: the form chat answers link to.
  function spanLink(source, start, end) {
    const url = new URL(window.location.href);
    url.search = new URLSearchParams({ doc: source, start: String(start), end: String(end) }).toString();
    url.hash = "";
    return url.toString();
  }

  function replaceUrl(url) {
    try {
      history.replaceState(null, "", url);
    } catch (_) {
      // Some contexts refuse history updates; the page works the same without.
    }
  }

  async function openDocument(passage, trigger) {
    const seq = ++docSeq;
    const c = passage.citation;
    lastTrigger = trigger;
    pendingLink = null;
    docView.setAttribute("aria-busy", "true");
    setStatus("Loading " + c.source + "\u2026", "loading");
    try {
      const doc = await fetchDocument(c.url.split("#")[0]);
      if (seq !== docSeq) return;
      const where = location(c) + " (" + charRange(c.char_start, c.char_end) + ")";
      renderDocument(doc, "Passage [" + passage.rank + "] cites " + where,
        { start: c.char_start, end: c.char_end },
        passage.highlights.map((h) => ({
          start: h.char_start - c.char_start, end: h.char_end - c.char_start,
        })));
      replaceUrl(spanLink(c.source, c.char_start, c.char_end));
      setStatus("Showing " + doc.source + ", " + location(c) + ".", "");
    } catch (error) {
      if (seq !== docSeq) return;
      if (error.status === 401) askForKey("This server needs an API key to show sources: enter it above.");
      else setStatus("Could not load " + c.source + ": " + error.message, "error");
    } finally {
      if (seq === docSeq) docView.removeAttribute("aria-busy");
    }
  }

  // ------------------------------------------------------------------ deep links

  // The API path of a source, as citations spell it (Python's quote(source, safe="/")), or null
  // for a name no indexed source has: a dot or empty segment would resolve to another path.
  function documentPath(source) {
    const parts = source.split("/");
    if (parts.some((part) => part === "" || part === "." || part === "..")) return null;
    return "/v1/documents/" + parts.map((part) => encodeURIComponent(part)
      .replace(/[!'()*]/g, (ch) => "%" + ch.charCodeAt(0).toString(16).toUpperCase())).join("/");
  }

  // A URL parameter as shown back to the user: quoted, and cut when long.
  function shown(value) {
    return "\u201c" + (value.length > 40 ? value.slice(0, 40) + "\u2026" : value) + "\u201d";
  }

  // The span a link asks for in text, or why it cannot be marked.
  function linkSpan(text, link) {
    if (link.start === null && link.end === null) return { problem: "the link names no span" };
    for (const name of ["start", "end"]) {
      const value = link[name];
      if (value === null) return { problem: "the link gives no " + name };
      if (!/^\d{1,15}$/.test(value)) {
        return { problem: name + " " + shown(value) + " is not a character offset (a whole number)" };
      }
    }
    const start = Number(link.start);
    const end = Number(link.end);
    const length = pointLength(text);
    if (end <= start) return { problem: "the span " + charRange(start, end) + " is empty or reversed" };
    if (end > length) {
      return {
        problem: "the span " + charRange(start, end) + " ends past the document's " + length + " characters",
      };
    }
    return { start: start, end: end };
  }

  // Open link's span of a document. From a button on the page (trigger), focus returns to it
  // on close, the page's URL becomes the span's deep link and label says what the span is.
  async function openLink(link, trigger, label) {
    const seq = ++docSeq;
    const source = link.source;
    lastTrigger = trigger || null;
    pendingLink = null;
    const path = documentPath(source);
    if (!source || path === null) {
      setStatus(source ? source + " is not in the index." : "The link names no document to show.", "error");
      return;
    }
    docView.setAttribute("aria-busy", "true");
    setStatus("Loading " + source + "\u2026", "loading");
    try {
      const doc = await fetchDocument(path);
      if (seq !== docSeq) return;
      if (!doc || typeof doc.text !== "string" || typeof doc.source !== "string") {
        throw new ApiError(0, "the server sent no document");
      }
      const span = linkSpan(doc.text, link);
      if (span.problem) {
        renderDocument(doc,
          "The whole document, " + pointLength(doc.text) + " characters; no span is marked.", null, []);
        setStatus("Showing " + doc.source + " without a highlight: " + span.problem + ".", "");
        return;
      }
      const where = location(spanLines(doc.text, span.start, span.end)) +
        " (" + charRange(span.start, span.end) + ")";
      renderDocument(doc, (label || "The link cites") + " " + where, span, []);
      if (trigger) replaceUrl(spanLink(doc.source, span.start, span.end));
      setStatus("Showing " + doc.source + ", " + where + ".", "");
    } catch (error) {
      if (seq !== docSeq) return;
      if (error.status === 401) {
        pendingLink = link;
        askForKey("This server needs an API key to show " + source + ": enter it above and press Enter.");
      } else if (error.status === 404) {
        setStatus(source + " is not in the index.", "error");
      } else {
        setStatus("Could not load " + source + ": " + error.message, "error");
      }
    } finally {
      if (seq === docSeq) docView.removeAttribute("aria-busy");
    }
  }

  function retryLink() {
    if (pendingLink && keyInput.value.trim()) openLink(pendingLink);
  }

  function closeDocument() {
    docView.hidden = true;
    docText.replaceChildren();
    const url = new URL(window.location.href);
    if (url.searchParams.has("doc")) {
      for (const name of ["doc", "start", "end"]) url.searchParams.delete(name);
      replaceUrl(url.toString());
    }
    if (lastTrigger && document.body.contains(lastTrigger)) lastTrigger.focus();
    else questionInput.focus();
  }

  // ------------------------------------------------------------------ wiring

  async function showReadiness() {
    try {
      const ready = await api("/readyz", {});
      if (ready.build_id && !currentBuild) buildIdBox.textContent = ready.build_id;
    } catch (error) {
      if (!currentBuild) {
        buildIdBox.textContent = "not loaded";
        setStatus("The server is not ready: " + error.message, "error");
      }
    }
  }

  // The selector lists exactly the collections the key sees (the server decides; the page
  // never learns of others). Without a key on a keyed server it stays hidden.
  async function loadCollections() {
    const seq = ++collectionSeq;
    const chosen = collectionSelect.value;
    let names = [];
    try {
      const data = await api("/v1/collections", { headers: authHeaders() });
      names = data.collections.map((c) => c.name);
    } catch (_) {
      names = [];
    }
    if (seq !== collectionSeq) return; // a later key's list is on its way
    while (collectionSelect.options.length > 1) collectionSelect.remove(1);
    for (const name of names) {
      collectionSelect.append(el("option", { value: name }, name));
    }
    collectionSelect.value = names.includes(chosen) ? chosen : "";
    const show = names.length > 1;
    collectionSelect.hidden = !show;
    collectionHelp.hidden = !show;
  }

  // The placeholder suggests a question about what is indexed (the first document the key may
  // see, preferring one titled by its content over one titled by its file name).
  async function loadPlaceholder() {
    const seq = ++placeholderSeq;
    let text = DEFAULT_PLACEHOLDER;
    try {
      const data = await api("/v1/documents", { headers: authHeaders() });
      const named = data.documents.find((d) => d.title && d.title !== d.source.split("/").pop());
      // "Ask about 000_61032.txt" reads oddly: a file name is what the question is asked of.
      if (named) text = "e.g. Ask about " + named.title;
      else if (data.documents.length) text = "Ask a question about " + data.documents[0].source;
    } catch (_) {
      text = DEFAULT_PLACEHOLDER;
    }
    if (seq !== placeholderSeq) return;
    questionInput.placeholder = text;
  }

  // The LLM control is shown only when the server has an LLM: its model list then offers
  // groundqa-extractive next to groundqa. Without one the page asks exactly as before.
  async function loadCapabilities() {
    const seq = ++capabilitySeq;
    let generates = false;
    try {
      const data = await api("/v1/models", { headers: authHeaders() });
      generates = data.data.some((m) => m.id === "groundqa-extractive");
    } catch (_) {
      generates = false;
    }
    if (seq !== capabilitySeq) return;
    generateRow.hidden = !generates;
    if (!generates) generateBox.checked = false;
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    ask(questionInput.value.trim());
  });
  docClose.addEventListener("click", closeDocument);
  docView.addEventListener("keydown", (event) => {
    if (event.key === "Escape") closeDocument();
  });
  keyInput.value = storedKey();
  keyInput.addEventListener("input", () => storeKey(keyInput.value.trim()));
  keyInput.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      loadCollections();
      loadCapabilities();
      loadPlaceholder();
      retryLink();
    }
  });
  keyInput.addEventListener("change", () => {
    documents.clear();
    loadCollections();
    loadCapabilities();
    loadPlaceholder();
    retryLink();
  });
  keyClear.addEventListener("click", () => {
    keyInput.value = "";
    storeKey("");
    documents.clear();
    loadCollections();
    loadCapabilities();
    loadPlaceholder();
    keyInput.focus();
    setStatus("API key cleared.", "");
  });

  showReadiness();
  loadCollections();
  loadCapabilities();
  loadPlaceholder();
  // ?q= asks a question; with ?doc= (a deep link to a span) it only fills the question box.
  const params = new URLSearchParams(window.location.search);
  const preset = params.get("q");
  if (preset) questionInput.value = preset;
  if (params.has("doc")) {
    openLink({ source: params.get("doc"), start: params.get("start"), end: params.get("end") });
  } else if (preset) {
    ask(preset);
  }
})();
