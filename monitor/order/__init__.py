"""Stage 4, order: `events` makes a described change (or a camera's offline/online notice) into a
`ChangeEvent` with the camera's next `seq`; `orderer.EventOrderer` releases events in time order
across cameras after a bounded reorder window."""
