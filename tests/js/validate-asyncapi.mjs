// Parse an AsyncAPI document with the official parser and fail on any error diagnostic.
//   node tests/js/validate-asyncapi.mjs docs/asyncapi.json
// Exit 0: valid (warnings, if any, are printed); 1: error diagnostics (printed); 2: usage.
import { readFile } from "node:fs/promises";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const path = process.argv[2];
if (!path) {
  console.error("usage: node validate-asyncapi.mjs FILE");
  process.exit(2);
}
const parser = new Parser();
const { document, diagnostics } = await parser.parse(await readFile(path, "utf8"), {
  source: path,
});
const names = { 0: "error", 1: "warning", 2: "information", 3: "hint" };
for (const d of diagnostics) {
  const where = d.path && d.path.length ? d.path.join("/") : "(document)";
  console.log(`${names[d.severity] ?? d.severity} ${d.code}: ${d.message} at ${where}`);
}
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
if (errors.length || !document) {
  console.error(`${path}: ${errors.length} error(s): not a valid AsyncAPI document`);
  process.exit(1);
}
console.log(`${path}: valid AsyncAPI ${document.version()}, ${document.channels().length} channels, ` +
            `${document.operations().length} operations, ${document.messages().length} messages`);
