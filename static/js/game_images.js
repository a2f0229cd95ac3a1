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
    shown.forEach(function (point) {
      var lines = Object.keys(point.errors_km).map(function (k) { return k + ": " + point.errors_km[k] + " km"; });
      cluster.addLayer(L.marker([point.lat, point.lon], { title: "Image " + point.id })
        .bindPopup("Image " + point.id + " · " + point.scene + (lines.length ? "<br>" + lines.join("<br>") : "")));
    });
    document.getElementById("image-count").textContent = shown.length + " of " + points.length + " images";
  }
  sceneFilter.addEventListener("change", draw);
  errorFilter.addEventListener("change", draw);
  draw();
})();
