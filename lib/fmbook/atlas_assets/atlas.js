/* fmbook related-work atlas: search, hover, click-to-highlight and table sorting.
   The map (SVG) and the table are drawn by Python (fmbook.atlas.atlas_html); without JavaScript
   they still show every paper, and hovering a point shows its title (SVG <title>). This script,
   inlined into the page (no network), adds the interaction. One script serves every atlas on a page. */
(function () {
  "use strict";
  function init(root) {
    if (root.getAttribute("data-atl-ready")) return;
    root.setAttribute("data-atl-ready", "1");
    var data = JSON.parse(root.querySelector("script.atl-data").textContent);
    var papers = data.papers, nbs = data.nb, clusters = data.clusters;
    var svg = root.querySelector("svg.atl-map");
    var pts = Array.prototype.slice.call(root.querySelectorAll("circle.atl-pt"));
    var rows = Array.prototype.slice.call(root.querySelectorAll("tbody tr[data-i]"));
    var rowOf = {}; rows.forEach(function (r) { rowOf[r.getAttribute("data-i")] = r; });
    var edges = root.querySelector("g.atl-edges");
    var search = root.querySelector("input.atl-search");
    var chapterSel = root.querySelector("select.atl-chapter");
    var count = root.querySelector(".atl-count");
    var info = root.querySelector(".atl-info");
    var tip = root.querySelector(".atl-tooltip");
    var legend = Array.prototype.slice.call(root.querySelectorAll(".atl-legend li"));
    var haystack = papers.map(function (p) { return (p.t + " " + p.a).toLowerCase(); });
    var state = { words: [], cluster: null, selected: null };
    var SVGNS = "http://www.w3.org/2000/svg";

    function esc(s) {
      return String(s).replace(/[&<>"']/g, function (c) {
        return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
      });
    }
    function matches(i) {
      if (state.cluster !== null && papers[i].c !== state.cluster) return false;
      for (var w = 0; w < state.words.length; w++) if (haystack[i].indexOf(state.words[w]) < 0) return false;
      return true;
    }
    function render() {
      var hits = 0, filtering = state.words.length > 0 || state.cluster !== null;
      var near = {};
      if (state.selected !== null) nbs[state.selected].forEach(function (e) { near[e[0]] = true; });
      pts.forEach(function (c) {
        var i = +c.getAttribute("data-i"), m = matches(i);
        if (m) hits++;
        var shown = state.selected === null ? (!filtering || m) : (i === state.selected || !!near[i]);
        c.classList.toggle("atl-dim", !shown);
        c.classList.toggle("atl-hit", filtering && m && state.selected === null);
        c.classList.toggle("atl-nb", !!near[i]);
        c.classList.toggle("atl-sel", i === state.selected);
      });
      rows.forEach(function (r) {
        var i = +r.getAttribute("data-i");
        r.hidden = !matches(i);
        r.classList.toggle("atl-sel", i === state.selected);
      });
      count.textContent = filtering ? hits + " of " + papers.length + " papers match"
                                    : papers.length + " papers";
      legend.forEach(function (li) { li.classList.toggle("atl-on", +li.getAttribute("data-c") === state.cluster); });
      drawEdges();
    }
    function drawEdges() {
      while (edges.firstChild) edges.removeChild(edges.firstChild);
      if (state.selected === null) return;
      var p = papers[state.selected];
      nbs[state.selected].forEach(function (e) {
        var q = papers[e[0]], line = document.createElementNS(SVGNS, "line");
        line.setAttribute("x1", p.x); line.setAttribute("y1", p.y);
        line.setAttribute("x2", q.x); line.setAttribute("y2", q.y);
        line.setAttribute("class", "atl-edge");
        edges.appendChild(line);
      });
    }
    function showInfo(i) {
      if (i === null) {
        info.innerHTML = '<p class="atl-note">Click a point (or a row of the table, or pick a chapter above) to see the paper and its ten nearest neighbours.</p>';
        return;
      }
      var p = papers[i], cl = clusters[p.c];
      var link = p.arxiv ? ' <a href="https://arxiv.org/abs/' + esc(p.arxiv) + '" target="_blank" rel="noopener">arXiv:' + esc(p.arxiv) + "</a>" : "";
      var items = nbs[i].map(function (e) {
        var q = papers[e[0]];
        return '<li><a class="atl-go" data-i="' + e[0] + '" tabindex="0">' + esc(q.t) + "</a> <span class=\"atl-note\">(" +
          e[1].toFixed(2) + (q.ch ? ", chapter " + esc(q.ch) : "") + ")</span></li>";
      }).join("");
      info.innerHTML = "<p><strong>" + esc(p.t) + "</strong>" + link + "</p>" +
        '<p class="atl-note">Cluster: <span class="atl-swatch" style="background:' + cl.color + '"></span> ' + esc(cl.name) +
        " &middot; listed in: " + esc(p.src) + (p.ch ? " &middot; reproduced in chapter <em>" + esc(p.ch) + "</em>" : "") + "</p>" +
        "<blockquote>" + esc(p.a) + "</blockquote>" +
        '<p class="atl-note">Abstract quoted from the listing. Nearest neighbours (cosine similarity):</p><ol class="atl-nblist">' + items + "</ol>";
      Array.prototype.forEach.call(info.querySelectorAll("a.atl-go"), function (a) {
        a.addEventListener("click", function () { select(+a.getAttribute("data-i")); });
        a.addEventListener("keydown", function (ev) { if (ev.key === "Enter") select(+a.getAttribute("data-i")); });
      });
    }
    function select(i) {
      state.selected = (i === state.selected) ? null : i;
      var ch = state.selected !== null ? papers[state.selected].ch : null;
      if (chapterSel) chapterSel.value = ch || "";
      showInfo(state.selected);
      render();
    }
    pts.forEach(function (c) {
      var i = +c.getAttribute("data-i");
      c.addEventListener("click", function () { select(i); });
      c.addEventListener("keydown", function (ev) { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); select(i); } });
      c.addEventListener("mouseenter", function (ev) {
        tip.textContent = papers[i].t + " \u2014 " + clusters[papers[i].c].name;
        tip.hidden = false; moveTip(ev);
      });
      c.addEventListener("mousemove", moveTip);
      c.addEventListener("mouseleave", function () { tip.hidden = true; });
    });
    function moveTip(ev) { tip.style.left = (ev.clientX + 12) + "px"; tip.style.top = (ev.clientY + 12) + "px"; }
    rows.forEach(function (r) {
      r.addEventListener("click", function (ev) {
        if (ev.target.tagName === "A") return;
        select(+r.getAttribute("data-i"));
      });
    });
    search.addEventListener("input", function () {
      state.words = search.value.toLowerCase().split(/\s+/).filter(function (w) { return w.length > 0; });
      render();
    });
    if (chapterSel) chapterSel.addEventListener("change", function () {
      var v = chapterSel.value;
      state.selected = null;
      if (v !== "" && data.chapters[v] !== undefined) select(data.chapters[v]); else { showInfo(null); render(); }
    });
    legend.forEach(function (li) {
      li.addEventListener("click", function () {
        var c = +li.getAttribute("data-c");
        state.cluster = state.cluster === c ? null : c;
        render();
      });
    });
    var reset = root.querySelector("button.atl-reset");
    if (reset) reset.addEventListener("click", function () {
      search.value = ""; state.words = []; state.cluster = null; state.selected = null;
      if (chapterSel) chapterSel.value = "";
      showInfo(null); render();
    });
    // sortable table
    var ths = Array.prototype.slice.call(root.querySelectorAll(".atl-table th"));
    var tbody = root.querySelector(".atl-table tbody");
    ths.forEach(function (th, col) {
      th.setAttribute("tabindex", "0");
      function sort() {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        ths.forEach(function (o) { o.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var numeric = th.getAttribute("data-type") === "num";
        var sorted = rows.slice().sort(function (a, b) {
          // a missing value (data-last: no title, no arXiv id, no chapter) sorts last either way
          var la = a.children[col].hasAttribute("data-last"), lb = b.children[col].hasAttribute("data-last");
          if (la !== lb) return la ? 1 : -1;
          var x = a.children[col].getAttribute("data-v") || a.children[col].textContent;
          var y = b.children[col].getAttribute("data-v") || b.children[col].textContent;
          var d = numeric ? (parseFloat(x) - parseFloat(y)) : x.localeCompare(y);
          if (d === 0) d = (+a.getAttribute("data-i")) - (+b.getAttribute("data-i"));
          return asc ? d : -d;
        });
        sorted.forEach(function (r) { tbody.appendChild(r); });
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (ev) { if (ev.key === "Enter") sort(); });
    });
    showInfo(null);
    render();
  }
  function initAll() {
    Array.prototype.forEach.call(document.querySelectorAll(".fmbook-atlas"), init);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", initAll);
  else initAll();
})();
