// The caller's own account: name and email, password, a customer's
// notices about their subscriptions, deactivation.
import { useState } from "preact/hooks";
import { auth } from "../api";
import { ResendVerification } from "../parts/account";
import { NoticePreferences } from "../parts/notices";
import { Confirm, ErrorBanner, Field, Notice, PageTitle, useAction } from "../parts/components";
import { dateTime } from "../format";
import { Role } from "../gen/minispod/v1/users_pb";
import { navigate } from "../router";
import { session } from "../session";

export function ProfilePage() {
  const user = session.user!;
  const [name, setName] = useState(user.name);
  const [email, setEmail] = useState(user.email);
  const [emailPassword, setEmailPassword] = useState("");
  const [current, setCurrent] = useState("");
  const [next, setNext] = useState("");
  const [deactivatePassword, setDeactivatePassword] = useState("");
  const [confirm, setConfirm] = useState(false);
  const [notice, setNotice] = useState("");
  const profile = useAction(async () => {
    setNotice("");
    const res = await auth.updateProfile({ name: name !== user.name ? name : undefined, email: email !== user.email ? email : undefined, currentPassword: emailPassword });
    if (res.user) session.setUser(res.user);
    setEmailPassword("");
    if (res.user?.pendingEmail && res.user.pendingEmail !== user.pendingEmail) {
      setEmail(res.user.email);
      setNotice(`Profile saved. We mailed a link to ${res.user.pendingEmail}: the new address is used once you open it.`);
    } else setNotice("Profile saved.");
  });
  const password = useAction(async () => {
    setNotice("");
    const res = await auth.changePassword({ currentPassword: current, newPassword: next, sessionCookie: true });
    // Every other session is over; this one continues with the new pair.
    session.accept(res.tokens);
    setCurrent("");
    setNext("");
    setNotice("Password changed. Your other sessions were signed out.");
  });
  const deactivate = useAction(async () => {
    await auth.deactivateAccount({ password: deactivatePassword });
    session.end();
    navigate("/signin");
  });
  return (
    <>
      <PageTitle>Profile</PageTitle>
      {notice && <Notice>{notice}</Notice>}
      <p class="muted">
        {user.role === Role.ADMINISTRATOR ? "Administrator" : "User"} · member since {dateTime(user.createdAt)}
      </p>
      <div class="split">
        <section class="card" aria-labelledby="account-h">
          <h2 id="account-h">Account</h2>
          <form
            noValidate
            onSubmit={(e) => {
              e.preventDefault();
              void profile.act();
            }}
          >
            <ErrorBanner problem={profile.problem} shownFields={["name", "email", "current_password"]} />
            <Field label="Name" autoComplete="name" value={name} onValue={setName} error={profile.problem?.fields.name} />
            <Field label="Email" type="email" autoComplete="email" value={email} onValue={setEmail} error={profile.problem?.fields.email} hint={user.emailVerified ? "Confirmed." : "Not confirmed yet."} />
            {user.pendingEmail && (
              <div class="banner warn" role="status">
                Waiting for you to confirm <strong>{user.pendingEmail}</strong> with the link we mailed there.
                <ResendVerification email={user.pendingEmail} />
              </div>
            )}
            {email !== user.email && <Field label="Password (to change the email)" type="password" autoComplete="current-password" value={emailPassword} onValue={setEmailPassword} error={profile.problem?.fields.current_password} />}
            <button class="primary" type="submit" disabled={profile.busy}>
              Save profile
            </button>
          </form>
        </section>
        <section class="card" aria-labelledby="password-h">
          <h2 id="password-h">Password</h2>
          <form
            noValidate
            onSubmit={(e) => {
              e.preventDefault();
              void password.act();
            }}
          >
            <ErrorBanner problem={password.problem} shownFields={["current_password", "new_password"]} />
            <Field label="Current password" type="password" autoComplete="current-password" value={current} onValue={setCurrent} error={password.problem?.fields.current_password} />
            <Field label="New password" type="password" autoComplete="new-password" value={next} onValue={setNext} error={password.problem?.fields.new_password} hint="8 to 128 characters." />
            <button class="primary" type="submit" disabled={password.busy}>
              Change password
            </button>
          </form>
        </section>
      </div>
      {/* An administrator sets theirs under Notifications. */}
      {user.role !== Role.ADMINISTRATOR && <NoticePreferences customer />}
      <section class="card danger-zone" aria-labelledby="deactivate-h">
        <h2 id="deactivate-h">Deactivate account</h2>
        <p>You are signed out everywhere and cannot sign in again until an administrator reactivates the account.</p>
        <form
          noValidate
          onSubmit={(e) => {
            e.preventDefault();
            setConfirm(true);
          }}
        >
          <ErrorBanner problem={deactivate.problem} shownFields={["password"]} />
          <Field label="Password (to deactivate)" type="password" autoComplete="current-password" value={deactivatePassword} onValue={setDeactivatePassword} error={deactivate.problem?.fields.password} />
          <button type="submit" class="danger">
            Deactivate my account
          </button>
        </form>
      </section>
      <Confirm open={confirm} title="Deactivate your account?" confirmLabel="Deactivate" danger onCancel={() => setConfirm(false)} onConfirm={() => {
        setConfirm(false);
        void deactivate.act();
      }}>
        <p>You will be signed out at once.</p>
      </Confirm>
    </>
  );
}
