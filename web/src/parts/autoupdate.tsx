// A subscription's auto-update policy (issue #25): a toggle, the days,
// the start time and the length of its weekly maintenance window in UTC,
// saved with SetSubscriptionAutoUpdate. The server checks the window (its
// field errors show under each input) and says when it next opens and
// which versions it tried by itself.
import { useEffect, useState } from "preact/hooks";
import { subscriptions } from "../api";
import { Checkbox, ErrorBanner, Field, Notice, useAction } from "./components";
import { dateTime } from "../format";
import { Weekday, type Subscription } from "../gen/minispod/v1/subscriptions_pb";

const days: [Weekday, string][] = [
  [Weekday.MONDAY, "Mon"],
  [Weekday.TUESDAY, "Tue"],
  [Weekday.WEDNESDAY, "Wed"],
  [Weekday.THURSDAY, "Thu"],
  [Weekday.FRIDAY, "Fri"],
  [Weekday.SATURDAY, "Sat"],
  [Weekday.SUNDAY, "Sun"],
];

const two = (n: number) => String(n).padStart(2, "0");

export function AutoUpdateCard({ s, onSaved }: { s: Subscription; onSaved: (s: Subscription) => void }) {
  const p = s.autoUpdate;
  const fresh = !p || p.days.length === 0;
  const [enabled, setEnabled] = useState(false);
  const [chosen, setChosen] = useState<Weekday[]>([]);
  const [start, setStart] = useState("03:00");
  const [length, setLength] = useState("60");
  const [saved, setSaved] = useState("");
  // The stored policy, when it changes on the server.
  const key = p ? `${p.enabled}|${p.days.join(",")}|${p.startHour}:${p.startMinute}|${p.lengthMinutes}` : "";
  useEffect(() => {
    setEnabled(p?.enabled ?? false);
    setChosen(fresh ? [Weekday.SUNDAY] : [...(p?.days ?? [])]);
    setStart(fresh ? "03:00" : `${two(p?.startHour ?? 0)}:${two(p?.startMinute ?? 0)}`);
    setLength(fresh ? "60" : String(p?.lengthMinutes ?? 60));
  }, [s.id, key]);
  const save = useAction(async () => {
    setSaved("");
    const [h, m] = start.split(":").map((x) => Number.parseInt(x, 10));
    const res = await subscriptions.setSubscriptionAutoUpdate({
      id: s.id,
      policy: {
        enabled,
        days: days.map(([d]) => d).filter((d) => chosen.includes(d)),
        startHour: Number.isFinite(h) ? h : 0,
        startMinute: Number.isFinite(m) ? m : 0,
        lengthMinutes: Number.parseInt(length, 10) || 0,
      },
    });
    if (res.subscription) onSaved(res.subscription);
    setSaved(enabled ? "Automatic patch updates are on." : "Automatic patch updates are off.");
  });
  const fields = save.problem?.fields ?? {};
  const toggle = (d: Weekday, on: boolean) => setChosen((l) => (on ? [...l.filter((x) => x !== d), d] : l.filter((x) => x !== d)));
  return (
    <section class="card" aria-labelledby="autoupdate-h" data-autoupdate>
      <h2 id="autoupdate-h">Automatic updates</h2>
      <p class="muted">
        New patch versions of {s.version || "this version"} (same first two numbers, e.g. 1.64.0 → 1.64.2) are applied by themselves while the window below is open, and rolled back by
        themselves if they do not become ready. Other versions wait for you. Times are UTC.
      </p>
      {saved && <Notice>{saved}</Notice>}
      <ErrorBanner problem={save.problem} shownFields={["policy.days", "policy.start_hour", "policy.start_minute", "policy.length_minutes"]} />
      <form
        noValidate
        onSubmit={(e) => {
          e.preventDefault();
          void save.act();
        }}
      >
        <Checkbox label="Apply patch versions automatically" checked={enabled} onChecked={setEnabled} />
        <fieldset class={`field${fields["policy.days"] ? " invalid" : ""}`} data-days>
          <legend>Days (UTC)</legend>
          <div class="inline">
            {days.map(([d, word]) => (
              <Checkbox key={d} label={word} checked={chosen.includes(d)} onChecked={(on) => toggle(d, on)} />
            ))}
          </div>
          {fields["policy.days"] && <small class="error">{fields["policy.days"]}</small>}
        </fieldset>
        <Field label="Start (UTC)" type="time" value={start} onValue={setStart} error={fields["policy.start_hour"] ?? fields["policy.start_minute"]} />
        <Field label="Length (minutes)" type="number" min={1} max={10080} value={length} onValue={setLength} error={fields["policy.length_minutes"]} hint="1 minute to 7 days (10080)" />
        <div class="actions">
          <button type="submit" class="primary" disabled={save.busy}>
            Save
          </button>
        </div>
      </form>
      {p?.enabled && s.autoUpdateNextWindow && (
        <p data-next-window>
          Next window: <strong>{dateTime(s.autoUpdateNextWindow)}</strong> (your time).
        </p>
      )}
      {s.autoUpdateTried.length > 0 && (
        <p class="muted" data-tried>
          Tried automatically: {s.autoUpdateTried.join(", ")}. A version is tried once by itself; one that rolled back waits for you.
        </p>
      )}
    </section>
  );
}
