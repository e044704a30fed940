// The Direct box (templates/_direct.html): reads a chosen picture or the drawn mask into the form
// as a data URL, then posts the form with htmx (no inline script: the page's CSP forbids it).
"use strict";
(function () {
  function readFile(input) {
    return new Promise(function (resolve, reject) {
      const file = input.files && input.files[0];
      if (!file) { resolve(""); return; }
      const reader = new FileReader();
      reader.onload = function () { resolve(reader.result); };
      reader.onerror = function () { reject(reader.error); };
      reader.readAsDataURL(file);
    });
  }

  function maskFromCanvas(canvas) {
    // White strokes on black, at the panel's size: what the story's mask picture holds.
    const out = document.createElement("canvas");
    out.width = canvas.width;
    out.height = canvas.height;
    const ctx = out.getContext("2d");
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, out.width, out.height);
    ctx.drawImage(canvas, 0, 0);
    return out.toDataURL("image/png");
  }

  async function send(button) {
    const box = button.closest(".direct");
    const form = box.querySelector("form");
    const pid = box.dataset.panel;
    form.elements.init_data.value = form.elements.init.value === "new"
      ? await readFile(form.querySelector(".d-init-file")) : "";
    form.elements.control_data.value = form.elements.control.value === "new"
      ? await readFile(form.querySelector(".d-control-file")) : "";
    const mode = form.elements.mask.value;
    const canvas = form.querySelector(".d-canvas");
    if (mode === "draw") {
      form.elements.mask_data.value = canvas.dataset.drawn ? maskFromCanvas(canvas) : "";
    } else if (mode === "new") {
      form.elements.mask_data.value = await readFile(form.querySelector(".d-mask-file"));
    } else {
      form.elements.mask_data.value = "";
    }
    const path = "/panel/" + encodeURIComponent(pid) + "/direct/" + button.dataset.action;
    htmx.ajax("POST", path, { source: form, target: box, swap: "outerHTML" });
  }

  document.addEventListener("submit", function (event) {
    if (event.target.closest(".direct")) event.preventDefault();  // Enter in a field: no navigation
  });

  // Picking a unit to edit: the control fields show that unit (the story's values; the add row's
  // defaults), so Preview and Keep change only the unit picked.
  document.addEventListener("change", function (event) {
    const radio = event.target.closest(".direct input[name=control_unit]");
    if (!radio) return;
    const form = radio.form;
    const row = radio.closest(".d-unit").dataset;
    const keep = form.elements.control.querySelector("option[value=keep]");
    keep.disabled = Boolean(row.new);
    keep.textContent = row.new ? "keep its image" : "keep " + row.image;
    form.elements.control.querySelector("option[value=none]").textContent = row.new ? "no unit" : "remove the unit";
    form.elements.control.value = row.new ? "none" : "keep";
    form.elements.control_module.value = row.module;
    form.elements.control_model.value = row.model;
    form.elements.control_weight.value = row.weight;
    form.elements.guidance_start.value = row.start;
    form.elements.guidance_end.value = row.end;
  });

  document.addEventListener("click", function (event) {
    const button = event.target.closest(".direct [data-action]");
    if (button) { send(button); return; }
    const clear = event.target.closest(".direct .d-clear");
    if (clear) {
      const canvas = clear.closest(".mask-draw").querySelector("canvas");
      canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
      delete canvas.dataset.drawn;
    }
  });

  let drawing = null;
  function at(canvas, event) {
    const r = canvas.getBoundingClientRect();
    return [(event.clientX - r.left) * canvas.width / r.width, (event.clientY - r.top) * canvas.height / r.height];
  }
  function stroke(canvas, from, to) {
    const ctx = canvas.getContext("2d");
    ctx.strokeStyle = "#fff";
    ctx.fillStyle = "#fff";
    ctx.lineCap = "round";
    ctx.lineWidth = Math.max(4, Math.round(canvas.width / 16));
    ctx.beginPath();
    ctx.moveTo(from[0], from[1]);
    ctx.lineTo(to[0], to[1]);
    ctx.stroke();
    canvas.dataset.drawn = "1";
  }
  document.addEventListener("pointerdown", function (event) {
    const canvas = event.target.closest(".direct .d-canvas");
    if (!canvas) return;
    drawing = { canvas: canvas, last: at(canvas, event) };
    stroke(canvas, drawing.last, drawing.last);
    event.preventDefault();
  });
  document.addEventListener("pointermove", function (event) {
    if (!drawing) return;
    const p = at(drawing.canvas, event);
    stroke(drawing.canvas, drawing.last, p);
    drawing.last = p;
  });
  document.addEventListener("pointerup", function () { drawing = null; });
})();
