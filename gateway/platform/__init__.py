"""The platform side of the uplink: what a city platform's engineers import to read gateways.

``Decoder`` turns (topic, payload) messages into the JSON objects of DESIGN.md 4.4;
``format_line`` prints one of them as the single line ``edgegw platform listen --json`` shows.
"""

from gateway.platform.decoder import Decoder, batch_header, format_line, subscriptions

__all__ = ["Decoder", "batch_header", "format_line", "subscriptions"]
