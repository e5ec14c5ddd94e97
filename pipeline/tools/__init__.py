"""The command-line tools behind the make targets (predict, compare, report, sweep, remote,
reproduce, summary); each prints its results and leaves MLflow to `pipeline.tracking`."""
