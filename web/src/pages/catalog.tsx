// The catalog: everyone browses active services (cards, category filter,
// search, detail page); administrators also see inactive ones and the
// catalog figures, and create, edit, deactivate and delete entries.
import { useState } from "preact/hooks";
import { catalog } from "../api";
import { Checkbox, Confirm, ErrorBanner, Field, PageTitle, Select, Stat, TextArea, useAction, useLoad } from "../parts/components";
import { money } from "../format";
import type { Service } from "../gen/minispod/v1/catalog_pb";
import { SubscribeForm } from "../parts/subscribe";
import { TemplateEditor } from "../parts/template";
import { VersionsCard } from "../parts/versions";
import { navigate, setQuery, useLocation } from "../router";
import { session } from "../session";

function Icon({ s }: { s: Service }) {
  // Icons are not fetched from other sites (the console's CSP allows only
  // its own origin): a letter badge stands in.
  return (
    <span class="svc-icon" aria-hidden="true">
      {(s.name || s.slug).slice(0, 1).toUpperCase()}
    </span>
  );
}

export function CatalogPage() {
  const { query } = useLocation();
  const search = query.get("q") ?? "";
  const category = query.get("category") ?? "";
  const show = query.get("show") ?? "";
  const admin = session.isAdmin;
  const [searchText, setSearchText] = useState(search);
  const categories = useLoad(async () => (await catalog.listCategories({})).categories, []);
  const stats = useLoad(async () => (admin ? await catalog.getCatalogStats({}) : undefined), [admin]);
  const list = useLoad(async () => {
    if (admin) {
      const active = show === "inactive" ? false : show === "all" ? undefined : true;
      return (await catalog.listAllServices({ pageSize: 100, search, category, active })).services;
    }
    return (await catalog.listServices({ pageSize: 100, search, category })).services;
  }, [search, category, show, admin]);
  return (
    <>
      <PageTitle
        actions={
          admin && (
            <a class="button primary" href="/catalog/new">
              New service
            </a>
          )
        }
      >
        Catalog
      </PageTitle>
      {admin && stats.data && (
        <div class="stats">
          <Stat label="Services" value={stats.data.total} />
          <Stat label="Active" value={stats.data.active} />
          <Stat label="Inactive" value={stats.data.inactive} />
          <Stat label="Average price" value={money(stats.data.averageMonthlyPriceCents)} sub="per month" />
        </div>
      )}
      <form
        class="filters"
        role="search"
        onSubmit={(e) => {
          e.preventDefault();
          setQuery({ q: searchText });
        }}
      >
        <div class="field">
          <label for="catalog-search">Search</label>
          <input id="catalog-search" type="search" placeholder="name or description" value={searchText} onInput={(e) => {
            setSearchText(e.currentTarget.value);
            setQuery({ q: e.currentTarget.value });
          }} />
        </div>
        <Select label="Category" value={category} onValue={(v) => setQuery({ category: v })} options={[["", "All categories"], ...(categories.data ?? []).map((c): [string, string] => [c.name, `${c.name} (${c.serviceCount})`])]} />
        {admin && <Select label="Show" value={show} onValue={(v) => setQuery({ show: v })} options={[["", "Active"], ["inactive", "Inactive"], ["all", "All"]]} />}
      </form>
      <ErrorBanner problem={list.problem} />
      <ul class="cards">
        {list.data?.map((s) => (
          <li key={s.id}>
            <article class="card svc" aria-labelledby={`svc-${s.id}`}>
              <header>
                <Icon s={s} />
                <div>
                  <h2 id={`svc-${s.id}`}>
                    <a href={`/catalog/${encodeURIComponent(s.slug)}`}>{s.name}</a>
                  </h2>
                  <span class="muted">
                    {s.category} · v{s.version}
                  </span>
                </div>
              </header>
              <p>{s.description}</p>
              <footer>
                <strong>{money(s.monthlyPriceCents)}</strong>
                <span class="muted"> / month</span>
                {!s.active && <span class="tag">inactive</span>}
              </footer>
            </article>
          </li>
        ))}
      </ul>
      {list.data?.length === 0 && <p class="muted">No service matches.</p>}
    </>
  );
}

export function ServiceDetailPage({ slug }: { slug: string }) {
  const admin = session.isAdmin;
  const svc = useLoad(async () => (await catalog.getService({ lookup: { case: "slug", value: slug } })).service, [slug]);
  const [confirm, setConfirm] = useState(false);
  const del = useAction(async () => {
    await catalog.deleteService({ id: svc.data!.id });
    navigate("/catalog");
  });
  const toggle = useAction(async () => {
    const res = await catalog.updateService({ id: svc.data!.id, active: !svc.data!.active });
    svc.setData(res.service);
  });
  const s = svc.data;
  if (svc.problem) {
    return (
      <>
        <PageTitle>Service</PageTitle>
        <ErrorBanner problem={svc.problem} />
        <a href="/catalog">Back to the catalog</a>
      </>
    );
  }
  if (!s) return <p class="loading">Loading…</p>;
  const r = s.resources;
  return (
    <>
      <p class="crumbs">
        <a href="/catalog">Catalog</a> /
      </p>
      <PageTitle
        actions={
          admin && (
            <>
              <a class="button" href={`/catalog/${encodeURIComponent(s.slug)}/edit`}>
                Edit
              </a>
              <button type="button" onClick={() => void toggle.act()} disabled={toggle.busy}>
                {s.active ? "Deactivate" : "Activate"}
              </button>
              <button type="button" class="danger" onClick={() => setConfirm(true)}>
                Delete
              </button>
            </>
          )
        }
      >
        {s.name}
      </PageTitle>
      <ErrorBanner problem={del.problem ?? toggle.problem} />
      <div class="split">
        <section class="card">
          <p>{s.description}</p>
          <p>
            <strong>{money(s.monthlyPriceCents)}</strong> per month
          </p>
          {s.tags.length > 0 && (
            <p>
              {s.tags.map((t) => (
                <span class="tag" key={t}>
                  {t}
                </span>
              ))}
            </p>
          )}
          {s.docsUrl && (
            <p>
              <a href={s.docsUrl} rel="noopener noreferrer" target="_blank">
                Documentation
              </a>
            </p>
          )}
        </section>
        <section class="card" aria-labelledby="spec-h">
          <h2 id="spec-h">What runs</h2>
          {s.template && <p class="muted">Image, port, requests and environment come from the template.</p>}
          <dl class="facts">
            <div>
              <dt>Category</dt>
              <dd>{s.category}</dd>
            </div>
            <div>
              <dt>Version</dt>
              <dd>{s.version}</dd>
            </div>
            <div>
              <dt>Image</dt>
              <dd>
                <code>{s.image}</code>
              </dd>
            </div>
            <div>
              <dt>Port</dt>
              <dd>{s.port}</dd>
            </div>
            <div>
              <dt>Requests</dt>
              <dd>{r ? `${r.cpuMillicores} mCPU, ${r.memoryMb} MB memory, ${r.storageGb} GB storage` : "—"}</dd>
            </div>
            <div>
              <dt>State</dt>
              <dd>{s.active ? "active" : "inactive"}</dd>
            </div>
          </dl>
        </section>
      </div>
      {s.template && s.active && <SubscribeForm key={s.id} service={s} />}
      {admin && s.template && <VersionsCard key={`v-${s.id}`} service={s} onChanged={(n) => svc.setData(n)} />}
      <Confirm open={confirm} title={`Delete ${s.name}?`} confirmLabel="Delete" danger onCancel={() => setConfirm(false)} onConfirm={() => {
        setConfirm(false);
        void del.act();
      }}>
        <p>The entry leaves the catalog for good. To hide it for a while, deactivate it instead.</p>
      </Confirm>
    </>
  );
}

type Form = Record<"slug" | "name" | "description" | "category" | "version" | "image" | "port" | "price" | "cpu" | "memory" | "storage" | "tags" | "iconUrl" | "docsUrl" | "env", string> & { active: boolean };

function toForm(s?: Service): Form {
  return {
    slug: s?.slug ?? "",
    name: s?.name ?? "",
    description: s?.description ?? "",
    category: s?.category ?? "",
    version: s?.version ?? "",
    image: s?.image ?? "",
    port: s ? String(s.port) : "8080",
    price: s ? (Number(s.monthlyPriceCents) / 100).toFixed(2) : "0.00",
    cpu: s?.resources ? String(s.resources.cpuMillicores) : "250",
    memory: s?.resources ? String(s.resources.memoryMb) : "256",
    storage: s?.resources ? String(s.resources.storageGb) : "1",
    tags: s?.tags.join(", ") ?? "",
    iconUrl: s?.iconUrl ?? "",
    docsUrl: s?.docsUrl ?? "",
    env: s
      ? Object.entries(s.envTemplate)
          .map(([k, v]) => `${k}=${v}`)
          .join("\n")
      : "",
    active: s?.active ?? true,
  };
}

/** An int32 field: anything else goes as -1, so the server names the field. */
const int = (v: string) => {
  const n = v.trim() === "" ? NaN : Number(v);
  return Number.isInteger(n) && Math.abs(n) <= 2 ** 31 - 1 ? n : -1;
};

/** Dollars as typed to cents; -1 (a field error from the server) if not a price. */
const money100 = (v: string) => {
  const n = v.trim() === "" ? NaN : Number(v);
  return Number.isFinite(n) && Math.abs(n) < 1e13 ? Math.round(n * 100) : -1;
};

export function ServiceEditPage({ slug }: { slug?: string }) {
  const existing = useLoad(async () => (slug ? (await catalog.getService({ lookup: { case: "slug", value: slug } })).service : undefined), [slug]);
  const [form, setForm] = useState<Form>();
  const f = form ?? (slug ? (existing.data ? toForm(existing.data) : undefined) : toForm());
  const set = (k: keyof Form) => (v: string) => setForm({ ...f!, [k]: v });
  const save = useAction(async () => {
    const x = f!;
    const env: Record<string, string> = {};
    for (const line of x.env.split("\n")) {
      if (!line.trim()) continue;
      const i = line.indexOf("=");
      // Keys are trimmed; values are kept exactly as typed.
      env[(i < 0 ? line : line.slice(0, i)).trim()] = i < 0 ? "" : line.slice(i + 1);
    }
    const tags = x.tags.split(",").map((t) => t.trim()).filter(Boolean);
    const resources = { cpuMillicores: int(x.cpu), memoryMb: int(x.memory), storageGb: int(x.storage) };
    const price = BigInt(money100(x.price));
    const old = existing.data;
    if (!old) {
      const res = await catalog.createService({ slug: x.slug, name: x.name, description: x.description, category: x.category, version: x.version, image: x.image, port: int(x.port), monthlyPriceCents: price, active: x.active, iconUrl: x.iconUrl, docsUrl: x.docsUrl, resources, tags, envTemplate: env });
      navigate(`/catalog/${encodeURIComponent(res.service!.slug)}`);
      return;
    }
    // An update sends only what changed on this form, so a concurrent edit
    // of another field (or of `active`) is not overwritten.
    const before = toForm(old);
    const changed = (k: keyof Form) => x[k] !== before[k];
    const res = await catalog.updateService({
      id: old.id,
      slug: changed("slug") ? x.slug : undefined,
      name: changed("name") ? x.name : undefined,
      description: changed("description") ? x.description : undefined,
      category: changed("category") ? x.category : undefined,
      version: changed("version") ? x.version : undefined,
      image: changed("image") ? x.image : undefined,
      port: changed("port") ? int(x.port) : undefined,
      monthlyPriceCents: changed("price") ? price : undefined,
      active: changed("active") ? x.active : undefined,
      iconUrl: changed("iconUrl") ? x.iconUrl : undefined,
      docsUrl: changed("docsUrl") ? x.docsUrl : undefined,
      resources: changed("cpu") || changed("memory") || changed("storage") ? resources : undefined,
      tags: changed("tags") ? { values: tags } : undefined,
      envTemplate: changed("env") ? { entries: env } : undefined,
    });
    navigate(`/catalog/${encodeURIComponent(res.service!.slug)}`);
  });
  if (existing.problem) return <ErrorBanner problem={existing.problem} />;
  if (!f) return <p class="loading">Loading…</p>;
  const e = save.problem?.fields ?? {};
  // With a template, these are derived from it: shown, not edited here.
  const templated = !!existing.data?.template;
  const derived = templated ? { readOnly: true, hint: "From the template: edit the template below." } : {};
  const shown = ["slug", "name", "description", "category", "version", "image", "port", "monthly_price_cents", "resources.cpu_millicores", "resources.memory_mb", "resources.storage_gb", "tags", "env_template", "icon_url", "docs_url"];
  return (
    <>
      <p class="crumbs">
        <a href="/catalog">Catalog</a> /
      </p>
      <PageTitle>{slug ? `Edit ${existing.data?.name ?? slug}` : "New service"}</PageTitle>
      <form
        class="card"
        noValidate
        onSubmit={(ev) => {
          ev.preventDefault();
          void save.act();
        }}
      >
        <ErrorBanner problem={save.problem} shownFields={shown} />
        <div class="grid2">
          <Field label="Slug" value={f.slug} onValue={set("slug")} error={e.slug} hint="Lowercase letters, digits and dashes; the service's address." />
          <Field label="Name" value={f.name} onValue={set("name")} error={e.name} />
          <Field label="Category" value={f.category} onValue={set("category")} error={e.category} />
          <Field label="Version" value={f.version} onValue={set("version")} error={e.version} />
          <Field label="Image" value={f.image} onValue={set("image")} error={e.image} hint="Container image, pinned by tag." {...derived} />
          <Field label="Port" type="number" value={f.port} onValue={set("port")} error={e.port} {...derived} />
          <Field label="Monthly price (USD)" type="number" step="0.01" value={f.price} onValue={set("price")} error={e.monthly_price_cents} />
          <Field label="CPU (millicores)" type="number" value={f.cpu} onValue={set("cpu")} error={e["resources.cpu_millicores"]} {...derived} />
          <Field label="Memory (MB)" type="number" value={f.memory} onValue={set("memory")} error={e["resources.memory_mb"]} {...derived} />
          <Field label="Storage (GB)" type="number" value={f.storage} onValue={set("storage")} error={e["resources.storage_gb"]} {...derived} />
          <Field label="Tags" value={f.tags} onValue={set("tags")} error={e.tags} hint="Comma-separated." />
          <Field label="Documentation URL" type="url" value={f.docsUrl} onValue={set("docsUrl")} error={e.docs_url} />
          <Field label="Icon URL" type="url" value={f.iconUrl} onValue={set("iconUrl")} error={e.icon_url} />
        </div>
        <TextArea label="Description" value={f.description} onValue={set("description")} error={e.description} rows={3} />
        <TextArea label="Environment template" value={f.env} onValue={set("env")} error={e.env_template} rows={4} readOnly={templated} hint={templated ? "From the template: edit the template below." : "One NAME=value per line; values may use placeholders such as ${GENERATED_PASSWORD}."} />
        <Checkbox label="Active (shown to customers)" checked={f.active} onChecked={(v) => setForm({ ...f, active: v })} />
        <div class="actions">
          <button class="primary" type="submit" disabled={save.busy}>
            Save
          </button>
          <a class="button" href={slug ? `/catalog/${encodeURIComponent(slug)}` : "/catalog"}>
            Cancel
          </a>
        </div>
      </form>
      {existing.data && (
        <TemplateEditor
          key={existing.data.id}
          service={existing.data}
          onSaved={(s) => {
            existing.setData(s);
            // The derived fields follow the new template.
            if (form) setForm({ ...toForm(s), ...Object.fromEntries((["slug", "name", "description", "category", "version", "price", "tags", "iconUrl", "docsUrl", "active"] as const).map((k) => [k, form[k]])) });
          }}
        />
      )}
    </>
  );
}
