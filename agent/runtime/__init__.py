"""Running as a service: the sd_notify protocol, the watchdog and readiness logic, structured logs."""
