"""Reading the change log back: `tail` (the log files, `monitor tail`) and `consumers` (the Redis
events stream, and the alerts stream as a consumer-group member: `monitor alerts`)."""
