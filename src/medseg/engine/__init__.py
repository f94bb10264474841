"""Engine: wires data, models, losses, optimizers and metrics into train / evaluate / predict."""
