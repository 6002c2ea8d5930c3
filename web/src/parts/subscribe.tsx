// The subscribe form on a catalog entry's page.
import { useState } from "preact/hooks";
import { Code, subscriptions } from "../api";
import { ErrorBanner, Field, useAction, useLoad } from "./components";
import type { Service } from "../gen/minispod/v1/catalog_pb";
import { navigate } from "../router";
import { checkFields, initialValue, NAME_MAX, NAME_PATTERN, VariableInput } from "./variables";

/** The subscribe form of a deployable catalog entry. */
export function SubscribeForm({ service }: { service: Service }) {
  const vars = service.template?.variables ?? [];
  const [name, setName] = useState("");
  const [values, setValues] = useState<Record<string, string>>(() => Object.fromEntries(vars.map((v) => [v.name, initialValue(v)])));
  const [local, setLocal] = useState<Record<string, string>>({});
  // The server's own admission checks, read-only: while they refuse (no
  // cluster, no room, the customer's limits), the form says why in the
  // caller's words and Subscribe stays disabled. Looked at again after a
  // refused Subscribe.
  const check = useLoad(() => subscriptions.checkSubscription({ serviceId: service.id }), [service.id]);
  const blocked = check.data && !check.data.allowed ? check.data : undefined;
  const create = useAction(async () => {
    // Empty values are left out, so the server applies the defaults.
    const variables = Object.fromEntries(Object.entries(values).filter(([, v]) => v !== ""));
    try {
      const res = await subscriptions.createSubscription({ serviceId: service.id, name, variables });
      navigate(`/subscriptions/${encodeURIComponent(res.subscription!.id)}`);
    } catch (e) {
      check.reload();
      throw e;
    }
  });
  const p = create.problem;
  const server = { ...(p?.fields ?? {}) };
  // A name already taken is the name field's problem.
  if (p?.code === Code.AlreadyExists && !server.name) server.name = p.message;
  const errors = { ...server, ...local };
  // A refusal the check now shows is not said twice.
  const banner = p && p.code === Code.AlreadyExists ? undefined : blocked && p && p.code !== Code.InvalidArgument ? undefined : p;
  const shown = ["name", ...vars.map((v) => `variables.${v.name}`)];
  return (
    <section class="card" aria-labelledby="subscribe-h">
      <h2 id="subscribe-h">Subscribe</h2>
      <form
        noValidate
        onSubmit={(e) => {
          e.preventDefault();
          create.clear();
          const found = checkFields(e.currentTarget);
          setLocal(found);
          if (Object.keys(found).length === 0) void create.act();
        }}
      >
        <ErrorBanner problem={banner} shownFields={shown} />
        {Object.keys(local).length > 0 && (
          <div class="banner error" role="alert">
            <p>Some values need a change: see the marked fields.</p>
          </div>
        )}
        <p class="muted">
          Fields marked <span aria-hidden="true">*</span>
          <span class="sr-only">with a star</span> are required. {service.name} costs the price above each month.
        </p>
        <Field
          label="Name"
          value={name}
          onValue={setName}
          error={errors.name}
          hint={`Lower-case letters, digits and dashes, starting with a letter, 1 to ${NAME_MAX}; part of its address.`}
          required
          pattern={NAME_PATTERN}
          maxLength={NAME_MAX}
          autoComplete="off"
          data-field="name"
        />
        {vars.map((v) => (
          <VariableInput
            key={v.name}
            variable={v}
            field={`variables.${v.name}`}
            value={values[v.name] ?? ""}
            onValue={(x) => setValues({ ...values, [v.name]: x })}
            error={errors[`variables.${v.name}`]}
          />
        ))}
        {blocked && (
          <p id="subscribe-blocked" class="banner warn" role="status">
            {blocked.message}
          </p>
        )}
        <button class="primary" type="submit" disabled={create.busy || !!blocked} aria-describedby={blocked ? "subscribe-blocked" : undefined}>
          {create.busy ? "Subscribing…" : `Subscribe to ${service.name}`}
        </button>
      </form>
    </section>
  );
}
