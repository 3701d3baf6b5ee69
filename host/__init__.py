"""Host side of spikeforge: the Chip API that drives a training chip (model, simulation, board)."""
