// What arrives by mail: forgot password, the reset link's page, and the
// address verification link's page. Open with or without a session.
import { useEffect, useState } from "preact/hooks";
import { auth, problem as decode, type Problem } from "../api";
import { Centered, ResendVerification } from "../parts/account";
import { ErrorBanner, Field, Notice, useAction } from "../parts/components";
import { session } from "../session";

/** The token of a mailed link (`#token=...`), taken out of the address bar
 *  so it stays in neither history nor a shared screenshot of the URL. */
function useLinkToken(): string {
  const [token] = useState(() => new URLSearchParams(location.hash.slice(1)).get("token") ?? "");
  useEffect(() => {
    if (location.hash) history.replaceState(history.state, "", location.pathname + location.search);
  }, []);
  return token;
}

export function ForgotPasswordPage() {
  const [email, setEmail] = useState("");
  const [sent, setSent] = useState("");
  const { busy, problem, act } = useAction(async () => {
    await auth.requestPasswordReset({ email });
    setSent(email.trim());
  });
  if (sent) {
    return (
      <Centered title="Check your inbox">
        <Notice>
          If <strong>{sent}</strong> belongs to an account, a link to choose a new password is on its way. It works once and for a short time.
        </Notice>
        <p class="muted">
          Nothing came? Look in the spam folder, or <a href="/forgot-password" onClick={() => setSent("")}>try again</a>. <a href="/signin">Back to sign in</a>
        </p>
      </Centered>
    );
  }
  return (
    <Centered title="Forgot your password?">
      <p class="muted">Type the address you sign in with; we mail you a link to choose a new password.</p>
      <form
        noValidate
        onSubmit={(e) => {
          e.preventDefault();
          void act();
        }}
      >
        <ErrorBanner problem={problem} shownFields={["email"]} />
        <Field label="Email" type="email" autoComplete="username" required value={email} onValue={setEmail} error={problem?.fields.email} />
        <button class="primary wide" type="submit" disabled={busy}>
          {busy ? "Sending…" : "Send the link"}
        </button>
      </form>
      <p class="muted">
        <a href="/signin">Back to sign in</a>
      </p>
    </Centered>
  );
}

export function ResetPasswordPage() {
  const token = useLinkToken();
  const [password, setPassword] = useState("");
  const [again, setAgain] = useState("");
  const [done, setDone] = useState(false);
  const [mismatch, setMismatch] = useState("");
  const { busy, problem, act } = useAction(async () => {
    await auth.resetPassword({ token, newPassword: password });
    // Every session ended, this browser's too.
    session.end();
    setDone(true);
  });
  if (!token) {
    return (
      <Centered title="Choose a new password">
        <div class="banner error" role="alert">
          This page needs the link from the mail. <a href="/forgot-password">Ask for a new link</a>.
        </div>
      </Centered>
    );
  }
  if (done) {
    return (
      <Centered title="Password changed">
        <Notice>Your password was changed and every session was signed out.</Notice>
        <p>
          <a class="button primary" href="/signin">
            Sign in
          </a>
        </p>
      </Centered>
    );
  }
  const tokenProblem = problem?.fields.token;
  return (
    <Centered title="Choose a new password">
      <form
        noValidate
        onSubmit={(e) => {
          e.preventDefault();
          if (password !== again) {
            setMismatch("The two passwords differ.");
            return;
          }
          setMismatch("");
          void act();
        }}
      >
        <ErrorBanner problem={problem} shownFields={["new_password"]} />
        {tokenProblem && (
          <p class="muted">
            <a href="/forgot-password">Ask for a new link</a>
          </p>
        )}
        <Field label="New password" type="password" autoComplete="new-password" value={password} onValue={setPassword} error={problem?.fields.new_password} hint="8 to 128 characters." />
        <Field label="New password again" type="password" autoComplete="new-password" value={again} onValue={setAgain} error={mismatch || undefined} />
        <button class="primary wide" type="submit" disabled={busy}>
          {busy ? "Saving…" : "Set the new password"}
        </button>
      </form>
    </Centered>
  );
}

export function VerifyEmailPage() {
  const token = useLinkToken();
  const [state, setState] = useState<{ email?: string; problem?: Problem }>({});
  useEffect(() => {
    if (!token) return;
    auth
      .verifyEmail({ token })
      .then((res) => {
        setState({ email: res.user?.email });
        // A signed-in owner sees the new address at once.
        if (res.user && session.user?.id === res.user.id) session.setUser(res.user);
      })
      .catch((e) => setState({ problem: decode(e) }));
  }, [token]);
  if (!token) {
    return (
      <Centered title="Confirm your address">
        <div class="banner error" role="alert">
          This page needs the link from the mail.
        </div>
      </Centered>
    );
  }
  if (state.problem) {
    return (
      <Centered title="Confirm your address">
        <ErrorBanner problem={state.problem} />
        <ResendVerification />
      </Centered>
    );
  }
  if (!state.email) {
    return (
      <Centered title="Confirm your address">
        <p class="loading">Checking the link…</p>
      </Centered>
    );
  }
  return (
    <Centered title="Address confirmed">
      <Notice>
        <strong>{state.email}</strong> is confirmed.
      </Notice>
      <p>
        <a class="button primary" href={session.signedIn ? "/profile" : "/signin"}>
          {session.signedIn ? "Back to your profile" : "Sign in"}
        </a>
      </p>
    </Centered>
  );
}


