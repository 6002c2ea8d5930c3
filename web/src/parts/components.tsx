// Small building blocks shared by the pages: labelled fields that show the
// server's field errors, an error banner, a confirmation dialog.
import type { ComponentChildren, JSX } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { problem, type Problem } from "../api";
import { ago, count } from "../format";
import type { LinkState } from "../live";

let nextId = 0;
/** An id unique in the page, the same on every render of the caller (labels, aria-describedby). */
export function useId(prefix: string): string {
  const ref = useRef("");
  if (!ref.current) ref.current = `${prefix}-${++nextId}`;
  return ref.current;
}

type InputProps = Omit<JSX.InputHTMLAttributes<HTMLInputElement>, "label" | "onInput" | "value"> & {
  label: string;
  value: string;
  onValue: (v: string) => void;
  error?: string;
  hint?: string;
};

/** A labelled input; `error` (from the server's BadRequest) sits under it. */
export function Field({ label, value, onValue, error, hint, ...rest }: InputProps) {
  const id = useId("f");
  const describedBy = [error ? `${id}-err` : "", hint ? `${id}-hint` : ""].filter(Boolean).join(" ") || undefined;
  return (
    <div class={`field${error ? " invalid" : ""}`}>
      <label for={id}>{label}</label>
      <input id={id} value={value} onInput={(e) => onValue(e.currentTarget.value)} aria-invalid={error ? "true" : undefined} aria-describedby={describedBy} {...rest} />
      {hint && <small id={`${id}-hint`}>{hint}</small>}
      {error && (
        <small id={`${id}-err`} class="error">
          {error}
        </small>
      )}
    </div>
  );
}

type AreaProps = { label: string; value: string; onValue: (v: string) => void; error?: string; rows?: number; readOnly?: boolean; hint?: string };

export function TextArea({ label, value, onValue, error, rows = 3, readOnly, hint }: AreaProps) {
  const id = useId("t");
  return (
    <div class={`field${error ? " invalid" : ""}`}>
      <label for={id}>{label}</label>
      <textarea id={id} rows={rows} readOnly={readOnly} value={value} onInput={(e) => onValue(e.currentTarget.value)} aria-invalid={error ? "true" : undefined} aria-describedby={error ? `${id}-err` : hint ? `${id}-hint` : undefined} />
      {hint && <small id={`${id}-hint`}>{hint}</small>}
      {error && (
        <small id={`${id}-err`} class="error">
          {error}
        </small>
      )}
    </div>
  );
}

type SelectProps = { label: string; value: string; onValue: (v: string) => void; options: [string, string][]; error?: string };

export function Select({ label, value, onValue, options, error }: SelectProps) {
  const id = useId("s");
  return (
    <div class={`field${error ? " invalid" : ""}`}>
      <label for={id}>{label}</label>
      <select id={id} value={value} onChange={(e) => onValue(e.currentTarget.value)} aria-invalid={error ? "true" : undefined}>
        {options.map(([v, text]) => (
          <option value={v} key={v}>
            {text}
          </option>
        ))}
      </select>
      {error && <small class="error">{error}</small>}
    </div>
  );
}

/** A group of radio buttons under a legend: one of `options` ([value, label]) is chosen. */
export function Radios({ legend, value, onValue, options }: { legend: string; value: string; onValue: (v: string) => void; options: [string, string][] }) {
  const name = useId("r");
  return (
    <fieldset>
      <legend>{legend}</legend>
      <div class="inline">
        {options.map(([v, text]) => (
          <div class="field check" key={v}>
            <input id={`${name}-${v}`} type="radio" name={name} value={v} checked={value === v} onChange={() => onValue(v)} />
            <label for={`${name}-${v}`}>{text}</label>
          </div>
        ))}
      </div>
    </fieldset>
  );
}

export function Checkbox({ label, checked, onChecked }: { label: string; checked: boolean; onChecked: (v: boolean) => void }) {
  const id = useId("c");
  return (
    <div class="field check">
      <input id={id} type="checkbox" checked={checked} onChange={(e) => onChecked(e.currentTarget.checked)} />
      <label for={id}>{label}</label>
    </div>
  );
}

/** The form-level error (message, and the fields it names that no input shows). */
export function ErrorBanner({ problem: p, shownFields = [] }: { problem: Problem | undefined; shownFields?: string[] }) {
  if (!p) return null;
  const other = Object.entries(p.fields).filter(([f]) => !shownFields.includes(f));
  return (
    <div class="banner error" role="alert">
      <p>{p.message}</p>
      {other.length > 0 && (
        <ul>
          {other.map(([f, d]) => (
            <li key={f}>
              {f}: {d}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

export function Notice({ children }: { children: ComponentChildren }) {
  return (
    <div class="banner ok" role="status">
      {children}
    </div>
  );
}

/** Runs an async action for a form: busy flag, decoded problem, success. */
export function useAction<A extends unknown[]>(run: (...args: A) => Promise<void>) {
  const [busy, setBusy] = useState(false);
  const [err, setErr] = useState<Problem>();
  const act = async (...args: A) => {
    setBusy(true);
    setErr(undefined);
    try {
      await run(...args);
    } catch (e) {
      setErr(problem(e));
    } finally {
      setBusy(false);
    }
  };
  return { busy, problem: err, act, clear: () => setErr(undefined) };
}

/** Loads data for a page; reload() fetches again. */
export function useLoad<T>(load: (signal: AbortSignal) => Promise<T>, deps: unknown[]) {
  const [data, setData] = useState<T>();
  const [err, setErr] = useState<Problem>();
  const [tick, setTick] = useState(0);
  useEffect(() => {
    const abort = new AbortController();
    load(abort.signal).then(
      (d) => {
        if (!abort.signal.aborted) {
          setData(d);
          setErr(undefined);
        }
      },
      (e) => {
        if (!abort.signal.aborted) setErr(problem(e));
      },
    );
    return () => abort.abort();
  }, [...deps, tick]);
  return { data, problem: err, reload: () => setTick((t) => t + 1), setData };
}

/** A modal confirmation (native <dialog>: focus trap and Escape for free). */
export function Confirm({ open, title, children, confirmLabel, onConfirm, onCancel, danger, confirmDisabled }: { open: boolean; title: string; children: ComponentChildren; confirmLabel: string; onConfirm: () => void; onCancel: () => void; danger?: boolean; confirmDisabled?: boolean }) {
  const ref = useRef<HTMLDialogElement>(null);
  // A close this component made (open turned false): its "close" event
  // comes a moment later and must not cancel a question asked since.
  const closing = useRef(false);
  const id = useId("d");
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (open && !d.open) d.showModal();
    if (!open && d.open) {
      closing.current = true;
      d.close();
    }
  }, [open]);
  const closed = () => {
    if (closing.current) closing.current = false;
    else onCancel();
  };
  return (
    <dialog ref={ref} aria-labelledby={id} onClose={closed} onCancel={onCancel}>
      <h2 id={id}>{title}</h2>
      <div>{children}</div>
      <div class="actions">
        <button type="button" onClick={onCancel}>
          Cancel
        </button>
        <button type="button" class={danger ? "danger" : "primary"} onClick={onConfirm} disabled={confirmDisabled}>
          {confirmLabel}
        </button>
      </div>
    </dialog>
  );
}

/** The time now, re-rendering the caller every second (ticking ages). */
export function useNow(): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, []);
  return now;
}

/** Sets the document title and renders the page heading. */
export function PageTitle({ children, actions }: { children: string; actions?: ComponentChildren }) {
  useEffect(() => {
    document.title = `${children} · MiniSpod`;
  }, [children]);
  return (
    <div class="page-head">
      <h1>{children}</h1>
      {actions && <div class="actions">{actions}</div>}
    </div>
  );
}

/** A figure on the dashboard. */
export function Stat({ label, value, sub }: { label: string; value: string | number | bigint; sub?: string }) {
  return (
    <div class="stat">
      <div class="stat-label">{label}</div>
      <div class="stat-value">{typeof value === "string" ? value : count(value)}</div>
      {sub && <div class="stat-sub">{sub}</div>}
    </div>
  );
}

/** A live stream's state: "Live", "Connecting…", or when it retries. */
export function LiveBadge({ state: s }: { state: LinkState }) {
  const now = useNow();
  const text =
    s.kind === "live" ? "Live" : s.kind === "connecting" ? "Connecting…" : s.retryAt ? `Reconnecting… (attempt ${s.attempt}, next try in ${Math.max(0, Math.ceil((s.retryAt - now) / 1000))} s)` : `Disconnected: ${s.reason}`;
  return (
    <span class={`badge link-${s.kind}`} role="status" aria-live="polite">
      {text}
    </span>
  );
}

/**
 * Says that the figures next to it are not live: the stream dropped and
 * is reconnecting; "last update 12 s ago" counts up with `now`. The page
 * dims what it describes (class "stale") and points at it with
 * aria-describedby.
 */
export function StaleNote({ id, since, now }: { id: string; since: number; now: number }) {
  return (
    <p class="banner warn stale-note" id={id}>
      Not live: last update {ago(since, now)}. Reconnecting; what is shown here may be out of date.
    </p>
  );
}
