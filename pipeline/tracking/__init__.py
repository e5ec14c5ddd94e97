"""Everything that talks to MLflow: the store, what runs hold, the registry and its champion
alias, lineage, and reading runs back. No other package imports mlflow (the pyfunc model class
in `serving` aside, which MLflow makes subclass its own)."""
