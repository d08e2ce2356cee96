"""Lines: one trigger -> capture -> infer -> rule -> act -> deliver path each."""
