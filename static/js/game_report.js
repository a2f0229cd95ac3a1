/* GeoWeb play page: the "Report this image" button shown with a round's reveal; reports land in the admin's
   review queue. game.js announces rounds with the geoweb:round and geoweb:reveal events. */
(function () {
  "use strict";
  var root = document.getElementById("game");
  var box = document.getElementById("report-box");
  if (!root || !box) { return; }
  var form = document.getElementById("report-form");
  var open = document.getElementById("report-open");
  var status = document.getElementById("report-status");
  var roundIndex = null;
  var reported = {};

  function reset(round, revealed) {
    roundIndex = round.index;
    box.hidden = !revealed;
    form.hidden = true;
    open.setAttribute("aria-expanded", "false");
    open.hidden = Boolean(reported[round.index]);
    status.textContent = reported[round.index] ? "Thanks: this photo has been reported." : "";
  }

  document.addEventListener("geoweb:round", function (event) { reset(event.detail, false); });
  document.addEventListener("geoweb:reveal", function (event) { reset(event.detail, true); });

  open.addEventListener("click", function () {
    form.hidden = !form.hidden;
    open.setAttribute("aria-expanded", String(!form.hidden));
    if (!form.hidden) { document.getElementById("report-reason").focus(); }
  });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var index = roundIndex;
    status.textContent = "Sending…";
    fetch(root.dataset.reportUrl, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": root.dataset.csrf },
      body: JSON.stringify({ round: index, reason: document.getElementById("report-reason").value,
                             comment: document.getElementById("report-comment").value })
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) { throw new Error(data.error || "The report could not be sent (" + response.status + ")."); }
        reported[index] = true;
        form.hidden = true;
        open.hidden = true;
        document.getElementById("report-comment").value = "";
        status.textContent = "Thanks: this photo has been reported.";
      });
    }).catch(function (error) { status.textContent = error.message; });
  });
})();
