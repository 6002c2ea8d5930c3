// Builds the console into dist/: protobuf-es code from ../proto (buf, local
// plugin), one minified, content-hashed JS bundle and stylesheet under
// dist/assets/, and index.html naming them. Each file gets a gzipped twin
// that the control plane serves to browsers accepting gzip. Prints the
// gzipped JavaScript size against the console's 200 KB budget.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { gzipSync } from "node:zlib";
import * as esbuild from "esbuild";

const here = new URL(".", import.meta.url).pathname;
const dist = join(here, "dist");
const budget = 200 * 1024;

execFileSync(join(here, "node_modules/.bin/buf"), ["generate", "--template", "buf.gen.yaml"], {
  cwd: here,
  stdio: "inherit",
});

rmSync(dist, { recursive: true, force: true });
mkdirSync(join(dist, "assets"), { recursive: true });
const result = await esbuild.build({
  entryPoints: { app: join(here, "src/main.tsx"), style: join(here, "src/styles.css") },
  bundle: true,
  minify: true,
  format: "esm",
  target: ["chrome110", "firefox110", "safari16"],
  jsx: "automatic",
  jsxImportSource: "preact",
  entryNames: "assets/[name]-[hash]",
  assetNames: "assets/[name]-[hash]",
  outdir: dist,
  metafile: true,
  legalComments: "none",
  logLevel: "warning",
});

const outputs = Object.keys(result.metafile.outputs).map((p) => "/" + relative(dist, p));
const js = outputs.find((p) => p.endsWith(".js"));
const css = outputs.find((p) => p.endsWith(".css"));
// Everything under /assets/ is cached for a year, so its name carries a
// hash of its content.
const icon = readFileSync(join(here, "src/favicon.svg"));
const favicon = `/assets/favicon-${createHash("sha256").update(icon).digest("hex").slice(0, 8)}.svg`;
writeFileSync(join(dist, favicon), icon);
const html = readFileSync(join(here, "src/index.html"), "utf8")
  .replace("%APP_JS%", js)
  .replace("%APP_CSS%", css)
  .replace("%FAVICON%", favicon);
writeFileSync(join(dist, "index.html"), html);

let gzippedJs = 0;
function compress(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) {
      compress(path);
      continue;
    }
    const gz = gzipSync(readFileSync(path), { level: 9 });
    writeFileSync(path + ".gz", gz);
    if (name.endsWith(".js")) gzippedJs += gz.length;
  }
}
compress(dist);
console.log(`console built: ${js} ${css}; JavaScript ${(gzippedJs / 1024).toFixed(1)} KB gzipped (budget ${budget / 1024} KB)`);
if (gzippedJs > budget) {
  console.error("over the JavaScript budget");
  process.exit(1);
}
