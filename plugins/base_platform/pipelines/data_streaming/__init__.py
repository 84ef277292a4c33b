"""data_streaming: the stream consumer's trigger and tasks; route, join and window."""
