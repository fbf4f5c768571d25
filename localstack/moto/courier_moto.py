"""moto's server, as `python -m moto.server`, less two costs per request,
plus one route.

Measured with py-spy on moto 5.2.5 while the pipeline sent through SES v2
(2026-11-25): a fifth of moto's CPU went to `backends.list_of_moto_modules()`,
which lists moto's package folder and stats every entry on *every request* to
find the service, and a sixteenth to logging each request line. The module
list cannot change while the server runs, so it is read once; the request log
is turned down to warnings. Nothing about SES's behaviour changes.

The route: `GET /courier/sent?after=N&limit=M` lists SES's sent mail a page
at a time, in the shape `/moto-api/data.json` gives it (`ses.Message`,
`ses.RawMessage`), without bodies unless `raw=1`. `data.json` dumps every backend whole,
bodies and all, which at a million messages is gigabytes in one response;
the audit reads pages instead, and keeps only counts.
"""

import json
import logging
import sys
from urllib.parse import parse_qs

from moto import backends
from moto.moto_server import werkzeug_app

_MODULES = tuple(backends.list_of_moto_modules())
backends.list_of_moto_modules = lambda: _MODULES
logging.getLogger("werkzeug").setLevel(logging.WARNING)


def _sent_page(environ, start_response):
    from moto.ses.models import RawMessage, ses_backends

    query = parse_qs(environ.get("QUERY_STRING", ""))
    after = max(int(query.get("after", ["0"])[0]), 0)
    limit = min(max(int(query.get("limit", ["10000"])[0]), 1), 50000)
    whole = query.get("raw", ["0"])[0] == "1"
    page, skip = [], after
    for regions in ses_backends.values():
        for backend in regions.values():
            messages = backend.sent_messages
            if skip >= len(messages):
                skip -= len(messages)
                continue
            page.extend(messages[skip : skip + limit - len(page)])
            skip = 0
    simple, raw = [], []
    for message in page:
        entry = {"id": message.id, "source": message.source, "destinations": message.destinations}
        if isinstance(message, RawMessage):
            # Recipients are read from the raw message when none were given.
            if whole or not message.destinations:
                entry["raw_data"] = message.raw_data
            raw.append(entry)
        else:
            entry["subject"] = getattr(message, "subject", None)
            simple.append(entry)
    body = {"ses": {"Message": simple, "RawMessage": raw}, "next": after + len(page) if len(page) == limit else None}
    payload = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


_dispatch = werkzeug_app.DomainDispatcherApplication.__call__


def _dispatch_with_sent(self, environ, start_response):
    if environ.get("PATH_INFO") == "/courier/sent":
        return _sent_page(environ, start_response)
    return _dispatch(self, environ, start_response)


werkzeug_app.DomainDispatcherApplication.__call__ = _dispatch_with_sent

from moto.server import main  # noqa: E402  (after the patches, which it reads per request)

if __name__ == "__main__":
    main(sys.argv[1:])
