// The template editor of a catalog entry (administrators): the entry's
// deployment template as JSON with the API's field names, saved with
// UpdateService.template. The server validates it and names each problem
// by its field path ("template.components[0].image"); each is shown under
// the line of the text that holds that field. A text that is not JSON, or
// not a template, is refused here with its line before anything is sent.
import { fromJson, toJsonString, type JsonValue } from "@bufbuild/protobuf";
import { useState } from "preact/hooks";
import { catalog } from "../api";
import { ErrorBanner, Notice, useAction } from "./components";
import { ServiceTemplateSchema, type Service } from "../gen/minispod/v1/catalog_pb";
import { jsonLines, lineOf, parseErrorLine } from "../jsonlines";

const PREFIX = "template";

/** The template as the editor shows it. */
export function templateText(s: Service): string {
  if (!s.template) return '{\n  "components": []\n}\n';
  return `${toJsonString(ServiceTemplateSchema, s.template, { prettySpaces: 2, useProtoFieldName: true })}\n`;
}

interface LineError {
  line: number;
  field: string;
  message: string;
}

export function TemplateEditor({ service, onSaved }: { service: Service; onSaved: (s: Service) => void }) {
  const [text, setText] = useState(() => templateText(service));
  const [local, setLocal] = useState<LineError[]>([]);
  const [saved, setSaved] = useState(false);
  // The text the server's errors were about: their lines stay put while
  // the administrator edits.
  const [sent, setSent] = useState("");
  const save = useAction(async () => {
    setSaved(false);
    setLocal([]);
    let json: JsonValue;
    try {
      json = JSON.parse(text) as JsonValue;
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      setLocal([{ line: parseErrorLine(text, message), field: "", message: `not JSON: ${message}` }]);
      return;
    }
    let template;
    try {
      template = fromJson(ServiceTemplateSchema, json);
    } catch (e) {
      setLocal([{ line: 1, field: "", message: `not a template: ${e instanceof Error ? e.message : String(e)}` }]);
      return;
    }
    setSent(text);
    const res = await catalog.updateService({ id: service.id, template });
    setText(templateText(res.service!));
    setSaved(true);
    onSaved(res.service!);
  });
  const p = save.problem;
  const server: LineError[] = [];
  if (p) {
    const lines = jsonLines(sent);
    for (const [field, message] of Object.entries(p.fields)) {
      if (field === PREFIX || field.startsWith(`${PREFIX}.`)) server.push({ line: lineOf(lines, field, PREFIX), field: field.slice(PREFIX.length + 1), message });
    }
  }
  const errors = [...local, ...server].sort((a, b) => a.line - b.line);
  const shownLines = (sent || text).split("\n");
  const rows = Math.min(40, Math.max(8, text.split("\n").length + 1));
  return (
    <section class="card" aria-labelledby="template-h">
      <h2 id="template-h">Template</h2>
      <p class="muted">
        What a subscription deploys: components, variables and generated values, as JSON with the API's field names. Image, port, resources and environment
        of the entry come from it. Subscriptions made before keep the template they were made with.
      </p>
      {p && server.length === 0 && <ErrorBanner problem={p} />}
      {saved && <Notice>Template saved.</Notice>}
      <div class={`field${errors.length ? " invalid" : ""}`}>
        <label for="template-text">Template (JSON)</label>
        <textarea
          id="template-text"
          class="code"
          rows={rows}
          spellcheck={false}
          value={text}
          onInput={(e) => {
            setText(e.currentTarget.value);
            setSaved(false);
          }}
          aria-invalid={errors.length ? "true" : undefined}
          aria-describedby={errors.length ? "template-errors" : undefined}
        />
      </div>
      {errors.length > 0 && (
        <ul id="template-errors" class="template-errors" aria-label="Template errors">
          {errors.map((e) => (
            <li key={`${e.line}/${e.field}/${e.message}`} data-line={e.line} data-field={e.field}>
              <span class="line">
                Line {e.line}: <code>{(shownLines[e.line - 1] ?? "").trim()}</code>
              </span>
              <span class="error">
                {e.field && <code>{e.field}</code>}
                {e.field && ": "}
                {e.message}
              </span>
            </li>
          ))}
        </ul>
      )}
      <div class="actions">
        <button type="button" class="primary" disabled={save.busy} onClick={() => void save.act()}>
          {save.busy ? "Saving…" : "Save template"}
        </button>
        <button
          type="button"
          disabled={save.busy}
          onClick={() => {
            setText(templateText(service));
            setLocal([]);
            save.clear();
          }}
        >
          Undo changes
        </button>
      </div>
    </section>
  );
}
