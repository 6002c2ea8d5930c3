// The console's shell: session restore, role-aware navigation and routes.
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { safeNext } from "./next";
import { installLinkHandler, navigate, useLocation } from "./router";
import { session } from "./session";
import { useStore } from "./store";
import { BackupsPage } from "./pages/backups";
import { CatalogPage, ServiceDetailPage, ServiceEditPage } from "./pages/catalog";
import { DashboardPage } from "./pages/dashboard";
import { EnrollmentPage } from "./pages/enrollment";
import { FleetPage } from "./pages/fleet";
import { NotificationsPage } from "./pages/notifications";
import { ProfilePage } from "./pages/profile";
import { ForgotPasswordPage, ResetPasswordPage, VerifyEmailPage } from "./pages/recovery";
import { RegisterPage, SignInPage } from "./pages/signin";
import { SubscriptionPage } from "./pages/subscription";
import { MyServicesPage, SubscriptionsAdminPage } from "./pages/subscriptions";
import { UsersPage } from "./pages/users";
import { WorkerPage } from "./pages/worker";


type Route = { page: () => preact.JSX.Element; admin: boolean; nav?: string };

function decode(part: string): string | undefined {
  try {
    return decodeURIComponent(part);
  } catch {
    return undefined;
  }
}

function route(path: string): Route | undefined {
  const raw = path.split("/").filter(Boolean).map(decode);
  if (raw.some((p) => p === undefined)) return undefined;
  const parts = raw as string[];
  const [a, b, c] = parts;
  if (parts.length === 0) return { page: () => <DashboardPage />, admin: true, nav: "/" };
  if (a === "workers" && parts.length === 1) return { page: () => <FleetPage />, admin: true, nav: "/workers" };
  if (a === "workers" && parts.length === 2) return { page: () => <WorkerPage id={b} />, admin: true, nav: "/workers" };
  if (a === "enrollment" && parts.length === 1) return { page: () => <EnrollmentPage />, admin: true, nav: "/enrollment" };
  if (a === "notifications" && parts.length === 1) return { page: () => <NotificationsPage />, admin: true, nav: "/notifications" };
  if (a === "users" && parts.length === 1) return { page: () => <UsersPage />, admin: true, nav: "/users" };
  if (a === "backups" && parts.length === 1) return { page: () => <BackupsPage />, admin: true, nav: "/backups" };
  if (a === "catalog" && parts.length === 1) return { page: () => <CatalogPage />, admin: false, nav: "/catalog" };
  if (a === "catalog" && b === "new" && parts.length === 2) return { page: () => <ServiceEditPage />, admin: true, nav: "/catalog" };
  if (a === "catalog" && parts.length === 2) return { page: () => <ServiceDetailPage slug={b} />, admin: false, nav: "/catalog" };
  if (a === "catalog" && c === "edit" && parts.length === 3) return { page: () => <ServiceEditPage slug={b} />, admin: true, nav: "/catalog" };
  if (a === "my-services" && parts.length === 1) return { page: () => <MyServicesPage />, admin: false, nav: "/my-services" };
  if (a === "subscriptions" && parts.length === 1) return { page: () => <SubscriptionsAdminPage />, admin: true, nav: "/subscriptions" };
  if (a === "subscriptions" && parts.length === 2) return { page: () => <SubscriptionPage id={b} />, admin: false, nav: session.isAdmin ? "/subscriptions" : "/my-services" };
  if (a === "profile" && parts.length === 1) return { page: () => <ProfilePage />, admin: false, nav: "/profile" };
  return undefined;
}

const adminNav: [string, string][] = [
  ["/", "Dashboard"],
  ["/workers", "Fleet"],
  ["/enrollment", "Enrollment"],
  ["/users", "Users"],
  ["/catalog", "Catalog"],
  ["/subscriptions", "Subscriptions"],
  ["/backups", "Backups"],
  ["/notifications", "Notifications"],
  ["/my-services", "My services"],
  ["/profile", "Profile"],
];
const customerNav: [string, string][] = [
  ["/catalog", "Catalog"],
  ["/my-services", "My services"],
  ["/profile", "Profile"],
];

function Shell({ current, children }: { current?: string; children: preact.ComponentChildren }) {
  const s = useStore(session);
  const [open, setOpen] = useState(false);
  const items = s.isAdmin ? adminNav : customerNav;
  return (
    <div class="shell">
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <a class="brand" href={s.isAdmin ? "/" : "/catalog"}>
          MiniSpod
        </a>
        <button type="button" class="menu-toggle" aria-expanded={open} aria-controls="main-nav" onClick={() => setOpen(!open)}>
          Menu
        </button>
        <nav id="main-nav" aria-label="Main" class={open ? "open" : ""} onClick={() => setOpen(false)}>
          <ul>
            {items.map(([href, label]) => (
              <li key={href}>
                <a href={href} aria-current={current === href ? "page" : undefined}>
                  {label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <div class="who">
          <span class="who-name" title={s.user?.email}>
            {s.user?.name || s.user?.email}
          </span>
          <button type="button" onClick={() => void s.signOut().finally(() => navigate("/signin"))}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        {children}
      </main>
    </div>
  );
}

function App() {
  const s = useStore(session);
  const { path, query } = useLocation();
  const here = location.pathname + location.search;

  useEffect(() => {
    if (!s.ready) return;
    const publicPage = path === "/signin" || path === "/register";
    const linkPage = path === "/reset-password" || path === "/verify-email" || path === "/forgot-password";
    if (linkPage) return;
    if (!s.signedIn && !publicPage) navigate(`/signin?next=${encodeURIComponent(here)}`, true);
    else if (s.signedIn && publicPage) navigate(safeNext(query.get("next"), location.origin), true);
    else if (s.signedIn && path === "/" && !s.isAdmin) navigate("/catalog", true);
  }, [s.ready, s.signedIn, path]);

  if (!s.ready) return <p class="loading">Loading…</p>;
  // The pages mailed links open: with or without a session.
  if (path === "/reset-password") return <ResetPasswordPage />;
  if (path === "/verify-email") return <VerifyEmailPage />;
  if (path === "/forgot-password") return <ForgotPasswordPage />;
  if (path === "/signin") return <SignInPage />;
  if (path === "/register") return <RegisterPage />;
  if (!s.signedIn) return <p class="loading">Redirecting to sign in…</p>;
  const r = route(path);
  if (!r) {
    return (
      <Shell>
        <h1>Page not found</h1>
        <p>
          Nothing lives at <code>{path}</code>. <a href="/">Go to the start page</a>.
        </p>
      </Shell>
    );
  }
  if (r.admin && !s.isAdmin) {
    return (
      <Shell>
        <h1>Not available</h1>
        <p>This page is for administrators. Your account can use the catalog, your services and your profile.</p>
        <p>
          <a href="/catalog">Browse the catalog</a>
        </p>
      </Shell>
    );
  }
  return <Shell current={r.nav}>{r.page()}</Shell>;
}

installLinkHandler();
render(<App />, document.getElementById("app")!);
void session.restore();
