/* modelreg console: charts (uPlot) and live updates (SSE) on top of server-rendered pages.
   Every page works without this file; it only draws the charts from the JSON the page
   embeds, and refreshes the page's #live region when the event stream says something
   changed (the Events page prepends the new rows instead). */
(function () {
  "use strict";
  var PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

  function readJson(id) {
    var el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }

  function drawCharts() {
    if (typeof uPlot === "undefined") return;
    document.querySelectorAll(".chart[data-kind]").forEach(function (el) {
      if (el.dataset.drawn) return;
      var spec = readJson(el.dataset.kind === "curves" ? "curves-data" : "by-version-data");
      if (!spec) return;
      var xLabel = el.dataset.kind === "curves" ? "epoch" : "version";
      var series = [{ label: xLabel }].concat(spec.labels.map(function (label, i) {
        return { label: label, stroke: PALETTE[i % PALETTE.length], width: 2, spanGaps: true,
                 points: { show: el.dataset.kind !== "curves" || spec.data[0].length < 30 } };
      }));
      var width = Math.max(320, Math.min(640, el.clientWidth || 560));
      new uPlot({
        width: width, height: 240,
        scales: { x: { time: false } },
        axes: [{ label: xLabel }, { label: spec.metric }],
        series: series
      }, spec.data, el);
      el.dataset.drawn = "1";
    });
  }

  function text(value) { return value === undefined || value === null ? "" : String(value); }

  function stageName(s) { return s ? s.replace("STAGE_", "").toLowerCase() : ""; }

  function eventRow(ev) {
    var tr = document.createElement("tr");
    tr.dataset.sequence = ev.sequence;
    var model = text(ev.model).replace(/^models\//, "");
    var version = text(ev.modelVersion).split("/").pop();
    var stage = ev.toStage ? stageName(ev.fromStage) + " → " + stageName(ev.toStage) : "";
    var cells = [ev.sequence, text(ev.createTime).replace("T", " ").replace(/\.\d+Z$|Z$/, " UTC"),
                 text(ev.type).replace("EVENT_TYPE_", ""), null, version ? "v" + version : "", stage, ev.actor, ev.reason];
    cells.forEach(function (value, i) {
      var td = document.createElement("td");
      if (i === 3 && model) {
        var a = document.createElement("a");
        a.href = "/models/" + encodeURIComponent(model);
        a.textContent = model;
        td.appendChild(a);
      } else {
        td.textContent = text(value);
      }
      tr.appendChild(td);
    });
    return tr;
  }

  // One redraw per burst of events: 100 ms on a model's pages, a second on the Models page
  // (which every event of every model touches).
  var pending = null;
  function refresh(delay) {
    if (pending) return;
    pending = setTimeout(function () {
      pending = null;
      htmx.ajax("GET", location.pathname + location.search, { target: "#live", select: "#live", swap: "outerHTML" });
    }, delay);
  }

  function live() {
    var mode = document.body.dataset.live;
    if (!mode || typeof EventSource === "undefined") return;
    var params = new URLSearchParams();
    if (mode !== "*" && mode !== "events") params.append("model", mode);
    if (document.body.dataset.after) params.append("after", document.body.dataset.after);
    var url = "/events/stream?" + params.toString();
    var source = new EventSource(url);
    var status = document.getElementById("live-status");
    source.onopen = function () { if (status) { status.textContent = "● live"; status.className = "live-status on"; } };
    source.onerror = function () { if (status) { status.textContent = "○ reconnecting"; status.className = "live-status"; } };
    source.addEventListener("error", function (e) {
      if (!e.data) return;
      var error = JSON.parse(e.data).error;
      if (error.reason === "SHUTTING_DOWN") return; // EventSource reconnects, resuming after Last-Event-ID
      if (status) status.textContent = error.message + " (reload the page)";
      source.close();
    });
    source.onmessage = function (e) {
      var ev = JSON.parse(e.data);
      if (mode === "events") {
        var body = document.querySelector("#events tbody");
        var none = body.querySelector("tr.none");
        if (none) none.remove();
        if (!body.querySelector('tr[data-sequence="' + ev.sequence + '"]')) body.insertBefore(eventRow(ev), body.firstChild);
      } else {
        refresh(mode === "*" ? 1000 : 100);
      }
    };
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawCharts();
    live();
    document.body.addEventListener("htmx:afterSettle", drawCharts);
  });
})();
