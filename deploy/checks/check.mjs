// Offline checks of deploy/ (the test suite runs them; see deploy/README.md).
//
//   node check.mjs manifests AGENT_BIN CONTROL_BIN
//       every kustomization builds (kubectl kustomize); every object passes
//       its Kubernetes schema (kubernetes-models) and a strict check for
//       unknown or misspelled keys (its TypeScript type, as an object
//       literal); every flag in the containers' args is one the binary's
//       --help lists; and the DaemonSet keeps the properties the product
//       needs (hostNetwork, capabilities, priority, probes, rollout).
//   node check.mjs dashboard RULES_OUT
//       the Grafana dashboard type-checks against @grafana/schema; its
//       expressions are written to RULES_OUT for `promtool check rules`.
//   node check.mjs metrics NAMES_FILE
//       every metric the dashboard and the alert rules use is among the
//       series names in NAMES_FILE (one per line, from a real Prometheus
//       that scraped a real agent and control service).
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import YAML from "yaml";

const here = path.dirname(fileURLToPath(import.meta.url));
const deploy = path.resolve(here, "..");
const problems = [];
const fail = (msg) => problems.push(msg);

function finish(what) {
  if (problems.length) {
    for (const p of problems) console.error(`FAIL ${p}`);
    console.error(`${what}: ${problems.length} problem(s)`);
    process.exit(1);
  }
  console.log(`${what}: ok`);
}

// Runs tsc on a generated module; returns its error lines.
function typecheck(name, source) {
  const file = path.join(here, `.${name}.generated.mts`);
  fs.writeFileSync(file, source);
  try {
    execFileSync(path.join(here, "node_modules/.bin/tsc"),
      ["--noEmit", "--strict", "--skipLibCheck", "--module", "nodenext", "--moduleResolution",
       "nodenext", "--target", "es2022", file], { encoding: "utf8" });
    return [];
  } catch (e) {
    return (e.stdout || String(e)).split("\n").filter((l) => l.trim());
  } finally {
    fs.rmSync(file, { force: true });
  }
}

// --- manifests ---------------------------------------------------------------

const overlays = ["base", "overlays/dev", "overlays/ha", "overlays/pod-cookies"];
// Images that are not Portcullis's, with flags of their own (overlays/ha's example etcd).
const otherImages = ["registry.k8s.io/etcd:"];

function modelPath(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group === "monitoring.coreos.com") {
    return `@kubernetes-models/prometheus-operator/${apiVersion}/${kind}`;
  }
  return `kubernetes-models/${group ? `${group}/${version}` : version}/${kind}`;
}

function helpFlags(binary) {
  let out = "";
  try {
    out = execFileSync(binary, ["--help"], { encoding: "utf8" });
  } catch (e) {
    out = e.stdout || "";
  }
  return new Set([...out.matchAll(/--([a-z0-9-]+)/g)].map((m) => m[1]));
}

async function manifests(agentBin, controlBin) {
  const flags = {
    "portcullis-agent": helpFlags(agentBin),
    "portcullis-control": helpFlags(controlBin),
  };
  for (const [bin, set] of Object.entries(flags)) {
    if (set.size < 5) fail(`${bin} --help lists no flags`);
  }
  for (const overlay of overlays) {
    let text;
    try {
      text = execFileSync("kubectl", ["kustomize", path.join(deploy, overlay)], {
        encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    } catch (e) {
      fail(`${overlay}: kubectl kustomize failed: ${e.stderr || e}`);
      continue;
    }
    const objects = YAML.parseAllDocuments(text).map((d) => d.toJSON()).filter(Boolean);
    // kustomize folds long base64 values over lines; Go's decoder (the API
    // server's) skips the newlines, the schema's "byte" format does not.
    for (const o of objects) {
      if (o.kind === "Secret") {
        for (const k of Object.keys(o.data ?? {})) o.data[k] = o.data[k].replace(/\s+/g, "");
      }
    }
    if (objects.length === 0) fail(`${overlay}: no objects`);
    const imports = [], literals = [];
    for (const [i, obj] of objects.entries()) {
      const id = `${overlay}: ${obj.kind}/${obj.metadata?.name}`;
      const modulePath = modelPath(obj.apiVersion, obj.kind);
      let Model;
      try {
        Model = (await import(modulePath))[obj.kind];
      } catch {
        fail(`${id}: no schema for ${obj.apiVersion} ${obj.kind}`);
        continue;
      }
      try {
        new Model(obj).validate();
      } catch (e) {
        fail(`${id}: ${e.message}`);
      }
      imports.push(`import type { I${obj.kind} as T${i} } from "${modulePath}";`);
      literals.push(`// ${id}\nexport const o${i}: T${i} = ${JSON.stringify(obj, null, 1)};`);
      checkArgs(id, obj, flags);
    }
    for (const line of typecheck(overlay.replace("/", "-"), `${imports.join("\n")}\n${literals.join("\n")}\n`)) {
      fail(`${overlay}: strict keys: ${line.replace(/^.*generated\.mts/, "")}`);
    }
    checkAgent(overlay, objects.find((o) => o.kind === "DaemonSet"));
  }
  finish("manifests");
}

function containersOf(obj) {
  return obj.spec?.template?.spec?.containers ?? [];
}

function checkArgs(id, obj, flags) {
  for (const c of containersOf(obj)) {
    const bin = Object.keys(flags).find((b) => String(c.image).includes(b));
    if (!bin && otherImages.some((i) => String(c.image).startsWith(i))) continue;
    if (!bin) {
      fail(`${id}: container ${c.name} runs no Portcullis image (${c.image})`);
      continue;
    }
    for (const arg of [...(c.command ?? []), ...(c.args ?? [])]) {
      const m = /^--([^=]+)/.exec(arg);
      if (m && !flags[bin].has(m[1])) fail(`${id}: ${bin} has no flag --${m[1]} (see ${bin} --help)`);
    }
  }
}

// What the product needs from the DaemonSet, so that an edit cannot lose it.
function checkAgent(overlay, ds) {
  if (!ds) return fail(`${overlay}: no agent DaemonSet`);
  const spec = ds.spec.template.spec;
  const c = spec.containers[0];
  const want = (ok, what) => ok || fail(`${overlay}: DaemonSet: ${what}`);
  want(spec.hostNetwork === true, "hostNetwork must be true");
  want(spec.priorityClassName === "system-node-critical", "priorityClassName must be system-node-critical");
  want(spec.tolerations?.some((t) => t.operator === "Exists" && !t.key), "must tolerate every taint");
  want(ds.spec.updateStrategy?.rollingUpdate?.maxUnavailable === 1, "rolling updates with maxUnavailable 1");
  want(c.securityContext?.privileged !== true, "must not be privileged");
  want(c.securityContext?.allowPrivilegeEscalation === false, "no privilege escalation");
  const caps = c.securityContext?.capabilities ?? {};
  want(JSON.stringify(caps.drop) === '["ALL"]', "must drop ALL capabilities");
  // overlays/pod-cookies: entering the pods' namespaces needs SYS_ADMIN and
  // the host's /run/netns, with the mounts made after the agent started.
  const podCookies = overlay === "overlays/pod-cookies";
  const wantCaps = podCookies ? ["BPF", "NET_ADMIN", "PERFMON", "SYS_ADMIN"] : ["BPF", "NET_ADMIN", "PERFMON"];
  want(JSON.stringify([...(caps.add ?? [])].sort()) === JSON.stringify(wantCaps),
       `must add exactly ${wantCaps.join(", ")}`);
  want(c.livenessProbe?.httpGet?.path === "/healthz", "liveness on /healthz");
  want(c.readinessProbe?.httpGet?.path === "/readyz", "readiness on /readyz");
  want(c.resources?.requests && c.resources?.limits, "resource requests and limits");
  const hostPaths = (spec.volumes ?? []).filter((v) => v.hostPath).map((v) => v.hostPath.path).sort();
  const wantPaths = podCookies ? ["/run/netns", "/sys/fs/bpf", "/var/lib/portcullis"] : ["/sys/fs/bpf", "/var/lib/portcullis"];
  want(JSON.stringify(hostPaths) === JSON.stringify(wantPaths), `exactly ${wantPaths.join(", ")} as hostPaths`);
  if (podCookies) {
    const netns = (c.volumeMounts ?? []).find((m) => m.mountPath === "/run/netns");
    want(netns?.mountPropagation === "HostToContainer", "/run/netns mounted with HostToContainer propagation");
  }
}

// --- dashboard -----------------------------------------------------------------

const dashboardFile = path.join(deploy, "grafana/portcullis.json");
const alertsFile = path.join(deploy, "prometheus/alerts.yaml");

function dashboardExprs(dashboard) {
  const out = [];
  const walk = (panels) => {
    for (const p of panels ?? []) {
      for (const t of p.targets ?? []) if (t.expr) out.push({ panel: p.title, expr: t.expr });
      walk(p.panels);
    }
  };
  walk(dashboard.panels);
  for (const v of dashboard.templating?.list ?? []) {
    const m = /^label_values\((.*),\s*\w+\)$/.exec(v.query ?? "");
    if (m) out.push({ panel: `variable ${v.name}`, expr: m[1] });
  }
  return out;
}

// Grafana's variables, replaced by what they stand for, so that promtool can parse.
function asPromQL(expr) {
  return expr.replaceAll("$__rate_interval", "1m").replaceAll("$__interval", "1m")
    .replace(/\$\{?(\w+)\}?/g, ".*");
}

function dashboard(rulesOut) {
  const text = fs.readFileSync(dashboardFile, "utf8");
  const d = JSON.parse(text);
  // JSON spells the schema's string enums (ThresholdsMode, ...) as plain
  // strings: check against the type with each enum as the union of its
  // values. Unknown keys are still errors.
  const loosen = `type Json<T> = T extends string ? \`\${T}\` : T extends readonly (infer U)[] ? Json<U>[]
    : T extends object ? { [K in keyof T]: Json<T[K]> } : T;`;
  for (const line of typecheck("dashboard",
    `import type { Dashboard } from "@grafana/schema";\n${loosen}\nexport const d: Json<Dashboard> = ${text};\n`)) {
    fail(`grafana/portcullis.json: ${line.replace(/^.*generated\.mts/, "")}`);
  }
  const exprs = dashboardExprs(d);
  if (exprs.length < 10) fail(`grafana/portcullis.json: only ${exprs.length} expressions`);
  const rules = { groups: [{ name: "dashboard", rules: exprs.map((e, i) => ({
    record: `dashboard:expr_${i}`, expr: asPromQL(e.expr) })) }] };
  fs.writeFileSync(rulesOut, YAML.stringify(rules));
  finish(`dashboard (${exprs.length} expressions written to ${rulesOut})`);
}

// --- metric names --------------------------------------------------------------

function metricsUsed() {
  const used = new Map();
  const add = (where, expr) => {
    for (const m of expr.matchAll(/\b(portcullis_[a-z0-9_]+)\b/g)) used.set(m[1], where);
  };
  for (const e of dashboardExprs(JSON.parse(fs.readFileSync(dashboardFile, "utf8")))) {
    add(`dashboard panel "${e.panel}"`, e.expr);
  }
  for (const g of YAML.parse(fs.readFileSync(alertsFile, "utf8")).groups) {
    for (const r of g.rules) add(`alert ${r.alert}`, r.expr);
  }
  return used;
}

function metrics(namesFile) {
  const names = new Set(fs.readFileSync(namesFile, "utf8").split("\n").map((s) => s.trim()));
  const used = metricsUsed();
  for (const [name, where] of used) {
    if (!names.has(name)) fail(`${where} uses ${name}, which neither the agent nor the control service exports`);
  }
  finish(`metrics (${used.size} names used)`);
}

const [cmd, ...args] = process.argv.slice(2);
if (cmd === "manifests" && args.length === 2) await manifests(...args);
else if (cmd === "dashboard" && args.length === 1) dashboard(args[0]);
else if (cmd === "metrics" && args.length === 1) metrics(args[0]);
else {
  console.error("usage: node check.mjs manifests AGENT_BIN CONTROL_BIN | dashboard RULES_OUT | metrics NAMES_FILE");
  process.exit(2);
}
