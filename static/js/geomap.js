/* GeoWeb map factory: a Leaflet map with the app's own Natural Earth basemap under the configured tile layer,
   so the map stays usable when no tile server can be reached. */
(function () {
  "use strict";
  var script = document.getElementById("geomap-script");
  var basemapUrl = script ? script.dataset.basemapUrl : "/basemap/countries.geojson";
  var basemapPromise = null;

  function readJson(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : "";
  }

  function loadBasemap() {
    if (!basemapPromise) {
      basemapPromise = fetch(basemapUrl).then(function (response) {
        if (!response.ok) { throw new Error("basemap " + response.status); }
        return response.json();
      });
    }
    return basemapPromise;
  }

  function createMap(element, options) {
    options = options || {};
    var map = L.map(element, Object.assign({ worldCopyJump: true, minZoom: 1, zoomSnap: 0.5 }, options.leaflet || {}));
    map.setView(options.center || [20, 0], options.zoom || 2);
    map.createPane("basemap");
    map.getPane("basemap").style.zIndex = 150;
    var tileUrl = readJson("map-tile-url");
    if (tileUrl) {
      L.tileLayer(tileUrl, { attribution: readJson("map-tile-attribution"), maxZoom: 18 }).addTo(map);
    }
    map.whenBasemapReady = loadBasemap().then(function (data) {
      L.geoJSON(data, {
        pane: "basemap",
        interactive: false,
        style: { color: "#8a8f98", weight: 0.6, fillColor: "#eef0e6", fillOpacity: 1 }
      }).addTo(map);
      map.getContainer().classList.add("basemap-ready");
      return map;
    }).catch(function () { return map; });
    map.attributionControl.addAttribution("Natural Earth");
    return map;
  }

  /* Marker icons that differ by shape as well as colour: circle = you, square = truth, triangle = model. */
  function shapeIcon(shape, colour, label) {
    var svg = {
      circle: '<circle cx="12" cy="12" r="9"/>',
      square: '<rect x="3" y="3" width="18" height="18"/>',
      triangle: '<polygon points="12,2 22,21 2,21"/>',
      diamond: '<polygon points="12,1 23,12 12,23 1,12"/>'
    }[shape];
    return L.divIcon({
      className: "shape-marker shape-" + shape,
      html: '<svg width="24" height="24" viewBox="0 0 24 24" role="img" aria-label="' + label + '">' +
        '<g fill="' + colour + '" stroke="#111" stroke-width="2">' + svg + "</g></svg>",
      iconSize: [24, 24],
      iconAnchor: [12, 12]
    });
  }

  window.GeoWeb = { createMap: createMap, shapeIcon: shapeIcon };
})();
