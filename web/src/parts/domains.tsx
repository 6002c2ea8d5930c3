// A subscription's own domains (issue #25): each host with its state and
// what the customer must set (the DNS record), an add form, and removal
// behind a Confirm. The states and refusals are the server's: this card
// shows them and polls while a domain waits for its check.
import { useEffect, useState } from "preact/hooks";
import { subscriptions } from "../api";
import { DomainState, type SubscriptionDomain } from "../gen/minispod/v1/subscriptions_pb";
import { dateTime } from "../format";
import { Confirm, ErrorBanner, Field, Notice, useAction, useLoad } from "./components";

/** Words for a domain's state. */
export const domainStateWord: Record<DomainState, string> = {
  [DomainState.UNSPECIFIED]: "Unknown",
  [DomainState.PENDING]: "Waiting for DNS",
  [DomainState.VERIFIED]: "Verified",
  [DomainState.CERTIFICATE_ISSUED]: "Certificate issued",
  [DomainState.CERTIFICATE_FAILING]: "Certificate failing",
  [DomainState.FAILED]: "Not verified",
};

/** The state as a pill class (reusing the subscription pills' colours). */
const pillClass: Record<DomainState, string> = {
  [DomainState.UNSPECIFIED]: "s-pending",
  [DomainState.PENDING]: "s-pending",
  [DomainState.VERIFIED]: "s-provisioning",
  [DomainState.CERTIFICATE_ISSUED]: "s-running",
  [DomainState.CERTIFICATE_FAILING]: "s-degraded",
  [DomainState.FAILED]: "s-failed",
};

/** How often the card looks again while a domain is not settled, ms. */
const POLL_MS = 3000;

export function DomainsCard({ subscriptionId }: { subscriptionId: string }) {
  const loaded = useLoad((signal) => subscriptions.listSubscriptionDomains({ subscriptionId }, { signal }), [subscriptionId]);
  const domains = loaded.data?.domains ?? [];
  const [host, setHost] = useState("");
  const [done, setDone] = useState("");
  const [removing, setRemoving] = useState<SubscriptionDomain>();
  const unsettled = domains.some((d) => d.state === DomainState.PENDING || d.state === DomainState.VERIFIED);
  useEffect(() => {
    if (!unsettled) return;
    const t = setInterval(() => loaded.reload(), POLL_MS);
    return () => clearInterval(t);
  }, [unsettled]);
  const add = useAction(async () => {
    setDone("");
    const d = (await subscriptions.addSubscriptionDomain({ subscriptionId, host })).domain;
    setHost("");
    loaded.reload();
    setDone(`Added ${d?.host ?? host}. Point it at ${d?.dnsTarget ?? "this subscription's address"}; it is checked until it answers.`);
  });
  const remove = useAction(async () => {
    if (!removing) return;
    setDone("");
    await subscriptions.removeSubscriptionDomain({ subscriptionId, domainId: removing.id });
    setDone(`Removed ${removing.host}.`);
    setRemoving(undefined);
    loaded.reload();
  });
  return (
    <section aria-labelledby="domains-h" class="card" data-domains>
      <h2 id="domains-h">Your own domains</h2>
      <ErrorBanner problem={loaded.problem} />
      {done && <Notice>{done}</Notice>}
      {domains.length === 0 ? (
        <p class="muted">No domain yet: this subscription answers on its own address only.</p>
      ) : (
        <div class="table-wrap">
          <table>
            <caption class="sr-only">Domains and their state</caption>
            <thead>
              <tr>
                <th scope="col">Domain</th>
                <th scope="col">State</th>
                <th scope="col">What to set</th>
                <th scope="col">Reason</th>
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {domains.map((d) => (
                <tr key={d.id} data-domain={d.host}>
                  <td>
                    {d.state === DomainState.CERTIFICATE_ISSUED || d.state === DomainState.VERIFIED ? (
                      <a href={d.url} target="_blank" rel="noopener noreferrer" class="url">
                        {d.host}
                      </a>
                    ) : (
                      d.host
                    )}
                  </td>
                  <td>
                    <span class={`pill ${pillClass[d.state]}`} data-state={DomainState[d.state]}>
                      {domainStateWord[d.state]}
                    </span>
                  </td>
                  <td>
                    <code data-record>{`${d.host}. CNAME ${d.dnsTarget}.`}</code>
                    <br />
                    <small class="muted">
                      A bare domain takes A/AAAA records to the addresses of {d.dnsTarget} instead. Checked at <code data-check-url>{d.checkUrl}</code>
                    </small>
                  </td>
                  <td>
                    {d.reason || "—"}
                    {d.state === DomainState.PENDING && d.nextCheckAt && <small class="muted"> Next check {dateTime(d.nextCheckAt)}.</small>}
                  </td>
                  <td>
                    <button
                      type="button"
                      class="danger"
                      onClick={() => {
                        remove.clear();
                        setRemoving(d);
                      }}
                    >
                      Remove
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void add.act();
        }}
      >
        <ErrorBanner problem={add.problem} shownFields={["host"]} />
        <Field label="Add a domain" value={host} onValue={setHost} error={add.problem?.fields.host} placeholder="shop.example.com" autoComplete="off" hint="A name of yours; it must point at this subscription's address before it is served." />
        <button type="submit" class="primary" disabled={add.busy || !host.trim()}>
          Add domain
        </button>
      </form>
      <Confirm open={!!removing} title={`Remove ${removing?.host ?? ""}?`} confirmLabel="Remove" danger confirmDisabled={remove.busy} onCancel={() => setRemoving(undefined)} onConfirm={() => void remove.act()}>
        <p>The subscription stops answering on {removing?.host}; its certificate is deleted. Its own address keeps working.</p>
        <ErrorBanner problem={remove.problem} />
      </Confirm>
    </section>
  );
}
