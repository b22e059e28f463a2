// Parse LogQL with Grafana's own grammar (@grafana/lezer-logql) and apply the checks Loki makes
// at parse time that a grammar alone does not: string escapes, regular expressions, range
// aggregation grouping and unwrap rules, selectors that must not match everything.
//
// stdin:  a JSON array of query strings.
// stdout: a JSON array, one object per query, in order:
//   {
//     "query":    the query,
//     "ok":       true when there is no syntax error and no problem,
//     "errors":   syntax errors, each {"from", "to", "context"} (error nodes in the parse tree),
//     "problems": what Loki would refuse although the grammar accepts it, each {"from", "to", "message"},
//     "labels":   {"selector": [...], "used": [...], "created": [...]}  label names by role,
//     "outer":    {"op", "grouping", "param"} of the outermost vector aggregation, or null
//     "tree":     the parse tree as text: Node(child child), a leaf as Name:"its text", a string
//                 as String(<its decoded value as JSON>), so two queries with the same tree
//                 have the same structure and the same values
//   }
// Exit status: 0 when every query is ok, 1 when at least one is not, 2 on bad input.
import { parser } from "@grafana/lezer-logql";

function readStdin() {
  return new Promise((resolve, reject) => {
    const chunks = [];
    process.stdin.on("data", (chunk) => chunks.push(chunk));
    process.stdin.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    process.stdin.on("error", reject);
  });
}

// Go's strconv.Unquote rules as Loki's lexer applies them to "..." and `...` strings.
function unquote(raw) {
  if (raw.length >= 2 && raw.startsWith("`") && raw.endsWith("`")) {
    return { value: raw.slice(1, -1) };
  }
  if (!(raw.length >= 2 && raw.startsWith('"') && raw.endsWith('"'))) {
    return { error: `not a complete string literal: ${raw}` };
  }
  const body = raw.slice(1, -1);
  let out = "";
  for (let i = 0; i < body.length; i++) {
    const c = body[i];
    if (c === "\n") return { error: "newline in a double-quoted string" };
    if (c !== "\\") {
      out += c;
      continue;
    }
    const e = body[i + 1];
    const simple = { a: "\x07", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t", v: "\v", "\\": "\\", '"': '"' };
    if (e in simple) {
      out += simple[e];
      i += 1;
    } else if (e === "x" && /^[0-9a-fA-F]{2}$/.test(body.slice(i + 2, i + 4))) {
      out += String.fromCharCode(parseInt(body.slice(i + 2, i + 4), 16));
      i += 3;
    } else if (e === "u" && /^[0-9a-fA-F]{4}$/.test(body.slice(i + 2, i + 6))) {
      out += String.fromCharCode(parseInt(body.slice(i + 2, i + 6), 16));
      i += 5;
    } else if (e === "U" && /^[0-9a-fA-F]{8}$/.test(body.slice(i + 2, i + 10))) {
      out += String.fromCodePoint(parseInt(body.slice(i + 2, i + 10), 16));
      i += 9;
    } else if (/^[0-7]{3}$/.test(body.slice(i + 1, i + 4))) {
      out += String.fromCharCode(parseInt(body.slice(i + 1, i + 4), 8));
      i += 3;
    } else {
      return { error: `invalid escape \\${e ?? ""} in ${raw}` };
    }
  }
  return { value: out };
}

// RE2 (Go regexp) to a JavaScript RegExp, close enough to catch broken patterns.
function compileRe2(pattern, anchored) {
  let flags = "";
  let p = pattern;
  const lead = /^\(\?([imsU]+)\)/.exec(p);
  if (lead) {
    p = p.slice(lead[0].length);
    if (lead[1].includes("i")) flags += "i";
    if (lead[1].includes("s")) flags += "s";
    if (lead[1].includes("m")) flags += "m";
  }
  p = p.replace(/\(\?P</g, "(?<");
  return new RegExp(anchored ? `^(?:${p})$` : p, flags);
}

const GROUPING_ALLOWED = new Set([
  "AvgOverTime", "StddevOverTime", "StdvarOverTime", "QuantileOverTime",
  "MaxOverTime", "MinOverTime", "FirstOverTime", "LastOverTime",
]);
const UNWRAP_ALLOWED = new Set([
  "AvgOverTime", "SumOverTime", "MaxOverTime", "MinOverTime", "StddevOverTime", "StdvarOverTime",
  "QuantileOverTime", "Rate", "RateCounter", "AbsentOverTime", "FirstOverTime", "LastOverTime",
]);
const NO_UNWRAP_ALLOWED = new Set([
  "BytesOverTime", "BytesRate", "CountOverTime", "Rate", "AbsentOverTime",
]);

function children(node) {
  const out = [];
  for (let c = node.firstChild; c; c = c.nextSibling) out.push(c);
  return out;
}

function descendants(node, name) {
  const out = [];
  const walk = (n) => {
    for (const c of children(n)) {
      if (c.name === name) out.push(c);
      walk(c);
    }
  };
  walk(node);
  return out;
}

function identifiers(node) {
  return descendants(node, "Identifier");
}

function check(query) {
  const tree = parser.parse(query);
  const text = (n) => query.slice(n.from, n.to);
  const errors = [];
  const problems = [];
  const labels = { selector: [], used: [], created: [] };
  const problem = (n, message) => problems.push({ from: n.from, to: n.to, message });

  tree.iterate({
    enter(ref) {
      if (ref.type.isError) {
        const from = Math.max(0, ref.from - 15);
        const to = Math.min(query.length, ref.to + 15);
        errors.push({ from: ref.from, to: ref.to, context: query.slice(from, to) });
      }
    },
  });
  if (query.trim() === "") errors.push({ from: 0, to: 0, context: "empty query" });

  const top = tree.topNode;
  const strings = new Map();
  for (const s of descendants(top, "String")) {
    const u = unquote(text(s));
    if (u.error) problem(s, u.error);
    else strings.set(s.from, u.value);
  }
  const valueOf = (n) => strings.get(n.from);

  // Matchers: in selectors (stream labels) and in label filters (any label).
  for (const sel of descendants(top, "Selector")) {
    let restrictive = false;
    for (const m of descendants(sel, "Matcher")) {
      const [id, op, str] = children(m);
      if (!id || !op || !str) continue;
      labels.selector.push(text(id));
      const value = valueOf(str);
      if (value === undefined) continue;
      if (op.name === "Eq" && value !== "") restrictive = true;
      if (op.name === "Re" || op.name === "Nre") {
        try {
          const re = compileRe2(value, true);
          if (op.name === "Re" && !re.test("")) restrictive = true;
        } catch (err) {
          problem(str, `invalid regular expression ${JSON.stringify(value)}: ${err.message}`);
        }
      }
    }
    if (!restrictive) {
      problem(sel, "a selector needs at least one = or =~ matcher that cannot match an empty value");
    }
  }
  for (const lf of descendants(top, "LabelFilter")) {
    for (const m of descendants(lf, "Matcher")) {
      const [id, op, str] = children(m);
      if (!id) continue;
      labels.used.push(text(id));
      if (op && str && (op.name === "Re" || op.name === "Nre")) {
        const value = valueOf(str);
        if (value === undefined) continue;
        try {
          compileRe2(value, true);
        } catch (err) {
          problem(str, `invalid regular expression ${JSON.stringify(value)}: ${err.message}`);
        }
      }
    }
    for (const id of identifiers(lf)) {
      if (!labels.used.includes(text(id))) labels.used.push(text(id));
    }
  }
  for (const f of descendants(top, "LineFilter")) {
    const [filter, str] = children(f);
    if (!filter || !str) continue;
    const op = filter.firstChild ? filter.firstChild.name : "";
    if (op === "PipeMatch" || op === "Nre") {
      const value = valueOf(str);
      if (value === undefined) continue;
      try {
        compileRe2(value, false);
      } catch (err) {
        problem(str, `invalid regular expression ${JSON.stringify(value)}: ${err.message}`);
      }
    }
  }

  // Range aggregations: Loki's RangeAggregationExpr.validate().
  for (const ra of descendants(top, "RangeAggregationExpr")) {
    const opNode = children(ra).find((c) => c.name === "RangeOp");
    const op = opNode && opNode.firstChild ? opNode.firstChild.name : "";
    const grouping = children(ra).some((c) => c.name === "Grouping");
    const range = children(ra).find((c) => c.name === "LogRangeExpr");
    const unwrap = range ? descendants(range, "UnwrapExpr").length > 0 : false;
    if (grouping && !GROUPING_ALLOWED.has(op)) {
      problem(ra, `grouping not allowed for ${text(opNode)} aggregation`);
    }
    if (unwrap && !UNWRAP_ALLOWED.has(op)) {
      problem(ra, `invalid aggregation ${text(opNode)} with unwrap`);
    }
    if (!unwrap && !NO_UNWRAP_ALLOWED.has(op)) {
      problem(ra, `invalid aggregation ${text(opNode)} without unwrap`);
    }
  }

  // Labels used by grouping, unwrap, drop/keep; labels created by parsers and label_format.
  for (const g of descendants(top, "Grouping")) {
    for (const id of identifiers(g)) labels.used.push(text(id));
  }
  for (const u of descendants(top, "UnwrapExpr")) {
    const kids = children(u);
    const idx = kids.findIndex((c) => c.name === "Unwrap");
    if (idx >= 0 && kids[idx + 1] && kids[idx + 1].name === "Identifier") {
      labels.used.push(text(kids[idx + 1]));
    }
    for (const c of kids) {
      if (c.name === "Identifier" && !labels.used.includes(text(c))) labels.used.push(text(c));
    }
  }
  for (const name of ["DropLabel", "KeepLabel"]) {
    for (const d of descendants(top, name)) {
      for (const id of identifiers(d)) labels.used.push(text(id));
    }
  }
  for (const e of descendants(top, "LabelExtractionExpression")) {
    const id = children(e).find((c) => c.name === "Identifier");
    if (id) labels.created.push(text(id));
  }
  for (const lfe of descendants(top, "LabelFormatExpr")) {
    const seen = new Set();
    for (const m of descendants(lfe, "LabelFormatMatcher")) {
      const kids = children(m);
      const dst = kids[0];
      if (!dst) continue;
      const name = text(dst);
      if (seen.has(name)) problem(m, `multiple label name '${name}' not allowed in a single format operation`);
      if (name === "__error__") problem(m, "__error__ cannot be formatted");
      seen.add(name);
      labels.created.push(name);
      const src = kids[2];
      if (src && src.name === "Identifier") labels.used.push(text(src));
      if (src && src.name === "String") {
        const tpl = valueOf(src) ?? "";
        if ((tpl.match(/\{\{/g) || []).length !== (tpl.match(/\}\}/g) || []).length) {
          problem(src, `unbalanced {{ }} in template ${JSON.stringify(tpl)}`);
        }
      }
    }
  }
  for (const lf of descendants(top, "LineFormatExpr")) {
    for (const s of descendants(lf, "String")) {
      const tpl = valueOf(s) ?? "";
      if ((tpl.match(/\{\{/g) || []).length !== (tpl.match(/\}\}/g) || []).length) {
        problem(s, `unbalanced {{ }} in template ${JSON.stringify(tpl)}`);
      }
    }
  }

  // The outermost vector aggregation (what an alert rule's series are keyed by).
  let outer = null;
  const metric = descendants(top, "MetricExpr")[0];
  if (metric && metric.firstChild && metric.firstChild.name === "VectorAggregationExpr") {
    const va = metric.firstChild;
    const vop = children(va).find((c) => c.name === "VectorOp");
    const g = children(va).find((c) => c.name === "Grouping");
    const num = children(va).find((c) => c.name === "Number");
    outer = {
      op: vop ? text(vop) : null,
      grouping: g ? identifiers(g).map(text) : [],
      without: g ? children(g).some((c) => c.name === "Without") : false,
      param: num ? Number(text(num)) : null,
    };
  }

  const shape = (n) => {
    const kids = children(n);
    if (n.name === "String") return `String(${JSON.stringify(valueOf(n) ?? null)})`;
    if (kids.length === 0) return `${n.name}:${JSON.stringify(text(n))}`;
    return `${n.name}(${kids.map(shape).join(" ")})`;
  };

  const uniq = (xs) => [...new Set(xs)];
  return {
    query,
    ok: errors.length === 0 && problems.length === 0,
    errors,
    problems,
    labels: { selector: uniq(labels.selector), used: uniq(labels.used), created: uniq(labels.created) },
    outer,
    tree: shape(top),
  };
}

const raw = await readStdin();
let queries;
try {
  queries = JSON.parse(raw);
} catch (err) {
  process.stderr.write(`parse.mjs: stdin is not JSON: ${err.message}\n`);
  process.exit(2);
}
if (!Array.isArray(queries) || !queries.every((q) => typeof q === "string")) {
  process.stderr.write("parse.mjs: stdin must be a JSON array of strings\n");
  process.exit(2);
}
const results = queries.map(check);
// exitCode, not exit(): exit() would cut a large answer short on a pipe.
process.exitCode = results.every((r) => r.ok) ? 0 : 1;
process.stdout.write(JSON.stringify(results) + "\n");
