"""Modbus RTU/TCP: register maps, an I/O-free codec and request planner, and the async bus."""
