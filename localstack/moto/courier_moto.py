"""moto's SES, served with keep-alive and less work per request, plus one route.

moto's own server (`python -m moto.server`) is werkzeug's development server.
Measured with py-spy on moto 5.2.5 while the pipeline sent through SES v2:

- (2026-11-25) a fifth of moto's CPU went to `backends.list_of_moto_modules()`,
  which lists moto's package folder and stats every entry on *every request*
  to find the service, and a sixteenth to logging each request line. The
  module list cannot change while the server runs, so it is read once; the
  request log is off.
- (2026-12-04) werkzeug's server answers every request with `Connection:
  close`, so each `SendEmail` cost a TCP connection and a thread on both
  sides; `inspect.getmembers` listed the response class's methods on every
  request; and Flask's debug mode, which moto turns on, ran its form-data
  check on every request. moto's app is served by waitress instead
  (keep-alive, a pool of four threads), the method list is read once per
  class, and debug mode is off (an error is still a 500). Measured with 8
  boto3 threads sending 4,000 `SendEmail`s each way, back to back: moto's CPU
  per request 1.22–1.27 ms before, 0.84–0.89 ms after.

- (2026-12-04) CPython's cycle collector walked moto's whole heap (110,000-
  140,000 objects, most of them from start-up) on each full collection:
  80-90 ms during which no `SendEmail` was answered (reminders caught in one
  took 50-120 ms). The start-up heap is frozen (`gc.freeze()`) before
  serving, as LocalStack's is (`courier_localstack.py`).

- (2026-12-05) waitress logs the warning "Task queue depth is N" whenever a
  request waits for a free thread, which under load is most requests: 2,300
  lines in a 40-s capacity run, and 4 % of moto's busy time (py-spy `--gil`)
  went to building them. That logger is set to errors only.

- (2026-12-05) Each SES v2 request's operation was found by matching it
  against the service's whole API model (`get_service_router`, then a
  werkzeug `Map` match): 8 % of moto's busy time. The operation and the
  path's parameters are kept per method, path, content type and host (at most
  4,096 of them).

Nothing about SES's behaviour changes.

The route: `GET /courier/sent?after=N&limit=M` lists SES's sent mail a page
at a time, in the shape `/moto-api/data.json` gives it (`ses.Message`,
`ses.RawMessage`), without bodies unless `raw=1`. `data.json` dumps every backend whole,
bodies and all, which at a million messages is gigabytes in one response;
the audit reads pages instead, and keeps only counts.
"""

import argparse
import functools
import gc
import json
import logging
import os
import sys
from urllib.parse import parse_qs

import waitress
from moto import backends
from moto.core import responses as moto_responses
from moto.core import utils as moto_utils
from moto.moto_server import werkzeug_app

_MODULES = tuple(backends.list_of_moto_modules())
backends.list_of_moto_modules = lambda: _MODULES

_METHOD_NAMES = functools.cache(moto_utils.method_names_from_class)
moto_responses.method_names_from_class = lambda clazz: list(_METHOD_NAMES(clazz))

# A REST request's operation is found by matching it against every operation
# of the service's API model, on every request (see the docstring). For SES v2
# the match depends on the method, the path and query, the content type and the
# host (no SES v2 operation requires a header), so it is kept per those, with
# the path's parameters, which moto sets as `uri_match`.
_ROUTES = {}
_ROUTES_KEPT = 4096
_route = moto_responses.BaseResponse._get_action_from_method_and_request_uri


def _route_once(self, request):
    if self.boto3_service_name != "sesv2":
        return _route(self, request)
    key = (request.method, request.full_path, request.content_type, request.host)
    if key in _ROUTES:
        action, uri_match = _ROUTES[key]
        if action is not None:
            self.uri_match = dict(uri_match)
        return action
    action = _route(self, request)
    if len(_ROUTES) < _ROUTES_KEPT:
        _ROUTES[key] = (action, dict(self.uri_match) if action is not None else None)
    return action


moto_responses.BaseResponse._get_action_from_method_and_request_uri = _route_once
logging.getLogger("waitress").setLevel(logging.WARNING)


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


def _backend_app(service):
    # moto turns Flask's debug mode on; its form-data check runs on every request.
    app = werkzeug_app.create_backend_app(service)
    app.debug = False
    return app


def _freeze_start_up_heap():
    # SES's models load now, not on the first request; then every object alive
    # is moved where the cycle collector no longer walks it (see the docstring).
    for service in ("ses", "sesv2"):
        backends.get_backend(service)
    gc.collect()
    gc.freeze()


def serve(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    # moto builds some answers (and its own URLs) from the port it serves on.
    os.environ.setdefault("MOTO_PORT", str(args.port))
    app = werkzeug_app.DomainDispatcherApplication(_backend_app)
    _freeze_start_up_heap()
    # "Task queue depth is N": a warning per queued request (see the docstring).
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    waitress.serve(app, host=args.host, port=args.port, threads=4, _quiet=True)


if __name__ == "__main__":
    serve(sys.argv[1:])
