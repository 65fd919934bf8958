#!/usr/bin/env node
// Copies the dashboard's Chart.js, installed by `npm ci` at the version
// package.json pins (package-lock.json fixes its hash), from node_modules/
// into web/vendor/, with its licence.  Run by `make web-vendor` and by
// setup.py when a build finds web/vendor/ empty.
"use strict";

const fs = require("fs");
const path = require("path");

const root = path.resolve(__dirname, "..");
const pinned = require(path.join(root, "package.json")).dependencies["chart.js"];
const installedDir = path.join(root, "node_modules", "chart.js");
const FILES = [
  ["dist/chart.umd.js", "chart.umd.js"],
  ["LICENSE.md", "chart.js-LICENSE.md"],
];

function fail(why) {
  process.stderr.write(`copy-vendor: ${why}\n`);
  process.exit(1);
}

let installed;
try {
  installed = require(path.join(installedDir, "package.json")).version;
} catch (e) {
  fail("node_modules/chart.js is missing: run `npm ci` first");
}
if (installed !== pinned) {
  fail(`node_modules has chart.js ${installed}, package.json pins ${pinned}: run \`npm ci\``);
}
const out = path.join(root, "web", "vendor");
fs.mkdirSync(out, { recursive: true });
for (const [from, to] of FILES) {
  fs.copyFileSync(path.join(installedDir, from), path.join(out, to));
}
process.stdout.write(`copy-vendor: chart.js ${installed} copied into web/vendor/\n`);
