"""Loading our models from files that are not Hub folders (`single_file`: one checkpoint file per model)."""
