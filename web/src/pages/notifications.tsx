// An administrator's notices: how they arrive (mail, a signed webhook),
// which events, a test notice; and the outbox every mail and webhook goes
// through, with the failed ones to retry. The webhook's signing secret is
// shown once, when the server makes it.
import { useEffect, useState } from "preact/hooks";
import { notifications } from "../api";
import { Checkbox, ErrorBanner, Field, Notice, PageTitle, TextArea, useAction, useLoad } from "../parts/components";
import { dateTime } from "../format";
import { NotificationEvent, OutboxKind, OutboxStatus, type OutboxMessage } from "../gen/minispod/v1/notifications_pb";
import { setQuery, useLocation } from "../router";

const events: [NotificationEvent, string, string][] = [
  [NotificationEvent.WORKER_OFFLINE, "Worker offline", "its stream stayed down past the grace; repeated outages come as one summary"],
  [NotificationEvent.WORKER_ONLINE, "Worker back online", "after an outage you were told of"],
  [NotificationEvent.WORKER_NOT_READY, "Worker not ready", "NOT_READY past its grace"],
  [NotificationEvent.WORKER_ENROLLED, "New worker enrolled", ""],
  [NotificationEvent.SUBSCRIPTION_FAILED, "Subscription failed", ""],
  [NotificationEvent.SUBSCRIBE_BLOCKED, "Customers cannot subscribe", "no cluster linked or no room on the workers; at most once per cause in the notice window"],
];

const statusText: Record<OutboxStatus, string> = {
  [OutboxStatus.UNSPECIFIED]: "unknown",
  [OutboxStatus.PENDING]: "pending",
  [OutboxStatus.SENT]: "sent",
  [OutboxStatus.FAILED]: "failed",
};

function Preferences() {
  const loaded = useLoad(() => notifications.getNotificationPreferences({}), []);
  const [mail, setMail] = useState(false);
  const [url, setUrl] = useState("");
  const [wanted, setWanted] = useState<NotificationEvent[]>([]);
  const [secretSet, setSecretSet] = useState(false);
  const [secret, setSecret] = useState("");
  const [saved, setSaved] = useState("");
  useEffect(() => {
    const p = loaded.data?.preferences;
    if (!p) return;
    setMail(p.mail);
    setUrl(p.webhookUrl);
    setWanted(p.events);
    setSecretSet(p.webhookSecretSet);
  }, [loaded.data]);
  const apply = (res: Awaited<ReturnType<typeof notifications.updateNotificationPreferences>>, what: string) => {
    const p = res.preferences;
    if (p) {
      setMail(p.mail);
      setUrl(p.webhookUrl);
      setWanted(p.events);
      setSecretSet(p.webhookSecretSet);
    }
    setSecret(res.webhookSecret);
    setSaved(what);
  };
  const save = useAction(async () => {
    setSaved("");
    apply(await notifications.updateNotificationPreferences({ mail, webhookUrl: url.trim(), events: wanted, updateEvents: true }), "Preferences saved.");
  });
  const rotate = useAction(async () => {
    setSaved("");
    apply(await notifications.updateNotificationPreferences({ rotateWebhookSecret: true }), "A new signing secret was made; the old one no longer signs.");
  });
  const test = useAction(async () => {
    setSaved("");
    const res = await notifications.sendTestNotification({});
    const how = res.queued.map((m) => (m.kind === OutboxKind.MAIL ? `a mail to ${m.recipient}` : `a webhook to ${m.recipient}`));
    setSaved(`Test notice queued: ${how.join(" and ")}. See the outbox below.`);
  });
  const toggle = (e: NotificationEvent, on: boolean) => setWanted(on ? [...wanted.filter((w) => w !== e), e] : wanted.filter((w) => w !== e));
  const mailConfigured = loaded.data?.mailConfigured ?? true;
  const problem = save.problem ?? rotate.problem ?? test.problem;
  return (
    <section class="card" aria-labelledby="prefs-h">
      <h2 id="prefs-h">Your notices</h2>
      <ErrorBanner problem={loaded.problem} />
      <form
        noValidate
        onSubmit={(e) => {
          e.preventDefault();
          void save.act();
        }}
      >
        <ErrorBanner problem={problem} shownFields={["webhook_url"]} />
        {saved && <Notice>{saved}</Notice>}
        <Checkbox label="Send notices to my email address" checked={mail} onChecked={setMail} />
        {!mailConfigured && (
          <p class="muted" id="mail-note">
            This control plane sends no mail (it has no <code>--smtp-url</code>): mail notices cannot go out until an operator configures SMTP. Webhooks work without it.
          </p>
        )}
        <Field label="Webhook URL" type="url" value={url} onValue={setUrl} error={problem?.fields.webhook_url} placeholder="https://chat.example.org/hooks/…" hint="Each notice is POSTed as JSON, signed in the x-minispod-signature header. Empty turns webhooks off." />
        <fieldset>
          <legend>Tell me when</legend>
          {events.map(([e, label, hint]) => (
            <Checkbox key={e} label={hint ? `${label} (${hint})` : label} checked={wanted.includes(e)} onChecked={(on) => toggle(e, on)} />
          ))}
        </fieldset>
        <div class="actions">
          <button class="primary" type="submit" disabled={save.busy || !loaded.data}>
            Save
          </button>
          <button type="button" disabled={test.busy} onClick={() => void test.act()}>
            Send a test notice
          </button>
          {secretSet && (
            <button type="button" disabled={rotate.busy} onClick={() => void rotate.act()}>
              Make a new signing secret
            </button>
          )}
        </div>
      </form>
      {secret && (
        <div class="secret" aria-labelledby="secret-h">
          <h3 id="secret-h">Webhook signing secret</h3>
          <p>This secret is shown only now. Give it to the receiver: it checks that <code>v1</code> in the signature header is the hex HMAC-SHA256 of <code>&lt;t&gt;.&lt;body&gt;</code> under it.</p>
          <TextArea label="Secret" value={secret} onValue={() => {}} readOnly rows={1} />
        </div>
      )}
    </section>
  );
}

function Outbox() {
  const { query } = useLocation();
  const onlyFailed = query.get("status") === "failed";
  const [extra, setExtra] = useState<OutboxMessage[]>([]);
  const [next, setNext] = useState("");
  const list = useLoad(async () => {
    const res = await notifications.listOutboxMessages({ status: onlyFailed ? OutboxStatus.FAILED : OutboxStatus.UNSPECIFIED, pageSize: 50 });
    setExtra([]);
    setNext(res.nextPageToken);
    return res;
  }, [onlyFailed]);
  const more = useAction(async () => {
    const res = await notifications.listOutboxMessages({ status: onlyFailed ? OutboxStatus.FAILED : OutboxStatus.UNSPECIFIED, pageSize: 50, pageToken: next });
    setExtra([...extra, ...res.messages]);
    setNext(res.nextPageToken);
  });
  const retry = useAction(async (id: string) => {
    await notifications.retryOutboxMessage({ id });
    list.reload();
  });
  const rows = [...(list.data?.messages ?? []), ...extra];
  return (
    <section aria-labelledby="outbox-h">
      <div class="page-head">
        <h2 id="outbox-h">Outbox</h2>
        <Checkbox label="Only failed" checked={onlyFailed} onChecked={(on) => setQuery({ status: on ? "failed" : undefined })} />
        <button type="button" onClick={() => list.reload()}>
          Refresh
        </button>
      </div>
      {list.data && (
        <p role="status">
          {String(list.data.pending)} waiting to be sent, {String(list.data.failed)} failed.
        </p>
      )}
      <ErrorBanner problem={list.problem ?? retry.problem ?? more.problem} />
      <div class="table-wrap">
        <table>
          <thead>
            <tr>
              <th scope="col">Queued</th>
              <th scope="col">Kind</th>
              <th scope="col">To</th>
              <th scope="col">Subject</th>
              <th scope="col">Status</th>
              <th scope="col">Tries</th>
              <th scope="col">Last error</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {rows.map((m) => (
              <tr key={m.id} data-message={m.id} data-status={statusText[m.status]}>
                <td>{dateTime(m.createdAt)}</td>
                <td>{m.kind === OutboxKind.MAIL ? "mail" : "webhook"}</td>
                <td class="wrap">{m.recipient}</td>
                <td>
                  {m.subject}
                  <div class="muted">{m.purpose}</div>
                </td>
                <td>
                  {statusText[m.status]}
                  {m.status === OutboxStatus.PENDING && m.nextAttemptAt && <div class="muted">next try {dateTime(m.nextAttemptAt)}</div>}
                  {m.status === OutboxStatus.SENT && <div class="muted">{dateTime(m.sentAt)}</div>}
                </td>
                <td>{m.attempts}</td>
                <td class="wrap">{m.lastError || <span class="muted">—</span>}</td>
                <td>
                  {m.status === OutboxStatus.FAILED && (
                    <button type="button" class="small" aria-label={`Retry ${m.subject} to ${m.recipient}`} disabled={retry.busy} onClick={() => void retry.act(m.id)}>
                      Retry
                    </button>
                  )}
                </td>
              </tr>
            ))}
            {list.data && rows.length === 0 && (
              <tr>
                <td colSpan={8} class="muted">
                  {onlyFailed ? "No failed messages." : "Nothing was sent yet."}
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
      {next && (
        <button type="button" disabled={more.busy} onClick={() => void more.act()}>
          Show older
        </button>
      )}
    </section>
  );
}

export function NotificationsPage() {
  return (
    <>
      <PageTitle>Notifications</PageTitle>
      <Preferences />
      <Outbox />
    </>
  );
}
