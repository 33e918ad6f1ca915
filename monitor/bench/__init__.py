"""Benchmarks (`monitor bench gate|redis|service|model`), each printing a table and JSON through
`output.report`, and the throwaway servers they and the tests start: `local_redis` (a real
redis-server on a free loopback port) and `rtsp_server` (GStreamer's RTSP server)."""
