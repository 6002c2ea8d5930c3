// Where each value of a JSON text starts, by field path, so that the
// server's field errors ("template.components[0].image") can be shown next
// to their lines in a text editor.

/** Keys as the server names fields: lowerCamelCase JSON names in snake_case. */
const snake = (k: string) => k.replace(/[A-Z]/g, (m) => `_${m.toLowerCase()}`);

/**
 * The 1-based line of each member and element of the JSON `text`, by path
 * (`components[0].image`; the root is ""). `text` must parse (JSON.parse).
 */
export function jsonLines(text: string): Map<string, number> {
  const lines = new Map<string, number>([["", 1]]);
  let i = 0;
  let line = 1;
  const ws = () => {
    while (i < text.length && /\s/.test(text[i])) {
      if (text[i] === "\n") line++;
      i++;
    }
  };
  const str = (): string => {
    i++; // the opening quote
    let out = "";
    while (i < text.length && text[i] !== '"') {
      if (text[i] === "\\") {
        out += text[i + 1] ?? "";
        i += 2;
      } else {
        out += text[i++];
      }
    }
    i++;
    return out;
  };
  const value = (path: string, depth: number): void => {
    ws();
    if (depth > 64) return;
    const c = text[i];
    if (c === "{" || c === "[") {
      const object = c === "{";
      i++;
      ws();
      if (text[i] === (object ? "}" : "]")) {
        i++;
        return;
      }
      for (let n = 0; i < text.length; n++) {
        ws();
        let p: string;
        if (object) {
          const at = line;
          const k = snake(str());
          p = path ? `${path}.${k}` : k;
          lines.set(p, at);
          ws();
          i++; // the colon
        } else {
          p = `${path}[${n}]`;
          lines.set(p, line);
        }
        value(p, depth + 1);
        ws();
        const sep = text[i++];
        if (sep !== ",") return;
      }
      return;
    }
    if (c === '"') {
      str();
      return;
    }
    while (i < text.length && !/[\s,\]}]/.test(text[i])) i++;
  };
  value("", 0);
  return lines;
}

/**
 * The line of the server's field `field` (with its `prefix.` removed) in a
 * text whose lines are `lines`: the field's own, or that of the nearest
 * enclosing one present (a field left out because it is empty).
 */
export function lineOf(lines: Map<string, number>, field: string, prefix: string): number {
  let p = field === prefix ? "" : field.startsWith(`${prefix}.`) ? field.slice(prefix.length + 1) : field;
  for (;;) {
    const at = lines.get(p);
    if (at !== undefined) return at;
    const cut = Math.max(p.lastIndexOf("."), p.lastIndexOf("["));
    if (cut <= 0) return lines.get("") ?? 1;
    p = p.slice(0, cut);
  }
}

/** The 1-based line of a JSON.parse error in `text`, when it says where. */
export function parseErrorLine(text: string, message: string): number {
  const line = /line (\d+)/.exec(message);
  if (line) return Number(line[1]);
  const pos = /position (\d+)/.exec(message);
  if (pos) return text.slice(0, Number(pos[1])).split("\n").length;
  return 1;
}
