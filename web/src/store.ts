// The one way a view follows a store: the session (session.ts), the live
// fleet and the subscription watches (live.ts), the URL (router.ts). Each
// store has `subscribe(listener) -> unsubscribe` and calls its listeners
// after it changed (the live ones at most once per animation frame);
// useStore re-renders the calling component then, and stops listening when
// it goes.
import { useEffect, useState } from "preact/hooks";

/** What useStore can follow. */
export interface Store {
  subscribe(listener: () => void): () => void;
}

/** Re-renders the caller whenever `store` changes; returns the store. */
export function useStore<S extends Store>(store: S): S {
  const [, force] = useState(0);
  useEffect(() => {
    const unsubscribe = store.subscribe(() => force((n) => n + 1));
    // The store may have changed between this render and the effect (a
    // session restore or a navigation finishing first): render once more
    // with its state now.
    force((n) => n + 1);
    return unsubscribe;
  }, [store]);
  return store;
}
