"""Field I/O: Modbus, serial and GPIO. Knows nothing of MQTT, the store or commands."""
