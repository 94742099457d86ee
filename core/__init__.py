"""The training path shared by every launcher: config schemas, run directories, checkpoints and the run itself."""
