"""Stage 2, gate: `change_gate.ChangeGate.detect(frame)` compares each sampled frame with the last
described one (exposure-fitted, `imaging`) and hands over a `ChangeCandidate` once the scene has
settled into something different; `regions` finds where, and whether it appeared, left or moved."""
