"""A real SMTP server for the tests (aiosmtpd, from PyPI).

Every mail it accepts is written, decoded, as one JSON file into the
directory given: {"from", "to", "subject", "text", "html", "message_id",
"tls", "auth"}. With --cert/--key it requires STARTTLS; with --user and
--password it requires AUTH (over TLS). Prints "ready <port>" once it
accepts connections and runs until killed.
"""

import argparse
import email
import email.policy
import json
import logging
import os
import signal
import ssl
import sys
import threading
import time
import warnings

# aiosmtpd warns about its own internals on every AUTH, and about AUTH
# without STARTTLS even when the whole connection is TLS (smtps).
warnings.filterwarnings("ignore", message="Session.login_data")
warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
logging.getLogger("mail.log").setLevel(logging.CRITICAL)

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)

        def part(kind):
            body = message.get_body(preferencelist=(kind,))
            return body.get_content() if body is not None else ""

        record = {
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "subject": str(message.get("Subject", "")),
            "message_id": str(message.get("Message-ID", "")),
            "text": part("plain"),
            "html": part("html"),
            "tls": session.ssl is not None or a_implicit_tls,
            "auth": session.authenticated,
        }
        with self.lock:
            self.count += 1
            name = "%020d-%06d.json" % (time.time_ns(), self.count)
        path = os.path.join(self.directory, name)
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.rename(path + ".tmp", path)
        return "250 Message accepted for delivery"


a_implicit_tls = False


def main():
    global a_implicit_tls
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--implicit-tls", action="store_true",
                   help="TLS from the first byte (smtps) instead of STARTTLS")
    a = p.parse_args()

    kwargs = {}
    if a.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(a.cert, a.key)
        if a.implicit_tls:
            kwargs.update(ssl_context=context)
        else:
            kwargs.update(tls_context=context, require_starttls=True)
    if a.user:
        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (auth_data.login.decode() == a.user and auth_data.password.decode() == a.password)
            return AuthResult(success=ok)

        kwargs.update(authenticator=authenticator, auth_required=True,
                      auth_require_tls=bool(a.cert) and not a.implicit_tls)
    a_implicit_tls = a.implicit_tls
    controller = Controller(Sink(a.dir), hostname="127.0.0.1", port=a.port, **kwargs)
    controller.start()
    print("ready %d" % controller.port, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    sys.exit(main())
