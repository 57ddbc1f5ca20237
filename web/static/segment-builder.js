// The segment form's condition builder: draws the condition tree kept in
// the form's JSON field (#f-definition, what is posted and what the live
// estimate reads) as groups and conditions, and writes every change back
// to that field (an `input` event, so the estimate follows). Editing the
// JSON by hand redraws the builder. Nodes it has no editor for (not,
// segment, email, topic) show as JSON of their own; fields it does not
// edit (an event's property filters, a from/to window) are kept as they are.
(function () {
  "use strict";
  var OPS = [
    ["eq", "equals"], ["neq", "does not equal"], ["gt", ">"], ["gte", "≥"], ["lt", "<"], ["lte", "≤"],
    ["contains", "contains"], ["starts_with", "starts with"], ["in", "is one of"], ["exists", "is set"],
    ["not_exists", "is not set"], ["before", "before (date)"], ["after", "after (date)"],
    ["within_last", "within the last (days)"],
  ];
  var NUMERIC = { gt: 1, gte: 1, lt: 1, lte: 1, within_last: 1 };
  var COUNT_OPS = [">=", ">", "=", "<=", "<"];

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k.slice(0, 2) === "on") node.addEventListener(k.slice(2), attrs[k]);
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }

  function select(options, value, onchange, label) {
    var s = el("select", { "aria-label": label, onchange: function () { onchange(s.value); } });
    options.forEach(function (o) {
      var opt = el("option", { value: o[0], text: o[1] });
      if (o[0] === value) opt.selected = true;
      s.appendChild(opt);
    });
    return s;
  }

  function input(value, placeholder, oninput, label, extra) {
    var i = el("input", Object.assign({ type: "text", placeholder: placeholder, "aria-label": label }, extra || {}));
    i.value = value === undefined || value === null ? "" : String(value);
    i.addEventListener("input", function () { oninput(i.value); });
    return i;
  }

  // A typed value from a text box: numbers for numeric operators, and for
  // the others a number, true / false when it reads as one ("pro" stays text).
  function typed(text, op) {
    var t = text.trim();
    if (NUMERIC[op]) return t === "" || isNaN(Number(t)) ? t : Number(t);
    if (/^-?\d+(\.\d+)?$/.test(t)) return Number(t);
    if (t === "true" || t === "false") return t === "true";
    return text;
  }

  function newTrait() { return { type: "trait", path: "plan", op: "eq", value: "pro" }; }
  function newEvent() {
    return { type: "event", name: "Order Completed", count: { op: ">=", value: 1 }, within: { last: 30 } };
  }

  function Builder(root, field) {
    this.root = root;
    this.field = field;
    this.tree = null;
    var self = this;
    field.addEventListener("input", function (e) { if (!e.fromBuilder) self.load(); });
    this.load();
  }

  Builder.prototype.load = function () {
    try {
      this.tree = JSON.parse(this.field.value);
      if (!this.tree || typeof this.tree !== "object" || Array.isArray(this.tree)) throw new Error("not a condition");
      this.draw();
    } catch (err) {
      this.tree = null;
      this.root.replaceChildren(el("p", { class: "field-error", "data-builder-error": "", text:
        "The JSON below has an error, so the builder cannot show it: fix it there, or start again." }),
        el("button", { type: "button", "data-builder-reset": "", text: "Start again with an empty group",
          onclick: (function (self) { return function () { self.tree = { type: "all", conditions: [] }; self.changed(); }; })(this) }));
    }
  };

  Builder.prototype.changed = function () {
    this.field.value = JSON.stringify(this.tree, null, 2);
    var event = new Event("input", { bubbles: true });
    event.fromBuilder = true;
    this.field.dispatchEvent(event);
    this.draw();
  };

  Builder.prototype.draw = function () {
    var focused = document.activeElement && this.root.contains(document.activeElement)
      ? document.activeElement.getAttribute("data-key") : null;
    var self = this;
    var top = this.node(this.tree, null, "r");
    var parts = [top];
    if (this.tree.type !== "all" && this.tree.type !== "any") {
      parts.push(el("button", { type: "button", "data-add": "wrap", text: "+ Add a condition beside it",
        onclick: function () { self.tree = { type: "all", conditions: [self.tree, newTrait()] }; self.changed(); } }));
    }
    this.root.replaceChildren.apply(this.root, parts);
    if (focused) {
      var again = this.root.querySelector('[data-key="' + focused + '"]');
      if (again) { again.focus(); if (again.setSelectionRange && again.value) again.setSelectionRange(again.value.length, again.value.length); }
    }
  };

  // `remove` takes the node out of its parent group (null for the root).
  Builder.prototype.node = function (node, remove, key) {
    var self = this;
    var removeButton = remove ? el("button", { type: "button", class: "danger", "data-remove": "", "aria-label": "Remove",
      title: "Remove", text: "✕", onclick: function () { remove(); self.changed(); } }) : null;
    if (node.type === "all" || node.type === "any") {
      node.conditions = Array.isArray(node.conditions) ? node.conditions : [];
      var items = node.conditions.map(function (child, i) {
        return self.node(child, function () { node.conditions.splice(i, 1); }, key + "." + i);
      });
      if (!items.length) {
        items.push(el("p", { class: "muted", text: node.type === "all"
          ? "No conditions yet: every profile matches. Add one below." : "No conditions yet: no profile matches. Add one below." }));
      }
      var add = function (make) { return function () { node.conditions.push(make()); self.changed(); }; };
      return el("div", { class: "cb-group", "data-group": node.type }, [
        el("div", { class: "cb-head" }, [
          el("span", { text: "Profiles matching" }),
          select([["all", "all of"], ["any", "any of"]], node.type, function (v) { node.type = v; self.changed(); }, "Group"),
          el("span", { text: "these:" }), removeButton,
        ]),
        el("div", { class: "cb-items" }, items),
        el("div", { class: "cb-add" }, [
          el("button", { type: "button", "data-add": "trait", text: "+ Trait", onclick: add(newTrait) }),
          el("button", { type: "button", "data-add": "event", text: "+ Event", onclick: add(newEvent) }),
          el("button", { type: "button", "data-add": "group", text: "+ Group",
            onclick: add(function () { return { type: node.type === "all" ? "any" : "all", conditions: [newTrait()] }; }) }),
        ]),
      ]);
    }
    if (node.type === "trait") {
      var needsValue = node.op !== "exists" && node.op !== "not_exists";
      var shown = Array.isArray(node.value) ? node.value.join(", ") : node.value;
      return el("div", { class: "cb-cond", "data-cond": "trait" }, [
        el("span", { class: "cb-kind", text: "Trait" }),
        input(node.path, "plan", function (v) { node.path = v; self.changed(); }, "Trait", { "data-key": key + ".path" }),
        select(OPS, node.op, function (v) {
          node.op = v;
          if (v === "exists" || v === "not_exists") delete node.value;
          else if (v === "in") node.value = [].concat(node.value === undefined ? [] : node.value);
          else if (Array.isArray(node.value)) node.value = node.value[0];
          self.changed();
        }, "Operator"),
        needsValue ? input(shown, node.op === "in" ? "DE, FR" : "value", function (v) {
          node.value = node.op === "in"
            ? v.split(",").map(function (s) { return typed(s.trim(), "in"); }).filter(function (s) { return s !== ""; })
            : typed(v, node.op);
          self.changed();
        }, "Value", { "data-key": key + ".value" }) : null,
        removeButton,
      ]);
    }
    if (node.type === "event") {
      node.count = node.count || { op: ">=", value: 1 };
      var within = node.within && node.within.last !== undefined ? node.within : null;
      var ranged = node.within && node.within.last === undefined;
      return el("div", { class: "cb-cond", "data-cond": "event" }, [
        el("span", { class: "cb-kind", text: "Did" }),
        input(node.name, "Order Completed", function (v) { node.name = v; self.changed(); }, "Event name", { "data-key": key + ".name" }),
        select(COUNT_OPS.map(function (o) { return [o, o]; }), node.count.op || ">=", function (v) { node.count.op = v; self.changed(); }, "Count operator"),
        input(node.count.value === undefined ? 1 : node.count.value, "1", function (v) {
          node.count.value = typed(v, "gte"); self.changed();
        }, "Times", { "data-key": key + ".count", class: "cb-num", inputmode: "numeric" }),
        el("span", { text: "times" }),
        ranged ? el("span", { class: "muted", text: "in a fixed period (edit in JSON)" }) : el("span", { text: "in the last" }),
        ranged ? null : input(within ? within.last : "", "ever", function (v) {
          if (v.trim() === "") delete node.within;
          else node.within = Object.assign({}, node.within || {}, { last: typed(v, "gte") });
          self.changed();
        }, "Within the last", { "data-key": key + ".within", class: "cb-num", inputmode: "numeric" }),
        ranged ? null : select([["days", "days"], ["hours", "hours"]], within && within.unit === "hours" ? "hours" : "days", function (v) {
          node.within = Object.assign({}, node.within || { last: 30 }, { unit: v }); self.changed();
        }, "Unit"),
        node.where && node.where.length ? el("span", { class: "muted", text: "+ " + node.where.length + " property filter(s)" }) : null,
        removeButton,
      ]);
    }
    // No editor for this kind: its own JSON.
    var raw = el("textarea", { class: "code cb-raw", rows: "3", "aria-label": "Condition as JSON", "data-key": key + ".raw" });
    raw.value = JSON.stringify(node);
    raw.addEventListener("change", function () {
      try {
        var parsed = JSON.parse(raw.value);
        Object.keys(node).forEach(function (k) { delete node[k]; });
        Object.assign(node, parsed);
        self.changed();
      } catch (err) { raw.setCustomValidity("not valid JSON"); raw.reportValidity(); }
    });
    return el("div", { class: "cb-cond", "data-cond": node.type || "unknown" }, [
      el("span", { class: "cb-kind", text: node.type || "?" }), raw, removeButton,
    ]);
  };

  function start() {
    var root = document.getElementById("condition-builder");
    var field = document.getElementById("f-definition");
    if (root && field) root.builder = new Builder(root, field);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
