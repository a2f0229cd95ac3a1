/* Partition explorer: the active model's cells of one partitioning, coloured by training-photo count. */
(function () {
  "use strict";
  var element = document.getElementById("partition-map");
  if (!element) { return; }
  var map = GeoWeb.createMap(element, { center: [20, 0], zoom: 1.5 });
  var info = document.getElementById("cell-info");
  var layer = null;

  function show(name) {
    info.textContent = "Loading " + name + "…";
    fetch(element.dataset.cellsUrl.replace("NAME", encodeURIComponent(name)), { credentials: "same-origin" })
      .then(function (response) { return response.json(); })
      .then(function (data) {
        if (data.error) { info.textContent = data.error; return; }
        if (layer) { map.removeLayer(layer); }
        var top = Math.log(1 + (data.max_images || 1));
        layer = L.geoJSON(data, {
          style: function (feature) {
            var share = Math.log(1 + feature.properties.images) / top;
            return { className: "partition-cell", color: "#333", weight: 0.3, fillColor: "hsl(" + (220 - 200 * share) + ",80%,50%)", fillOpacity: 0.45 };
          },
          onEachFeature: function (feature, cell) {
            cell.on("click", function () {
              var p = feature.properties;
              var parents = Object.keys(p.parents).map(function (k) { return k + " " + p.parents[k]; }).join(", ") || "none";
              info.textContent = "Cell " + p.token + " · class " + p.class_index + " · level " + p.level + " · " + p.images + " training photos · parents: " + parents;
            });
          }
        }).addTo(map);
        info.textContent = data.features.length + " cells of " + data.partitioning + " (model " + data.model + "). Click a cell.";
      })
      .catch(function () { info.textContent = "The cells could not be loaded."; });
  }

  Array.prototype.forEach.call(document.querySelectorAll("input[name=partitioning]"), function (input) {
    input.addEventListener("change", function () { show(input.value); });
    if (input.checked) { show(input.value); }
  });
})();
