/* terraloc web page: upload a photo, show candidate locations on an offline Leaflet map. */
(function () {
  "use strict";

  var R_KM = 6371.0088; // mean Earth radius, as everywhere in terraloc
  var $ = function (id) { return document.getElementById(id); };
  var state = { config: null, file: null, result: null, markers: [], layer: null, refLayer: null,
                tiles: null, history: [], busy: false, queue: [] };

  // ---------- helpers ----------
  function haversineKm(a, b) {
    var rad = Math.PI / 180;
    var dlat = (b.lat - a.lat) * rad, dlon = (b.lon - a.lon) * rad;
    var h = Math.pow(Math.sin(dlat / 2), 2) +
      Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.pow(Math.sin(dlon / 2), 2);
    return 2 * R_KM * Math.asin(Math.min(1, Math.sqrt(h)));
  }
  function fmtKm(d) { return d < 10 ? d.toFixed(1) : Math.round(d).toLocaleString("en"); }
  function fmtPct(p) { return p == null ? "" : (100 * p).toFixed(p >= 0.1 ? 1 : 2) + "%"; }
  function fmtCoord(c) {
    return Math.abs(c.lat).toFixed(4) + "°" + (c.lat >= 0 ? "N" : "S") + ", " +
      Math.abs(c.lon).toFixed(4) + "°" + (c.lon >= 0 ? "E" : "W");
  }
  function place(c) {
    var parts = [];
    [c.city, c.admin1, c.country].forEach(function (x) { if (x && parts.indexOf(x) < 0) parts.push(x); });
    return parts.length ? parts.join(", ") : "Unnamed place";
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }
  function headers() {
    var h = {};
    var key = sessionStorage.getItem("terraloc.apiKey");
    if (key) h["Authorization"] = "Bearer " + key;
    return h;
  }
  function say(msg, kind) {
    var m = $("message");
    m.textContent = msg || "";
    m.className = "message" + (kind ? " " + kind : "");
  }
  function candidatesOf(pred) {
    var list = pred.predictions || pred.candidates || [];
    return list.filter(function (c) { return isFinite(c.lat) && isFinite(c.lon); });
  }
  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }

  // ---------- map ----------
  var map = L.map("map", { worldCopyJump: true, minZoom: 1, maxZoom: 18, zoomControl: true })
    .setView([20, 0], 1);
  window.terralocMap = map; // for tests and the console
  map.attributionControl.setPrefix(false);
  L.control.scale({ metric: true, imperial: false }).addTo(map);
  // World overview inset: the whole Earth, with a box where the main map looks.
  var overview = L.map("overview", { zoomControl: false, attributionControl: false, dragging: false,
    scrollWheelZoom: false, doubleClickZoom: false, boxZoom: false, keyboard: false, touchZoom: false,
    zoomSnap: 0.1 }).setView([15, 0], 0);
  var viewBox = L.rectangle([[0, 0], [0, 0]], { color: "#d9480f", weight: 2, fill: false, interactive: false });
  var viewDot = L.circleMarker([0, 0], { radius: 3, color: "#d9480f", fillOpacity: 1, interactive: false });
  function syncOverview() {
    overview.invalidateSize();
    overview.fitWorld({ animate: false });
    var b = map.getBounds();
    var c = b.getCenter();
    viewBox.setBounds(b);
    viewDot.setLatLng(c);
    // a view too small to draw as a box is shown as a dot
    var tiny = Math.abs(b.getNorth() - b.getSouth()) < 6;
    if (tiny) { overview.removeLayer(viewBox); viewDot.addTo(overview); }
    else { overview.removeLayer(viewDot); viewBox.addTo(overview); }
  }
  map.on("moveend zoomend resize", syncOverview);
  fetch("/ui/countries.geojson").then(function (r) { return r.json(); }).then(function (gj) {
    var style = { color: "#7a8793", weight: 0.7, fillColor: "#e6e9dd", fillOpacity: 1 };
    L.geoJSON(gj, { interactive: false, style: style }).addTo(map).bringToBack();
    L.geoJSON(gj, { interactive: false, style: { color: "#9aa5ae", weight: 0.3, fillColor: "#e6e9dd", fillOpacity: 1 } })
      .addTo(overview);
    syncOverview();
  }).catch(function () { say("Could not load the base map outlines.", "warn"); });

  // Fit every candidate, but never closer than about country scale (~900 km across), so that the
  // region can be recognised on the outline map.
  var MIN_SPAN_DEG = 8;
  function fitCandidates(cands) {
    var b = L.latLngBounds(cands.map(function (c) { return [c.lat, c.lon]; }));
    var ctr = b.getCenter();
    var halfLat = Math.max(MIN_SPAN_DEG / 2, (b.getNorth() - b.getSouth()) / 2);
    var cosLat = Math.max(0.2, Math.cos(ctr.lat * Math.PI / 180));
    var halfLon = Math.max(MIN_SPAN_DEG / 2 / cosLat, (b.getEast() - b.getWest()) / 2);
    var south = Math.max(-85, ctr.lat - halfLat), north = Math.min(85, ctr.lat + halfLat);
    map.fitBounds([[south, ctr.lng - halfLon], [north, ctr.lng + halfLon]], { padding: [24, 24], maxZoom: 7, animate: false });
  }

  function setTiles(url) {
    if (state.tiles) { map.removeLayer(state.tiles); state.tiles = null; }
    if (url) {
      state.tiles = L.tileLayer(url, { attribution: (state.config && state.config.tile_attribution) || "", maxZoom: 19 });
      state.tiles.addTo(map);
    }
    $("attribution").textContent = url ? "tiles: " + (new URL(url.replace(/[{}]/g, "")).host) : "offline base map";
  }

  // ---------- rendering ----------
  function clearResult() {
    state.markers.forEach(function (m) { map.removeLayer(m); });
    state.markers = [];
    if (state.refLayer) { map.removeLayer(state.refLayer); state.refLayer = null; }
    if (state.regionLayer) { map.removeLayer(state.regionLayer); state.regionLayer = null; }
    $("candidates").textContent = "";
    $("distances").textContent = "";
    ["distances-box", "reasoning-box", "references-box", "model-box"].forEach(function (id) { $(id).hidden = true; });
    $("download").disabled = $("copy").disabled = true;
  }

  function focusCandidate(i) {
    var m = state.markers[i];
    if (!m) return;
    map.setView(m.getLatLng(), Math.max(map.getZoom(), 4));
    m.openPopup();
  }

  function render(pred) {
    clearResult();
    state.result = pred;
    var cands = candidatesOf(pred);
    // Marker area and bar length are relative to the probability mass of the candidates shown.
    var mass = cands.reduce(function (s, c) { return s + (c.probability > 0 ? c.probability : 0); }, 0) || 1;
    if (pred.error) { say(pred.image + ": " + pred.error, "error"); }
    $("summary").textContent = cands.length
      ? (pred.image ? pred.image + ": " : "") + cands.length + " candidate location" + (cands.length > 1 ? "s" : "") +
        "; most probable: " + place(cands[0]) + " (" + fmtPct(cands[0].probability) + ")."
      : "No candidates.";
    renderConfidence(pred);
    var list = $("candidates");
    cands.forEach(function (c, i) {
      var p = c.probability == null ? 0 : c.probability;
      var share = Math.max(0, Math.min(1, p / mass));
      var size = Math.round(16 + 48 * Math.sqrt(share));
      var icon = L.divIcon({ className: "cand-marker" + (i === 0 ? " best" : ""), html: "<span>" + (i + 1) + "</span>",
        iconSize: [size, size], iconAnchor: [size / 2, size / 2], popupAnchor: [0, -size / 2] });
      var label = "#" + (i + 1) + " " + place(c) + ", " + fmtPct(c.probability);
      var m = L.marker([c.lat, c.lon], { icon: icon, keyboard: true, title: label, alt: label, riseOnHover: true,
        zIndexOffset: 1000 - i });
      var pop = el("div", "pop");
      pop.appendChild(el("strong", null, "#" + (i + 1) + " " + place(c)));
      pop.appendChild(el("div", null, fmtCoord(c)));
      pop.appendChild(el("div", null, "probability " + fmtPct(c.probability)));
      m.bindPopup(pop);
      m.addTo(map);
      state.markers.push(m);

      var li = el("li", "cand");
      li.dataset.rank = String(i + 1);
      var btn = el("button", "cand-btn");
      btn.type = "button";
      btn.setAttribute("aria-label", "Show candidate " + (i + 1) + " on the map: " + place(c));
      btn.appendChild(el("span", "rank", String(i + 1)));
      var body = el("span", "cand-body");
      body.appendChild(el("span", "place", place(c)));
      body.appendChild(el("span", "coord", fmtCoord(c)));
      if (i > 0) body.appendChild(el("span", "dist", fmtKm(haversineKm(cands[0], c)) + " km from #1"));
      btn.appendChild(body);
      var prob = el("span", "prob");
      prob.appendChild(el("span", "pct", fmtPct(c.probability)));
      var bar = el("span", "bar");
      var fill = el("span", "fill");
      fill.style.width = Math.max(1, Math.round(100 * share)) + "%";
      bar.title = "share of the probability of the candidates shown";
      bar.appendChild(fill);
      prob.appendChild(bar);
      btn.appendChild(prob);
      btn.addEventListener("click", function () { focusCandidate(i); });
      li.appendChild(btn);
      list.appendChild(li);
    });
    if (cands.length) fitCandidates(cands);
    renderDistances(cands);
    renderRag(pred, cands);
    if (pred.model && Object.keys(pred.model).length) {
      $("model-info").textContent = JSON.stringify(pred.model, null, 1);
      $("model-box").hidden = false;
    }
    $("download").disabled = $("copy").disabled = false;
  }

  // Calibrated confidence in plain words, the 90% region (circles), and abstention.
  function confidenceWords(conf) {
    if (!conf) return "";
    var t = ["25", "200", "750"].filter(function (k) { return conf[k] != null; });
    return t.map(function (k) { return "likely within " + k + " km: " + Math.round(100 * conf[k]) + "%"; }).join("; ");
  }

  function renderConfidence(pred) {
    var words = confidenceWords(pred.confidence);
    if (pred.abstained) {
      $("summary").textContent = (pred.image ? pred.image + ": " : "") +
        "not confident enough to answer (" + words + ").";
      return;
    }
    if (words) $("summary").textContent += " " + words.charAt(0).toUpperCase() + words.slice(1) + ".";
    var reg = pred.region;
    if (reg && reg.places && reg.places.length) {
      state.regionLayer = L.layerGroup(reg.places.map(function (p) {
        return L.circle(p, { radius: reg.radius_km * 1000, color: "#8e44ad", weight: 1, fillOpacity: 0.12,
          interactive: false });
      }));
      state.regionLayer.addTo(map);
    }
  }

  function renderDistances(cands) {
    if (cands.length < 2) return;
    var n = Math.min(cands.length, 10);
    var t = $("distances");
    var cap = el("caption", "visually-hidden", "Great-circle distance in kilometres between candidate ranks");
    t.appendChild(cap);
    var head = el("tr");
    head.appendChild(el("th", null, ""));
    for (var j = 0; j < n; j++) { var th = el("th", null, "#" + (j + 1)); th.scope = "col"; head.appendChild(th); }
    t.appendChild(head);
    for (var i = 0; i < n; i++) {
      var tr = el("tr");
      var rh = el("th", null, "#" + (i + 1)); rh.scope = "row"; tr.appendChild(rh);
      for (var k = 0; k < n; k++) tr.appendChild(el("td", i === k ? "diag" : null, i === k ? "—" : fmtKm(haversineKm(cands[i], cands[k]))));
      t.appendChild(tr);
    }
    $("distances-box").hidden = false;
  }

  function renderRag(pred, cands) {
    var reason = pred.reason || pred.reasoning || pred.explanation ||
      (cands[0] && (cands[0].reason || cands[0].reasoning));
    if (!reason && pred.reasoner) reason = pred.reasoner.reason || (pred.reasoner.parsed && pred.reasoner.parsed.reason);
    if (reason) { $("reasoning").textContent = String(reason); $("reasoning-box").hidden = false; }
    var refs = pred.references || pred.nearest || pred.neighbors || (pred.reasoner && pred.reasoner.references) || [];
    if (!Array.isArray(refs) || !refs.length) return;
    var ul = $("references");
    ul.textContent = "";
    state.refLayer = L.layerGroup().addTo(map);
    refs.slice(0, 20).forEach(function (r, i) {
      var li = el("li", "ref");
      var src = r.thumbnail || r.url;
      if (src && /^(data:image\/|\/|https?:)/.test(src)) {
        var img = el("img"); img.src = src; img.alt = "Reference photo " + (i + 1); img.loading = "lazy";
        li.appendChild(img);
      }
      var txt = [r.id || r.image || ("reference " + (i + 1))];
      if (isFinite(r.lat) && isFinite(r.lon)) {
        txt.push(fmtCoord(r));
        if (cands[0]) txt.push(fmtKm(haversineKm(cands[0], r)) + " km from #1");
        L.circleMarker([r.lat, r.lon], { radius: 4, color: "#555", weight: 1, fillOpacity: 0.6 })
          .bindTooltip("reference " + (i + 1)).addTo(state.refLayer);
      }
      if (r.place || r.city || r.country) txt.push(r.place || place(r));
      var sim = r.similarity != null ? r.similarity : r.score;
      if (sim != null) txt.push("similarity " + Number(sim).toFixed(3));
      li.appendChild(el("span", null, txt.join(" · ")));
      ul.appendChild(li);
    });
    $("references-box").hidden = false;
  }

  // ---------- requests ----------
  async function locate(file) {
    var k = $("top-k").value;
    var form = new FormData();
    form.append("file", file, file.name || "photo");
    for (var attempt = 0; attempt < 5; attempt++) {
      var resp;
      try {
        resp = await fetch("/v1/predict?top_k=" + encodeURIComponent(k), { method: "POST", body: form, headers: headers() });
      } catch (e) {
        throw new Error("the server could not be reached (" + e.message + ")");
      }
      if (resp.status === 503) {
        var wait = parseInt(resp.headers.get("Retry-After") || "2", 10);
        say("The server is busy or still loading; retrying in " + wait + " s…", "warn");
        await sleep(Math.min(30, Math.max(1, wait)) * 1000);
        continue;
      }
      var body = await resp.json().catch(function () { return {}; });
      if (!resp.ok) {
        if (resp.status === 401) $("api-key").closest("details").open = true;
        throw new Error((body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)) : resp.statusText) +
          " (HTTP " + resp.status + ")");
      }
      return body;
    }
    throw new Error("the server stayed busy; try again later");
  }

  function showThumb(file) {
    var img = $("thumb");
    if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
    var url = URL.createObjectURL(file);
    img.dataset.url = url;
    img.onerror = clearThumb; // not an image the browser can show: no broken-image box
    img.src = url;
    img.alt = "Selected photo: " + (file.name || "pasted image");
    img.hidden = false;
  }
  function clearThumb() {
    var img = $("thumb");
    if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
    delete img.dataset.url;
    img.onerror = null;
    img.removeAttribute("src");
    img.alt = "";
    img.hidden = true;
  }

  function addHistory(entry) {
    state.history.push(entry);
    var li = el("li");
    var btn = el("button", "hist-btn", entry.file.name || "photo");
    btn.type = "button";
    btn.addEventListener("click", function () {
      state.file = entry.file;
      showThumb(entry.file);
      if (entry.result) { say(""); render(entry.result); }
      else if (entry.error) { clearResult(); clearThumb(); say(entry.error, "error"); }
    });
    li.appendChild(btn);
    entry.li = li;
    $("history").appendChild(li);
    $("history-box").hidden = state.history.length < 2;
  }

  async function run(entry) {
    state.file = entry.file;
    showThumb(entry.file);
    clearResult();
    say("");
    $("summary").textContent = "Locating " + (entry.file.name || "photo") + "…";
    document.body.classList.add("busy");
    try {
      entry.result = await locate(entry.file);
      say("");
      render(entry.result);
      entry.li.classList.remove("failed");
    } catch (e) {
      var name = entry.file.name || "photo";
      entry.error = e.message.indexOf(name + ":") === 0 ? e.message : name + ": " + e.message; // said once
      entry.li.classList.add("failed");
      clearThumb(); // a refused photo does not stay on show as if it were the one located
      state.file = null;
      $("rerun").disabled = true;
      $("summary").textContent = "No result.";
      say(entry.error, "error");
    } finally {
      document.body.classList.remove("busy");
      $("rerun").disabled = !state.file;
    }
  }

  async function pump() {
    if (state.busy) return;
    state.busy = true;
    while (state.queue.length) await run(state.queue.shift());
    state.busy = false;
  }

  function takeFiles(files) {
    var list = Array.prototype.slice.call(files || []);
    if (!list.length) return;
    var max = state.config ? state.config.max_upload_bytes : Infinity;
    list.forEach(function (f) {
      if (f.size > max) {
        clearResult(); clearThumb(); state.file = null; $("rerun").disabled = true;
        $("summary").textContent = "No result.";
        say(f.name + ": larger than the server's limit of " + Math.round(max / 1048576) + " MB", "error");
        return;
      }
      var entry = { file: f };
      addHistory(entry);
      state.queue.push(entry);
    });
    pump();
  }

  // ---------- wiring ----------
  var drop = $("drop"), input = $("file");
  drop.addEventListener("click", function () { input.click(); });
  drop.addEventListener("keydown", function (e) {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); }
  });
  input.addEventListener("change", function () { takeFiles(input.files); input.value = ""; });
  ["dragenter", "dragover"].forEach(function (t) {
    drop.addEventListener(t, function (e) { e.preventDefault(); drop.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (t) {
    drop.addEventListener(t, function (e) { e.preventDefault(); drop.classList.remove("over"); });
  });
  drop.addEventListener("drop", function (e) { takeFiles(e.dataTransfer && e.dataTransfer.files); });
  document.addEventListener("paste", function (e) {
    var items = (e.clipboardData && e.clipboardData.files) || [];
    if (items.length) takeFiles(items);
  });
  $("options").addEventListener("submit", function (e) {
    e.preventDefault();
    if (state.file) { var entry = { file: state.file }; addHistory(entry); state.queue.push(entry); pump(); }
  });
  $("settings-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var key = $("api-key").value.trim();
    if (key) sessionStorage.setItem("terraloc.apiKey", key); else sessionStorage.removeItem("terraloc.apiKey");
    var url = $("tile-url").value.trim();
    if (url) localStorage.setItem("terraloc.tileUrl", url); else localStorage.removeItem("terraloc.tileUrl");
    try { setTiles(url || (state.config && state.config.tile_url)); say("Settings applied.", "ok"); }
    catch (e) { say("Tile URL is not valid: " + e.message, "error"); }
  });
  function download(name, text) {
    var a = el("a");
    a.href = URL.createObjectURL(new Blob([text], { type: "application/json" }));
    a.download = name;
    document.body.appendChild(a); a.click(); a.remove();
  }
  $("download").addEventListener("click", function () {
    if (state.result) download((state.result.image || "prediction").replace(/\.[^.]*$/, "") + ".terraloc.json",
      JSON.stringify(state.result, null, 2));
  });
  $("copy").addEventListener("click", function () {
    if (state.result && navigator.clipboard) navigator.clipboard.writeText(JSON.stringify(state.result, null, 2))
      .then(function () { say("JSON copied.", "ok"); }, function () { say("Copy failed; use Download.", "warn"); });
  });

  async function pollReady() {
    for (;;) {
      try {
        var r = await fetch("/readyz");
        var b = await r.json();
        if (r.ok) { $("model-status").textContent = "Model ready."; $("model-status").className = "status ok"; return; }
        $("model-status").textContent = b.status === "failed" ? "Model failed to load: " + b.error : "Model loading…";
        $("model-status").className = "status " + (b.status === "failed" ? "error" : "warn");
        if (b.status === "failed") return;
      } catch (e) { $("model-status").textContent = "Server unreachable."; }
      await sleep(2000);
    }
  }

  fetch("/ui/config.json").then(function (r) { return r.json(); }).then(function (cfg) {
    state.config = cfg;
    var k = $("top-k");
    if (cfg.default_top_k && !Array.prototype.some.call(k.options, function (o) { return o.value === String(cfg.default_top_k); })) {
      k.appendChild(el("option", null, String(cfg.default_top_k)));
    }
    k.value = String(cfg.default_top_k || 5);
    var key = sessionStorage.getItem("terraloc.apiKey");
    if (key) $("api-key").value = key;
    var tile = localStorage.getItem("terraloc.tileUrl") || cfg.tile_url || "";
    $("tile-url").value = localStorage.getItem("terraloc.tileUrl") || "";
    try { setTiles(tile); } catch (e) { setTiles(""); }
    if (cfg.api_key_required && !key) $("api-key").closest("details").open = true;
  }).catch(function () { setTiles(""); });
  pollReady();
})();
