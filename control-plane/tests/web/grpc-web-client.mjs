// A stock grpc-web client (connect-node's grpc-web transport over HTTP/1.1)
// calling the control plane the way a browser would, plus CORS preflights.
// Usage: node grpc-web-client.mjs <baseUrl> <ca.pem> <descriptors.binpb> <email> <password> <origin>
// Prints one JSON object with what it saw; the Rust test asserts on it.
import { readFileSync } from "node:fs";
import https from "node:https";
import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";

const [baseUrl, caPath, fdsPath, email, password, origin] = process.argv.slice(2);
const ca = readFileSync(caPath);
const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(fdsPath)));
const transport = createGrpcWebTransport({ baseUrl, httpVersion: "1.1", nodeOptions: { ca } });
const auth = createClient(registry.getService("minispod.v1.AuthService"), transport);
const catalog = createClient(registry.getService("minispod.v1.CatalogService"), transport);
const workers = createClient(registry.getService("minispod.v1.WorkerService"), transport);
const notifications = createClient(registry.getService("minispod.v1.NotificationService"), transport);

function preflight(fromOrigin) {
  return new Promise((resolve, reject) => {
    const req = https.request(
      new URL("/minispod.v1.AuthService/Login", baseUrl),
      {
        method: "OPTIONS",
        ca,
        // Offer only HTTP/1.1 in ALPN, as curl --http1.1 and some proxies do.
        ALPNProtocols: ["http/1.1"],
        agent: false,
        headers: {
          Origin: fromOrigin,
          "Access-Control-Request-Method": "POST",
          "Access-Control-Request-Headers": "content-type,x-grpc-web,x-user-agent,authorization",
        },
      },
      (res) => {
        const alpn = res.socket.alpnProtocol;
        res.resume();
        res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, alpn }));
      },
    );
    req.on("error", reject);
    req.end();
  });
}

const out = {};
const login = await auth.login({ email, password });
out.loginHasTokens = login.accessToken.length > 20 && login.refreshToken.startsWith("msr_");
const profile = await auth.getProfile({}, { headers: { authorization: `Bearer ${login.accessToken}` } });
out.profileEmail = profile.user.email;
// A server stream over grpc-web: the watch's snapshot arrives, then we leave.
for await (const ev of workers.watchWorkers({}, { headers: { authorization: `Bearer ${login.accessToken}` } })) {
  out.watchFirstEventType = ev.type;
  break;
}
const outbox = await notifications.listOutboxMessages({}, { headers: { authorization: `Bearer ${login.accessToken}` } });
out.outboxPending = Number(outbox.pending);
const services = await catalog.listServices({ pageSize: 10 });
out.serviceSlugs = services.services.map((s) => s.slug).sort();
out.totalSize = Number(services.totalSize);
try {
  await auth.login({ email, password: "definitely-wrong" });
  out.wrongPasswordCode = "none";
} catch (e) {
  out.wrongPasswordCode = ConnectError.from(e).code;
}
out.allowedPreflight = await preflight(origin);
out.otherPreflight = await preflight("https://evil.example.net");
console.log(JSON.stringify(out));
// The abandoned watch may leave its keep-alive socket open; we are done.
process.exit(0);
