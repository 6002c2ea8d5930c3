// The one grpc-web transport of the console and typed clients of every
// service it uses. Same origin as the page: no base URL to configure, no
// CORS. Every call carries the session's access token; a call refused with
// UNAUTHENTICATED is retried once after a refresh (the token may have just
// expired), and if that fails the session ends and the user signs in again.
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { BadRequestSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb";
import { AuthService } from "./gen/minispod/v1/auth_pb";
import { BackupService } from "./gen/minispod/v1/backups_pb";
import { CatalogService } from "./gen/minispod/v1/catalog_pb";
import { HistoryService } from "./gen/minispod/v1/history_pb";
import { NotificationService } from "./gen/minispod/v1/notifications_pb";
import { SubscriptionService } from "./gen/minispod/v1/subscriptions_pb";
import { UserService } from "./gen/minispod/v1/users_pb";
import { WorkerService } from "./gen/minispod/v1/workers_pb";
import { session } from "./session";

const withToken: Interceptor = (next) => async (req) => {
  // Auth's own session calls carry no bearer token (the cookie does it).
  const sessionCall = req.method.parent.typeName === AuthService.typeName && ["Login", "Register", "Refresh", "Logout"].includes(req.method.name);
  // A call that brings its own token (the session's first GetProfile) keeps it.
  if (sessionCall || req.header.has("authorization")) return next(req);
  const token = await session.accessToken();
  if (token) req.header.set("authorization", `Bearer ${token}`);
  try {
    return await next(req);
  } catch (e) {
    const err = ConnectError.from(e);
    // Streams are restarted by their owner; unary calls retry once here.
    if (err.code !== Code.Unauthenticated || req.stream) throw err;
    const fresh = await session.refreshAfterRejection(token);
    if (!fresh) throw err;
    req.header.set("authorization", `Bearer ${fresh}`);
    return await next(req);
  }
};

const transport = createGrpcWebTransport({
  baseUrl: location.origin,
  interceptors: [withToken],
  // Same-origin fetches carry the session cookie; it is scoped to
  // AuthService's path, so only Refresh and Logout ever send it.
  fetch: (input, init) => globalThis.fetch(input, { ...init, credentials: "same-origin" }),
});

export const auth = createClient(AuthService, transport);
export const users = createClient(UserService, transport);
export const catalog = createClient(CatalogService, transport);
export const workers = createClient(WorkerService, transport);
export const subscriptions = createClient(SubscriptionService, transport);
export const notifications = createClient(NotificationService, transport);
export const history = createClient(HistoryService, transport);
export const backups = createClient(BackupService, transport);

/** What a failed call means for a form: a message, field errors, a retry time. */
export interface Problem {
  code: Code;
  message: string;
  fields: Record<string, string>;
  retryAfterSeconds?: number;
}

/** Decodes any error of a call into what a page shows. */
export function problem(e: unknown): Problem {
  const err = ConnectError.from(e);
  const fields: Record<string, string> = {};
  for (const detail of err.findDetails(BadRequestSchema)) {
    for (const v of detail.fieldViolations) fields[v.field] = v.description;
  }
  let retryAfterSeconds: number | undefined;
  for (const detail of err.findDetails(RetryInfoSchema)) {
    if (detail.retryDelay) retryAfterSeconds = Math.max(1, Math.ceil(Number(detail.retryDelay.seconds) + detail.retryDelay.nanos / 1e9));
  }
  let message = err.rawMessage || Code[err.code];
  // The server's rate-limit messages say when to retry; others get it added.
  if (err.code === Code.ResourceExhausted && retryAfterSeconds && !/retry/i.test(message)) {
    message = `${message} — try again in ${retryAfterSeconds} s`;
  }
  if (err.code === Code.Unavailable || err.code === Code.Unknown && !err.rawMessage) {
    message = "The control plane cannot be reached; check your connection and try again.";
  }
  return { code: err.code, message, fields, retryAfterSeconds };
}

export { Code, ConnectError };
