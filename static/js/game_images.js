/* Game image explorer: curated images on a clustered map, filtered by scene and by the model's error. */
(function () {
  "use strict";
  var element = document.getElementById("image-map");
  if (!element) { return; }
  var points = JSON.parse(document.getElementById("game-image-points").textContent);
  var map = GeoWeb.createMap(element, { center: [20, 0], zoom: 1.5 });
  var cluster = L.markerClusterGroup();
  map.addLayer(cluster);
  var sceneFilter = document.getElementById("scene-filter");
  var errorFilter = document.getElementById("error-filter");
  var colourBy = document.getElementById("colour-by");
  var legend = document.getElementById("colour-legend");
  var models = {};
  points.forEach(function (point) { Object.keys(point.errors_km).forEach(function (k) { models[k] = true; }); });
  Object.keys(models).sort().forEach(function (name) {
    var option = document.createElement("option");
    option.value = name;
    option.textContent = "people minus " + name + " error";
    colourBy.appendChild(option);
  });

  function esc(text) {
    var div = document.createElement("div");
    div.textContent = String(text);
    return div.innerHTML;
  }

  /* Blue where people's median guess was closer than the model, red where the model was; darker beyond 200 and
     2,000 km of difference; grey where nobody has played the photo. */
  function colourOf(point, model) {
    var diff = point.people_minus_model_km[model];
    if (diff === undefined || diff === null) { return "#888888"; }
    var size = Math.abs(diff) > 2000 ? 2 : Math.abs(diff) > 200 ? 1 : 0;
    return diff < 0 ? ["#7fa7d6", "#1f5fa8", "#0b2f5e"][size] : ["#ef9a9a", "#c62828", "#6d0f0f"][size];
  }

  function bestError(point) {
    var values = Object.keys(point.errors_km).map(function (k) { return point.errors_km[k]; });
    return values.length ? Math.min.apply(null, values) : null;
  }

  function draw() {
    cluster.clearLayers();
    var range = errorFilter.value ? errorFilter.value.split("-") : null;
    var shown = points.filter(function (point) {
      if (sceneFilter.value && point.scene !== sceneFilter.value) { return false; }
      if (!range) { return true; }
      var error = bestError(point);
      if (error === null) { return false; }
      return error >= Number(range[0]) && (range[1] === "" || error < Number(range[1]));
    });
    var model = colourBy.value;
    legend.hidden = !model;
    shown.forEach(function (point) {
      var lines = Object.keys(point.errors_km).map(function (k) { return esc(k) + ": " + point.errors_km[k] + " km"; });
      if (point.people_km !== null) {
        lines.push("people (median of " + point.people_rounds + "): " + point.people_km + " km");
      }
      if (model && point.people_minus_model_km[model] !== undefined) {
        lines.push("people minus " + esc(model) + ": " + point.people_minus_model_km[model] + " km");
      }
      var popup = "Image " + point.id + " · " + point.scene + (lines.length ? "<br>" + lines.join("<br>") : "");
      var marker = model
        ? L.circleMarker([point.lat, point.lon], { radius: 7, weight: 1, color: "#333333", fillOpacity: 0.9,
                                                    fillColor: colourOf(point, model), className: "image-dot" })
        : L.marker([point.lat, point.lon], { title: "Image " + point.id });
      cluster.addLayer(marker.bindPopup(popup));
    });
    document.getElementById("image-count").textContent = shown.length + " of " + points.length + " images";
  }
  sceneFilter.addEventListener("change", draw);
  errorFilter.addEventListener("change", draw);
  colourBy.addEventListener("change", draw);
  draw();
})();
