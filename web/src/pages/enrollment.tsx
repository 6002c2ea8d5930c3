// Enrollment tokens: create one (the secret is shown once, with a join
// command holding this control plane's URL, the token and the CA pin),
// list and revoke them.
import { useState } from "preact/hooks";
import { workers } from "../api";
import { Checkbox, Confirm, ErrorBanner, Field, Notice, PageTitle, TextArea, useAction, useLoad } from "../parts/components";
import { count, dateTime, timestampMs, until } from "../format";

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export function EnrollmentPage() {
  const [description, setDescription] = useState("");
  const [hours, setHours] = useState("24");
  const [maxUses, setMaxUses] = useState("1");
  const [showInactive, setShowInactive] = useState(false);
  const [created, setCreated] = useState<{ token: string; command: string }>();
  const [copied, setCopied] = useState("");
  const list = useLoad(async () => (await workers.listEnrollmentTokens({ includeInactive: showInactive })).enrollmentTokens, [showInactive]);
  const create = useAction(async () => {
    // Anything that is not a number goes as -1, so the server names the
    // field in its answer instead of a default being taken silently.
    const h = hours.trim() === "" ? NaN : Number(hours);
    const uses = maxUses.trim() === "" ? NaN : Number(maxUses);
    const res = await workers.createEnrollmentToken({
      description,
      ttlSeconds: BigInt(Number.isFinite(h) && h > 0 ? Math.max(1, Math.round(h * 3600)) : -1),
      maxUses: Number.isInteger(uses) && uses >= 0 && uses <= 2 ** 31 - 1 ? uses : -1,
    });
    // The server says where agents reach it (its TLS port), which is not
    // necessarily where this page came from (a loopback console, a proxy).
    const server = res.serverUrl || location.origin;
    const command = [`minispod-agent run --server ${shellQuote(server)}`, `--state-dir /var/lib/minispod-agent`, `--token ${shellQuote(res.token)}`, `--ca-hash ${shellQuote(res.caHash)}`].join(" \\\n  ");
    setCreated({ token: res.token, command });
    setCopied("");
    list.reload();
  });
  const [revoking, setRevoking] = useState<{ id: string; name: string }>();
  const [revoked, setRevoked] = useState("");
  const revoke = useAction(async (id: string, name: string) => {
    setRevoked("");
    await workers.revokeEnrollmentToken({ id });
    setRevoking(undefined);
    setRevoked(`Revoked ${name}: it enrolls no more agents.`);
    list.reload();
  });
  const copy = async (what: string, text: string) => {
    try {
      await navigator.clipboard.writeText(text);
      setCopied(`${what} copied to the clipboard.`);
    } catch {
      setCopied(`Copy failed: select the ${what.toLowerCase()} and copy it by hand.`);
    }
  };
  const now = Date.now();
  return (
    <>
      <PageTitle>Enrollment tokens</PageTitle>
      <div class="split">
        <section class="card" aria-labelledby="new-h">
          <h2 id="new-h">New token</h2>
          <form
            noValidate
            onSubmit={(e) => {
              e.preventDefault();
              void create.act();
            }}
          >
            <ErrorBanner problem={create.problem} shownFields={["description", "ttl_seconds", "max_uses"]} />
            <Field label="Description" value={description} onValue={setDescription} error={create.problem?.fields.description} placeholder="rack 4, worker-12" />
            <Field label="Valid for (hours)" type="number" min="0.02" step="any" value={hours} onValue={setHours} error={create.problem?.fields.ttl_seconds} />
            <Field label="Max uses" type="number" min="0" value={maxUses} onValue={setMaxUses} error={create.problem?.fields.max_uses} hint="0 means unlimited." />
            <button class="primary" type="submit" disabled={create.busy}>
              Create token
            </button>
          </form>
        </section>
        {created && (
          <section class="card secret" aria-labelledby="secret-h">
            <h2 id="secret-h">Token created</h2>
            <p>This secret is shown only now. Run the command on the new worker; the agent enrolls, then keeps its own key and certificate.</p>
            <TextArea label="Token" value={created.token} onValue={() => {}} readOnly rows={1} />
            <button type="button" onClick={() => void copy("Token", created.token)}>
              Copy token
            </button>
            <TextArea label="Join command" value={created.command} onValue={() => {}} readOnly rows={5} />
            <button type="button" class="primary" onClick={() => void copy("Join command", created.command)}>
              Copy join command
            </button>
            {copied && <p role="status">{copied}</p>}
          </section>
        )}
      </div>
      <section aria-labelledby="list-h">
        <div class="page-head">
          <h2 id="list-h">Tokens</h2>
          <Checkbox label="Show revoked, expired and used up" checked={showInactive} onChecked={setShowInactive} />
        </div>
        <ErrorBanner problem={list.problem ?? (revoking ? undefined : revoke.problem)} />
        {revoked && <Notice>{revoked}</Notice>}
        <Confirm
          open={!!revoking}
          title={`Revoke ${revoking?.name ?? ""}?`}
          confirmLabel="Revoke"
          danger
          confirmDisabled={revoke.busy}
          onCancel={() => setRevoking(undefined)}
          onConfirm={() => revoking && void revoke.act(revoking.id, revoking.name)}
        >
          <p>No agent can enroll with it any more. Workers that already enrolled with it keep working.</p>
          <ErrorBanner problem={revoke.problem} />
        </Confirm>
        <div class="table-wrap stack">
          <table>
            <thead>
              <tr>
                <th scope="col">Description</th>
                <th scope="col">Uses</th>
                <th scope="col">Expires</th>
                <th scope="col">Created</th>
                <th scope="col">State</th>
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.data?.map((t) => {
                const expired = (timestampMs(t.expiresAt) ?? 0) < now;
                const usedUp = t.maxUses > 0 && t.uses >= t.maxUses;
                const state = t.revoked ? "Revoked" : expired ? "Expired" : usedUp ? "Used up" : "Active";
                return (
                  <tr key={t.id}>
                    <td class="stack-title">{t.description || <span class="muted">(none)</span>}</td>
                    <td data-label="Uses">
                      {count(t.uses)}
                      {t.maxUses > 0 ? ` of ${count(t.maxUses)}` : " (unlimited)"}
                    </td>
                    <td data-label="Expires" title={dateTime(t.expiresAt)}>{until(timestampMs(t.expiresAt), now)}</td>
                    <td data-label="Created">{dateTime(t.createdAt)}</td>
                    <td data-label="State">{state}</td>
                    <td>
                      {state === "Active" && (
                        <button type="button" class="danger small" aria-label={`Revoke ${t.description || t.id}`} disabled={revoke.busy} onClick={() => {
                          revoke.clear();
                          setRevoking({ id: t.id, name: t.description || t.id });
                        }}>
                          Revoke
                        </button>
                      )}
                    </td>
                  </tr>
                );
              })}
              {list.data?.length === 0 && (
                <tr>
                  <td colSpan={6} class="muted">
                    No tokens.
                  </td>
                </tr>
              )}
            </tbody>
          </table>
        </div>
      </section>
    </>
  );
}
