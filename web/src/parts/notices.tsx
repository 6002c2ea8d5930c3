// Someone's own notices: how they arrive (mail, a signed webhook), which
// events (those the server says they may choose: every event for an
// administrator, their subscriptions' for a customer), a test notice. The
// webhook's signing secret is shown once, when the server makes it.
import { useEffect, useState } from "preact/hooks";
import { notifications } from "../api";
import { Checkbox, ErrorBanner, Field, Notice, TextArea, useAction, useLoad } from "./components";
import { NotificationEvent, OutboxKind } from "../gen/minispod/v1/notifications_pb";

const eventWords: [NotificationEvent, string, string][] = [
  [NotificationEvent.WORKER_OFFLINE, "Worker offline", "its stream stayed down past the grace; repeated outages come as one summary"],
  [NotificationEvent.WORKER_ONLINE, "Worker back online", "after an outage you were told of"],
  [NotificationEvent.WORKER_NOT_READY, "Worker not ready", "NOT_READY past its grace"],
  [NotificationEvent.WORKER_ENROLLED, "New worker enrolled", ""],
  [NotificationEvent.WORKER_THRESHOLD, "Worker over a threshold", "CPU, memory or disk past a threshold below, for its duration"],
  [NotificationEvent.WORKER_THRESHOLD_CLEARED, "Worker threshold cleared", "back under the clear level for the duration"],
  [NotificationEvent.SUBSCRIBE_BLOCKED, "Customers cannot subscribe", "no cluster linked or no room on the workers; at most once per cause in the notice window"],
  [NotificationEvent.SUBSCRIPTION_FAILED, "Subscription failed", ""],
  [NotificationEvent.SUBSCRIPTION_DEGRADED, "Subscription not fully working", "for longer than a short grace; repeated interruptions come as one summary"],
  [NotificationEvent.SUBSCRIPTION_RECOVERED, "Subscription works again", "after trouble you were told of"],
  [NotificationEvent.SUBSCRIPTION_CRASH_LOOP, "Subscription keeps restarting", "its app restarted several times within minutes"],
  [NotificationEvent.SUBSCRIPTION_SUSPENDED, "Subscription suspended", "by the operator"],
  [NotificationEvent.SUBSCRIPTION_RESUMED, "Subscription resumed", "by the operator"],
  [NotificationEvent.SUBSCRIPTION_ROLLED_BACK, "Upgrade rolled back", "an upgrade did not become ready and the previous version runs again"],
  [NotificationEvent.DOMAIN_FAILED, "Domain not verified", "a domain was not verified in time and is no longer checked"],
  [NotificationEvent.VERSIONS_BEHIND, "Subscriptions versions behind", "a digest of the subscriptions too many versions behind their entry's newest, at most once per period"],
  [NotificationEvent.BACKUP_FAILED, "Scheduled backups failing", "a subscription's scheduled backup failed twice in a row, and at each further failure"],
];

/** The caller's notice preferences; `customer` words the events as theirs. */
export function NoticePreferences({ customer }: { customer: boolean }) {
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
    setSaved(`Test notice queued: ${how.join(" and ")}.${customer ? "" : " See the outbox below."}`);
  });
  const toggle = (e: NotificationEvent, on: boolean) => setWanted(on ? [...wanted.filter((w) => w !== e), e] : wanted.filter((w) => w !== e));
  const mailConfigured = loaded.data?.mailConfigured ?? true;
  const available = loaded.data?.availableEvents ?? [];
  const problem = save.problem ?? rotate.problem ?? test.problem;
  return (
    <section class="card" aria-labelledby="prefs-h">
      <h2 id="prefs-h">Your notices</h2>
      {customer && <p class="muted">What you are told about your subscriptions. Until you change it, every one of these comes by mail.</p>}
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
          {eventWords.filter(([e]) => available.includes(e)).map(([e, label, hint]) => (
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
