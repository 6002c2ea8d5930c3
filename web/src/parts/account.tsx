// Pieces of the signed-out pages: the centred card they stand in, and the
// request for a new verification link (sign in, profile, recovery).
import { useState } from "preact/hooks";
import { auth, Code, type Problem } from "../api";
import { ErrorBanner, Field, Notice, useAction } from "./components";

/** A signed-out page's card, centred, with the brand and the title. */
export function Centered({ title, children }: { title: string; children: preact.ComponentChildren }) {
  document.title = `${title} · MiniSpod`;
  return (
    <main class="centered" id="main">
      <div class="card auth-card">
        <div class="brand big">MiniSpod</div>
        <h1>{title}</h1>
        {children}
      </div>
    </main>
  );
}

/** Asks for a new verification link for an address typed in or given. */
export function ResendVerification({ email: given }: { email?: string }) {
  const [email, setEmail] = useState(given ?? "");
  const [sent, setSent] = useState(false);
  const { busy, problem, act } = useAction(async () => {
    await auth.resendVerification({ email });
    setSent(true);
  });
  if (sent) return <Notice>If the address waits for confirmation, a new link is on its way.</Notice>;
  return (
    <form
      noValidate
      onSubmit={(e) => {
        e.preventDefault();
        void act();
      }}
    >
      <ErrorBanner problem={problem} shownFields={["email"]} />
      {given === undefined && <Field label="Email" type="email" autoComplete="username" value={email} onValue={setEmail} error={problem?.fields.email} />}
      <button type="submit" disabled={busy}>
        {busy ? "Sending…" : "Send a new link"}
      </button>
    </form>
  );
}

/** Whether a failed sign-in means the address is not confirmed yet. */
export function needsVerification(p: Problem | undefined): boolean {
  return p?.code === Code.FailedPrecondition && /confirm your email/i.test(p.message);
}
