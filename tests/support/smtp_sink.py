#!/usr/bin/env python3
"""A local SMTP sink for Tally's email tests (tests/email_test.cc), on Debian's aiosmtpd.

It listens on 127.0.0.1:PORT and writes every message it accepts to DIR/msg-N.eml (the bytes
received after DATA, line endings as sent) with DIR/msg-N.json beside it (the envelope: MAIL FROM,
RCPT TO, the AUTH login used). The test starts it as a child process, waits for DIR/ready, and
stops it by its pid (SIGTERM).

Options make it misbehave the way real servers do:
  --auth USER:PASSWORD   require AUTH (PLAIN or LOGIN) with these credentials; no TLS needed
  --rcpt-code CODE       answer every RCPT TO with CODE (e.g. 550: a permanent refusal)
  --data-code CODE       answer the end of DATA with CODE instead of storing the message
  --tls CERT KEY         offer STARTTLS with this certificate and require it before MAIL
"""
import argparse
import asyncio
import json
import os
import signal
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Sink:
    def __init__(self, directory, rcpt_code, data_code):
        self.directory = directory
        self.rcpt_code = rcpt_code
        self.data_code = data_code
        self.count = 0
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_code:
            return "%d 5.1.1 <%s>: refused by the test sink" % (self.rcpt_code, address)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_code:
            return "%d refused by the test sink" % self.data_code
        with self.lock:
            n = self.count
            self.count += 1
        base = os.path.join(self.directory, "msg-%d" % n)
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        login = session.auth_data  # what the authenticator returned: the login name
        if isinstance(login, bytes):
            login = login.decode()
        with open(base + ".json", "w") as f:
            json.dump({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                       "login": login, "tls": session.ssl is not None}, f)
        os.rename(base + ".eml.tmp", base + ".eml")
        return "250 2.0.0 stored as msg-%d" % n


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--auth")
    parser.add_argument("--rcpt-code", type=int, default=0)
    parser.add_argument("--data-code", type=int, default=0)
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = parser.parse_args()

    kwargs = {}
    if args.auth:
        user, password = args.auth.split(":", 1)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user
                  and auth_data.password.decode() == password)
            # handled=False: aiosmtpd then answers a failure with 535 itself.
            return AuthResult(success=ok, handled=False,
                              auth_data=auth_data.login if ok else None)

        kwargs.update(authenticator=authenticator, auth_required=True,
                      auth_require_tls=bool(args.tls))
    if args.tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls[0], args.tls[1])
        kwargs.update(tls_context=context, require_starttls=True)

    controller = Controller(Sink(args.dir, args.rcpt_code, args.data_code),
                            hostname="127.0.0.1", port=args.port, server_hostname="sink.test",
                            **kwargs)
    controller.start()
    with open(os.path.join(args.dir, "ready.tmp"), "w") as f:
        f.write(str(os.getpid()))
    os.rename(os.path.join(args.dir, "ready.tmp"), os.path.join(args.dir, "ready"))

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.2):
        pass
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
