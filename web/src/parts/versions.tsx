// An entry's versions (administrators, issue #25): each version with its
// notes, whether it is one way or withdrawn, and how many subscriptions run
// it; publishing a new version (its template as JSON, starting from the
// newest one's) and withdrawing one. The server checks everything.
import { fromJson, toJsonString, type JsonValue } from "@bufbuild/protobuf";
import { useState } from "preact/hooks";
import { catalog } from "../api";
import { Checkbox, Confirm, ErrorBanner, Field, Notice, TextArea, useAction, useLoad } from "./components";
import { dateTime, plural } from "../format";
import { ServiceTemplateSchema, type Service, type ServiceTemplate } from "../gen/minispod/v1/catalog_pb";

function text(t: ServiceTemplate | undefined): string {
  return t ? `${toJsonString(ServiceTemplateSchema, t, { prettySpaces: 2, useProtoFieldName: true })}\n` : "";
}

export function VersionsCard({ service, onChanged }: { service: Service; onChanged: (s: Service) => void }) {
  const list = useLoad(async () => (await catalog.listServiceVersions({ serviceId: service.id })).versions, [service.id]);
  const [version, setVersion] = useState("");
  const [notes, setNotes] = useState("");
  const [oneWay, setOneWay] = useState(false);
  const [template, setTemplate] = useState<string>();
  const [withdrawing, setWithdrawing] = useState("");
  const [done, setDone] = useState("");
  const shown = template ?? text(list.data?.[0]?.template ?? service.template);
  const publish = useAction(async () => {
    setDone("");
    let parsed;
    try {
      parsed = fromJson(ServiceTemplateSchema, JSON.parse(shown) as JsonValue);
    } catch (e) {
      throw new Error(`The template is not a template's JSON: ${e instanceof Error ? e.message : String(e)}`);
    }
    const res = await catalog.publishServiceVersion({ serviceId: service.id, version, notes, oneWay, template: parsed });
    setDone(`Published version ${res.version?.version}.`);
    setVersion("");
    setNotes("");
    setOneWay(false);
    setTemplate(undefined);
    if (res.service) onChanged(res.service);
    list.reload();
  });
  const withdraw = useAction(async () => {
    await catalog.withdrawServiceVersion({ serviceId: service.id, version: withdrawing });
    setDone(`Withdrew version ${withdrawing}.`);
    setWithdrawing("");
    list.reload();
  });
  return (
    <section class="card" aria-labelledby="versions-h" data-versions>
      <h2 id="versions-h">Versions</h2>
      <p class="muted">New subscriptions get the newest version that is not withdrawn. Subscriptions on an older one are offered the upgrade.</p>
      <ErrorBanner problem={list.problem ?? withdraw.problem} />
      {done && <Notice>{done}</Notice>}
      <div class="table-wrap">
        <table>
          <caption class="sr-only">Versions, newest first</caption>
          <thead>
            <tr>
              <th scope="col">Version</th>
              <th scope="col">Published</th>
              <th scope="col">Subscriptions</th>
              <th scope="col">State</th>
              <th scope="col">Notes</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {(list.data ?? []).map((v) => (
              <tr key={v.version} data-version={v.version}>
                <td>
                  <code>{v.version}</code>
                </td>
                <td>{dateTime(v.publishedAt)}</td>
                <td data-count>{plural(v.subscriptionCount, "subscription")}</td>
                <td>{[v.withdrawn ? "Withdrawn" : "Offered", v.oneWay ? "one way" : ""].filter(Boolean).join(", ")}</td>
                <td class="notes">{v.notes || "—"}</td>
                <td>
                  {!v.withdrawn && (
                    <button type="button" onClick={() => setWithdrawing(v.version)}>
                      Withdraw
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void publish.act();
        }}
      >
        <h3>Publish a version</h3>
        <ErrorBanner problem={publish.problem} />
        <Field label="Version" value={version} onValue={setVersion} placeholder="1.2.3" error={publish.problem?.fields.version} />
        <TextArea label="Release notes" value={notes} onValue={setNotes} error={publish.problem?.fields.notes} />
        <Checkbox label="One way (migrates data: cannot be rolled back past)" checked={oneWay} onChecked={setOneWay} />
        <TextArea label="Template (JSON)" value={shown} onValue={setTemplate} rows={12} />
        <div class="actions">
          <button class="primary" type="submit" disabled={publish.busy || !version}>
            Publish
          </button>
        </div>
      </form>
      <Confirm open={!!withdrawing} title={`Withdraw version ${withdrawing}?`} confirmLabel="Withdraw" danger confirmDisabled={withdraw.busy} onCancel={() => setWithdrawing("")} onConfirm={() => void withdraw.act()}>
        <p>No new subscription gets it; the subscriptions running it are offered the newest version. It is kept while they run it.</p>
      </Confirm>
    </section>
  );
}
