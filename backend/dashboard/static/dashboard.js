// taskhub dashboard: confirmations, and live updates over server-sent events (no polling).
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
    return;
  }
  const template = form.dataset.actionTemplate;
  if (template) {
    const name = form.elements.namedItem("queue").value.trim();
    form.action = template.replace("{name}", encodeURIComponent(name));
  }
});

function setText(id, text) {
  const element = document.getElementById(id);
  if (element) element.textContent = text;
}

function showJob(job) {
  const box = document.getElementById("job-progress");
  const bar = document.getElementById("job-progress-bar");
  if (box) box.hidden = false;
  if (bar) {
    if (job.percent === null) bar.removeAttribute("value");
    else bar.value = job.percent;
  }
  let text = job.status === "todo" ? "waiting to start" : "no progress reported yet";
  if (job.total) text = `${job.done} / ${job.total} (${job.percent}%)`;
  else if (job.done !== null) text = String(job.done);
  setText("job-progress-text", text);
  setText("job-progress-message", job.message || "");
  setText("job-attempts", String(job.attempts));
  setText("job-state", `(${job.state})`);
  const status = document.querySelector("#job-status .badge");
  if (status) {
    status.textContent = job.status;
    status.className = `badge status-${job.status}`;
  }
}

function connect(url) {
  const state = document.getElementById("live-state");
  const source = new EventSource(url);
  source.addEventListener("open", () => {
    if (state) { state.textContent = "live"; state.className = "live-state"; }
  });
  source.addEventListener("error", () => {
    if (state) { state.textContent = "reconnecting…"; state.className = "live-state lost"; }
  });
  source.addEventListener("fragments", (event) => {
    for (const [id, html] of Object.entries(JSON.parse(event.data))) {
      const element = document.getElementById(id);
      if (element) element.innerHTML = html;
    }
  });
  source.addEventListener("job", (event) => showJob(JSON.parse(event.data)));
  source.addEventListener("reload", () => {
    source.close();
    window.location.reload();
  });
}

const live = document.body.dataset.live;
if (live) connect(live);
