// The inputs of a catalog template's variables, for the subscribe form and
// a subscription's variables editor: one input per variable by type, its
// label, description as help, default, required mark and pattern. The
// checks before sending (checkFields) mirror the server's: the browser's
// constraint validation of those attributes (required, pattern, maxlength),
// then the server's rules that no attribute says (an integer that fits 64
// bits, an email address with a dotted domain, one line of at most 1000
// characters). The server checks everything again; its field errors
// ("name", "variables.NAME", and a name already taken) are shown at the
// same place.
import type { JSX } from "preact";
import { VariableType, type TemplateVariable } from "../gen/minispod/v1/catalog_pb";
import { useId } from "./components";


/** A subscription name: a DNS label of 1 to 30 characters starting with a letter (Subscription.name). */
export const NAME_PATTERN = "[a-z]([a-z0-9\\-]*[a-z0-9])?";
export const NAME_MAX = 30;
/** The longest variable value the server takes. */
export const VALUE_MAX = 1000;

/** `pattern` if the browser can use it as an input's pattern (the `v` flag, whole value), else undefined. */
export function htmlPattern(pattern: string): string | undefined {
  if (!pattern) return undefined;
  try {
    new RegExp(`^(?:${pattern})$`, "v");
    return pattern;
  } catch {
    // RE2 syntax the browser does not take (or no `v` flag): the server checks it.
    return undefined;
  }
}

/** The value a variable starts with on the subscribe form. */
export function initialValue(v: TemplateVariable): string {
  if (v.defaultValue) return v.defaultValue;
  if (v.type === VariableType.BOOLEAN) return "false";
  return "";
}

type Props = {
  variable: TemplateVariable;
  value: string;
  onValue: (v: string) => void;
  error?: string;
  /** The key of the field in the server's BadRequest ("variables.NAME"). */
  field: string;
  /** A SECRET that has a value already: blank keeps it. */
  keepSecret?: boolean;
};

/** One variable's input, labelled, with its help text and error. */
export function VariableInput({ variable: v, value, onValue, error, field, keepSecret }: Props) {
  const id = useId("v");
  const hint = [v.description, keepSecret ? "Leave blank to keep the current value." : ""].filter(Boolean).join(" ");
  const describedBy = [error ? `${id}-err` : "", hint ? `${id}-hint` : ""].filter(Boolean).join(" ") || undefined;
  const required = v.required && !keepSecret;
  const common = {
    id,
    "data-field": field,
    "data-type": String(v.type),
    "aria-invalid": error ? ("true" as const) : undefined,
    "aria-describedby": describedBy,
  };
  const label = (
    <label for={id}>
      {v.label || v.name}
      {required && <span class="required" aria-hidden="true"> *</span>}
    </label>
  );
  const help = hint && <small id={`${id}-hint`}>{hint}</small>;
  const err = error && (
    <small id={`${id}-err`} class="error">
      {error}
    </small>
  );
  if (v.type === VariableType.BOOLEAN) {
    return (
      <div class={`field${error ? " invalid" : ""}`}>
        <div class="check">
          <input type="checkbox" {...common} checked={value === "true"} onChange={(e) => onValue(e.currentTarget.checked ? "true" : "false")} />
          {label}
        </div>
        {help}
        {err}
      </div>
    );
  }
  if (v.type === VariableType.SELECT) {
    return (
      <div class={`field${error ? " invalid" : ""}`}>
        {label}
        <select {...common} required={required} value={value} onChange={(e) => onValue(e.currentTarget.value)}>
          {(!v.options.includes(value) || !required) && <option value="">{required ? "Choose…" : "(none)"}</option>}
          {v.options.map((o) => (
            <option value={o} key={o}>
              {o}
            </option>
          ))}
        </select>
        {help}
        {err}
      </div>
    );
  }
  const typed: Partial<JSX.InputHTMLAttributes<HTMLInputElement>> =
    v.type === VariableType.NUMBER
      ? { type: "number", step: "1", inputMode: "numeric" }
      : v.type === VariableType.EMAIL
        ? { type: "email", autoComplete: "off" }
        : v.type === VariableType.SECRET
          ? { type: "password", autoComplete: "new-password" }
          : { type: "text", autoComplete: "off" };
  return (
    <div class={`field${error ? " invalid" : ""}`}>
      {label}
      <input {...typed} {...common} required={required} pattern={htmlPattern(v.pattern)} data-pattern={v.pattern && !htmlPattern(v.pattern) ? v.pattern : undefined} maxLength={VALUE_MAX} value={value} onInput={(e) => onValue(e.currentTarget.value)} />
      {help}
      {err}
    </div>
  );
}

/** The server's email shape: one @, a local part, a dotted domain, no spaces, at most 254 bytes. */
function isEmail(s: string): boolean {
  const at = s.indexOf("@");
  if (at <= 0) return false;
  const domain = s.slice(at + 1);
  return new TextEncoder().encode(s).length <= 254 && !domain.includes("@") && domain.includes(".") && domain.split(".").every((l) => l !== "") && !/[\s\p{Cc}]/u.test(s);
}

/** What the server would say of `value` for a variable of `type` that the input's attributes do not catch. */
function valueProblem(type: VariableType, value: string, pattern: string | undefined): string | undefined {
  if (value === "") return undefined;
  if (pattern) {
    // A pattern the input could not take: tried without the `v` flag; one
    // JavaScript cannot read at all is left to the server.
    try {
      if (!new RegExp(`^(?:${pattern})$`, "u").test(value)) return `Must match the pattern ${pattern}.`;
    } catch {
      /* the server decides */
    }
  }
  if ([...value].length > VALUE_MAX) return `At most ${VALUE_MAX} characters.`;
  if (/\p{Cc}/u.test(value)) return "One line without control characters.";
  if (type === VariableType.NUMBER) {
    if (!/^-?\d+$/.test(value)) return "Must be a whole number.";
    const n = BigInt(value);
    if (n > 2n ** 63n - 1n || n < -(2n ** 63n)) return "Too large a number.";
  }
  if (type === VariableType.EMAIL && !isEmail(value)) return "Not an email address.";
  return undefined;
}

/**
 * The form's fields that fail the checks, as field errors keyed like the
 * server's ("name", "variables.NAME").
 */
export function checkFields(form: HTMLFormElement): Record<string, string> {
  const out: Record<string, string> = {};
  for (const el of Array.from(form.elements)) {
    if (!(el instanceof HTMLInputElement || el instanceof HTMLSelectElement)) continue;
    const field = el.dataset.field;
    if (!field) continue;
    const v = el.validity;
    if (v.valid) {
      const type = el.dataset.type;
      const p = type && el instanceof HTMLInputElement && el.type !== "checkbox" ? valueProblem(Number(type) as VariableType, el.value, el.dataset.pattern) : undefined;
      if (p) out[field] = p;
      continue;
    }
    out[field] = v.valueMissing
      ? "A value is required."
      : v.typeMismatch
        ? "Not an email address."
        : v.badInput || v.stepMismatch
          ? "Must be a whole number."
          : v.tooLong
            ? `At most ${(el as HTMLInputElement).maxLength} characters.`
            : v.patternMismatch
              ? field === "name"
                ? "Lower-case letters, digits and inner dashes, starting with a letter."
                : `Must match the pattern ${(el as HTMLInputElement).pattern}.`
              : el.validationMessage || "Not a valid value.";
  }
  return out;
}
