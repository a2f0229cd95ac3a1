/* GeoWeb play page: shows one photo at a time, takes the player's pin, and reveals the truth and the model's guess
   only after the server has stored the guess. All state lives on the server; a reload resumes where it was. */
(function () {
  "use strict";
  var root = document.getElementById("game");
  if (!root) { return; }
  var urls = root.dataset;
  var KM_PER_MILE = 1.609344;
  var COLOURS = { you: "#1f6feb", truth: "#1a7f37", model: "#c62828" };
  /* Each AI opponent has its own shape and colour: the first a triangle, the second a diamond, the third a star. */
  var AI_STYLES = [{ shape: "triangle", colour: "#c62828" }, { shape: "diamond", colour: "#8250df" },
                   { shape: "star", colour: "#b35900" }];
  var units = localStorage.getItem("geoweb-units") === "mi" ? "mi" : "km";
  var state = null, current = null, revealed = null, pin = null, overlays = [], countries = [];
  var $ = function (id) { return document.getElementById(id); };

  /* minZoom 0 and quarter steps: on a phone the reveal must fit the truth and every guess, even far apart. */
  var map = GeoWeb.createMap($("map"), { center: [20, 0], zoom: 1.5,
                                         leaflet: { keyboard: false, minZoom: 0, zoomSnap: 0.25 } });

  function api(url, body) {
    var options = { headers: { "Accept": "application/json" }, credentials: "same-origin" };
    if (body !== undefined) {
      options.method = "POST";
      options.headers["Content-Type"] = "application/json";
      options.headers["X-CSRFToken"] = urls.csrf;
      options.body = JSON.stringify(body);
    }
    return fetch(url, options).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) { throw new Error(data.error || ("The server answered " + response.status)); }
        return data;
      });
    });
  }

  function showError(message) {
    var box = $("game-error");
    box.textContent = message;
    box.hidden = !message;
  }

  function distance(km) {
    if (km === null || km === undefined) { return "–"; }
    var value = units === "mi" ? km / KM_PER_MILE : km;
    var digits = value < 10 ? 2 : (value < 100 ? 1 : 0);
    return value.toLocaleString("en", { maximumFractionDigits: digits, minimumFractionDigits: digits }) + " " + units;
  }

  function points(n) { return Number(n || 0).toLocaleString("en"); }

  function pointsLabel(n) { return points(n) + (Number(n) === 1 ? " point" : " points"); }

  /* AIs that answered the same place would hide one another: draw each group of them side by side. */
  function aiShifts(ais) {
    var shifts = ais.map(function () { return 0; });
    var groups = [];
    ais.forEach(function (ai, i) {
      var group = groups.find(function (g) {
        return Math.abs(ais[g[0]].lat - ai.lat) < 0.05 && Math.abs(ais[g[0]].lon - ai.lon) < 0.05;
      });
      if (group) { group.push(i); } else { groups.push([i]); }
    });
    groups.forEach(function (g) {
      if (g.length < 2) { return; }
      g.forEach(function (i, k) { shifts[i] = Math.round(18 * (k - (g.length - 1) / 2)); });
    });
    return shifts;
  }

  /* The names of the AIs drawn at the same place as AI i (itself included). */
  function sharedNames(ais, i) {
    return ais.filter(function (a) {
      return Math.abs(a.lat - ais[i].lat) < 0.05 && Math.abs(a.lon - ais[i].lon) < 0.05;
    }).map(function (a) { return a.name; }).join(" and ");
  }

  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  function safeUrl(url) { return /^https?:\/\//i.test(url || "") ? url : ""; }

  /* The photo's credit names its source, so it is shown only once the round is guessed. */
  function attributionHtml(round) {
    var licence = safeUrl(round.licence_url)
      ? '<a href="' + escapeHtml(round.licence_url) + '" rel="license noopener" target="_blank">' + escapeHtml(round.licence_name) + "</a>"
      : escapeHtml(round.licence_name);
    var author = escapeHtml(round.author || "unknown author");
    var title = "“" + escapeHtml(round.title || "untitled") + "”";
    if (safeUrl(round.source_url)) {
      title = '<a href="' + escapeHtml(round.source_url) + '" target="_blank" rel="noopener">' + title + "</a>";
    }
    return '<span class="credit">Photo: ' + title + " by " + author + " · " + licence + "</span>";
  }

  function pendingCaption() {
    return 'The photo’s credit is shown after your guess · <a href="' + escapeHtml(urls.creditsUrl) + '">All photo credits</a>';
  }

  function clearOverlays() {
    overlays.forEach(function (layer) { map.removeLayer(layer); });
    overlays = [];
  }

  function setPin(latlng) {
    var wrapped = L.latLng(Math.max(-85, Math.min(85, latlng.lat)), ((latlng.lng + 540) % 360) - 180);
    if (!pin) {
      pin = L.marker(wrapped, { draggable: true, keyboard: false, zIndexOffset: 1000,
                                icon: GeoWeb.shapeIcon("circle", COLOURS.you, "Your pin") }).addTo(map);
    } else {
      pin.setLatLng(wrapped);
    }
    $("guess").disabled = false;
  }

  function clearPin() {
    if (pin) { map.removeLayer(pin); pin = null; }
    $("guess").disabled = true;
  }

  function updateBar() {
    var n = current ? current.index + 1 : state.rounds_total;
    $("round-title").textContent = state.finished ? "Game over" : "Photo " + n + " of " + state.rounds_total;
    $("running-score").textContent = "You " + points(state.score) + (state.ai_scores || []).map(function (ai) {
      return " · " + ai.name + " " + points(ai.score);
    }).join("");
  }

  function showRound(round) {
    current = round;
    revealed = null;
    clearOverlays();
    clearPin();
    $("result").innerHTML = "";
    $("next").hidden = true;
    $("guess").hidden = false;
    $("photo-error").hidden = true;
    $("photo").src = round.photo_url;
    $("attribution").innerHTML = pendingCaption();
    /* Not animated: Leaflet drops a fitBounds asked for while a zoom animation runs, and a quick guess would then
       reveal the answer off the visible map. */
    map.setView([20, 0], 1.5, { animate: false });
    updateBar();
    document.dispatchEvent(new CustomEvent("geoweb:round", { detail: round }));
  }

  function showReveal(round) {
    current = round;
    revealed = round;
    clearOverlays();
    if (!pin) { setPin(L.latLng(round.guess.lat, round.guess.lon)); }
    pin.setLatLng([round.guess.lat, round.guess.lon]);
    pin.dragging.disable();
    $("guess").disabled = true;
    $("guess").hidden = true;
    if (!$("photo").getAttribute("src")) { $("photo").src = round.photo_url; }
    $("attribution").innerHTML = attributionHtml(round);
    var truth = L.latLng(round.truth.lat, round.truth.lon);
    var bounds = [truth, pin.getLatLng()];
    var shifts = aiShifts(round.ais);
    overlays.push(L.marker(truth, { keyboard: false, icon: GeoWeb.shapeIcon("square", COLOURS.truth, "True location") }).addTo(map));
    round.ais.forEach(function (ai, i) {
      var style = AI_STYLES[i % AI_STYLES.length], at = L.latLng(ai.lat, ai.lon);
      overlays.push(L.marker(at, { keyboard: false, icon: GeoWeb.shapeIcon(style.shape, style.colour, ai.name + "'s guess", shifts[i]) })
        .bindTooltip(shifts[i] ? sharedNames(round.ais, i) + ": the same place" : ai.name).addTo(map));
      overlays.push(new L.Geodesic([at, truth], { color: style.colour, weight: 2 }).addTo(map));
      bounds.push(at);
    });
    overlays.push(new L.Geodesic([pin.getLatLng(), truth], { color: COLOURS.you, weight: 3, dashArray: "6 6" }).addTo(map));
    /* More room on the left, where the zoom buttons would cover a pin. */
    map.fitBounds(L.latLngBounds(bounds), { paddingTopLeft: [64, 36], paddingBottomRight: [36, 36], maxZoom: 8 });
    renderResult();
    var last = round.index + 1 >= state.rounds_total;
    $("next").textContent = last ? "See the summary" : "Next photo";
    $("next").hidden = false;
    $("next").focus();
    updateBar();
    document.dispatchEvent(new CustomEvent("geoweb:reveal", { detail: round }));
  }

  function renderResult() {
    if (!revealed) { return; }
    var r = revealed;
    var youWin = r.ais.every(function (ai) { return r.distance_km <= ai.distance_km; });
    /* Without tiles the map alone says little: name the places (country, from the app's own Natural Earth data). */
    $("result").innerHTML =
      '<p class="line" id="truth-result"><strong>True location:</strong> <span class="place">' + escapeHtml(r.truth.place) + "</span></p>" +
      '<p class="line ' + (youWin ? "win" : "lose") + '" id="your-result">You: ' + distance(r.distance_km) + " · " + pointsLabel(r.score) +
      ' · <span class="place">' + escapeHtml(r.guess.place) + "</span></p>" +
      r.ais.map(function (ai, i) {
        var aiWins = ai.distance_km < r.distance_km;
        /* The first AI keeps the id "model-result" the page has always had; the others are model2-result, … */
        return '<p class="line ai-result ' + (aiWins ? "win" : "lose") + '" id="' + (i === 0 ? "model-result" : "model" + (i + 1) + "-result") + '">' +
          '<strong class="ai-name">' + escapeHtml(ai.name) + "</strong> · Model: " + distance(ai.distance_km) + " · " + pointsLabel(ai.score) +
          ' · <span class="place">' + escapeHtml(ai.place) + "</span></p>";
      }).join("");
  }

  function guess() {
    if (!pin || !current || revealed) { return; }
    var at = pin.getLatLng();
    $("guess").disabled = true;
    api(urls.guessUrl, { round: current.index, lat: at.lat, lon: at.lng }).then(function (data) {
      showError("");
      state.score += data.round.score;
      state.model_score += data.round.model_score;
      data.round.ais.forEach(function (ai, i) { if (state.ai_scores[i]) { state.ai_scores[i].score += ai.score; } });
      state.finished = data.finished;
      showReveal(data.round);
    }).catch(function (error) {
      showError(error.message);
      $("guess").disabled = false;
    });
  }

  function next() {
    if (current && current.index + 1 >= state.rounds_total) { loadSummary(); return; }
    api(urls.nextUrl, {}).then(function (data) {
      showError("");
      showRound(data.round);
      /* Keyboard players go on from the map, not from the top of the page. */
      $("map").focus();
    }).catch(function (error) { showError(error.message); });
  }

  function loadSummary() {
    api(urls.summaryUrl).then(renderSummary).catch(function (error) { showError(error.message); });
  }

  function renderSummary(summary) {
    state = summary;
    current = null;
    $("play-area").hidden = true;
    $("summary").hidden = false;
    updateBar();
    var better = summary.better_than_model, ais = summary.ai_scores, first = escapeHtml(ais[0].name);
    var verdict = summary.beat_all_ais ?
      (ais.length > 2 ? "You beat all " + ais.length + " AIs!" : (ais.length > 1 ? "You beat both AIs!" : "You beat the AI!")) : "";
    $("summary-totals").innerHTML = "Your score: <strong id=\"summary-score\">" + points(summary.score) + "</strong> of " +
      points(summary.max_score) + ais.map(function (ai, i) {
        return " · " + escapeHtml(ai.name) + ': <strong class="summary-ai-score" id="summary-ai-' + i + '">' + points(ai.score) + "</strong>";
      }).join("") + "<br>" +
      (verdict ? '<strong id="summary-verdict">' + verdict + "</strong><br>" : "") +
      "Closer than " + first + " in <strong id=\"summary-better\">" + better + " of " + summary.rounds_played + "</strong> rounds · " +
      "Your mean error " + distance(summary.mean_error_km) + ais.map(function (ai) {
        return " · " + escapeHtml(ai.name) + "'s mean error " + distance(ai.mean_error_km);
      }).join("");
    if (summary.challenger) {
      $("summary-challenger").hidden = false;
      $("summary-challenger").textContent = summary.challenger.name + " scored " + points(summary.challenger.score) +
        " on these photos (" + summary.challenger.ais.map(function (ai) { return ai.name + " " + points(ai.score); }).join(", ") + ").";
    }
    var body = $("summary-table").querySelector("tbody");
    body.innerHTML = "";
    summary.rounds.forEach(function (r) {
      var row = document.createElement("tr");
      /* One "error · score" cell per AI after the first, as in the header. */
      row.innerHTML = '<td class="num">' + (r.index + 1) + '</td><td class="num ' + (r.better_than_model ? "win" : "") + '">' + distance(r.distance_km) +
        '</td><td class="num">' + points(r.score) + '</td><td class="num">' + distance(r.model_distance_km) +
        '</td><td class="num">' + points(r.model_score) + "</td>" +
        ais.slice(1).map(function (ai, k) {
          var answer = r.ais[k + 1];
          return '<td class="num">' + (answer ? distance(answer.distance_km) + " · " + points(answer.score) : "–") + "</td>";
        }).join("") +
        '<td class="num">' + (r.seconds_taken === null ? "–" : Math.round(r.seconds_taken) + " s") + "</td>" +
        '<td class="photo-credit">' + escapeHtml(r.truth.place) + "<br>" + attributionHtml(r) + "</td>";
      body.appendChild(row);
    });
    var link = new URL(summary.challenge_url, window.location.href).href;
    $("challenge-link").href = link;
    $("challenge-link").textContent = link;
    $("nickname").value = summary.nickname || (urls.anonymous === "1" ? "" : summary.player_name);
    drawSummaryMap(summary);
  }

  function drawSummaryMap(summary) {
    var element = $("summary-map");
    if (element._drawn) { return; }
    element._drawn = true;
    /* Zoom steps of a quarter and a world that may shrink below one tile: on a phone every round must fit. */
    var all = GeoWeb.createMap(element, { center: [20, 0], zoom: 1, leaflet: { minZoom: 0, zoomSnap: 0.25 } });
    all.invalidateSize();
    var points_ = [];
    summary.rounds.forEach(function (r) {
      var truth = L.latLng(r.truth.lat, r.truth.lon), you = L.latLng(r.guess.lat, r.guess.lon),
          label = "Round " + (r.index + 1);
      L.marker(truth, { icon: GeoWeb.shapeIcon("square", COLOURS.truth, label + ": true location") }).bindTooltip(label).addTo(all);
      L.marker(you, { icon: GeoWeb.shapeIcon("circle", COLOURS.you, label + ": your pin") }).addTo(all);
      new L.Geodesic([you, truth], { color: COLOURS.you, weight: 2, dashArray: "6 6" }).addTo(all);
      points_.push(truth, you);
      var shifts = aiShifts(r.ais);
      r.ais.forEach(function (ai, i) {
        var style = AI_STYLES[i % AI_STYLES.length], at = L.latLng(ai.lat, ai.lon);
        L.marker(at, { icon: GeoWeb.shapeIcon(style.shape, style.colour, label + ": " + ai.name, shifts[i]) }).addTo(all);
        new L.Geodesic([at, truth], { color: style.colour, weight: 2 }).addTo(all);
        points_.push(at);
      });
    });
    if (points_.length) { all.fitBounds(L.latLngBounds(points_), { padding: [16, 16], maxZoom: 6 }); }
  }

  function saveNickname(event) {
    event.preventDefault();
    api(urls.nicknameUrl, { nickname: $("nickname").value }).then(function (data) {
      $("nickname-status").textContent = "Saved as " + data.player_name + ".";
    }).catch(function (error) { $("nickname-status").textContent = error.message; });
  }

  /* Country centroid: the area-weighted centroid of the country's largest polygon ring. */
  function ringCentroid(ring) {
    var area = 0, x = 0, y = 0;
    for (var i = 0, j = ring.length - 1; i < ring.length; j = i++) {
      var f = ring[j][0] * ring[i][1] - ring[i][0] * ring[j][1];
      area += f; x += (ring[j][0] + ring[i][0]) * f; y += (ring[j][1] + ring[i][1]) * f;
    }
    if (!area) { return null; }
    return { area: Math.abs(area / 2), lon: x / (3 * area), lat: y / (3 * area) };
  }

  function countryCentroid(feature) {
    var g = feature.geometry, polygons = g.type === "Polygon" ? [g.coordinates] : (g.type === "MultiPolygon" ? g.coordinates : []);
    var best = null;
    polygons.forEach(function (polygon) {
      var c = ringCentroid(polygon[0]);
      if (c && (!best || c.area > best.area)) { best = c; }
    });
    return best;
  }

  function loadCountries() {
    /* The same request as the map's own outlines (GeoWeb.loadBasemap shares it). */
    GeoWeb.loadBasemap("world").then(function (data) {
        countries = data.features.filter(function (f) { return f.properties && f.properties.name; });
        countries.sort(function (a, b) { return a.properties.name.localeCompare(b.properties.name); });
        var list = $("country-list");
        countries.forEach(function (f) {
          var option = document.createElement("option");
          option.value = f.properties.name;
          list.appendChild(option);
        });
      }).catch(function () { $("country").disabled = true; });
  }

  function placeAtCountry() {
    var name = $("country").value.trim().toLowerCase();
    if (!name || revealed || !current) { return; }
    var feature = countries.find(function (f) { return f.properties.name.toLowerCase() === name; });
    if (!feature) { return; }
    var c = countryCentroid(feature);
    if (!c) { return; }
    setPin(L.latLng(c.lat, c.lon));
    map.setView(pin.getLatLng(), Math.max(map.getZoom(), 4));
  }

  function onMapKey(event) {
    if (!current || revealed) { return; }
    var step = 45 / Math.pow(2, map.getZoom());
    var moves = { ArrowUp: [step, 0], ArrowDown: [-step, 0], ArrowLeft: [0, -step], ArrowRight: [0, step] };
    if (moves[event.key]) {
      event.preventDefault();
      if (!pin) { setPin(map.getCenter()); }
      var at = pin.getLatLng();
      setPin(L.latLng(at.lat + moves[event.key][0], at.lng + moves[event.key][1]));
      if (!map.getBounds().pad(-0.1).contains(pin.getLatLng())) { map.panTo(pin.getLatLng()); }
    } else if (event.key === "Enter") {
      event.preventDefault();
      guess();
    } else if (event.key === "+" || event.key === "=") {
      map.zoomIn();
    } else if (event.key === "-") {
      map.zoomOut();
    }
  }

  function applyUnits() {
    $("units").textContent = units === "km" ? "Show miles" : "Show kilometres";
    $("units").setAttribute("aria-pressed", units === "mi" ? "true" : "false");
  }

  $("units").addEventListener("click", function () {
    units = units === "km" ? "mi" : "km";
    localStorage.setItem("geoweb-units", units);
    applyUnits();
    renderResult();
    if (state && state.finished && !$("summary").hidden) { $("summary-map")._drawn = true; renderSummary(state); }
  });
  map.on("click", function (event) { if (current && !revealed) { setPin(event.latlng); } });
  $("map").addEventListener("keydown", onMapKey);
  $("guess").addEventListener("click", guess);
  $("next").addEventListener("click", next);
  $("country").addEventListener("change", placeAtCountry);
  $("country").addEventListener("keydown", function (event) {
    if (event.key === "Enter") { event.preventDefault(); placeAtCountry(); }
  });
  $("nickname-form").addEventListener("submit", saveNickname);
  $("photo").addEventListener("error", function () { if ($("photo").getAttribute("src")) { $("photo-error").hidden = false; } });
  $("photo").addEventListener("load", function () { $("photo-error").hidden = true; });
  applyUnits();
  loadCountries();

  api(urls.stateUrl).then(function (data) {
    state = data;
    if (data.finished) { loadSummary(); return; }
    var shown = data.rounds[data.rounds.length - 1];
    if (shown.guessed) { showReveal(shown); } else { showRound(shown); }
  }).catch(function (error) { showError(error.message); });
})();
