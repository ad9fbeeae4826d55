"""The technician's local web page (issue 15): a small HTTPS site served by the agent itself,
on its own event loop, for commissioning and fault finding at the open cabinet.

Off unless the config has a ``web:`` section; only then does the agent import
:mod:`gateway.web.server` (and aiohttp, argon2, segno: the ``web`` extra), so a gateway without
the page carries none of it. Layout, one concern per module:

- :mod:`~gateway.web.accounts` the accounts file (``edgegw provision --web-user``), argon2id;
- :mod:`~gateway.web.tls` the page's certificate: the configured one, or a self-signed one made
  at first start beside the store, and its fingerprint (``edgegw status``, the report);
- :mod:`~gateway.web.sessions` log-in attempts (rate-limited) and sessions (they expire);
- :mod:`~gateway.web.feed` recent events and the log tail the page shows;
- :mod:`~gateway.web.pages` the server-rendered HTML;
- :mod:`~gateway.web.server` the aiohttp application, its limits, the live stream (SSE) and the
  check jobs.

Every state change goes through the agent's command dispatcher
(:meth:`gateway.commands.Dispatcher.handle_local`), so validation, priorities, ordering and the
audit event are the platform commands' own. This package is free of aiohttp at import time.
"""
