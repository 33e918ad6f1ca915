"""Stage 1, sources: `video.VideoSource.frames()` reads a file, an image sequence or an RTSP
stream with PyAV and yields sampled `Frame`s (`sampler`: by presentation time); `reconnect`
is the backoff and probing between reconnect attempts of a network camera."""
