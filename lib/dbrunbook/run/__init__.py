"""Running phases: the runner, kernels, signals, rehearsal and the fleet."""
