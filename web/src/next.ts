// Where to go after signing in: only paths of this origin (no open redirect).

/** `next` if it is a path on `origin` other than the sign-in pages, else "/". */
export function safeNext(next: string | null, origin: string): string {
  if (!next || !next.startsWith("/")) return "/";
  let url: URL;
  try {
    url = new URL(next, origin);
  } catch {
    return "/";
  }
  if (url.origin !== origin || url.pathname === "/signin" || url.pathname === "/register") return "/";
  return url.pathname + url.search + url.hash;
}
