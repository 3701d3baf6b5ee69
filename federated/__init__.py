"""Federated learning across spikeforge chips on Flower: integer FedAvg, partitioning, runner."""
