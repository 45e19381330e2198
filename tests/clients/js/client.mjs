#!/usr/bin/env node
// The AWS SDK for JavaScript v3 (@aws-sdk/client-bedrock-runtime) as a long-lived Bedrock
// client: ConverseCommand and ConverseStreamCommand in turn, every ~1 s.
//
// The key comes from AWS_BEARER_TOKEN_BEDROCK, read once and configured as `token` with
// `authSchemePreference: ["httpBearerAuth"]` (without it the SDK signs with SigV4 and
// looks for AWS credentials). The endpoint's CA comes from NODE_EXTRA_CA_CERTS (Node reads
// it at start). `--http1` swaps the SDK's default HTTP/2 handler for NodeHttpHandler, for
// endpoints that speak only HTTP/1.1 (the stand-in); a proxy offering h2 over ALPN is
// tested with the default handler.
//
// Prints `ok <call>` / `fail <status> <call>: <why>` per call and `tally ok=N fail=M`;
// exits 0 when every call succeeded.
//   AWS_BEARER_TOKEN_BEDROCK=… NODE_EXTRA_CA_CERTS=cert.pem node client.mjs --endpoint URL [--duration S] [--http1]
import {
  BedrockRuntimeClient,
  ConverseCommand,
  ConverseStreamCommand,
} from "@aws-sdk/client-bedrock-runtime";
import { NodeHttpHandler } from "@smithy/node-http-handler";

function parseArgs(argv) {
  const args = {
    endpoint: "",
    duration: 60,
    interval: 1,
    model: "anthropic.claude-sonnet-4-5-20250929-v1:0",
    region: "us-west-2",
    http1: false,
    stream: true,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--endpoint") args.endpoint = argv[++i];
    else if (a === "--duration") args.duration = Number(argv[++i]);
    else if (a === "--interval") args.interval = Number(argv[++i]);
    else if (a === "--model") args.model = argv[++i];
    else if (a === "--region") args.region = argv[++i];
    else if (a === "--ca") i++; // NODE_EXTRA_CA_CERTS carries it: Node reads that at start
    else if (a === "--http1") args.http1 = true;
    else if (a === "--no-stream") args.stream = false;
    else {
      console.error(`unknown argument ${a}`);
      process.exit(2);
    }
  }
  if (!args.endpoint) {
    console.error("--endpoint is required");
    process.exit(2);
  }
  return args;
}

function describe(e) {
  const status = e?.$metadata?.httpStatusCode ?? e?.$response?.statusCode ?? "-";
  let why = `${e?.name ?? "Error"}: ${e?.message ?? e}`.replace(/\s+/g, " ").slice(0, 300);
  if (why.includes("bedrock-api-key-")) why = "(message withheld: it contained a key)";
  return [status, why];
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const token = process.env.AWS_BEARER_TOKEN_BEDROCK;
  if (!token) {
    console.error("AWS_BEARER_TOKEN_BEDROCK is not set");
    process.exit(2);
  }
  const config = {
    region: args.region,
    endpoint: args.endpoint,
    token: { token },
    authSchemePreference: ["httpBearerAuth"],
    maxAttempts: 1,
  };
  if (args.http1) config.requestHandler = new NodeHttpHandler({ requestTimeout: 30000 });
  const client = new BedrockRuntimeClient(config);
  const messages = [{ role: "user", content: [{ text: "hello" }] }];

  const calls = [
    [
      "Converse",
      async () => {
        const out = await client.send(new ConverseCommand({ modelId: args.model, messages }));
        if (!out.output?.message?.content?.[0]?.text) throw new Error("empty answer");
      },
    ],
  ];
  if (args.stream) {
    calls.push([
      "ConverseStream",
      async () => {
        const out = await client.send(new ConverseStreamCommand({ modelId: args.model, messages }));
        const kinds = [];
        for await (const ev of out.stream) kinds.push(Object.keys(ev)[0]);
        if (!kinds.includes("contentBlockDelta") || kinds.at(-1) !== "metadata")
          throw new Error(`events ${kinds}`);
      },
    ]);
  }

  let ok = 0;
  let fail = 0;
  const start = Date.now();
  for (let i = 0; Date.now() - start < args.duration * 1000; i++) {
    const t = Date.now();
    const [name, call] = calls[i % calls.length];
    try {
      await call();
      ok++;
      console.log(`ok ${name}`);
    } catch (e) {
      fail++;
      const [status, why] = describe(e);
      console.log(`fail ${status} ${name}: ${why}`);
    }
    const rest = args.interval * 1000 - (Date.now() - t);
    if (rest > 0) await sleep(rest);
  }
  console.log(`tally ok=${ok} fail=${fail}`);
  client.destroy();
  process.exit(ok > 0 && fail === 0 ? 0 : 1);
}

main();
