"""One run path: resolve the config and build the method (``assemble``); train, score and record
come here too, so a new run, a resume, ``ssl-bench eval`` and the baselines share one sequence."""
