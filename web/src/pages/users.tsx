// Users (administrators): search and filters in the URL, paging, create,
// edit, role, activate / deactivate, delete, and bulk actions that show
// each row's own result.
import { useEffect, useState } from "preact/hooks";
import { users } from "../api";
import { Confirm, ErrorBanner, Field, Notice, PageTitle, Select, useAction, useLoad } from "../parts/components";
import { count, dateTime, plural } from "../format";
import { BulkUserAction, Role, type User } from "../gen/minispod/v1/users_pb";
import { Pager, usePages } from "../parts/pager";
import { setQuery, useLocation } from "../router";
import { session } from "../session";

const roleName = (r: Role) => (r === Role.ADMINISTRATOR ? "Administrator" : "User");
const PAGE = 25;

export function UsersPage() {
  const { query } = useLocation();
  const search = query.get("q") ?? "";
  const role = query.get("role") ?? "";
  const state = query.get("state") ?? "";
  const pages = usePages([search, role, state]);
  const page = pages.page;
  const [searchText, setSearchText] = useState(search);
  const list = useLoad(
    () =>
      users.listUsers({
        pageSize: PAGE,
        pageToken: page,
        search,
        role: role === "administrator" ? Role.ADMINISTRATOR : role === "user" ? Role.USER : Role.UNSPECIFIED,
        active: state === "active" ? true : state === "inactive" ? false : undefined,
      }),
    [search, role, state, page],
  );
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [results, setResults] = useState<Record<string, string>>({});
  const [notice, setNotice] = useState("");
  const [creating, setCreating] = useState(false);
  const [editing, setEditing] = useState<User>();
  const [limiting, setLimiting] = useState<User>();
  const [deleting, setDeleting] = useState<User>();

  const done = (msg: string) => {
    setNotice(msg);
    list.reload();
  };
  const rowAction = useAction(async (msg: string, run: () => Promise<unknown>) => {
    setNotice("");
    await run();
    done(msg);
  });
  const bulk = useAction(async (action: BulkUserAction, label: string) => {
    setNotice("");
    const res = await users.bulkUpdateUsers({ ids: [...selected], action });
    const r: Record<string, string> = {};
    for (const x of res.results) r[x.id] = x.ok ? `${label}: done` : `${label}: ${x.message || x.code}`;
    setResults(r);
    setSelected(new Set());
    done(`${label}: ${res.succeeded} succeeded, ${res.failed} failed.`);
  });
  // What a destructive action will do, asked before it is done.
  const [asking, setAsking] = useState<{ title: string; body: string; label: string; danger?: boolean; run: () => void }>();
  const askBulk = (action: BulkUserAction, label: string) => {
    const n = selected.size;
    setAsking(
      action === BulkUserAction.DELETE
        ? { title: `Delete ${plural(n, "user")}?`, body: "Their accounts are deleted and cannot be brought back; their subscriptions are stopped.", label: "Delete", danger: true, run: () => void bulk.act(action, label) }
        : { title: `Deactivate ${plural(n, "user")}?`, body: "They are signed out at once and cannot sign in until activated again; their subscriptions are suspended.", label: "Deactivate", danger: true, run: () => void bulk.act(action, label) },
    );
  };
  const rows = list.data?.users ?? [];
  const allChecked = rows.length > 0 && rows.every((u) => selected.has(u.id));
  const toggle = (id: string, on: boolean) => {
    const s = new Set(selected);
    if (on) s.add(id);
    else s.delete(id);
    setSelected(s);
  };
  return (
    <>
      <PageTitle
        actions={
          <button type="button" class="primary" onClick={() => setCreating(!creating)} aria-expanded={creating}>
            New user
          </button>
        }
      >
        Users
      </PageTitle>
      {creating && <CreateUser onDone={(email) => {
        setCreating(false);
        done(`Created ${email}.`);
      }} />}
      <form
        class="filters"
        role="search"
        onSubmit={(e) => {
          e.preventDefault();
          pages.startOver();
          setQuery({ q: searchText, page: undefined });
        }}
      >
        <div class="field">
          <label for="users-search">Search</label>
          <input id="users-search" type="search" placeholder="email or name" value={searchText} onInput={(e) => setSearchText(e.currentTarget.value)} />
        </div>
        <Select label="Role" value={role} onValue={(v) => setQuery({ role: v, page: undefined })} options={[["", "Any"], ["user", "User"], ["administrator", "Administrator"]]} />
        <Select label="State" value={state} onValue={(v) => setQuery({ state: v, page: undefined })} options={[["", "Any"], ["active", "Active"], ["inactive", "Inactive"]]} />
        <button type="submit">Search</button>
      </form>
      <ErrorBanner problem={list.problem ?? rowAction.problem ?? bulk.problem} />
      {notice && <Notice>{notice}</Notice>}
      <div class="bulk" role="group" aria-label="Bulk actions">
        <span>{count(selected.size)} selected</span>
        <button type="button" disabled={!selected.size || bulk.busy} onClick={() => void bulk.act(BulkUserAction.ACTIVATE, "Activate")}>
          Activate selected
        </button>
        <button type="button" disabled={!selected.size || bulk.busy} onClick={() => askBulk(BulkUserAction.DEACTIVATE, "Deactivate")}>
          Deactivate selected
        </button>
        <button type="button" class="danger" disabled={!selected.size || bulk.busy} onClick={() => askBulk(BulkUserAction.DELETE, "Delete")}>
          Delete selected
        </button>
      </div>
      <Confirm
        open={!!asking}
        title={asking?.title ?? ""}
        confirmLabel={asking?.label ?? ""}
        danger={asking?.danger}
        onCancel={() => setAsking(undefined)}
        onConfirm={() => {
          asking?.run();
          setAsking(undefined);
        }}
      >
        <p>{asking?.body}</p>
      </Confirm>
      <div class="table-wrap stack">
        <table>
          <thead>
            <tr>
              <th scope="col">
                <input type="checkbox" aria-label="Select all on this page" checked={allChecked} onChange={(e) => setSelected(e.currentTarget.checked ? new Set(rows.map((u) => u.id)) : new Set())} />
              </th>
              <th scope="col">Email</th>
              <th scope="col">Name</th>
              <th scope="col">Role</th>
              <th scope="col">State</th>
              <th scope="col">Last sign-in</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {rows.map((u) => {
              const me = u.id === session.user?.id;
              return (
                <tr key={u.id} data-email={u.email}>
                  <td class="stack-check">
                    <input type="checkbox" aria-label={`Select ${u.email}`} checked={selected.has(u.id)} onChange={(e) => toggle(u.id, e.currentTarget.checked)} />
                  </td>
                  <td class="stack-title">
                    {u.email}
                    {results[u.id] && <div class="row-result">{results[u.id]}</div>}
                  </td>
                  <td data-label="Name">{u.name}</td>
                  <td data-label="Role">
                    <select aria-label={`Role of ${u.email}`} value={u.role === Role.ADMINISTRATOR ? "administrator" : "user"} onChange={(e) => {
                      const r = e.currentTarget.value === "administrator" ? Role.ADMINISTRATOR : Role.USER;
                      // Nothing changes until confirmed: the select shows the stored role again.
                      e.currentTarget.value = u.role === Role.ADMINISTRATOR ? "administrator" : "user";
                      setAsking(
                        r === Role.ADMINISTRATOR
                          ? { title: `Make ${u.email} an administrator?`, body: "Administrators manage users, the catalog and the fleet, and see every subscription.", label: "Make administrator", run: () => void rowAction.act(`${u.email} is now ${roleName(r)}.`, () => users.setUserRole({ id: u.id, role: r })) }
                          : { title: `Make ${u.email} a user?`, body: "They lose the administrator's rights at once, on every session.", label: "Make user", danger: true, run: () => void rowAction.act(`${u.email} is now ${roleName(r)}.`, () => users.setUserRole({ id: u.id, role: r })) },
                      );
                    }}>
                      <option value="user">User</option>
                      <option value="administrator">Administrator</option>
                    </select>
                  </td>
                  <td data-label="State">{u.active ? "Active" : "Inactive"}</td>
                  <td data-label="Last sign-in">{dateTime(u.lastLoginAt)}</td>
                  <td class="row-actions">
                    <button type="button" class="small" aria-label={`Edit ${u.email}`} onClick={() => setEditing(u)}>
                      Edit
                    </button>
                    <button type="button" class="small" aria-label={`Limits of ${u.email}`} onClick={() => setLimiting(u)}>
                      Limits
                    </button>
                    <button type="button" class="small" aria-label={`${u.active ? "Deactivate" : "Activate"} ${u.email}`} disabled={me && u.active} onClick={() => void rowAction.act(`${u.email} ${u.active ? "deactivated" : "activated"}.`, () => users.setUserActive({ id: u.id, active: !u.active }))}>
                      {u.active ? "Deactivate" : "Activate"}
                    </button>
                    <button type="button" class="small danger" aria-label={`Delete ${u.email}`} disabled={me} onClick={() => setDeleting(u)}>
                      Delete
                    </button>
                  </td>
                </tr>
              );
            })}
            {list.data && rows.length === 0 && (
              <tr>
                <td colSpan={7} class="muted">
                  No user matches.
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
      <Pager pages={pages} summary={list.data ? plural(list.data.totalSize, "user") : ""} next={list.data?.nextPageToken} />
      {editing && <EditUser user={editing} onClose={(msg) => {
        setEditing(undefined);
        if (msg) done(msg);
      }} />}
      {limiting && <UserLimits user={limiting} onClose={(msg) => {
        setLimiting(undefined);
        if (msg) done(msg);
      }} />}
      <Confirm open={!!deleting} title={`Delete ${deleting?.email}?`} confirmLabel="Delete" danger onCancel={() => setDeleting(undefined)} onConfirm={() => {
        const u = deleting!;
        setDeleting(undefined);
        void rowAction.act(`Deleted ${u.email}.`, () => users.deleteUser({ id: u.id }));
      }}>
        <p>The account and its sessions are removed. This cannot be undone.</p>
      </Confirm>
    </>
  );
}

function CreateUser({ onDone }: { onDone: (email: string) => void }) {
  const [email, setEmail] = useState("");
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const [role, setRole] = useState("user");
  const create = useAction(async () => {
    await users.createUser({ email, name, password, role: role === "administrator" ? Role.ADMINISTRATOR : Role.USER });
    onDone(email);
  });
  return (
    <section class="card" aria-labelledby="create-h">
      <h2 id="create-h">New user</h2>
      <form
        noValidate
        onSubmit={(e) => {
          e.preventDefault();
          void create.act();
        }}
      >
        <ErrorBanner problem={create.problem} shownFields={["email", "name", "password", "role"]} />
        <div class="grid2">
          <Field label="Email" type="email" value={email} onValue={setEmail} error={create.problem?.fields.email} />
          <Field label="Name" value={name} onValue={setName} error={create.problem?.fields.name} />
          <Field label="Password" type="password" autoComplete="new-password" value={password} onValue={setPassword} error={create.problem?.fields.password} />
          <Select label="Role" value={role} onValue={setRole} options={[["user", "User"], ["administrator", "Administrator"]]} error={create.problem?.fields.role} />
        </div>
        <button class="primary" type="submit" disabled={create.busy}>
          Create user
        </button>
      </form>
    </section>
  );
}

function EditUser({ user, onClose }: { user: User; onClose: (msg?: string) => void }) {
  const [email, setEmail] = useState(user.email);
  const [name, setName] = useState(user.name);
  const [password, setPassword] = useState("");
  const save = useAction(async () => {
    await users.updateUser({
      id: user.id,
      email: email !== user.email ? email : undefined,
      name: name !== user.name ? name : undefined,
      password: password || undefined,
    });
    onClose(`Saved ${email}.`);
  });
  return (
    <Confirm open title={`Edit ${user.email}`} confirmLabel="Save changes" onCancel={() => onClose()} onConfirm={() => void save.act()}>
      <ErrorBanner problem={save.problem} shownFields={["email", "name", "password"]} />
      <Field label="Email" type="email" value={email} onValue={setEmail} error={save.problem?.fields.email} />
      <Field label="Name" value={name} onValue={setName} error={save.problem?.fields.name} />
      <Field label="New password" type="password" autoComplete="new-password" value={password} onValue={setPassword} error={save.problem?.fields.password} hint="Leave empty to keep the current one." />
    </Confirm>
  );
}

// What one customer's subscriptions may take: the figures in force, what
// they use, and the administrator's own limits (empty: the default).
const LIMITS = [
  ["subscriptions", "Subscriptions", ""],
  ["cpuMillicores", "CPU", "millicores"],
  ["memoryMb", "Memory", "MiB"],
  ["storageGb", "Storage", "GiB, retained volumes included"],
] as const;
type LimitKey = (typeof LIMITS)[number][0];

function UserLimits({ user, onClose }: { user: User; onClose: (msg?: string) => void }) {
  const share = useLoad(() => users.getUser({ id: user.id }).then((r) => r.share), [user.id]);
  const [values, setValues] = useState<Partial<Record<LimitKey, string>>>({});
  useEffect(() => {
    const o = share.data?.overrides;
    if (!o) return;
    const v: Partial<Record<LimitKey, string>> = {};
    for (const [k] of LIMITS) if (o[k] !== undefined) v[k] = String(o[k]);
    setValues(v);
  }, [share.data]);
  const save = useAction(async () => {
    const num = (k: LimitKey) => (values[k]?.trim() ? values[k]!.trim() : undefined);
    const s = num("subscriptions");
    const big = (k: LimitKey) => {
      const x = num(k);
      return x === undefined ? undefined : BigInt(x);
    };
    await users.setUserLimits({
      id: user.id,
      limits: {
        subscriptions: s === undefined ? undefined : Number(s),
        cpuMillicores: big("cpuMillicores"),
        memoryMb: big("memoryMb"),
        storageGb: big("storageGb"),
      },
    });
    onClose(`Saved the limits of ${user.email}.`);
  });
  const limits = share.data?.limits;
  const usage = share.data?.usage;
  return (
    <Confirm open title={`Limits of ${user.email}`} confirmLabel="Save limits" onCancel={() => onClose()} onConfirm={() => void save.act()}>
      <ErrorBanner problem={share.problem ?? save.problem} shownFields={LIMITS.map(([k]) => `limits.${snake(k)}`)} />
      <p>New subscriptions past a limit are refused; lowering one stops nothing that runs. Leave a field empty for the default.</p>
      {limits && usage && (
        <table>
          <thead>
            <tr>
              <th scope="col">Resource</th>
              <th scope="col">In use</th>
              <th scope="col">Limit</th>
            </tr>
          </thead>
          <tbody>
            {LIMITS.map(([k, label, unit]) => (
              <tr key={k}>
                <th scope="row">{label}</th>
                <td>{Number(usage[k]).toLocaleString()}</td>
                <td>
                  {Number(limits[k]).toLocaleString()} {unit.split(",")[0]}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {LIMITS.map(([k, label, unit]) => (
        <Field
          key={k}
          label={`${label} limit`}
          inputMode="numeric"
          value={values[k] ?? ""}
          onValue={(v) => setValues({ ...values, [k]: v })}
          error={save.problem?.fields[`limits.${snake(k)}`]}
          hint={unit ? `In ${unit}. Empty: the control plane's default.` : "Empty: the control plane's default."}
        />
      ))}
    </Confirm>
  );
}

const snake = (k: string) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
