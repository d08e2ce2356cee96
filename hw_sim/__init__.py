"""Hardware simulator for edge-agent: scenes, conveyor, camera, PLC, broker. The agent never imports it."""
