"""Hardware simulator for edge-agent: scenes, conveyor, camera, PLC, broker, update server. The agent never imports it."""
