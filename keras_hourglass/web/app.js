// The page of `keras-hourglass serve`: sends a photo to the server's V2 endpoint, draws the skeleton it returns.
// Keypoints are (x, y) pixels of the photo with pixel centres at integers, so a joint is drawn at (x + 0.5, y + 0.5)
// in an SVG whose user units are the photo's pixels.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
// `boxes`: the person boxes dragged on the photo (a single-person model: one person per box).
const state = { model: null, joints: [], limbs: [], multi: false, file: null, boxes: [], result: null, size: null,
  stream: null };
// A multi-person model's people, each in its own colour (matplotlib's tab10, as the overlays of predict.py).
const PERSON_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
  "#17becf", "#7f7f7f"];

function side(name) {
  if (/^(l|left)[_ ]/i.test(name)) return "left";
  if (/^(r|right)[_ ]/i.test(name)) return "right";
  return "centre";
}

function say(text, bad = false) {
  $("message").textContent = text;
  $("message").classList.toggle("bad", bad);
}

async function connect() {
  try {
    const models = await (await fetch("/v2/models")).json();
    state.model = models.models[0];
    const meta = await (await fetch(`/v2/models/${encodeURIComponent(state.model)}`)).json();
    state.joints = meta.parameters.keypoint_names;
    state.limbs = meta.parameters.limbs;
    state.multi = Boolean(meta.parameters.multi_person);
    if (state.multi) {  // people in their own colours, found without boxes
      $("legend").hidden = true;
      $("box-hint").textContent = "This model finds every person in the photo itself.";
      $("clear-box").hidden = true;
    }
    $("model-name").textContent = `${state.model} · ${state.joints.length} joints · ${meta.parameters.input_size.join("×")} input` +
      (state.multi ? " · every person" : "");
    $("server-state").textContent = "ready";
    $("server-state").className = "pill ok";
  } catch (error) {
    $("server-state").textContent = "server unreachable";
    $("server-state").className = "pill bad";
    say(`Cannot read the model's metadata: ${error}`, true);
  }
}

function base64(buffer) {
  const bytes = new Uint8Array(buffer);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

async function show(file) {
  stopCamera();
  state.file = file;
  state.boxes = [];
  $("clear-box").disabled = true;
  const url = URL.createObjectURL(file);
  const photo = $("photo");
  await new Promise((resolve, reject) => { photo.onload = resolve; photo.onerror = reject; photo.src = url; })
    .catch(() => {
      // Nothing of the previous photo stays on screen: no broken image, no old size or skeleton.
      state.file = null;
      state.result = null;
      photo.hidden = true;
      photo.removeAttribute("src");
      $("stage").hidden = true;
      $("placeholder").hidden = false;
      $("drop").classList.remove("loaded");
      for (const id of ["image-size", "time", "mean-score"]) $(id).textContent = "–";
      $("download").disabled = true;
      $("joints").replaceChildren();
      throw new Error(`${file.name || "the file"} is not an image this browser can show`);
    });
  state.size = [photo.naturalWidth, photo.naturalHeight];
  $("placeholder").hidden = true;
  $("stage").hidden = false;
  photo.hidden = false;
  $("drop").classList.add("loaded");
  $("image-size").textContent = `${state.size[0]}×${state.size[1]}`;
  const overlay = $("overlay");
  overlay.setAttribute("viewBox", `0 0 ${state.size[0]} ${state.size[1]}`);
  overlay.setAttribute("preserveAspectRatio", "none");
  overlay.replaceChildren();
  await predict();
}

async function predict() {
  if (!state.file || !state.model) return;
  document.body.dataset.state = "busy";
  const boxes = state.boxes.length;
  say(boxes ? `Estimating the pose in ${boxes === 1 ? "the box" : `each of the ${boxes} boxes`}…`
    : state.multi ? "Finding every person…" : "Estimating the pose…");
  const inputs = [{ name: "images", datatype: "BYTES", shape: [1], data: [base64(await state.file.arrayBuffer())] }];
  // one image and one box per person: the server answers one person per box
  if (boxes) inputs.push({ name: "boxes", datatype: "FP32", shape: [boxes, 4], data: state.boxes.flat() });
  const started = performance.now();
  try {
    const response = await fetch(`/v2/models/${encodeURIComponent(state.model)}/infer`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ inputs }),
    });
    const answer = await response.json();
    const elapsed = performance.now() - started;
    if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
    const output = (name) => answer.outputs.find((o) => o.name === name).data;
    const xy = output("keypoints");
    const scores = output("scores");
    if (state.multi) {
      showPeople(xy, scores, output("person_scores"), elapsed);
      return;
    }
    if (boxes) {  // each box's person, with the mean of its joint scores as its score
      const k = state.joints.length;
      const means = state.boxes.map((_, p) => scores.slice(p * k, (p + 1) * k).reduce((a, b) => a + b, 0) / k);
      showPeople(xy, scores, means, elapsed, state.boxes);
      return;
    }
    state.result = {
      model: state.model, image: state.file.name || "camera.jpg", image_size: state.size, box: null,
      request_ms: Math.round(elapsed * 10) / 10,
      keypoints: state.joints.map((name, i) => ({ name, x: xy[2 * i], y: xy[2 * i + 1], score: scores[i] })),
    };
    window.poseResult = state.result;
    draw();
    $("time").textContent = `${Math.round(elapsed)} ms`;
    const mean = scores.reduce((a, b) => a + b, 0) / scores.length;
    $("mean-score").textContent = mean.toFixed(2);
    $("download").disabled = false;
    say(`${state.joints.length} joints found. Hover over a joint for its name and score.`);
    document.body.dataset.state = "done";
  } catch (error) {
    say(`The server refused the photo: ${error.message}`, true);
    document.body.dataset.state = "error";
  }
}

function showPeople(xy, scores, personScores, elapsed, boxes = null) {
  const k = state.joints.length;
  state.result = {
    model: state.model, image: state.file.name || "camera.jpg", image_size: state.size,
    request_ms: Math.round(elapsed * 10) / 10,
    people: personScores.map((score, p) => ({
      person: p + 1, score, box: boxes ? boxes[p] : null,
      keypoints: state.joints.map((name, j) => ({ name, x: xy[2 * (p * k + j)], y: xy[2 * (p * k + j) + 1],
        score: scores[p * k + j] })),
    })),
  };
  window.poseResult = state.result;
  draw();
  $("time").textContent = `${Math.round(elapsed)} ms`;
  const people = personScores.length;
  $("mean-score").textContent = people ? (personScores.reduce((a, b) => a + b, 0) / people).toFixed(2) : "–";
  $("download").disabled = false;
  say(`${people} ${people === 1 ? "person" : "people"} found. Hover over a joint for its person, name and score.`);
  document.body.dataset.state = "done";
}

function drawPeople() {
  const overlay = $("overlay");
  const unit = Math.max(...state.size) / 100;
  const list = $("joints");
  list.replaceChildren();
  for (const person of state.result.people) {
    const colour = PERSON_COLOURS[(person.person - 1) % PERSON_COLOURS.length];
    if (person.box) drawBox(person.box, colour);
    const found = Object.fromEntries(person.keypoints.filter((k) => k.score > 0).map((k) => [k.name, k]));
    for (const [a, b] of state.limbs) {
      const p = found[a], q = found[b];
      if (p && q) element("line", { class: "limb person", x1: p.x + 0.5, y1: p.y + 0.5, x2: q.x + 0.5, y2: q.y + 0.5,
        stroke: colour, "stroke-width": unit * 0.7, "data-person": person.person }, overlay);
    }
    for (const k of Object.values(found)) {
      const circle = element("circle", { class: "joint person", cx: k.x + 0.5, cy: k.y + 0.5, r: unit * 1.1,
        fill: colour, "stroke-width": unit * 0.3, "data-person": person.person, "data-joint": k.name, "data-x": k.x,
        "data-y": k.y, "data-score": k.score }, overlay);
      const detail = { ...k, name: `person ${person.person} · ${k.name}` };
      circle.addEventListener("mouseenter", (event) => { circle.setAttribute("r", unit * 1.8); tooltip(detail, event); });
      circle.addEventListener("mousemove", (event) => tooltip(detail, event));
      circle.addEventListener("mouseleave", () => { circle.setAttribute("r", unit * 1.1); tooltip(null); });
    }
    const item = document.createElement("li");
    item.dataset.person = person.person;
    item.innerHTML = `<span class="dot" style="background:${colour}"></span>` +
      `<span>person ${person.person} · ${Object.keys(found).length} joints</span><span class="bar"><span style="width:${Math.min(100, Math.max(0, person.score * 100))}%"></span></span>` +
      `<span class="score">${person.score.toFixed(2)}</span>`;
    list.appendChild(item);
  }
}

function element(name, attributes, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  parent.appendChild(node);
  return node;
}

function draw() {
  const overlay = $("overlay");
  overlay.replaceChildren();
  $("legend").hidden = Boolean(state.result.people);  // people are drawn in their own colours, not by side
  if (state.result.people) { drawPeople(); return; }
  const unit = Math.max(...state.size) / 100;

  const points = Object.fromEntries(state.result.keypoints.map((k) => [k.name, k]));
  for (const [a, b] of state.limbs) {
    const p = points[a], q = points[b];
    element("line", { class: `limb ${side(a) === side(b) ? side(a) : "centre"}`, x1: p.x + 0.5, y1: p.y + 0.5,
      x2: q.x + 0.5, y2: q.y + 0.5, "stroke-width": unit * 0.7 }, overlay);
  }
  const list = $("joints");
  list.replaceChildren();
  state.result.keypoints.forEach((k) => {
    const circle = element("circle", { class: `joint ${side(k.name)}`, cx: k.x + 0.5, cy: k.y + 0.5, r: unit * 1.1,
      "stroke-width": unit * 0.3, "data-joint": k.name, "data-x": k.x, "data-y": k.y, "data-score": k.score }, overlay);
    const item = document.createElement("li");
    item.dataset.joint = k.name;
    item.innerHTML = `<span class="dot ${side(k.name)}" style="background:var(--${side(k.name)})"></span>` +
      `<span>${k.name.replace(/_/g, " ")}</span><span class="bar"><span style="width:${Math.min(100, Math.max(0, k.score * 100))}%"></span></span>` +
      `<span class="score">${k.score.toFixed(2)}</span>`;
    list.appendChild(item);
    const hot = (on, event) => {
      circle.classList.toggle("hot", on);
      item.classList.toggle("hot", on);
      circle.setAttribute("r", unit * (on ? 1.8 : 1.1));
      tooltip(on ? k : null, event);
    };
    for (const node of [circle, item]) {
      node.addEventListener("mouseenter", (event) => hot(true, event));
      node.addEventListener("mousemove", (event) => tooltip(k, event));
      node.addEventListener("mouseleave", () => hot(false));
    }
    circle.addEventListener("mousedown", (event) => event.stopPropagation());
  });
}

function tooltip(k, event) {
  const tip = $("tooltip");
  if (!k) { tip.hidden = true; return; }
  tip.innerHTML = `<b>${k.name.replace(/_/g, " ")}</b><br>score ${k.score.toFixed(3)}<br>x ${k.x.toFixed(1)}, y ${k.y.toFixed(1)} px`;
  tip.hidden = false;
  if (event) { tip.style.left = `${event.clientX + 14}px`; tip.style.top = `${event.clientY + 12}px`; }
}

function drawBox([x1, y1, x2, y2], colour = null) {
  element("rect", { class: "box", x: x1, y: y1, width: x2 - x1, height: y2 - y1,
    "stroke-width": Math.max(...state.size) / 300, ...(colour ? { style: `stroke:${colour}` } : {}) }, $("overlay"));
}

function photoPoint(event) {
  const rect = $("photo").getBoundingClientRect();
  const x = (event.clientX - rect.left) * state.size[0] / rect.width;
  const y = (event.clientY - rect.top) * state.size[1] / rect.height;
  return [Math.min(Math.max(x, 0), state.size[0]), Math.min(Math.max(y, 0), state.size[1])];
}

function setupBoxDrawing() {
  const stage = $("stage");
  let start = null;
  stage.addEventListener("mousedown", (event) => {
    if (!state.size || $("photo").hidden) return;
    start = photoPoint(event);
    event.preventDefault();
  });
  window.addEventListener("mousemove", (event) => {
    if (!start) return;
    const [x, y] = photoPoint(event);
    $("overlay").querySelectorAll(".box.dragging").forEach((n) => n.remove());
    drawBox([Math.min(start[0], x), Math.min(start[1], y), Math.max(start[0], x), Math.max(start[1], y)]);
    $("overlay").lastChild.classList.add("dragging");
  });
  window.addEventListener("mouseup", (event) => {
    if (!start) return;
    const [x, y] = photoPoint(event);
    const box = [Math.min(start[0], x), Math.min(start[1], y), Math.max(start[0], x), Math.max(start[1], y)];
    start = null;
    if (box[2] - box[0] < 8 || box[3] - box[1] < 8) { if (state.result) draw(); return; }
    if (state.multi) {
      if (state.result) draw();
      say("This model finds every person itself; a box is for single-person models.");
      return;
    }
    state.boxes = [...state.boxes, box.map((v) => Math.round(v * 10) / 10)];  // each drag adds a person
    $("clear-box").disabled = false;
    predict();
  });
  $("clear-box").addEventListener("click", () => { state.boxes = []; $("clear-box").disabled = true; predict(); });
}

async function startCamera() {
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "user" } });
  } catch (error) {
    say(`The camera is not available: ${error.message}`, true);
    return;
  }
  const video = $("camera");
  video.srcObject = state.stream;
  video.hidden = false;
  $("photo").hidden = true;
  $("overlay").replaceChildren();
  $("placeholder").hidden = true;
  $("stage").hidden = false;
  $("snap-button").hidden = false;
}

function stopCamera() {
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  state.stream = null;
  $("camera").hidden = true;
  $("snap-button").hidden = true;
}

function snap() {
  const video = $("camera");
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  canvas.toBlob((blob) => show(new File([blob], "camera.jpg", { type: "image/jpeg" })), "image/jpeg", 0.92);
}

function download() {
  const blob = new Blob([JSON.stringify(state.result, null, 1)], { type: "application/json" });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = `${(state.result.image || "photo").replace(/\.[^.]*$/, "")}-keypoints.json`;
  link.click();
}

function setup() {
  const drop = $("drop");
  const take = (files) => {
    if (files && files[0]) show(files[0]).catch((error) => say(error.message, true));
  };
  $("file").addEventListener("change", (event) => take(event.target.files));
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => { event.preventDefault(); drop.classList.remove("over"); take(event.dataTransfer.files); });
  drop.addEventListener("click", () => { if (!state.file && !state.stream) $("file").click(); });
  $("download").addEventListener("click", download);
  $("snap-button").addEventListener("click", snap);
  const camera = $("camera-button");
  if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia) camera.addEventListener("click", startCamera);
  else camera.hidden = true;
  setupBoxDrawing();
  connect();
}

setup();
