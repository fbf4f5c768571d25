"""LocalStack's runtime, with its start-up heap frozen before it is ready.

CPython's cycle collector walks every tracked object on a full (generation 2)
collection, and LocalStack's heap after start-up is some 250,000 objects
(its modules, AWS's service specs, its providers). Measured 2026-12-04 in
`priority-isolation` (a callback on `gc.callbacks` timing each collection):
under load a full collection came every 15-20 s and took 190-240 ms, and
every SQS call waited for it. LocalStack's `SendMessage`,
`SendMessageBatch` and `DeleteMessageBatch` each had one answer of
220-250 ms in the run, and the reminders caught in it took 220-240 ms,
against a p99 of 20-30 ms.

`gc.freeze()` (Python's remedy for a long-lived server's start-up heap) moves
every object alive now to a permanent generation the collector no longer
walks. So this launcher starts the runtime, uses SQS and S3 once (their
providers and specs load on first use), collects, freezes, and only then
writes `localstack.frozen` beside its log: the stack is not ready until that
file is there, so the freeze's own pause never lands in a run. After it, a
full collection walks what the run itself created (measured: 20,000-22,000
objects, 53-65 ms). Garbage is still collected as before: reference counting
frees what is not in a cycle, and the collector still walks every object
created after the freeze.

Two pieces of Twisted's web server that LocalStack does not use are also
turned off (`_lighten_twisted_site`). Measured 2026-12-05 with py-spy
(`--gil`, the thread holding the interpreter) during a capacity run:

- 15 % of LocalStack's busy time went to `twisted.web.http._parseContentType`,
  which runs the content type of every POST through the standard library's
  email header parser, so that Twisted can decode an HTML form into
  `request.args`. LocalStack reads the body itself (it is a WSGI app behind
  Twisted, and the form is left in the body either way); nothing reads
  `request.args`. The site is told not to parse forms
  (`parsePOSTFormSubmission`, a documented argument of `Site`).
- 4 % went to formatting an access-log line per request (`HTTPFactory.log`),
  which LocalStack does not keep (its own log is at `warn`).

Nothing about SQS's or S3's behaviour changes.
"""

import gc
import os
import sys
import threading
import time
import urllib.request

FROZEN = "localstack.frozen"
# LocalStack reads neither signature nor keys; the credential names the region.
AUTHORIZATION = (
    "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/{service}/aws4_request, "
    "SignedHeaders=host, Signature=0"
)


def _answers(url, service, data=None):
    request = urllib.request.Request(url, data=data)
    request.add_header("Authorization", AUTHORIZATION.format(service=service))
    if data is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except OSError:
        return False


def _warm_then_freeze(url, deadline_secs=300):
    deadline = time.monotonic() + deadline_secs
    while not _answers(url + "/_localstack/health", "sqs"):
        if time.monotonic() > deadline:
            return
        time.sleep(0.2)
    _answers(url + "/", "sqs", data=b"Action=ListQueues&Version=2012-11-05")
    _answers(url + "/", "s3")
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    took_ms = (time.perf_counter() - started) * 1000
    with open(FROZEN, "w") as marker:
        marker.write(f"{gc.get_freeze_count()} objects frozen in {took_ms:.0f} ms\n")


def _lighten_twisted_site():
    # LocalStack builds its `twisted.web.server.Site` in rolo's `TwistedGateway`
    # without these two choices; they are made after its own `__init__`.
    from rolo.serving import twisted as rolo_twisted

    build = rolo_twisted.TwistedGateway.__init__

    def build_without_forms(site, *args, **kwargs):
        build(site, *args, **kwargs)
        site._parsePOSTFormSubmission = False

    rolo_twisted.TwistedGateway.__init__ = build_without_forms
    rolo_twisted.TwistedGateway.log = lambda site, request: None


def main():
    _lighten_twisted_site()
    listen = os.environ.get("GATEWAY_LISTEN", "127.0.0.1:4566")
    threading.Thread(target=_warm_then_freeze, args=(f"http://{listen}",), daemon=True).start()
    from localstack.runtime.main import main as run

    run()


if __name__ == "__main__":
    sys.exit(main())
