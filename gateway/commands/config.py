"""The ``commands:`` section of the config file (documented in docs/security.md)::

    commands:
      require_signature: true          # refuse unsigned commands
      signing: {scheme: ed25519, public_key_file: /etc/edgegw/platform.pub, window_s: 300}
      max_payload_bytes: 65536         # larger requests get `too_large`
      rate_limit: {per_source_per_minute: 120, burst: 20}
      remember_ids: 5000               # ids (with their responses) kept for idempotency
      allow_set_time: false            # may sync_time set the system clock?
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from gateway.signing import SigningScheme, Verifier, load_verifier
from policies.common import describe_error
from policies.validation import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["CommandsCfg", "RateLimitCfg", "SigningCfg", "parse_commands"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SigningCfg(_Model):
    """How signed commands are checked. Ed25519 needs the platform's public key file (it may
    hold several PEM keys during a rotation); HMAC-SHA256 needs the gateway's secret (0600)."""

    scheme: SigningScheme = SigningScheme.ED25519
    public_key_file: str | None = None
    key_file: str | None = None
    window_s: float = Field(default=300.0, gt=0, le=86_400)

    @model_validator(mode="after")
    def _files(self) -> SigningCfg:
        if self.scheme is SigningScheme.ED25519:
            if not self.public_key_file:
                raise ValueError("scheme ed25519 needs `public_key_file` (the platform's key)")
            if self.key_file:
                raise ValueError("scheme ed25519 takes `public_key_file`, not `key_file` "
                                 "(a gateway never holds the platform's private key)")
        else:
            if not self.key_file:
                raise ValueError("scheme hmac-sha256 needs `key_file` (the shared secret)")
            if self.public_key_file:
                raise ValueError("scheme hmac-sha256 takes `key_file`, not `public_key_file`")
        return self

    def with_base(self, base_dir: Path) -> SigningCfg:
        """Relative key paths resolved against ``base_dir`` (the config file's folder)."""
        def fix(p: str | None) -> str | None:
            if p is None or Path(p).is_absolute():
                return p                # an absolute path stays as written
            return str(base_dir / p)
        return self.model_copy(update={"public_key_file": fix(self.public_key_file),
                                       "key_file": fix(self.key_file)})

    def verifier(self) -> Verifier:
        """Load the key file(s); raises ConfigError naming the file and the problem."""
        return load_verifier(scheme=self.scheme, window_s=self.window_s,
                             public_key_file=self.public_key_file, key_file=self.key_file)


class RateLimitCfg(_Model):
    """A token bucket per source topic: ``burst`` requests at once, then
    ``per_source_per_minute`` on average."""

    per_source_per_minute: float = Field(default=120, gt=0, le=60_000)
    burst: int = Field(default=20, ge=1, le=10_000)


class CommandsCfg(_Model):
    require_signature: bool = False
    signing: SigningCfg | None = None
    max_payload_bytes: int = Field(default=65_536, ge=1024, le=16 * 1024 * 1024)
    rate_limit: RateLimitCfg = RateLimitCfg()
    remember_ids: int = Field(default=5000, ge=1, le=1_000_000)
    allow_set_time: bool = False
    # commands handled at once; more wait for a free slot (a slow command never blocks another)
    concurrency: int = Field(default=16, ge=1, le=256)
    # sync_time refuses to move a trusted clock by more than this (seconds)
    max_clock_step_s: float = Field(default=86_400.0, gt=0)
    # set_config (a whole new config, signed) is accepted; it must come up healthy within
    # config_probation_s seconds or the previous config is put back
    remote_config: bool = False
    config_probation_s: float = Field(default=120.0, ge=5, le=3600)

    @model_validator(mode="after")
    def _signing_needed(self) -> CommandsCfg:
        if self.require_signature and self.signing is None:
            raise ValueError("require_signature needs a `signing:` section with the key file")
        if self.remote_config and self.signing is None:
            raise ValueError("remote_config needs a `signing:` section: set_config must be "
                             "signed")
        return self


def parse_commands(raw: Mapping[str, Any] | None, *, source: str = "<config>",
                   base_dir: Path | None = None) -> CommandsCfg:
    """The ``commands:`` section, validated; key paths made absolute against ``base_dir``.
    Raises ConfigError with a ``commands.<field>`` path for each problem."""
    try:
        cfg = CommandsCfg.model_validate(dict(raw or {}))
    except ValidationError as err:
        problems = []
        for e in err.errors():
            loc = ".".join(str(p) for p in ("commands", *e["loc"]))
            problems.append((loc, describe_error(e, doc="docs/security.md")))
        raise ConfigError(source, problems) from None
    if cfg.signing is not None and base_dir is not None:
        cfg = cfg.model_copy(update={"signing": cfg.signing.with_base(base_dir)})
    return cfg
