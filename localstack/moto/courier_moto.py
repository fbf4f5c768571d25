"""moto's server, as `python -m moto.server`, less two costs per request.

Measured with py-spy on moto 5.2.5 while the pipeline sent through SES v2
(2026-11-25): a fifth of moto's CPU went to `backends.list_of_moto_modules()`,
which lists moto's package folder and stats every entry on *every request* to
find the service, and a sixteenth to logging each request line. The module
list cannot change while the server runs, so it is read once; the request log
is turned down to warnings. Nothing about SES's behaviour changes.
"""

import logging
import sys

from moto import backends

_MODULES = tuple(backends.list_of_moto_modules())
backends.list_of_moto_modules = lambda: _MODULES
logging.getLogger("werkzeug").setLevel(logging.WARNING)

from moto.server import main  # noqa: E402  (after the patch, which it reads per request)

if __name__ == "__main__":
    main(sys.argv[1:])
