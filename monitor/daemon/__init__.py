"""The daemon: `service.Monitor` wires the stages (a `camera_reader` thread per camera feeding
bounded per-camera `queues`, one describer loop, the orderer and the writer) and publishes one
typed `snapshot.MonitorSnapshot` that the observers read: `/healthz` and `/metrics`
(`http_health`), the stats job (`jobs`) and systemd's status line and watchdog (`notify`).
`camera_health` turns outages into camera_offline / camera_online events."""
