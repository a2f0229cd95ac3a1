/* Upload form: drag and drop or file picker; sends the photo with fetch so errors show in place. */
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form) { return; }
  var input = document.getElementById("photo-input");
  var zone = document.getElementById("drop-zone");
  var errorBox = document.getElementById("upload-error-live");
  var progress = document.getElementById("upload-progress");
  var button = document.getElementById("upload-button");

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
    progress.textContent = "";
    button.disabled = false;
  }

  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.add("dragging"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    zone.addEventListener(name, function () { zone.classList.remove("dragging"); });
  });
  zone.addEventListener("drop", function (event) {
    event.preventDefault();
    if (event.dataTransfer.files.length) {
      input.files = event.dataTransfer.files;
      form.requestSubmit();
    }
  });
  input.addEventListener("change", function () {
    progress.textContent = input.files.length ? "Selected: " + input.files[0].name : "";
  });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (!input.files.length) { showError("Please choose a photo to analyse."); return; }
    errorBox.hidden = true;
    button.disabled = true;
    progress.textContent = "Uploading and checking the photo…";
    fetch(form.action, { method: "POST", body: new FormData(form), headers: { Accept: "application/json" },
                         credentials: "same-origin" })
      .then(function (response) {
        return response.json().catch(function () { return { error: "The server answered " + response.status + "." }; })
          .then(function (data) { return { ok: response.ok, data: data }; });
      })
      .then(function (answer) {
        if (answer.ok && answer.data.url) { window.location.assign(answer.data.url); }
        else { showError(answer.data.error || "The upload failed."); }
      })
      .catch(function () { showError("The upload failed: the server could not be reached."); });
  });
})();
