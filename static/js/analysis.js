/* Live analysis page: listens on the analysis websocket, draws each event as it arrives (scene, cells, heat map,
   estimate, activation map), and reconnects after a drop; the server replays stored events, seen ones are skipped. */
(function () {
  "use strict";
  var root = document.getElementById("analysis-root");
  if (!root) { return; }
  var STAGES = ["queued", "scene", "partitions", "heatmap", "estimate", "cam", "done"];
  var LABELS = { queued: "Waiting for the model…", running: "The model is looking at the photo…",
                 scene: "Scene recognised", partitions: "Cells ranked", heatmap: "Heat map drawn",
                 estimate: "Estimate ready", cam: "Activation map ready", done: "Done" };
  var seen = 0;
  var finished = false;
  var retries = 0;
  var map = GeoWeb.createMap(document.getElementById("map"), { center: [20, 0], zoom: 1.5 });
  var cellLayers = {};
  var heatLayers = {};
  var estimateLayer = L.layerGroup().addTo(map);
  var layerName = "hierarchy";
  var cam = { url: null, caption: "", cells: {} };
  // Stored results come back from PostgreSQL (jsonb) with their keys re-ordered, so nothing may depend on key order:
  // concepts and partitionings are always shown in this order, others after them by name.
  var ORDER = ["indoor", "natural", "urban", "coarse", "middle", "fine", "hierarchy"];
  function orderedKeys(object) {
    function rank(key) { var i = ORDER.indexOf(key); return i < 0 ? ORDER.length : i; }
    return Object.keys(object).sort(function (a, b) { return rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0); });
  }  // from the cam event: overall map and partitioning -> token -> URL

  function byId(id) { return document.getElementById(id); }
  function text(node, value) { node.textContent = value; return node; }
  function el(tag, value, cls) { var node = document.createElement(tag); if (value !== undefined) { node.textContent = value; } if (cls) { node.className = cls; } return node; }
  function pct(p) { return (100 * p).toFixed(p < 0.001 ? 3 : 1) + " %"; }
  // Coordinates with the precision they have: 0.1 degree at country level is "26.8", not "26.800".
  function coords(lat, lon, decimals) {
    var d = typeof decimals === "number" ? Math.min(decimals, 3) : 3;
    return lat.toFixed(d) + ", " + lon.toFixed(d);
  }

  function showGranularity(level) {
    if (!level) { return; }
    text(byId("granularity-text"), level === "fine" ? "" : level === "withheld" ? "No location given." :
         "Answer limited to " + level + " level.");
  }

  // The photo is deleted when the analysis ends (unless kept): a page opened mid-stream may ask for it too late.
  // Then the notice takes its place, and the activation map is shown on its own, below it, never over it.
  function photoGone() {
    var photo = byId("photo");
    if (!photo) { return; }
    var notice = byId("photo-deleted-notice").content.firstElementChild.cloneNode(true);
    photo.parentNode.replaceChild(notice, photo);
    var overlay = byId("cam");
    overlay.classList.remove("cam-overlay");
    overlay.classList.add("cam-alone");
    notice.parentNode.insertBefore(overlay, notice.nextSibling);
  }
  (function watchPhoto() {
    var photo = byId("photo");
    if (!photo) { return; }
    photo.addEventListener("error", photoGone);
    if (photo.complete && photo.naturalWidth === 0 && photo.getAttribute("src")) { photoGone(); }
  })();

  function setStage(stage) {
    var index = STAGES.indexOf(stage);
    Array.prototype.forEach.call(byId("stages").children, function (item, i) {
      item.classList.toggle("reached", index >= 0 && i <= index);
      item.classList.toggle("current", i === index);
    });
    root.dataset.stage = stage;
    text(byId("stage-text"), LABELS[stage] || stage);
  }

  function showError(message) {
    var box = byId("analysis-error");
    box.textContent = message;
    box.hidden = false;
    root.dataset.stage = "error";
    text(byId("stage-text"), "The analysis stopped.");
  }

  function showUntrained(untrained, modelName) {
    if (!untrained) { return; }
    var banner = byId("untrained-banner");
    banner.hidden = false;
    if (modelName) { banner.querySelector(".model-name").textContent = modelName; }
  }

  var handlers = {
    status: function (event) {
      showUntrained(event.untrained, event.model_name);
      if (event.status === "queued") { setStage("queued"); }
      else if (event.status === "running" && !event.stage) { text(byId("stage-text"), LABELS.running); }
      if (event.status === "failed" && event.error) { showError(event.error); }
    },
    scene: function (event) {
      showUntrained(event.untrained, event.model_name);
      if (event.scene_untrained && !event.untrained) { byId("scene-untrained-banner").hidden = false; }
      showGranularity(event.granularity);
      var bars = byId("s3-bars");
      bars.textContent = "";
      orderedKeys(event.s3).forEach(function (concept) {
        var row = el("div", undefined, "bar-row" + (concept === event.concept ? " chosen" : ""));
        row.appendChild(el("span", concept, "bar-label"));
        var bar = el("div", undefined, "bar");
        bar.style.width = Math.max(1, 100 * event.s3[concept]) + "%";
        row.appendChild(bar);
        row.appendChild(el("span", pct(event.s3[concept]), "bar-value"));
        bars.appendChild(row);
      });
      var list = byId("places365");
      list.textContent = "";
      event.places365.forEach(function (item) { list.appendChild(el("li", item.label.replace(/_/g, " ") + " — " + pct(item.probability))); });
      byId("scene").hidden = false;
    },
    partitions: function (event) {
      var box = byId("partition-tables");
      box.textContent = "";
      var names = orderedKeys(event.partitionings).filter(function (name) { return event.partitionings[name].length; });
      // At country level no cells are sent: no "Top cells" heading over nothing.
      byId("partitions").hidden = names.length === 0;
      names.forEach(function (name) {
        var table = el("table", undefined, "cells");
        table.appendChild(el("caption", name));
        event.partitionings[name].forEach(function (cell) {
          var row = el("tr");
          row.appendChild(el("td", cell.token));
          row.appendChild(el("td", coords(cell.lat, cell.lon, 2)));
          row.appendChild(el("td", pct(cell.probability), "num"));
          table.appendChild(row);
        });
        box.appendChild(table);
      });
    },
    heatmap: function (event) {
      Object.keys(cellLayers).forEach(function (name) { map.removeLayer(cellLayers[name]); });
      Object.keys(heatLayers).forEach(function (name) { map.removeLayer(heatLayers[name]); });
      cellLayers = {}; heatLayers = {};
      var groups = {};
      event.geojson.features.forEach(function (feature) {
        var name = feature.properties.partitioning;
        (groups[name] = groups[name] || []).push(feature);
      });
      orderedKeys(groups).forEach(function (name) {
        var features = groups[name];
        var top = Math.max.apply(null, features.map(function (f) { return f.properties.probability; })) || 1;
        cellLayers[name] = L.geoJSON({ type: "FeatureCollection", features: features }, {
          style: function (feature) {
            var share = feature.properties.probability / top;
            return { className: "heat-cell cell-" + feature.properties.token, color: "#7a1010", weight: 0.6, fillColor: "hsl(" + (50 - 50 * share) + ",90%,50%)",
                     fillOpacity: 0.2 + 0.55 * share };
          },
          onEachFeature: function (feature, layer) {
            var p = feature.properties;
            layer.bindPopup(name + " cell " + p.token + " (level " + p.level + ")<br>probability " + pct(p.probability));
            layer.on("click", function () { showCellCam(name, p.token); });
          }
        });
        if (L.heatLayer) {
          heatLayers[name] = L.heatLayer(features.map(function (f) {
            return [f.properties.lat, f.properties.lon, f.properties.probability / top];
          }), { radius: 25, blur: 20, maxZoom: 6 });
        }
      });
      // Uploads limited to region or country level carry no middle, fine or hierarchy cells: offer only what came,
      // with the shown layer's radio checked, and no toggles at all when no cells came.
      var radios = Array.prototype.slice.call(document.querySelectorAll("#layer-toggles input[name=layer]"));
      radios.forEach(function (input) { input.parentNode.hidden = !groups[input.value]; });
      if (!groups[layerName]) {
        var first = radios.filter(function (input) { return groups[input.value]; })[0];
        if (first) { layerName = first.value; }
      }
      radios.forEach(function (input) { input.checked = input.value === layerName; });
      byId("layer-toggles").hidden = Object.keys(groups).length === 0;
      showLayer();
    },
    estimate: function (event) {
      showGranularity(event.granularity);
      if (event.coarsening_reason) {
        text(byId("coarsening-note"), event.coarsening_reason);
        byId("coarsening-note").hidden = false;
      }
      estimateLayer.clearLayers();
      var list = byId("candidates");
      list.textContent = "";
      text(byId("estimate-label"), event.label);
      byId("estimate").hidden = false;
      // A withheld answer (the model judges the photo not localizable): no point, no circle, no candidates.
      byId("estimate-figures").hidden = event.lat === null || event.lat === undefined;
      if (byId("estimate-figures").hidden) { return; }
      var circle = L.circle([event.lat, event.lon], { radius: event.radius_km * 1000, color: "#1f6feb", weight: 2,
                                                       fillOpacity: 0.08, className: "confidence-circle" }).addTo(estimateLayer);
      L.marker([event.lat, event.lon], { icon: GeoWeb.shapeIcon("triangle", "#1f6feb", "Estimate"), title: "Estimate" })
        .bindPopup("Estimate: " + event.label).addTo(estimateLayer);
      event.candidates.forEach(function (candidate, i) {
        var atEstimate = candidate.lat === event.lat && candidate.lon === event.lon;
        // A limited answer's estimate is its first candidate: one marker (the estimate's) for that place.
        if (!atEstimate) {
          L.marker([candidate.lat, candidate.lon], { icon: GeoWeb.shapeIcon("diamond", "#f0b400", "Candidate " + (i + 1)),
                                                     title: "Candidate " + (i + 1) })
            .bindPopup((i + 1) + ". " + candidate.label + " — " + pct(candidate.probability)).addTo(estimateLayer);
        }
        list.appendChild(el("li", candidate.label + " (" + coords(candidate.lat, candidate.lon, event.decimals) + ") — " + pct(candidate.probability)));
      });
      text(byId("estimate-coords"), coords(event.lat, event.lon, event.decimals));
      text(byId("estimate-confidence"), pct(event.confidence));
      // What the confidence and the circle are about: the answer shown, whatever its level.
      text(byId("estimate-confidence-of"), event.confidence_of || "probability within 25 km");
      text(byId("estimate-radius-of"), event.radius_of || "half of the probability");
      text(byId("estimate-radius"), Math.round(event.radius_km));
      map.fitBounds(circle.getBounds(), { maxZoom: 6, padding: [20, 20] });
    },
    // Search within the cell: how much the retrieved neighbours agree (prediction density), whether the model
    // judges the photo localizable, and (at fine level only) what the refined answer is.
    refined: function (event) {
      var verdict = event.localizable ? "localizable" : "not localizable";
      var line = "Prediction density " + pct(event.density) + ": the model judges this photo " + verdict + ".";
      if (event.lat !== null && event.lat !== undefined) {
        line += " Refined estimate " + coords(event.lat, event.lon, event.decimals) + ".";
      }
      if (event.note) { line += " " + event.note; }
      text(byId("refined"), line);
      byId("refined").hidden = false;
    },
    cam: function (event) {
      cam = { url: event.url, caption: event.caption || "", cells: event.cells || {} };
      if (!event.url) { text(byId("cam-message"), event.message || "No activation map."); return; }
      showCam(event.url, event.caption ? "Activation map of " + event.caption + "." : "");
      var hint = Object.keys(cam.cells).length ? " Click one of the most probable cells on the map to see its own map." : "";
      text(byId("cam-message"), hint.trim());
    },
    segmentation: function (event) {
      // The segmentation map the model computed and took as its second input (vit bundles with segmentation).
      var overlay = byId("segmentation-overlay");
      var toggle = byId("segmentation-toggle");
      overlay.src = event.url;
      var list = byId("segmentation-classes");
      list.textContent = "";
      (event.classes || []).forEach(function (c) {
        var item = el("li", c.label + " " + pct(c.share));
        item.style.borderLeft = "1em solid " + c.colour;
        item.style.paddingLeft = "0.4em";
        list.appendChild(item);
      });
      byId("segmentation").hidden = false;
      toggle.checked = false;
      toggle.onchange = function () { overlay.hidden = !toggle.checked; };
    },
    done: function () { finished = true; },
    error: function (event) {
      if (event.fatal === false) { return; }
      finished = true;
      showError(event.message);
    }
  };

  function showCam(url, caption) {
    var overlay = byId("cam");
    var toggle = byId("cam-toggle");
    overlay.src = url;
    if (overlay.classList.contains("cam-alone")) { caption += " Shown on its own: the photo was deleted."; }
    text(byId("cam-caption"), caption);
    toggle.disabled = false;
    toggle.checked = true;
    overlay.hidden = false;
  }

  // A clicked heat-map cell shows where in the photo the evidence for that cell lies, if the analysis stored it.
  function showCellCam(name, token) {
    var url = (cam.cells[name] || {})[token];
    if (url) {
      showCam(url, "Activation map of " + name + " cell " + token + ".");
      text(byId("cam-message"), "");
    } else {
      text(byId("cam-message"), "No activation map for " + name + " cell " + token +
           ": only the most probable cells have one." + (cam.url ? " Showing the overall map." : ""));
      if (cam.url) { showCam(cam.url, cam.caption ? "Activation map of " + cam.caption + "." : ""); }
    }
  }

  function showLayer() {
    Object.keys(cellLayers).forEach(function (name) { map.removeLayer(cellLayers[name]); });
    Object.keys(heatLayers).forEach(function (name) { map.removeLayer(heatLayers[name]); });
    var name = cellLayers[layerName] ? layerName : orderedKeys(cellLayers)[0];
    if (!name) { return; }
    cellLayers[name].addTo(map);
    if (heatLayers[name] && byId("heat-toggle").checked) { heatLayers[name].addTo(map); }
  }

  Array.prototype.forEach.call(document.querySelectorAll("#layer-toggles input[name=layer]"), function (input) {
    input.addEventListener("change", function () { layerName = input.value; showLayer(); });
  });
  byId("heat-toggle").addEventListener("change", showLayer);
  byId("cam-toggle").addEventListener("change", function (event) { byId("cam").hidden = !event.target.checked; });

  function receive(message) {
    var event;
    try { event = JSON.parse(message.data); } catch (e) { return; }
    if (event.seq) {
      if (event.seq <= seen) { return; }
      seen = event.seq;
    }
    var handler = handlers[event.type];
    if (!handler) { return; }
    handler(event);
    if (STAGES.indexOf(event.type) >= 0) { setStage(event.type); }
    if (event.type === "status" && event.stage && STAGES.indexOf(event.stage) >= 0) { setStage(event.stage); }
  }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + window.location.host + root.dataset.socketPath);
    socket.addEventListener("open", function () { retries = 0; });
    socket.addEventListener("message", receive);
    socket.addEventListener("close", function (event) {
      if (event.code === 4401 || event.code === 4403 || event.code === 4429 || finished) { return; }
      retries += 1;
      text(byId("stage-text"), "Connection lost, reconnecting…");
      window.setTimeout(connect, Math.min(10000, 500 * Math.pow(2, retries)));
    });
  }
  connect();
})();
