// The session: one place that holds the access token (in memory only) and
// keeps it fresh. The refresh token never reaches this code: the server
// keeps it in an HttpOnly cookie scoped to AuthService (Login, Register and
// ChangePassword with session_cookie set it; Refresh reads and rotates it;
// Logout clears it). A reload therefore signs in again with Refresh.
//
// Refreshes are serialised across tabs with the Web Locks API: two tabs
// spending the same single-use refresh token at once would look like a
// stolen token to the server, which then revokes the session.
//
// The token's remaining life is taken from its own claims (exp - iat) and
// the local clock at receipt, so a client clock that runs ahead or behind
// the server's does not make every call refresh first.
import { Code, ConnectError } from "@connectrpc/connect";
import type { TokenPair } from "./gen/minispod/v1/auth_pb";
import type { User } from "./gen/minispod/v1/users_pb";
import { Role } from "./gen/minispod/v1/users_pb";

type Listener = () => void;

/** Seconds the token lives, from its claims; undefined if unreadable. */
function lifetimeSeconds(jwt: string): number | undefined {
  try {
    const payload = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(payload)) as { iat?: number; exp?: number };
    return claims.exp && claims.iat ? claims.exp - claims.iat : undefined;
  } catch {
    return undefined;
  }
}

/** Whether a failed refresh means the session is over (not a network blip). */
function sessionOver(e: unknown): boolean {
  const code = ConnectError.from(e).code;
  return code === Code.Unauthenticated || code === Code.PermissionDenied || code === Code.InvalidArgument;
}

class Session {
  #token = "";
  #expiresAt = 0;
  #user: User | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #refreshing: Promise<string> | undefined;
  #listeners = new Set<Listener>();
  /** Set once the first restore attempt finished (signed in or not). */
  ready = false;

  get user(): User | undefined {
    return this.#user;
  }

  get isAdmin(): boolean {
    return this.#user?.role === Role.ADMINISTRATOR;
  }

  get signedIn(): boolean {
    return this.#token !== "" && this.#user !== undefined;
  }

  subscribe(l: Listener): () => void {
    this.#listeners.add(l);
    return () => this.#listeners.delete(l);
  }

  #changed() {
    for (const l of this.#listeners) l();
  }

  /** Stores a new pair's access token and schedules its refresh. */
  accept(tokens: TokenPair | undefined, user?: User) {
    if (!tokens) return;
    this.#token = tokens.accessToken;
    const life = (lifetimeSeconds(tokens.accessToken) ?? 60) * 1000;
    this.#expiresAt = Date.now() + life;
    if (user) this.#user = user;
    // Refresh at four fifths of the life, at least a second ahead.
    this.#schedule(Math.max(1_000, Math.min(life * 0.8, life - 5_000)));
    this.#changed();
  }

  #schedule(delay: number) {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.refresh().catch((e) => {
        if (sessionOver(e)) this.end();
        // The control plane is unreachable for now: try again shortly,
        // keeping the session (the cookie is still good).
        else this.#schedule(5_000);
      });
    }, delay);
  }

  setUser(user: User) {
    this.#user = user;
    this.#changed();
  }

  /** A valid access token, refreshing first when it is about to expire. */
  async accessToken(): Promise<string> {
    if (!this.#token) return "";
    if (Date.now() > this.#expiresAt - 2_000) {
      try {
        return await this.refresh();
      } catch (e) {
        if (sessionOver(e)) {
          this.end();
          return "";
        }
        // Unreachable: let the call try with what we have and fail on its own.
      }
    }
    return this.#token;
  }

  /** A call was refused with `token`: refresh unless someone already did. */
  async refreshAfterRejection(token: string): Promise<string> {
    if (token && token !== this.#token && this.#token) return this.#token;
    try {
      return await this.refresh();
    } catch (e) {
      if (sessionOver(e)) this.end();
      return "";
    }
  }

  /** Exchanges the session cookie for a new access token (one at a time). */
  refresh(): Promise<string> {
    this.#refreshing ??= this.#withLock(async () => {
      const { auth } = await import("./api");
      const res = await auth.refresh({});
      // The first refresh of a page load also needs the account; it is
      // fetched with the new token given explicitly, so this call never
      // waits for the refresh it is part of.
      const user = this.#user ?? (await auth.getProfile({}, { headers: { authorization: `Bearer ${res.accessToken}` } })).user;
      this.accept(res.tokens, user);
      return this.#token;
    }).finally(() => {
      this.#refreshing = undefined;
    });
    return this.#refreshing;
  }

  async #withLock<T>(f: () => Promise<T>): Promise<T> {
    const locks = (navigator as Navigator & { locks?: LockManager }).locks;
    return locks ? locks.request("minispod-session-refresh", f) : f();
  }

  /** On page load: resumes the session from the cookie, if there is one. */
  async restore() {
    try {
      await this.refresh();
    } catch {
      // No cookie, or an expired or revoked session: sign in.
    }
    this.ready = true;
    this.#changed();
  }

  /** Forgets the session locally (the server already ended it, or will). */
  end() {
    clearTimeout(this.#timer);
    const had = this.#token !== "";
    this.#token = "";
    this.#expiresAt = 0;
    this.#user = undefined;
    if (had || !this.ready) {
      this.ready = true;
      this.#changed();
    }
  }

  /** Signs out: the server revokes the session and clears the cookie. */
  async signOut() {
    try {
      const { auth } = await import("./api");
      await auth.logout({});
    } finally {
      this.end();
    }
  }
}

export const session = new Session();
