#!/usr/bin/env node
// Peer benchmark: llama.cpp's CPU speed on a GGUF model, measured through
// node-llama-cpp 3.21.1 (pinned in package.json), which ships a prebuilt
// llama.cpp for linux-x64 CPU. It mirrors llama-bench's two standard tests so
// the numbers can sit next to `ctxshift bench --json` in one table:
//
//   pp<N>  prompt processing: N tokens (BOS, then pseudo-random ids) decoded
//          from an empty KV cache in ONE llama_decode call (batch = ubatch >= N),
//          with logits for the last token only.  Timed: the controlledEvaluate()
//          call, i.e. JS batch assembly + llama_decode + reading/greedy-sampling
//          the single output row.  t/s = N / time.
//   tg<n>  generation: n single-token decodes starting from an empty KV cache
//          (BOS first, then pseudo-random ids, as llama-bench does), each one
//          computing the full output row (logits over the vocabulary).  Timed:
//          the loop of n controlledEvaluate() calls; each call is one
//          llama_decode of 1 token plus a greedy argmax over the logits done in
//          native code (node-llama-cpp has no way to request logits without
//          running its sampler).  t/s = n / time.
//
// Untimed: model load, context creation, clearing the KV cache between
// repetitions, and one warm-up run of each test (as llama-bench does).
// Each test is repeated r times; avg_ts / stddev_ts are the mean and sample
// standard deviation (n-1) of the per-repetition t/s, as in llama-bench.
//
// Two clocks are reported for every repetition:
//   avg_ts / samples_ts           wall clock around the JS calls above, so it
//                                 includes node-llama-cpp's per-call overhead
//                                 (promises, locks, a native sampler object,
//                                 two libuv worker hops per token) and the
//                                 greedy sampling; about 0.5 ms per call here.
//   native_avg_ts / native_samples_ts
//                                 llama.cpp's own perf counters (t_p_eval for
//                                 the pp batch, t_eval for the tg decodes), read
//                                 through context.printTimings() after each
//                                 repetition. They time llama_decode only, like
//                                 llama-bench (which does no sampling), and are
//                                 the number to compare a C engine against.
//
// Usage:
//   node llama_bench.mjs -m MODEL.gguf [-p 512] [-n 128] [-t 1] [-r 5]
//        [--fa off|on|auto] [--seed 1234]
// --fa defaults to off: llama-bench's classic default and the setting of the
// golden outputs in shared/golden. node-llama-cpp's own default is "auto",
// which turns flash attention ON for CPU; on stories260K (head_dim 8) that
// makes pp512 about 3x slower, so it is not the peer's best case.
//   node llama_bench.mjs -m MODEL.gguf --generate [--prompt "Once upon a time"]
//        [--n-predict 32] [-t 1]
// Output (bench mode): a JSON array on stdout, one object for pp (n_gen = 0)
// and one for tg (n_prompt = 0), with llama-bench's field names.
// Output (--generate): a JSON object with the prompt tokens, the generated
// token ids and the text (prompt + continuation).
//
// CPU only, offline: getLlama({gpu: false, build: "never", skipDownload: true})
// so node-llama-cpp uses its bundled prebuilt binary and never tries to
// download or compile llama.cpp (it throws instead).

import process from "node:process";
import path from "node:path";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { performance } from "node:perf_hooks";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

const HERE = path.dirname(fileURLToPath(import.meta.url));

function usage(msg) {
  if (msg) process.stderr.write(`llama_bench.mjs: ${msg}\n`);
  process.stderr.write(
    "usage: node llama_bench.mjs -m MODEL.gguf [-p 512] [-n 128] [-t 1] [-r 5] [--fa off|on|auto] [--seed N]\n" +
      "       node llama_bench.mjs -m MODEL.gguf --generate [--prompt TEXT] [--n-predict 32] [-t 1]\n",
  );
  process.exit(2);
}

function parseIntArg(name, value, min) {
  const v = Number(value);
  if (!Number.isInteger(v) || v < min) usage(`${name} must be an integer >= ${min}, got '${value}'`);
  return v;
}

function parseArgs(argv) {
  const a = {
    model: null,
    nPrompt: 512,
    nGen: 128,
    threads: 1,
    reps: 5,
    fa: "off",
    seed: 1234,
    generate: false,
    prompt: "Once upon a time",
    nPredict: 32,
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) usage(`missing value for ${k}`);
      return argv[++i];
    };
    switch (k) {
      case "-m": case "--model": a.model = next(); break;
      case "-p": case "--n-prompt": a.nPrompt = parseIntArg(k, next(), 0); break;
      case "-n": case "--n-gen": a.nGen = parseIntArg(k, next(), 0); break;
      case "-t": case "--threads": a.threads = parseIntArg(k, next(), 1); break;
      case "-r": case "--repetitions": a.reps = parseIntArg(k, next(), 1); break;
      case "--fa": {
        const v = next();
        if (!["auto", "on", "off"].includes(v)) usage(`--fa must be auto, on or off, got '${v}'`);
        a.fa = v;
        break;
      }
      case "--seed": a.seed = parseIntArg(k, next(), 0); break;
      case "--generate": a.generate = true; break;
      case "--prompt": a.prompt = next(); break;
      case "--n-predict": a.nPredict = parseIntArg(k, next(), 1); break;
      case "-h": case "--help": usage(); break;
      default: usage(`unknown argument '${k}'`);
    }
  }
  if (!a.model) usage("-m MODEL is required");
  if (!a.generate && a.nPrompt === 0 && a.nGen === 0) usage("nothing to do: -p 0 and -n 0");
  return a;
}

// Deterministic token stream (32-bit LCG), standing in for llama-bench's
// std::rand() % n_vocab. Token ids do not change the cost of a dense forward
// pass; only determinism across runs matters.
function makeRng(seed) {
  let s = seed >>> 0;
  return (n) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s % n;
  };
}

function meanSd(xs) {
  const n = xs.length;
  const mean = xs.reduce((s, x) => s + x, 0) / n;
  if (n < 2) return [mean, 0];
  const v = xs.reduce((s, x) => s + (x - mean) * (x - mean), 0) / (n - 1);
  return [mean, Math.sqrt(v)];
}

function vocabSize(model) {
  const toks = model.fileInfo?.metadata?.tokenizer?.ggml?.tokens;
  if (Array.isArray(toks) && toks.length > 0) return toks.length;
  const emb = model.fileInfo?.fullTensorInfo?.find((t) => t.name === "token_embd.weight");
  if (emb) return Number(emb.dimensions[1]);
  throw new Error("cannot determine the vocabulary size from the GGUF metadata");
}

const pkgVersion = JSON.parse(
  readFileSync(path.join(HERE, "node_modules", "node-llama-cpp", "package.json"), "utf8"),
).version;

async function main() {
  const args = parseArgs(process.argv.slice(2));

  // Offline, CPU-only. maxThreads: 0 lifts node-llama-cpp's global thread cap
  // (default max(cpuMathCores, 4)) so the context's thread count is used
  // verbatim; otherwise its thread splitter may hand out fewer threads.
  // llama.cpp's perf report arrives through the logger at info level; keep
  // those lines, pass warnings and errors through, drop the rest.
  const perfLines = [];
  const llama = await getLlama({
    gpu: false,
    build: "never",
    skipDownload: true,
    usePrebuiltBinaries: true,
    progressLogs: false,
    maxThreads: 0,
    logLevel: LlamaLogLevel.info,
    logger: (level, message) => {
      if (message.includes("llama_perf_context_print")) perfLines.push(message);
      else if (message.includes("bad special token")) return; // benign: GGUF stores unset ids as 0xFFFFFFFF
      else if (level === LlamaLogLevel.error || level === LlamaLogLevel.fatal || level === LlamaLogLevel.warn)
        process.stderr.write(`[llama.cpp ${level}] ${message.endsWith("\n") ? message : message + "\n"}`);
    },
  });
  const model = await llama.loadModel({ modelPath: args.model, gpuLayers: 0 });
  const nVocab = vocabSize(model);
  const bos = model.tokens.bos;

  const nPrompt = args.generate ? 0 : args.nPrompt;
  const nGen = args.generate ? args.nPredict : args.nGen;
  // One context large enough for either test; llama-bench uses n_ctx = p + n.
  // batchSize >= nPrompt so the whole prompt is ONE llama_decode; the addon
  // sets n_ubatch = n_batch, so it is also one ubatch (llama-bench default
  // n_ubatch is 512, so pp512 is one ubatch there too).
  const ctxSize = Math.max(args.generate ? 512 : nPrompt + nGen, 16);
  const batchSize = Math.max(nPrompt, 1);
  const context = await model.createContext({
    contextSize: ctxSize,
    batchSize,
    sequences: 1,
    threads: { ideal: args.threads, min: args.threads },
    flashAttention: args.fa === "auto" ? "auto" : args.fa === "on",
    failedCreationRemedy: false,
    performanceTracking: !args.generate,
  });
  const seq = context.getSequence();

  if (args.generate) {
    await runGenerate(args, model, seq);
  } else {
    const results = [];
    const common = {
      model_filename: args.model,
      model_type: model.typeDescription,
      model_size: model.size,
      model_n_params: model.fileInsights.totalParameters,
      backends: "CPU",
      build_commit: `node-llama-cpp ${pkgVersion}`,
      llama_cpp_release: `${llama.llamaCppRelease.repo}@${llama.llamaCppRelease.release}`,
      build_type: llama.buildType,
      n_batch: context.batchSize,
      n_ubatch: context.batchSize,
      n_threads: args.threads,
      type_k: "f16",
      type_v: "f16",
      flash_attn: args.fa,
      n_ctx: context.contextSize,
    };
    const rng = makeRng(args.seed);
    const randTok = () => rng(nVocab);

    if (nPrompt > 0) {
      const tokens = [bos ?? randTok()];
      while (tokens.length < nPrompt) tokens.push(randTok());
      const input = tokens.map((t, i) =>
        i === tokens.length - 1 ? [t, { generateNext: { token: true, options: { temperature: 0 } } }] : t,
      );
      const timeOnce = async () => {
        await seq.clearHistory();
        const t0 = performance.now();
        await seq.controlledEvaluate(input);
        const wall = performance.now() - t0;
        const perf = await readPerf(context, perfLines);
        if (perf.nPromptEval !== nPrompt || perf.nEval > 1)
          throw new Error(`pp: llama.cpp counted ${perf.nPromptEval} batch tokens + ${perf.nEval} single decodes, expected ${nPrompt} + 0`);
        return { wall, native: perf.promptEvalMs };
      };
      await timeOnce(); // warm-up
      results.push(report(common, nPrompt, 0, await repeat(args.reps, timeOnce), context, args));
    }
    if (nGen > 0) {
      // Token ids drawn up front so no RNG work sits inside the timed loop.
      const ids = [bos ?? randTok()];
      while (ids.length < nGen) ids.push(randTok());
      const steps = ids.map((t) => [[t, { generateNext: { token: true, options: { temperature: 0 } } }]]);
      const timeOnce = async (n) => {
        await seq.clearHistory();
        const t0 = performance.now();
        for (let i = 0; i < n; i++) await seq.controlledEvaluate(steps[i]);
        const wall = performance.now() - t0;
        const perf = await readPerf(context, perfLines);
        if (perf.nEval !== n || perf.nPromptEval > 1)
          throw new Error(`tg: llama.cpp counted ${perf.nPromptEval} batch tokens + ${perf.nEval} single decodes, expected 0 + ${n}`);
        return { wall, native: perf.evalMs };
      };
      await timeOnce(1); // warm-up, like llama-bench's test_gen(ctx, 1)
      results.push(report(common, 0, nGen, await repeat(args.reps, () => timeOnce(nGen)), context, args));
    }
    process.stdout.write(JSON.stringify(results, null, 2) + "\n");
  }

  await context.dispose();
  await model.dispose();
  await llama.dispose();
}

async function repeat(reps, fn) {
  const ms = [];
  for (let r = 0; r < reps; r++) ms.push(await fn());
  return ms;
}

// Prints (and thereby resets) llama.cpp's perf counters and parses them:
//   "prompt eval time = X ms / N tokens"  (decodes of more than one token)
//   "eval time = X ms / N runs"           (single-token decodes)
// llama.cpp reports a count of 0 as 1 (llama_perf_context clamps both counts
// with max(1, n)), so the checks by the callers allow 1 for the unused one.
async function readPerf(context, perfLines) {
  perfLines.length = 0;
  await context.printTimings();
  // One log message per line; "prompt eval" and plain "eval" are told apart
  // by what precedes "eval" (the function name is padded with spaces).
  const lineRe = /:\s+(prompt eval|eval) time =\s*([0-9.]+) ms \/\s*([0-9]+) (?:tokens|runs)/;
  const found = {};
  for (let waited = 0; waited <= 1000; waited += 5) {
    for (const line of perfLines) {
      const m = lineRe.exec(line);
      if (m) found[m[1]] = { ms: Number(m[2]), n: Number(m[3]) };
    }
    if (found["prompt eval"] && found["eval"]) break;
    await new Promise((r) => setTimeout(r, 5)); // log delivery is asynchronous
  }
  if (!found["prompt eval"] || !found["eval"])
    throw new Error(`could not parse llama.cpp perf output: ${JSON.stringify(perfLines)}`);
  return {
    promptEvalMs: found["prompt eval"].ms,
    nPromptEval: found["prompt eval"].n,
    evalMs: found["eval"].ms,
    nEval: found["eval"].n,
  };
}

function report(common, nPrompt, nGen, samples, context, args) {
  const nTok = nPrompt + nGen;
  const msList = samples.map((x) => x.wall);
  const samplesNs = msList.map((ms) => Math.round(ms * 1e6));
  const samplesTs = msList.map((ms) => (nTok * 1000) / ms);
  const [avgNs, sdNs] = meanSd(samplesNs);
  const [avgTs, sdTs] = meanSd(samplesTs);
  const nativeTs = samples.map((x) => (nTok * 1000) / x.native);
  const [nativeAvgTs, nativeSdTs] = meanSd(nativeTs);
  if (context.currentThreads !== args.threads) {
    process.stderr.write(
      `llama_bench.mjs: warning: llama.cpp reports ${context.currentThreads} threads, requested ${args.threads}\n`,
    );
  }
  return {
    ...common,
    n_threads_used: context.currentThreads,
    n_prompt: nPrompt,
    n_gen: nGen,
    test_time: new Date().toISOString(),
    avg_ns: Math.round(avgNs),
    stddev_ns: Math.round(sdNs),
    avg_ts: avgTs,
    stddev_ts: sdTs,
    samples_ns: samplesNs,
    samples_ts: samplesTs,
    native_avg_ts: nativeAvgTs,
    native_stddev_ts: nativeSdTs,
    native_samples_ts: nativeTs,
  };
}

// Greedy (temperature 0) continuation of BOS + prompt, one token per step.
async function runGenerate(args, model, seq) {
  const promptTokens = [];
  if (model.tokens.bos != null && model.tokens.shouldPrependBosToken) promptTokens.push(model.tokens.bos);
  promptTokens.push(...model.tokenize(args.prompt));
  const greedy = { generateNext: { token: true, options: { temperature: 0 } } };
  const input = promptTokens.map((t, i) => (i === promptTokens.length - 1 ? [t, greedy] : t));
  const out = await seq.controlledEvaluate(input);
  let next = out[promptTokens.length - 1]?.next?.token;
  const gen = [];
  while (next != null && gen.length < args.nPredict) {
    gen.push(next);
    if (gen.length === args.nPredict) break;
    const o = await seq.controlledEvaluate([[next, greedy]]);
    next = o[0]?.next?.token;
  }
  // The prompt is echoed verbatim (detokenizing BOS + SPM tokens would add a
  // leading space); the continuation is detokenized in context.
  const text = args.prompt + model.detokenize(gen, false, promptTokens);
  process.stdout.write(
    JSON.stringify({ model_filename: args.model, prompt: args.prompt, prompt_tokens: promptTokens, tokens: gen, text }) +
      "\n",
  );
}

main().catch((err) => {
  process.stderr.write(`llama_bench.mjs: ${err?.stack ?? err}\n`);
  process.exit(1);
});
