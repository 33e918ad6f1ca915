"""Scale-out on Redis Streams: gate nodes (`monitor run --role gate`, `gate_node`) put each
settled change in `<prefix>:candidates` (`wire`); describe workers (`monitor describe-worker`,
`worker`) in the consumer group `describers` describe them and send the events back to their
node, whose ordered writer logs them as the single-process daemon does."""
