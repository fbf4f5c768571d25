"""Courier's SMTP server for the local stack: aiosmtpd, plus a small HTTP
control port.

Every message it accepts (250) is kept, and listed as JSON at
`GET /messages` (id, from, to, raw) for the same sent-mail audit as SES.
`PUT /faults` sets the replies it gives instead (`GET /faults` lists them
with how many replies were injected so far), each with a probability,
optionally only for recipients containing a given text:
`[{"code": 454, "message": "Throttling failure", "probability": 0.3,
"recipient_contains": "t123"}]`; `PUT /faults` with `[]` clears them.

Usage: python courier_smtp.py SMTP_PORT CONTROL_PORT
"""

import json
import random
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller

LOCK = threading.Lock()
MESSAGES = []
FAULTS = []
INJECTED = [0]


def injected_reply(recipients):
    with LOCK:
        rules = list(FAULTS)
    for rule in rules:
        needle = rule.get("recipient_contains")
        if needle and not any(needle in r for r in recipients):
            continue
        if random.random() < float(rule.get("probability", 1.0)):
            with LOCK:
                INJECTED[0] += 1
            return "%d %s" % (int(rule["code"]), rule.get("message", "Injected by Courier"))
    return None


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        reply = injected_reply(envelope.rcpt_tos)
        if reply:
            return reply
        message_id = str(uuid.uuid4())
        raw = envelope.original_content or envelope.content or b""
        with LOCK:
            MESSAGES.append(
                {
                    "id": message_id,
                    "from": envelope.mail_from,
                    "to": list(envelope.rcpt_tos),
                    "raw": raw.decode("utf-8", "replace"),
                }
            )
        return "250 Message accepted id=%s" % message_id


class Control(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            return self.answer(200, {"status": "ok"})
        if self.path == "/messages":
            with LOCK:
                return self.answer(200, {"messages": list(MESSAGES)})
        if self.path == "/faults":
            with LOCK:
                return self.answer(200, {"faults": list(FAULTS), "injected": INJECTED[0]})
        self.answer(404, {"error": "not found"})

    def do_PUT(self):
        if self.path != "/faults":
            return self.answer(404, {"error": "not found"})
        length = int(self.headers.get("content-length", "0"))
        try:
            rules = json.loads(self.rfile.read(length) or b"[]")
            assert isinstance(rules, list)
            for rule in rules:
                int(rule["code"])
        except Exception as error:  # noqa: BLE001 - any bad body is the client's
            return self.answer(400, {"error": "faults must be a list of {code, message?, probability?, recipient_contains?}: %s" % error})
        with LOCK:
            FAULTS[:] = rules
        self.answer(200, {"faults": len(rules)})


def main():
    smtp_port, control_port = int(sys.argv[1]), int(sys.argv[2])
    controller = Controller(Handler(), hostname="127.0.0.1", port=smtp_port, data_size_limit=50 * 1024 * 1024)
    controller.start()
    control = ThreadingHTTPServer(("127.0.0.1", control_port), Control)
    threading.Thread(target=control.serve_forever, daemon=True).start()
    print("courier-smtp listening on %d, control on %d" % (smtp_port, control_port), flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
