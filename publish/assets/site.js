// Inside Forward's static site (publish/site.py writes it): draws each figure of window.INSIDE_FORWARD_SITE as it
// comes into view, runs the Generate replays, opens the anchor in the address (#lesson, #lesson-view,
// #lesson-step-N) and keeps it across the language switch. No request leaves the site's own folder.
(function () {
  "use strict";
  var site = window.INSIDE_FORWARD_SITE;
  var config = { responsive: true, displaylogo: false };
  var replays = {};

  function plot(div, fig, key) {
    if (div.getAttribute("data-drawn") === key) return Promise.resolve();
    return Plotly.react(div, fig.data || [], fig.layout || {}, config).then(function () {
      div.setAttribute("data-drawn", key);
    });
  }

  function drawView(div) {
    var key = div.getAttribute("data-figure");
    if (site.figures[key]) plot(div, site.figures[key], key);
  }

  // Figures are drawn when they near the screen: a page of every lesson stays quick to open.
  var seen = "IntersectionObserver" in window ? new IntersectionObserver(function (entries) {
    entries.forEach(function (entry) {
      if (!entry.isIntersecting) return;
      seen.unobserve(entry.target);
      var replay = replays[entry.target.getAttribute("data-replay")];
      if (replay) replay.draw(); else drawView(entry.target);
    });
  }, { rootMargin: "300px" }) : null;

  function Replay(root) {
    var id = root.getAttribute("data-replay");
    var steps = site.replays[id];
    var at = Math.min(parseInt(root.getAttribute("data-start"), 10) || 0, steps.length - 1);
    var timer = null;
    var visible = !seen;
    var playButton = root.querySelector('[data-act="play"]');
    var part = function (name) { return root.querySelector("." + name); };

    function show(n) {
      at = Math.max(0, Math.min(n, steps.length - 1));
      var step = steps[at];
      root.setAttribute("data-step", String(at));
      part("step-label").textContent = step.label;
      part("running-text").innerHTML = step.text;
      part("text").innerHTML = step.md;
      part("table").innerHTML = step.table;
      if (visible) plot(part("plot"), step.fig, id + "/" + at);
      if (at === steps.length - 1) stop();
    }
    function stop() {
      if (timer) clearInterval(timer);
      timer = null;
      playButton.textContent = root.getAttribute("data-play");
    }
    function play() {
      if (timer) return stop();
      if (at === steps.length - 1) show(0);
      playButton.textContent = root.getAttribute("data-pause");
      timer = setInterval(function () { show(at + 1); }, 700);
    }
    root.querySelector(".controls").addEventListener("click", function (e) {
      var act = e.target.getAttribute && e.target.getAttribute("data-act");
      if (act === "first") { stop(); show(0); }
      else if (act === "back") { stop(); show(at - 1); }
      else if (act === "next") { stop(); show(at + 1); }
      else if (act === "play") play();
    });
    this.show = show;
    this.draw = function () { visible = true; show(at); };
    this.root = root;
    show(at);
  }

  document.querySelectorAll("[data-replay]").forEach(function (root) {
    replays[root.getAttribute("data-replay")] = new Replay(root);
    if (seen) seen.observe(root);
  });
  document.querySelectorAll("[data-figure]").forEach(function (div) {
    if (seen) seen.observe(div); else drawView(div);
  });

  // The anchor in the address: a lesson, one of its views, or a replay at a step.
  function openAnchor() {
    var id = decodeURIComponent(window.location.hash.slice(1));
    if (!id) return;
    var step = /^(.*)-step-(\d+)$/.exec(id);
    var target = null;
    if (step && replays[step[1]]) {
      var replay = replays[step[1]];
      replay.draw();
      replay.show(parseInt(step[2], 10));
      target = replay.root;
    } else {
      target = document.getElementById(id);
    }
    if (!target) return;
    document.querySelectorAll(".target").forEach(function (el) { el.classList.remove("target"); });
    target.classList.add("target");
    target.querySelectorAll("[data-figure]").forEach(drawView);
    target.querySelectorAll("[data-replay]").forEach(function (el) { replays[el.getAttribute("data-replay")].draw(); });
    target.scrollIntoView();
  }
  window.addEventListener("hashchange", openAnchor);
  openAnchor();

  // The language switch opens the same place in the other language's page.
  document.querySelectorAll("a.lang-link").forEach(function (link) {
    link.addEventListener("click", function () {
      link.setAttribute("href", link.getAttribute("data-page") + window.location.hash);
    });
  });
})();
