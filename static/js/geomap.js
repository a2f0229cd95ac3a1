/* GeoWeb map factory: a Leaflet map with the app's own Natural Earth basemap under the configured tile layer,
   so the map stays usable when no tile server can be reached. */
(function () {
  "use strict";
  var script = document.getElementById("geomap-script");
  var basemapUrl = script ? script.dataset.basemapUrl : "/basemap/countries.geojson";
  /* Outlines simplified for the zoom in use: "world" below FINE_FROM_ZOOM, "fine" from it on (places.py). Each level
     is fetched at most once per page and shared by every map and script on it (one request per page and level). */
  var FINE_FROM_ZOOM = 4;
  var basemapPromises = {};
  var STYLE = { color: "#8a8f98", weight: 0.6, fillColor: "#eef0e6", fillOpacity: 1 };

  function readJson(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : "";
  }

  function loadBasemap(level) {
    level = level || "world";
    if (!basemapPromises[level]) {
      var url = basemapUrl + (basemapUrl.indexOf("?") >= 0 ? "&" : "?") + "detail=" + level;
      basemapPromises[level] = fetch(url).then(function (response) {
        if (!response.ok) { throw new Error("basemap " + response.status); }
        return response.json();
      });
    }
    return basemapPromises[level];
  }

  function createMap(element, options) {
    options = options || {};
    var map = L.map(element, Object.assign({ worldCopyJump: true, minZoom: 1, zoomSnap: 0.5 }, options.leaflet || {}));
    map.setView(options.center || [20, 0], options.zoom || 2);
    map.createPane("basemap");
    map.getPane("basemap").style.zIndex = 150;
    /* One canvas for the outlines: hundreds of polygons draw far faster than as SVG paths. */
    var renderer = L.canvas({ pane: "basemap", padding: 0.5 });
    var tileUrl = readJson("map-tile-url");
    if (tileUrl) {
      L.tileLayer(tileUrl, { attribution: readJson("map-tile-attribution"), maxZoom: 18 }).addTo(map);
    }
    var layers = {}, shown = null;
    function layerFor(level) {
      if (!layers[level]) {
        layers[level] = loadBasemap(level).then(function (data) {
          return L.geoJSON(data, { pane: "basemap", renderer: renderer, interactive: false, style: STYLE });
        });
      }
      return layers[level];
    }
    function showLevel() {
      var level = map.getZoom() >= FINE_FROM_ZOOM ? "fine" : "world";
      if (shown === level) { return Promise.resolve(map); }
      return layerFor(level).then(function (layer) {
        var wanted = map.getZoom() >= FINE_FROM_ZOOM ? "fine" : "world";
        if (wanted !== level) { return map; }  /* the zoom changed again while it loaded */
        Object.keys(layers).forEach(function (other) {
          if (other !== level) { layers[other].then(function (old) { map.removeLayer(old); }); }
        });
        layer.addTo(map);
        shown = level;
        map.getContainer().classList.add("basemap-ready");
        return map;
      });
    }
    map.whenBasemapReady = showLevel().catch(function () { return map; });
    map.on("zoomend", function () { showLevel().catch(function () { return map; }); });
    map.attributionControl.addAttribution("Natural Earth");
    return map;
  }

  /* Marker icons that differ by shape as well as colour: circle = you, square = truth, triangle, diamond
     and star = the AIs. */
  function shapeIcon(shape, colour, label, shiftX) {
    var svg = {
      circle: '<circle cx="12" cy="12" r="9"/>',
      square: '<rect x="3" y="3" width="18" height="18"/>',
      triangle: '<polygon points="12,2 22,21 2,21"/>',
      diamond: '<polygon points="12,1 23,12 12,23 1,12"/>',
      star: '<polygon points="12,1 15,9 23,9 17,14 19,23 12,18 5,23 7,14 1,9 9,9"/>'
    }[shape];
    return L.divIcon({
      className: "shape-marker shape-" + shape,
      html: '<svg width="24" height="24" viewBox="0 0 24 24" role="img" aria-label="' + label + '">' +
        '<g fill="' + colour + '" stroke="#111" stroke-width="2">' + svg + "</g></svg>",
      iconSize: [24, 24],
      /* shiftX moves the drawn icon sideways, so that two answers at the same place both stay visible. */
      iconAnchor: [12 - (shiftX || 0), 12]
    });
  }

  window.GeoWeb = { createMap: createMap, shapeIcon: shapeIcon, loadBasemap: loadBasemap };
})();
