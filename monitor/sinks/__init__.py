"""Stage 5, sinks: `writer.EventWriter.write(events)` hands each ordered event to every sink: the
rotating log files (`logfiles`), the Redis streams through a crash-safe spool (`redis_streams`,
`spool`), the before/after captures (`captures`) and the alert rules (`alerts`)."""
