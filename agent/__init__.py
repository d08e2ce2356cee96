"""edge-agent: triggered capture, OpenVINO inference, PLC/GPIO actions and MQTT delivery."""

__version__ = "0.1.0"
