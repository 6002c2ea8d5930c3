// A small history router: the path picks the page, the query string holds
// a page's filters and sort, so every view can be linked and reloaded.
import { useStore } from "./store";

type Listener = () => void;
const listeners = new Set<Listener>();

function notify() {
  for (const l of listeners) l();
}
addEventListener("popstate", notify);

export function navigate(to: string, replace = false) {
  if (to === location.pathname + location.search) return;
  if (replace) history.replaceState(null, "", to);
  else history.pushState(null, "", to);
  scrollTo(0, 0);
  notify();
}

/** The URL as a store (see store.ts): its listeners hear every navigation. */
const here = {
  subscribe(l: Listener): () => void {
    listeners.add(l);
    return () => {
      listeners.delete(l);
    };
  },
};

/** Re-renders the caller whenever the URL changes. */
export function useLocation(): { path: string; query: URLSearchParams } {
  useStore(here);
  return { path: location.pathname, query: new URLSearchParams(location.search) };
}

/** Replaces some query parameters (empty values are removed). */
export function setQuery(changes: Record<string, string | undefined>) {
  const q = new URLSearchParams(location.search);
  for (const [k, v] of Object.entries(changes)) {
    if (v === undefined || v === "") q.delete(k);
    else q.set(k, v);
  }
  const s = q.toString();
  navigate(location.pathname + (s ? `?${s}` : ""), true);
}

/** Intercepts clicks on same-origin links so they navigate in place. */
export function installLinkHandler() {
  document.addEventListener("click", (e) => {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    const a = (e.target as Element).closest("a");
    if (!a || a.target || a.hasAttribute("download") || a.origin !== location.origin) return;
    e.preventDefault();
    navigate(a.pathname + a.search);
  });
}
