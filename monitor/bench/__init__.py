"""Benchmarks (`monitor bench gate|redis|service|alerts|cluster|model|changelog`; their arguments
in `parsers`), each printing a table and JSON through `output.report`, and the throwaway servers
they and the tests start: `local_redis` (a real redis-server on a free loopback port),
`local_mqtt` (Debian's mosquitto) and `rtsp_server` (GStreamer's RTSP server)."""
