"""Commands from the platform (DESIGN.md 4.5): the dispatcher, its config, and what it needs
from the agent.

- :class:`Dispatcher` turns a request's bytes into the response's bytes: size and rate limits,
  JSON or msgpack, signatures (:mod:`gateway.signing`), idempotency by id across restarts, typed
  arguments, the agent's exceptions mapped to :class:`ErrorCode` s, an audit event per command.
- :class:`CommandTarget` is the agent's side (one method per command).
- :class:`CommandsCfg` is the config's ``commands:`` section (:func:`parse_commands`).

Security model and operator notes: docs/security.md.
"""

from gateway.commands.codes import CommandFailure, ErrorCode
from gateway.commands.config import CommandsCfg, RateLimitCfg, SigningCfg, parse_commands
from gateway.commands.dispatcher import COMMANDS, Dispatcher, DispatcherStats, Emit
from gateway.commands.target import CommandTarget, RulesRejected

__all__ = [
    "COMMANDS",
    "CommandFailure",
    "CommandTarget",
    "CommandsCfg",
    "Dispatcher",
    "DispatcherStats",
    "Emit",
    "ErrorCode",
    "RateLimitCfg",
    "RulesRejected",
    "SigningCfg",
    "parse_commands",
]
