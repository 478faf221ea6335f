// Bundles src/browser_agent.js with the NATS client it imports into one ES module that the
// Python package ships (agentlab/widgets/assets/), with the bundled packages' licenses beside
// it: the widget loads nothing from a CDN. `node build.mjs --check` builds in memory and
// exits 1 if the committed files differ (tests/test_browser_agent.py runs it).

import { build } from "esbuild";
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "..", "agentlab", "widgets", "assets");
const bundlePath = join(out, "browser_agent.js");
const licensesPath = join(out, "browser_agent.LICENSES.txt");
const check = process.argv.includes("--check");

const result = await build({
  entryPoints: [join(here, "src", "browser_agent.js")],
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2020",
  minify: true,
  legalComments: "none", // the licenses file below has them whole
  metafile: true,
  write: false,
  logLevel: "warning",
});

// Every package the bundle took code from, with its license text.
const packages = new Map();
for (const input of Object.keys(result.metafile.inputs)) {
  const match = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
  if (match && !packages.has(match[1])) {
    const root = join(here, "node_modules", match[1]);
    const meta = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
    const file = ["LICENSE", "LICENSE.md", "LICENSE.txt", "COPYING"]
      .map((name) => join(root, name)).find((path) => existsSync(path));
    packages.set(match[1], { version: meta.version, license: meta.license,
      text: file ? readFileSync(file, "utf8").trim() : `License: ${meta.license}` });
  }
}
const names = [...packages.keys()].sort();
const banner = "// agentlab browser agent (js/browser-agent). Bundled: " +
  names.map((n) => `${n} ${packages.get(n).version} (${packages.get(n).license})`).join(", ") +
  ". License texts: browser_agent.LICENSES.txt.\n";
const bundle = banner + result.outputFiles[0].text;
const licenses = names.map((n) => {
  const p = packages.get(n);
  return `${n} ${p.version} (${p.license})\n${"=".repeat(72)}\n\n${p.text}\n`;
}).join("\n\n");

if (check) {
  const same = (path, text) => existsSync(path) && readFileSync(path, "utf8") === text;
  if (!same(bundlePath, bundle) || !same(licensesPath, licenses)) {
    console.error(`${bundlePath} is not what js/browser-agent builds: run ` +
      "`npm ci --prefix js/browser-agent && npm run build --prefix js/browser-agent`.");
    process.exit(1);
  }
  console.log("the committed bundle is what the lock file builds");
} else {
  writeFileSync(bundlePath, bundle);
  writeFileSync(licensesPath, licenses);
  console.log(`wrote ${bundlePath} (${bundle.length} bytes) and ${licensesPath}`);
}
