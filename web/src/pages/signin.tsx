// Sign in and registration.
import { useState } from "preact/hooks";
import { auth } from "../api";
import { Centered, needsVerification, ResendVerification } from "../parts/account";
import { ErrorBanner, Field, useAction } from "../parts/components";
import { session } from "../session";


export function SignInPage() {
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const { busy, problem, act } = useAction(async () => {
    const res = await auth.login({ email, password, sessionCookie: true });
    session.accept(res.tokens, res.user);
  });
  return (
    <Centered title="Sign in">
      <form
        noValidate
        onSubmit={(e) => {
          e.preventDefault();
          void act();
        }}
      >
        <ErrorBanner problem={problem} shownFields={["email", "password"]} />
        <Field label="Email" type="email" autoComplete="username" required value={email} onValue={setEmail} error={problem?.fields.email} />
        <Field label="Password" type="password" autoComplete="current-password" required value={password} onValue={setPassword} error={problem?.fields.password} />
        <button class="primary wide" type="submit" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
      {needsVerification(problem) && <ResendVerification email={email} />}
      <p class="muted">
        <a href="/forgot-password">Forgot your password?</a>
      </p>
      <p class="muted">
        New here? <a href={`/register${location.search}`}>Create an account</a>
      </p>
    </Centered>
  );
}

export function RegisterPage() {
  const [name, setName] = useState("");
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [checkInbox, setCheckInbox] = useState("");
  const { busy, problem, act } = useAction(async () => {
    const res = await auth.register({ name, email, password, sessionCookie: true });
    // The server wants the address confirmed before the first sign-in.
    if (res.verificationRequired) setCheckInbox(res.user?.email ?? email);
    else session.accept(res.tokens, res.user);
  });
  const shown = ["name", "email", "password"];
  if (checkInbox) {
    return (
      <Centered title="Confirm your address">
        <p>
          We mailed a link to <strong>{checkInbox}</strong>. Open it to confirm the address, then sign in.
        </p>
        <ResendVerification email={checkInbox} />
        <p class="muted">
          <a href="/signin">Sign in</a>
        </p>
      </Centered>
    );
  }
  return (
    <Centered title="Create an account">
      <form
        noValidate
        onSubmit={(e) => {
          e.preventDefault();
          void act();
        }}
      >
        <ErrorBanner problem={problem} shownFields={shown} />
        <Field label="Name" autoComplete="name" value={name} onValue={setName} error={problem?.fields.name} />
        <Field label="Email" type="email" autoComplete="email" value={email} onValue={setEmail} error={problem?.fields.email} />
        <Field label="Password" type="password" autoComplete="new-password" value={password} onValue={setPassword} error={problem?.fields.password} hint="8 to 128 characters." />
        <button class="primary wide" type="submit" disabled={busy}>
          {busy ? "Creating…" : "Create account"}
        </button>
      </form>
      <p class="muted">
        Have an account? <a href={`/signin${location.search}`}>Sign in</a>
      </p>
    </Centered>
  );
}
