// The footer of a paged table (users, subscriptions): the total, Previous
// page and Next page. The page token lives in the URL (`page`), so a page
// can be linked and reloaded; the tokens of the pages before it are kept
// here, and a new filter starts over from the first page.
import { useEffect, useState } from "preact/hooks";
import { setQuery, useLocation } from "../router";

export type Pages = {
  /** This page's token ("" for the first page). */
  page: string;
  /** Forgets the pages before this one (a new search). */
  startOver: () => void;
  tokens: string[];
  setTokens: (t: string[]) => void;
};

/** The page token from the URL; `filters` starting over when they change. */
export function usePages(filters: unknown[]): Pages {
  const { query } = useLocation();
  const page = query.get("page") ?? "";
  // Page tokens of the pages before this one; a new filter starts over.
  const [tokens, setTokens] = useState<string[]>([]);
  useEffect(() => {
    if (!page) setTokens([]);
  }, [...filters, page]);
  return { page, tokens, setTokens, startOver: () => setTokens([]) };
}

/** Previous page / Next page under a table, with `summary` ("25 users") before them. */
export function Pager({ pages: { page, tokens, setTokens }, summary, next }: { pages: Pages; summary: string; next: string | undefined }) {
  return (
    <nav class="pager" aria-label="Pages">
      <span>{summary}</span>
      <button
        type="button"
        disabled={!page}
        onClick={() => {
          const prev = tokens.slice(0, -1);
          setTokens(prev);
          setQuery({ page: prev[prev.length - 1] });
        }}
      >
        Previous page
      </button>
      <button
        type="button"
        disabled={!next}
        onClick={() => {
          setTokens([...tokens, next!]);
          setQuery({ page: next });
        }}
      >
        Next page
      </button>
    </nav>
  );
}
