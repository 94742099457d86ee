"""What every launcher and layer shares: config schemas, run directories, checkpoints, the ledger and signals."""
