"""The synthetic scene: `drawing` (the parking area, vehicles, people, sensor noise; shared with
`finetune.synthetic`) and `scripted.render_sample_scene` (an H.264 clip of scripted arrivals and
departures with its ground truth, for `monitor run --demo`, `monitor sample` and the tests)."""
