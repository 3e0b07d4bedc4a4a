// Reading the JSON files the peer scripts leave behind (shared by table.mjs
// and suite_table.mjs). A missing, empty or malformed file gives null: a
// run that failed shows as n/a in the tables instead of stopping them.
import { readFileSync, existsSync } from "node:fs";

export function readJson(file) {
  if (!existsSync(file)) return null;
  const text = readFileSync(file, "utf8").trim();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

export function readJsonArray(file) {
  const v = readJson(file);
  return Array.isArray(v) ? v : null;
}
