// proof.js drives the Dapr JavaScript SDK (@dapr/dapr, pinned in
// package.json) against a meshd sidecar, unchanged, the way an app would.
// The Go test (jssdk_test.go) starts the mesh, runs this file with node and
// checks what it prints: one JSON object with the outcome of every step.
//
// Environment: DAPR_HOST, DAPR_HTTP_PORT, DAPR_GRPC_PORT (the SDK's own),
// DAPR_API_TOKEN (read by the SDK when set), PROOF_PROTOCOL (http or grpc),
// PROOF_TARGET (the app to invoke), PROOF_UNKNOWN (an app nobody serves).
"use strict";

const { DaprClient, CommunicationProtocolEnum, HttpMethod } = require("@dapr/dapr");

async function step(out, name, fn) {
  try {
    out[name] = { ok: true, value: await fn() };
  } catch (e) {
    out[name] = { ok: false, error: String((e && e.message) || e) };
  }
}

async function main() {
  const protocol = process.env.PROOF_PROTOCOL === "grpc" ? CommunicationProtocolEnum.GRPC : CommunicationProtocolEnum.HTTP;
  const port = protocol === CommunicationProtocolEnum.GRPC ? process.env.DAPR_GRPC_PORT : process.env.DAPR_HTTP_PORT;
  const target = process.env.PROOF_TARGET;
  const client = new DaprClient({
    daprHost: process.env.DAPR_HOST,
    daprPort: port,
    communicationProtocol: protocol,
    logger: { level: 0 }, // quiet: stdout carries the result
  });
  const out = {};
  const started = Date.now();
  await step(out, "start", async () => {
    await client.start();
    return Date.now() - started;
  });
  await step(out, "isHealthy", () => client.health.isHealthy());
  await step(out, "metadataSet", () => client.metadata.set("proof", "js-" + process.env.PROOF_PROTOCOL));
  await step(out, "metadata", () => client.metadata.get());
  for (const verb of [HttpMethod.GET, HttpMethod.POST, HttpMethod.PUT, HttpMethod.PATCH, HttpMethod.DELETE]) {
    const body = verb === HttpMethod.GET ? undefined : { hello: "world", verb };
    await step(out, "invoke_" + verb, () => client.invoker.invoke(target, "echo/" + verb + "?x=1&y=two", verb, body));
  }
  await step(out, "invoke_unknown", () => client.invoker.invoke(process.env.PROOF_UNKNOWN, "echo", HttpMethod.GET));
  await client.stop().catch(() => {});
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write("proof.js: " + ((e && e.stack) || e) + "\n");
    process.exit(2);
  },
);
