#!/usr/bin/python3
"""A loopback SMTP server for corral's alert tests, on Debian's python3-aiosmtpd.

Modes: starttls (STARTTLS required, then AUTH required), tls (implicit TLS, AUTH required),
none (plain, no AUTH). Prints READY once listening, then one JSON line per message received
(envelope sender and recipients, the decoded Subject and text body, whether the session
logged in). Runs until its stdin closes.
"""
import argparse
import email
import email.policy
import json
import logging
import ssl
import sys
import warnings

warnings.simplefilter("ignore")
# aiosmtpd warns about settings the tests choose on purpose (AUTH before TLS on implicit TLS).
logging.getLogger("mail.log").setLevel(logging.ERROR)

from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult, LoginPassword  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--mode", choices=["starttls", "tls", "none"], required=True)
p.add_argument("--cert")
p.add_argument("--key")
p.add_argument("--user", default="corral")
p.add_argument("--password", default="s3cret")
args = p.parse_args()


class Handler:
    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        print(
            json.dumps(
                {
                    "from": envelope.mail_from,
                    "to": envelope.rcpt_tos,
                    "header_from": str(msg["From"]),
                    "subject": str(msg["Subject"]),
                    "body": body.get_content() if body is not None else "",
                    "authenticated": bool(getattr(session, "authenticated", False)),
                }
            ),
            flush=True,
        )
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == args.user.encode()
        and auth_data.password == args.password.encode()
    )
    return AuthResult(success=ok, handled=False)


kw = {}
if args.mode != "none":
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)
    kw = dict(auth_required=True, authenticator=authenticator)
    if args.mode == "starttls":
        kw.update(tls_context=ctx, require_starttls=True)
    else:
        kw.update(ssl_context=ctx, auth_require_tls=False)
c = Controller(Handler(), hostname="127.0.0.1", port=args.port, **kw)
c.start()
print("READY", flush=True)
sys.stdin.read()
c.stop()
